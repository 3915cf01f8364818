"""The wake word detector on real espeak-ng speech with pymicro-wakeword's bundled models."""

from __future__ import annotations

import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from assistant.audio.wakeword import Detection, WakeWord

RATE = 16000
FRAME_BYTES = 960  # the daemon's 30 ms frames
S16 = ["-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer"]  # sox output format
THREE = ["okay_nabu", "hey_jarvis", "hey_mycroft"]
# Speech starts 1.0 s into every clip (sox pad); a model fires when it has heard the whole
# phrase, up to about 0.65 s after the last audible sample with these voices.
MAX_LAG_S = 0.8


def espeak(tmp_path: Path, text: str, voice: str = "en-us", wpm: int = 150) -> np.ndarray:
    """espeak-ng speech as 16 kHz int16 with 1 s of silence either side."""
    raw, out = tmp_path / "raw.wav", tmp_path / "s16.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), *S16, str(out), "pad", "1.0", "1.0"], check=True)
    return read_wav(out)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def audible(samples: np.ndarray) -> tuple[float, float]:
    """Start and end (s) of the audible part of a clip."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    return loud[0] / RATE, loud[-1] / RATE


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(RATE * seconds), dtype=np.int16)


def run(detector: WakeWord, samples: np.ndarray, frame_bytes: int = FRAME_BYTES) -> list[tuple[float, Detection]]:
    """Feed audio in frames; return (audio time at the end of the frame, detection) pairs."""
    pcm = samples.astype("<i2").tobytes()
    found = []
    for start in range(0, len(pcm), frame_bytes):
        frame = pcm[start : start + frame_bytes]
        detection = detector.process(frame)
        if detection is not None:
            found.append(((start + len(frame)) / 2 / RATE, detection))
    return found


@pytest.mark.parametrize(
    ("text", "model", "voice", "wpm"),
    [
        # not en-us+m3 at 150 wpm: it peaks just above the cutoff and flips under CPU load
        ("hey mycroft", "hey_mycroft", "en-gb-x-rp", 150),
        ("hey mycroft", "hey_mycroft", "en-029", 175),
        ("hey mycroft", "hey_mycroft", "en+f2", 175),
        ("okay nabu", "okay_nabu", "en-029", 175),
        ("okay nabu", "okay_nabu", "en-us+m3", 150),
        ("okay nabu", "okay_nabu", "en-gb-x-rp", 150),
        ("hey jarvis", "hey_jarvis", "en-us+f4", 175),  # the only one of ten espeak voices tried that fires it
    ],
)
def test_phrase_fires_its_model_once(tmp_path: Path, text: str, model: str, voice: str, wpm: int) -> None:
    """All three models loaded at once: only the right one fires, once, during or just after the phrase."""
    speech = espeak(tmp_path, text, voice, wpm)
    start, end = audible(speech)
    detector = WakeWord(THREE)
    found = run(detector, np.concatenate([speech, silence(3.0)]))
    assert [d.model for _, d in found] == [model], found
    at, detection = found[0]
    assert detector.cutoff(model) < detection.probability <= 1.0
    assert start + 0.3 < at < end + MAX_LAG_S, (start, end, at)


def test_only_loaded_models_fire(tmp_path: Path) -> None:
    speech = espeak(tmp_path, "hey mycroft", "en-gb-x-rp", 150)
    assert run(WakeWord(["okay_nabu", "hey_jarvis"]), speech) == []
    assert [d.model for _, d in run(WakeWord(["hey_mycroft"]), speech)] == ["hey_mycroft"]


SENTENCES = [
    ("turn on the kitchen light", "en-us"),
    ("what's the weather like today", "en-gb-x-rp"),
    ("set a timer for ten minutes and remind me to call my mother", "en-us+m3"),
    ("hey, can you play some music in the living room", "en-029"),
    ("okay, the bus leaves at half past nine, so hurry up", "en+f2"),
    ("how far is it from here to the nearest railway station", "en-us"),
]


def test_ordinary_speech_does_not_fire(tmp_path: Path) -> None:
    speech = np.concatenate([espeak(tmp_path, text, voice, wpm) for text, voice in SENTENCES for wpm in (150, 175)])
    assert len(speech) / RATE > 30
    assert run(WakeWord(WakeWord.available()), speech) == []


@pytest.mark.parametrize("volume", [0.02, 0.3])
def test_white_noise_does_not_fire(tmp_path: Path, volume: float) -> None:
    out = tmp_path / "noise.wav"
    subprocess.run(["sox", "-n", *S16, str(out), "synth", "20", "whitenoise", "vol", str(volume)], check=True)
    assert run(WakeWord(WakeWord.available()), read_wav(out)) == []


def test_fires_in_noise(tmp_path: Path) -> None:
    """The phrase over steady white noise (about 20 dB below the speech) still fires."""
    speech = espeak(tmp_path, "hey mycroft", "en-gb-x-rp", 150).astype(np.int32)
    noise = np.random.default_rng(1).normal(0, 300, len(speech))
    noisy = np.clip(speech + noise, -32768, 32767).astype(np.int16)
    assert [d.model for _, d in run(WakeWord(THREE), noisy)] == ["hey_mycroft"]


def phrase_twice(tmp_path: Path, gap_s: float) -> np.ndarray:
    speech = espeak(tmp_path, "hey mycroft", "en-gb-x-rp", 150)
    start, end = audible(speech)
    phrase = speech[int(start * RATE) : int(end * RATE) + 1]
    return np.concatenate([silence(1.0), phrase, silence(gap_s), phrase, silence(3.0)])


def test_refractory_swallows_a_repeat_within_a_second(tmp_path: Path) -> None:
    audio = phrase_twice(tmp_path, 0.5)
    found = run(WakeWord(["hey_mycroft"], refractory_s=2.0), audio)
    assert len(found) == 1, found
    # Without a refractory period the repeat fires on its own: the test is not vacuous.
    without = run(WakeWord(["hey_mycroft"], refractory_s=0.0), audio)
    assert len(without) == 2, without
    assert without[0][0] == found[0][0]
    assert without[1][0] < found[0][0] + 2.0


def test_one_utterance_fires_once_without_refractory(tmp_path: Path) -> None:
    """The probability stays above the cutoff for a while after the phrase: one detection."""
    for voice, text in [("en-gb-x-rp", "hey mycroft"), ("en-029", "okay nabu"), ("en+f2", "hey mycroft")]:
        found = run(WakeWord(THREE, refractory_s=0.0), espeak(tmp_path, text, voice))
        assert len(found) == 1, (voice, found)


def test_refractory_lets_a_repeat_three_seconds_later_fire(tmp_path: Path) -> None:
    found = run(WakeWord(["hey_mycroft"], refractory_s=2.0), phrase_twice(tmp_path, 3.0))
    assert len(found) == 2, found
    assert found[1][0] - found[0][0] > 3.0


def test_refractory_counts_audio_not_wall_time(tmp_path: Path) -> None:
    """Feeding slowly does not shorten the refractory period."""
    audio = phrase_twice(tmp_path, 0.5).astype("<i2").tobytes()
    detector = WakeWord(["hey_mycroft"], refractory_s=2.0)
    count = 0
    for start in range(0, len(audio), FRAME_BYTES):
        if detector.process(audio[start : start + FRAME_BYTES]) is not None:
            count += 1
            time.sleep(2.1)  # more wall time than refractory_s passes: that is the test
    assert count == 1


def test_level_follows_loudness(tmp_path: Path) -> None:
    speech = espeak(tmp_path, "hey mycroft", "en-gb-x-rp", 150).astype(np.float64)
    assert np.abs(speech).max() < 32767 / 1.5  # room for the louder copy
    levels = {}
    for gain in (0.2, 1.5):
        found = run(WakeWord(["hey_mycroft"]), np.round(speech * gain).astype(np.int16))
        assert len(found) == 1, (gain, found)
        levels[gain] = found[0][1].level_dbfs
    print(f"level_dbfs at gain 0.2: {levels[0.2]:.1f}, at gain 1.5: {levels[1.5]:.1f}")
    assert levels[1.5] > levels[0.2] + 12  # 17.5 dB apart if both fire at the same moment
    assert -60 < levels[0.2] < levels[1.5] < 0


def test_any_frame_length_gives_the_same_detection(tmp_path: Path) -> None:
    speech = espeak(tmp_path, "okay nabu", "en-029", 175)
    expected = run(WakeWord(THREE), speech)
    assert len(expected) == 1
    for frame_bytes in (320, 333, 4001, len(speech) * 2):
        found = run(WakeWord(THREE), speech, frame_bytes)
        assert [d for _, d in found] == [expected[0][1]], frame_bytes


def test_reset_forgets_everything(tmp_path: Path) -> None:
    speech = espeak(tmp_path, "hey mycroft", "en-us+m3", 175)
    detector = WakeWord(["hey_mycroft"], refractory_s=30.0)
    first = run(detector, speech)
    assert len(first) == 1
    assert detector.time_s == pytest.approx(len(speech) / RATE, abs=0.01)
    # A partial feature window and the refractory period are forgotten too.
    detector.process(b"\x01\x02\x03")
    detector.reset()
    assert detector.time_s == 0
    assert run(detector, speech) == first


def test_threshold_overrides_cutoffs(tmp_path: Path) -> None:
    speech = espeak(tmp_path, "hey mycroft", "en-gb-x-rp", 150)
    detector = WakeWord(THREE, threshold=0.999)
    assert [detector.cutoff(name) for name in THREE] == [0.999] * 3
    assert run(detector, speech) == []
    lenient = run(WakeWord(["hey_mycroft"], threshold=0.5), speech)
    strict = run(WakeWord(["hey_mycroft"]), speech)
    assert len(lenient) == len(strict) == 1
    assert lenient[0][0] <= strict[0][0]


def test_available_and_unknown_models() -> None:
    assert {"okay_nabu", "hey_jarvis", "hey_mycroft"} <= set(WakeWord.available())
    with pytest.raises(ValueError, match=r"'hey_siri'.*available: .*hey_jarvis.*hey_mycroft") as info:
        WakeWord(["hey_mycroft", "hey_siri"])
    assert all(name in str(info.value) for name in WakeWord.available())
    with pytest.raises(ValueError, match="available"):
        WakeWord([])
    with pytest.raises(ValueError, match="threshold"):
        WakeWord(["okay_nabu"], threshold=1.5)
    with pytest.raises(ValueError, match="refractory"):
        WakeWord(["okay_nabu"], refractory_s=-1)


def test_cpu_cost(tmp_path: Path) -> None:
    speech = np.concatenate([espeak(tmp_path, text, voice) for text, voice in SENTENCES])
    noise = np.random.default_rng(0).normal(0, 1000, 20 * RATE).astype(np.int16)
    audio = np.concatenate([speech, noise])
    seconds = len(audio) / RATE
    cost = {}
    for names in (["hey_mycroft"], THREE):
        detector = WakeWord(names)
        started = time.process_time()
        run(detector, audio)
        cost[len(names)] = (time.process_time() - started) / seconds
    print(f"CPU per audio second: one model {cost[1] * 1000:.2f} ms, three models {cost[3] * 1000:.2f} ms")
    assert cost[1] < 0.05


def test_direct_inference_matches_the_librarys_own(tmp_path: Path) -> None:
    """TFLite driven directly gives pymicro-wakeword's probabilities, slice for slice."""
    from pymicro_features import MicroFrontend
    from pymicro_wakeword import MicroWakeWord, Model

    from assistant.audio.tflite import TfLiteModel, find_package
    from assistant.audio.wakeword import _Inference

    package = find_package()
    assert package is not None
    assert {"okay_nabu", "hey_jarvis", "hey_mycroft", "alexa"} <= set(package.names())
    speech = np.concatenate([espeak(tmp_path, "okay nabu"), espeak(tmp_path, "hey jarvis, what time is it")])
    pcm = speech.astype("<i2").tobytes()
    for name in ("okay_nabu", "hey_jarvis"):
        direct = _Inference(TfLiteModel(package, name))
        library = MicroWakeWord.from_builtin(Model(name))
        assert direct.direct
        assert direct.model.probability_cutoff == library.probability_cutoff
        frontend = MicroFrontend()
        ours, theirs = [], []
        for start in range(0, len(pcm) - 319, 320):
            features = frontend.process_samples(pcm[start : start + 320]).features
            if not features:
                continue
            mine = direct.feed(features)
            reference = library.process_streaming_prob(np.array(features).reshape((1, 1, len(features))))
            if mine is not None:
                ours.append(mine)
                theirs.append(reference)
        assert len(ours) > 100
        assert name != "okay_nabu" or max(ours) > 0.9  # the wake word was in there
        assert ours == pytest.approx(theirs, abs=1e-9)


def test_the_wake_word_loads_no_numpy() -> None:
    """numpy costs 13 MB; the wake word path does without it (a fresh interpreter tells)."""
    probe = (
        "import sys\n"
        "from assistant.audio.wakeword import WakeWord\n"
        "w = WakeWord(['okay_nabu', 'hey_jarvis'])\n"
        "w.process(bytes(32000))\n"
        "w.reset()\n"
        "print('numpy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False"


def test_direct_inference_falls_back_to_the_library_without_its_handles() -> None:
    """A pymicro-wakeword release without the interpreter attributes still works, through its own helper."""
    from pymicro_wakeword import MicroWakeWord, Model

    from assistant.audio.wakeword import _Inference

    class Opaque:  # only the documented streaming API
        def __init__(self) -> None:
            self._model = MicroWakeWord.from_builtin(Model("okay_nabu"))
            self.stride = self._model.stride
            self.sliding_window_size = self._model.sliding_window_size

        def process_streaming_prob(self, features: np.ndarray) -> float | None:
            return self._model.process_streaming_prob(features)

    fallback = _Inference(Opaque())  # type: ignore[arg-type]
    assert not fallback.direct
    results = [fallback.feed([0.0] * 40) for _ in range(3 * fallback.stride)]
    assert results.count(None) == 2 * fallback.stride  # one result per stride slices
    assert all(r == 0.0 for r in results if r is not None)
