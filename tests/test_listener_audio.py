"""When the listener needs microphone frames at all, and when only the wake word hears them:
the daemon stops the stream for the first and wakes up half as often for the second."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from assistant.audio.listener import Listener
from assistant.audio.noise import WARMUP_S
from assistant.audio.vad import Utterance
from assistant.config import parse_config
from assistant.daemon.state import Event, StateMachine

SILENCE = bytes(960)  # one 30 ms frame


class Host:
    """The daemon's side, with the real state machine."""

    def __init__(self, mode: str) -> None:
        self.machine = StateMachine(mode, muted=False)
        self.mic_open_at = 0.0

    @property
    def muted(self) -> bool:
        return self.machine.muted

    def wake_event(self, data: dict[str, Any]) -> None:
        pass

    def publish_claim(self, claim: dict[str, Any]) -> None:
        pass

    def submit_utterance(self, utterance: Utterance, request_id: str, early: asyncio.Task[str] | None) -> None:
        pass

    def request_audio(self, pcm: bytes, first: bool) -> None:
        pass

    def barge_in(self) -> None:
        pass

    def transcribe(self, pcm: bytes, sample_rate: int) -> Coroutine[Any, Any, str]:
        raise AssertionError("not in these tests")

    def play_sound(self, name: str) -> None:
        pass

    def complete_command(self, text: str) -> bool:
        return False


def listener(mode: str, warm: bool = True) -> tuple[Listener, Host, list[float]]:
    """A listener in `mode`; `warm`: it has heard the room long enough to know its noise floor."""
    config = parse_config({"wake": {"mode": mode}, "openai": {"base_url": "http://127.0.0.1:9/v1"}}, {})
    host, clock = Host(mode), [100.0]
    hear = Listener(config, host, clock=lambda: clock[0])
    while warm and not hear.segmenter.noise.ready:
        hear.feed(SILENCE)
    return hear, host, clock


def test_mqtt_mode_reads_the_room_until_it_knows_its_noise_floor() -> None:
    """Else a window's first words would be judged with no floor, i.e. taken for the room."""
    hear, _host, _clock = listener("mqtt", warm=False)
    frames = 0
    while hear.needs_audio():
        hear.feed(SILENCE)
        frames += 1
    assert frames * 30 == pytest.approx(WARMUP_S * 1000, abs=30)


def test_mqtt_mode_needs_audio_only_while_a_window_is_open() -> None:
    hear, host, clock = listener("mqtt")
    opened: list[bool] = []
    hear.on_open = lambda: opened.append(hear.needs_audio())
    assert not hear.needs_audio()
    hear.open("mqtt", "r1")
    assert opened == [True]  # told once the window is open: the microphone starts then
    clock[0] += hear.wake_config.listen_timeout_s + 0.1
    assert hear.needs_audio()  # the window's end is noticed at the next frame
    hear.feed(SILENCE)
    assert (host.machine.state, hear.needs_audio()) == ("idle", False)
    hear.open("followup", "r2", timeout_s=5.0)
    assert hear.needs_audio()


@pytest.mark.parametrize("mode", ["wakeword", "vad", "mqtt"])
def test_muted_needs_no_audio_in_any_mode(mode: str) -> None:
    hear, host, _clock = listener(mode)
    assert hear.needs_audio() is (mode != "mqtt")
    host.machine.handle(Event.MUTE)
    assert not hear.needs_audio()
    host.machine.handle(Event.UNMUTE)
    assert hear.needs_audio() is (mode != "mqtt")


def test_only_the_wake_word_hears_at_rest_and_while_busy() -> None:
    hear, host, _clock = listener("wakeword")
    assert hear.wake_word_only()
    hear.open("mqtt", "r1")
    assert not hear.wake_word_only()  # speech is endpointed: every frame counts
    hear.close()
    assert hear.wake_word_only()
    host.machine.handle(Event.START)  # thinking: only a barge-in can be heard
    assert hear.wake_word_only() and hear.needs_audio()
    vad, _host, _clock = listener("vad")
    assert not vad.wake_word_only()
