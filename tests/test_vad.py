"""The segmenter on real espeak-ng speech with real webrtcvad: boundaries within 60 ms."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from assistant.audio.vad import Pause, Segmenter, SpeechStarted, Utterance, webrtc_classifier
from assistant.config import VadConfig

RATE = 16000
FRAME_MS = 30
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2


def espeak_pcm(text: str, tmp_path: Path, voice: str = "en-us", wpm: int = 150) -> np.ndarray:
    """espeak-ng speech as 16 kHz int16, trimmed to where the waveform is audible."""
    raw, out = tmp_path / "raw.wav", tmp_path / "s16.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)], check=True
    )
    with wave.open(str(out)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    return samples[loud[0] : loud[-1] + 1]


def run(segmenter: Segmenter, pcm: bytes) -> list[SpeechStarted | Utterance]:
    events = []
    for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        event = segmenter.feed(pcm[start : start + FRAME_BYTES])
        if event is not None:
            events.append(event)
    return events


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.int16)


def make(config: VadConfig | None = None) -> Segmenter:
    config = config or VadConfig()
    return Segmenter(config, webrtc_classifier(config.aggressiveness, RATE), RATE, FRAME_MS)


@pytest.mark.parametrize(
    ("text", "voice"),
    [
        ("turn on the kitchen light", "en-us"),
        ("what is the temperature in the living room", "en-gb"),
        ("stop", "en-us+f3"),
    ],
)
def test_boundaries_within_60_ms(tmp_path: Path, text: str, voice: str) -> None:
    speech = espeak_pcm(text, tmp_path, voice)
    lead = 1.0
    pcm = np.concatenate([silence(lead), speech, silence(1.5)]).tobytes()
    events = [e for e in run(make(VadConfig(min_utterance_ms=100)), pcm) if isinstance(e, SpeechStarted | Utterance)]
    assert [type(e) for e in events] == [SpeechStarted, Utterance]
    utterance = events[1]
    assert isinstance(utterance, Utterance)
    true_start, true_end = lead, lead + len(speech) / RATE
    assert abs(utterance.start_s - true_start) <= 0.060, (utterance.start_s, true_start)
    assert abs(utterance.end_s - true_end) <= 0.060, (utterance.end_s, true_end)
    # the audio handed on starts with the pre-roll and covers all of the speech
    assert utterance.duration_s >= true_end - true_start + 0.3


def test_boundaries_in_room_noise(tmp_path: Path) -> None:
    speech = espeak_pcm("turn on the kitchen light", tmp_path)
    lead = 1.5
    clean = np.concatenate([silence(lead), speech, silence(1.5)])
    noise = np.random.default_rng(7).standard_normal(len(clean)) * 0.02 * 32767 / 1.7  # about sox "vol 0.02"
    pcm = np.clip(clean + noise, -32768, 32767).astype(np.int16).tobytes()
    utterances = [e for e in run(make(VadConfig(min_utterance_ms=200)), pcm) if isinstance(e, Utterance)]
    assert len(utterances) == 1
    assert abs(utterances[0].start_s - lead) <= 0.060
    assert abs(utterances[0].end_s - (lead + len(speech) / RATE)) <= 0.060


def test_preroll_is_kept(tmp_path: Path) -> None:
    speech = espeak_pcm("hello there", tmp_path)
    pcm = np.concatenate([silence(1.0), speech, silence(1.0)])
    events = run(make(VadConfig(preroll_ms=300, min_utterance_ms=100)), pcm.tobytes())
    utterance = events[-1]
    assert isinstance(utterance, Utterance)
    audio = np.frombuffer(utterance.audio, dtype=np.int16)
    first_loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 300)[0] / RATE
    assert 0.2 <= first_loud <= 0.45  # about preroll_ms of quiet before the first syllable


def test_two_utterances_separated_by_silence(tmp_path: Path) -> None:
    speech = espeak_pcm("turn off the fan", tmp_path)
    pcm = np.concatenate([silence(0.5), speech, silence(1.2), speech, silence(1.2)]).tobytes()
    utterances = [e for e in run(make(VadConfig(min_utterance_ms=100)), pcm) if isinstance(e, Utterance)]
    assert len(utterances) == 2
    assert utterances[1].start_s > utterances[0].end_s + 1.0


def test_short_pause_does_not_split(tmp_path: Path) -> None:
    speech = espeak_pcm("turn on", tmp_path)
    pcm = np.concatenate([silence(0.5), speech, silence(0.3), speech, silence(1.2)]).tobytes()
    utterances = [
        e for e in run(make(VadConfig(silence_ms=600, min_utterance_ms=100)), pcm) if isinstance(e, Utterance)
    ]
    assert len(utterances) == 1


WARMUP = 20  # quiet frames first: the noise floor only starts judging after 0.5 s
QUIET = bytes(FRAME_BYTES)


def loud(index: int) -> bytes:
    """A loud frame whose level rises and falls by 12 dB as a voice's does (a perfectly steady
    sound would soon be taken for the room's noise)."""
    amplitude = 3000 if index // 4 % 2 else 12000
    return np.tile(np.array([amplitude, -amplitude], dtype="<i2"), FRAME_BYTES // 4).tobytes()


def scripted(
    config: VadConfig, decisions: list[bool]
) -> tuple[Segmenter, list[SpeechStarted | Pause | Utterance | None]]:
    """Feed a loud frame where `decisions` says speech (and the classifier agrees), silence
    elsewhere, after WARMUP quiet frames; the events, one per decision."""
    answers = iter([False] * WARMUP + decisions)
    segmenter = Segmenter(config, lambda _frame: next(answers), RATE, FRAME_MS)
    for _ in range(WARMUP):
        assert segmenter.feed(QUIET) is None
    return segmenter, [segmenter.feed(loud(i) if said else QUIET) for i, said in enumerate(decisions)]  # type: ignore[misc]


def test_end_of_speech_waits_silence_ms() -> None:
    # 1 s of speech frames then silence
    _segmenter, events = scripted(VadConfig(silence_ms=600), [True] * 33 + [False] * 100)
    index, event = next((i, e) for i, e in enumerate(events) if isinstance(e, Utterance))
    # the 20th silent frame (600 ms) closes it
    assert index == 33 + 20 - 1
    assert isinstance(event, Utterance)
    assert event.end_s == pytest.approx((WARMUP + 33) * 0.03)


def test_too_short_is_dropped() -> None:
    segmenter, events = scripted(VadConfig(min_utterance_ms=250, start_ms=60), [True] * 5 + [False] * 40)
    assert [type(e) for e in events if isinstance(e, SpeechStarted | Utterance)] == [SpeechStarted]
    assert not segmenter.in_speech


def test_max_length_cuts() -> None:
    _segmenter, events = scripted(VadConfig(max_utterance_s=1.0), [True] * 80)
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) >= 2
    assert 1.0 <= utterances[0].duration_s <= 1.0 + 0.3 + 0.03


def test_noise_alone_is_not_speech() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(RATE * 4) * 300).astype(np.int16).tobytes()
    events = run(make(VadConfig(aggressiveness=3)), noise)
    assert not [e for e in events if isinstance(e, Utterance)]


def test_wrong_frame_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="960 bytes"):
        make().feed(b"\0" * 100)


def test_pause_comes_before_the_end_and_resumed_cancels_it(tmp_path: Path) -> None:
    speech = espeak_pcm("turn on", tmp_path)
    pcm = np.concatenate([silence(0.5), speech, silence(0.35), speech, silence(1.0)]).tobytes()
    config = VadConfig(silence_ms=600, early_ms=250, min_utterance_ms=100)
    events = run(make(config), pcm)
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "Pause", "Resumed", "Pause", "Utterance"]
    last_pause, utterance = events[3], events[4]
    assert isinstance(last_pause, Pause) and isinstance(utterance, Utterance)
    # the last pause holds the whole request: the utterance adds only the rest of the silence
    assert utterance.audio.startswith(last_pause.audio)
    # frames of 600 ms less 270 ms; one fewer when the last speech frame ended quiet (10 ms steps)
    assert len(utterance.audio) - len(last_pause.audio) in ((19 - 9) * FRAME_BYTES, (20 - 9) * FRAME_BYTES)


def test_early_ms_zero_means_no_pause() -> None:
    _segmenter, events = scripted(VadConfig(early_ms=0), [True] * 20 + [False] * 30)
    assert [type(e).__name__ for e in events if e] == ["SpeechStarted", "Utterance"]


def test_finish_ends_the_utterance_now() -> None:
    segmenter, _events = scripted(VadConfig(min_utterance_ms=100), [True] * 10)
    utterance = segmenter.finish()
    assert isinstance(utterance, Utterance) and utterance.end_s == pytest.approx((WARMUP + 10) * 0.03)
    assert not segmenter.in_speech and segmenter.finish() is None


def frames_until_the_end(last_frame: np.ndarray, silence_ms: int = 600) -> int:
    """Silent frames fed after 1 s of speech whose last frame is `last_frame`, until the utterance ends
    (after WARMUP quiet frames: the noise floor judges nothing before it knows the room)."""
    decisions = iter([False] * WARMUP + [True] * 33 + [False] * 100)
    segmenter = Segmenter(VadConfig(silence_ms=silence_ms), lambda _frame: next(decisions), RATE, FRAME_MS)
    for _ in range(WARMUP):
        assert segmenter.feed(QUIET) is None
    for index in range(32):
        assert not isinstance(segmenter.feed(loud(index)), Utterance)
    assert segmenter.feed(last_frame.astype("<i2").tobytes()) is None
    for count in range(1, 100):
        if isinstance(segmenter.feed(QUIET), Utterance):
            return count
    raise AssertionError("no utterance")


def test_the_end_is_not_rounded_up_to_the_frame_grid() -> None:
    """The silence counts from inside the last speech frame (10 ms steps), to the nearest frame edge."""
    sub = FRAME_BYTES // 2 // 3  # samples in 10 ms
    speech = np.frombuffer(loud(0), dtype="<i2").copy()
    assert frames_until_the_end(speech) == 20  # speech to the frame's end: 600 ms of silence after it
    ends_early = speech.copy()
    ends_early[sub:] = 0  # speech ends 10 ms into its last frame: 20 ms of it were already silent
    assert frames_until_the_end(ends_early) == 19  # 590-600 ms, not 620-630
    ends_mid = speech.copy()
    ends_mid[2 * sub :] = 0  # 10 ms of it silent
    assert frames_until_the_end(ends_mid) == 19  # 580-590 ms is nearer to 600 than 610-620
    assert frames_until_the_end(ends_early, silence_ms=300) == 9
    faint_tail = speech.copy()
    faint_tail[sub:] = np.tile(np.array([3, -3]), (len(faint_tail) - sub) // 2)  # under the floor's -70 dBFS minimum
    assert frames_until_the_end(faint_tail) == 19
