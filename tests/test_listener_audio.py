"""When the listener needs microphone frames at all, and when only the wake word hears them:
the daemon stops the stream for the first and wakes up half as often for the second."""

from __future__ import annotations

import pytest
from listener_host import ListenerHost

from assistant.audio.listener import Listener
from assistant.audio.noise import WARMUP_S
from assistant.config import parse_config
from assistant.daemon.state import Event

SILENCE = bytes(960)  # one 30 ms frame


def listener(mode: str, warm: bool = True) -> tuple[Listener, ListenerHost, list[float]]:
    """A listener in `mode`; `warm`: it has heard the room long enough to know its noise floor."""
    config = parse_config({"wake": {"mode": mode}, "openai": {"base_url": "http://127.0.0.1:9/v1"}}, {})
    host, clock = ListenerHost(mode), [100.0]
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
