"""False wakes: the bench's replay of the detector's rules, and what a wake word alone sends."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from daemon import Daemon
from fake_openai import FakeOpenAI
from support import Broker, MqttRecorder, PulseAudio, read_wav
from test_wake import WAKE, wake_sections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import false_wakes

from assistant.audio.vad import Pause, Segmenter, Utterance
from assistant.config import VadConfig

StartDaemon = Callable[..., tuple[Daemon, str]]
SECOND = 16000


def test_replay_fires_on_the_rising_edge_and_rearms_at_half_the_cutoff() -> None:
    trace = [(0, 0.1), (480, 0.9), (960, 0.95), (1440, 0.6), (1920, 0.9), (2400, 0.3)]
    trace += [(4 * SECOND, 0.9)]  # after the refractory period, re-armed at 0.3
    assert false_wakes.replay(trace, 0.8) == [480, 4 * SECOND]
    # 0.6 is above half of 0.8: the second rise is the same utterance, not a new wake


def test_replay_swallows_a_wake_in_the_refractory_period() -> None:
    trace = [(0, 0.9), (SECOND, 0.1), (SECOND + 480, 0.9), (SECOND * 3, 0.1), (SECOND * 3 + 480, 0.9)]
    assert false_wakes.replay(trace, 0.8) == [0, SECOND * 3 + 480]


def test_the_bench_sees_what_the_detector_sees(tmp_path: Path, speech: Callable[..., Path]) -> None:
    phrase, voice, wpm = WAKE
    audio, _ = read_wav(speech(phrase, voice=voice, wpm=wpm, pad_before=1.0, pad_after=1.5))
    detections, trace, _cpu = false_wakes.run("hey_mycroft", audio)
    assert len(detections) == 1
    replayed = false_wakes.replay(trace, 0.95)
    assert len(replayed) == 1 and 0 <= detections[0] - replayed[0] < 1600
    # and ordinary speech through the same path does not fire
    quiet, _ = read_wav(speech("my craft project is almost done", pad_before=0.5, pad_after=1.0))
    assert false_wakes.run("okay_nabu", quiet)[0] == []


def test_the_corpus_has_the_near_misses_and_never_the_wake_words() -> None:
    texts = [t.lower() for t in false_wakes.ORDINARY + false_wakes.NEAR_MISSES]
    assert "okay now, everybody sit down please." in texts
    assert "my craft project is almost finished." in texts
    assert "hey, jarvis's car is here." in texts
    for phrase in false_wakes.WAKE_PHRASES.values():
        assert not any(f"{phrase.lower()} " in f"{t} " or f"{phrase.lower()}," in t for t in texts), phrase


FRAME = 480 * 2  # 30 ms at 16 kHz
WARMUP = 20


def loud(index: int) -> bytes:
    """Speech-like: a level that rises and falls by 12 dB (a steady sound is soon the room's noise)."""
    amplitude = 3000 if index // 4 % 2 else 12000
    return np.tile(np.array([amplitude, -amplitude], dtype="<i2"), 240).tobytes()


def _segment(speech_frames: int) -> list[object]:
    """Events for `speech_frames` of speech then silence, after 0.6 s of quiet (the noise floor
    judges nothing in its first 0.5 s)."""
    decisions = iter([False] * WARMUP + [True] * speech_frames + [False] * 40)
    config = VadConfig(start_ms=90, early_ms=250, silence_ms=600, min_utterance_ms=250)
    segmenter = Segmenter(config, lambda _frame: next(decisions), SECOND, 30)
    for _ in range(WARMUP):
        segmenter.feed(b"\0" * FRAME)
    return [segmenter.feed(loud(i) if i < speech_frames else b"\0" * FRAME) for i in range(speech_frames + 40)]


def test_a_blip_too_short_to_be_a_request_is_not_handed_out_for_early_transcription() -> None:
    """The tail of the wake word (and webrtcvad's hangover after it) used to start an utterance
    whose Pause was sent for early transcription, though the utterance was then dropped as too
    short: 0.36 s of near silence uploaded after a wake word with nothing after it."""
    events = _segment(4)  # 120 ms of speech: shorter than min_utterance_ms
    assert not any(isinstance(e, Pause | Utterance) for e in events), events


def test_a_request_long_enough_still_pauses_early() -> None:
    events = _segment(12)  # 360 ms
    assert [type(e) for e in events if isinstance(e, Pause | Utterance)] == [Pause, Utterance]


def test_a_wake_word_with_nothing_after_it_sends_nothing(
    tmp_path: Path,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: Callable[..., Path],
    start_daemon: StartDaemon,
) -> None:
    """The second confirmation already holds: a false wake uploads nothing unless speech
    follows it within wake.listen_timeout_s (and only that speech is sent)."""
    sections = wake_sections(mqtt_broker, fake, listen_timeout_s=1.5)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    phrase, voice, wpm = WAKE
    alone = speech(phrase, voice=voice, wpm=wpm, pad_before=1.0, pad_after=3.0)
    pulse.play_into_mic(alone, wait=False)
    wake = mqtt.wait_for(f"{root}/event/wake", timeout=20)
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > wake.time, timeout=10)
    assert fake.of("audio/transcriptions") == []
    assert mqtt.messages(f"{root}/event/transcript") == []
