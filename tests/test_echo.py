"""The in-process echo canceller's parts: the capture clock, the timeline of what was played,
and WebRTC's AEC3 taking a real echo out of real speech (espeak), offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from support import read_wav, rms, speech_wav

from assistant.audio.echo import TAIL_S, CaptureClock, EchoCanceller
from assistant.config import ConfigError, parse_config

RATE = 16000
FRAME = 480  # 30 ms, the daemon's frame


def test_blocks_delivered_in_bursts_are_stamped_back_to_back() -> None:
    clock = CaptureClock()
    duration = FRAME / RATE
    arrivals = []
    for k in range(200):  # captured at 100.0 + k * 30 ms, handed over in bursts of three, up to 4 ms late
        burst_end = (k // 3 + 1) * 3 * duration
        arrivals.append(100.0 + burst_end + (k % 5) * 0.001)
    stamps = np.array([clock.stamp(arrived, duration) for arrived in arrivals])
    assert np.allclose(np.diff(stamps[2:]), duration), "after the first burst, no jumps"
    error = stamps - (100.0 + np.arange(200) * duration)
    assert (error >= 0).all() and (error[2:] < 0.005).all()  # never before the capture, and close to it


def test_the_clock_follows_a_card_whose_clock_runs_slow() -> None:
    clock = CaptureClock()
    duration = FRAME / RATE
    late = 0.0
    for k in range(6000):  # 3 minutes; every block really takes 0.1 % longer than its length (1000 ppm)
        arrived = 100.0 + (k + 1) * duration * 1.001
        late = arrived - duration - clock.stamp(arrived, duration)
    assert 0 <= late < CaptureClock.LATE_S + 0.005  # within a window's drift, not 0.18 s behind


def test_a_block_arriving_too_early_for_its_stamp_moves_the_clock_back() -> None:
    clock = CaptureClock()
    duration = FRAME / RATE
    first = clock.stamp(100.5, duration)  # the first block was handed over 0.5 s late
    second = clock.stamp(100.0 + 2 * duration, duration)
    assert first == pytest.approx(100.5 - duration)
    assert second == pytest.approx(100.0 + duration)


def test_a_late_block_on_a_busy_machine_moves_nothing_but_a_restart_does() -> None:
    clock = CaptureClock()
    duration = FRAME / RATE
    for k in range(10):
        clock.stamp(100.0 + (k + 1) * duration, duration)
    late = clock.stamp(100.0 + 11 * duration + 0.4, duration)  # the callback waited 0.4 s for the CPU
    assert late == pytest.approx(100.0 + 10 * duration)
    clock.restart()  # the stream was stopped for 5 s (mqtt mode, muted) and started again
    assert clock.stamp(105.0, duration) == pytest.approx(105.0 - duration)


def test_a_frame_gets_what_played_while_it_was_captured() -> None:
    echo = EchoCanceller(RATE)
    played = (np.arange(1600) % 100 + 1).astype(np.int16)  # 100 ms, no zeros
    echo.played(played.tobytes(), RATE, heard_by=10.1)  # heard from 10.0 to 10.1
    ref = echo.reference(9.99, FRAME)  # 10 ms of silence, then the first 20 ms
    assert ref is not None
    assert not ref[:160].any()
    assert np.array_equal(ref[160:], played[:320])
    assert echo.reference(10.1 + TAIL_S + 0.01, FRAME) is None  # nothing played, nor just before: no work


def test_writes_continue_each_other_and_a_late_estimate_does_not_move_them() -> None:
    echo = EchoCanceller(RATE)
    block = np.full(800, 7, dtype=np.int16)  # 50 ms
    echo.played(block.tobytes(), RATE, heard_by=10.05)
    echo.played(block.tobytes(), RATE, heard_by=10.108)  # estimated 8 ms late: the thread waited
    ref = echo.reference(10.0, 1600)
    assert ref is not None and (ref == 7).all(), "one seamless reference, no 8 ms hole"


def test_a_late_estimate_on_a_busy_machine_is_not_a_gap() -> None:
    echo = EchoCanceller(RATE)
    block = np.full(800, 7, dtype=np.int16)  # 50 ms
    echo.played(block.tobytes(), RATE, heard_by=10.05)
    echo.played(block.tobytes(), RATE, heard_by=10.4)  # the audio thread waited 0.3 s; the stream did not run dry
    ref = echo.reference(10.0, 1600)
    assert ref is not None and (ref == 7).all()


def test_a_gap_in_playback_stays_a_gap_and_a_resampled_write_lands_at_the_mic_rate() -> None:
    echo = EchoCanceller(RATE)
    echo.played(np.full(800, 5, dtype=np.int16).tobytes(), RATE, heard_by=10.05)
    echo.played(np.full(2205, 9, dtype=np.int16).tobytes(), 22050, heard_by=10.3, ran_dry=True)  # 100 ms at 22.05 kHz
    ref = echo.reference(10.0, 4800)
    assert ref is not None
    assert (ref[:800] == 5).all()
    assert not ref[800 : 3200 - 10].any()  # 10.05 .. 10.2: nothing played
    assert (ref[3210:4790] == 9).all()


def test_what_a_stopped_stream_still_held_is_never_heard() -> None:
    import time

    echo = EchoCanceller(RATE)
    now = time.monotonic()
    echo.played(np.full(800, 3, dtype=np.int16).tobytes(), RATE, heard_by=now + 0.01)
    echo.played(np.full(800, 4, dtype=np.int16).tobytes(), RATE, heard_by=now + 1.0)  # still buffered
    echo.stopped()
    ref = echo.reference(now - 0.04, 1600 + 16000)
    assert ref is not None
    assert (ref == 3).sum() == 800 and not (ref == 4).any()


def test_nothing_played_leaves_the_microphone_untouched() -> None:
    echo = EchoCanceller(RATE)
    frame = (np.random.default_rng(1).normal(0, 3000, FRAME)).astype(np.int16).tobytes()
    assert echo.clean(frame, 10.0) == frame
    assert echo.cleaned == 0


def test_the_canceller_removes_a_loud_echo_and_keeps_the_voice(tmp_path: Path) -> None:
    """A reply heard back at 0 dB, 60 ms late, with a person speaking over it from 6 s on."""
    reply, rate = read_wav(
        speech_wav("The weather is mild, with some sun and a light breeze. " * 3, tmp_path / "r.wav")
    )
    voice, _ = read_wav(speech_wav("hey mycroft, stop", tmp_path / "v.wav", voice="en-gb-x-rp", pad_before=0))
    assert rate == RATE
    reply = reply[: 9 * RATE].astype(np.float64)
    delay = round(0.06 * RATE)
    mic = np.zeros(len(reply) + delay + len(voice))
    mic[delay : delay + len(reply)] += reply
    at = 6 * RATE
    mic[at : at + len(voice)] += voice
    mic_pcm = np.clip(mic, -32768, 32767).astype(np.int16)
    echo = EchoCanceller(RATE)
    echo.played(reply.astype(np.int16).tobytes(), RATE, heard_by=100.0 + len(reply) / RATE)
    cleaned = np.concatenate(
        [
            np.frombuffer(echo.clean(mic_pcm[i : i + FRAME].tobytes(), 100.0 + i / RATE), dtype=np.int16)
            for i in range(0, len(mic_pcm) - FRAME + 1, FRAME)
        ]
    ).astype(np.float64)

    def level(x: np.ndarray) -> float:
        return float(20 * np.log10(rms(x) + 1e-9))

    echo_only = slice(3 * RATE, 6 * RATE)  # converged, nobody else speaking
    assert level(mic[echo_only]) - level(cleaned[echo_only]) > 25  # the echo is gone
    spoken = slice(at, at + len(voice))
    assert level(cleaned[spoken]) > level(voice.astype(np.float64)) - 6  # the person is not


def test_echo_cancel_without_the_package_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pywebrtc_audio" else real(name))
    with pytest.raises(ConfigError) as error:
        parse_config({"audio": {"echo_cancel": True}}, {}, credentials=False)
    assert "audio.echo_cancel" in str(error.value) and "pywebrtc-audio" in str(error.value)
