"""espeak-ng speaking replies in the daemon: each process's exit is awaited and read, so the
journal has no "Unknown child process pid N" warnings, even when the service manager started
the daemon with SIGCHLD ignored (then the kernel reaps children before asyncio can)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

from daemon import Daemon, base_sections
from fake_openai import FakeOpenAI
from support import Broker, MqttRecorder, SpeakerRecorder


def test_espeak_replies_leave_no_unknown_child_warning(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    speaker: SpeakerRecorder,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["tts"] = {"engine": "espeak", "voice": "en-us"}
    # The daemon inherits an ignored SIGCHLD (as from some supervisors and shells).
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    finally:
        signal.signal(signal.SIGCHLD, previous)
    for n in range(2):  # each sentence is one espeak-ng process
        mqtt.publish(f"{root}/say", json.dumps({"text": f"Reply number {n}. It has two sentences.", "id": f"s{n}"}))
        spoke = mqtt.wait_for(
            f"{root}/state",
            predicate=lambda m, n=n: m.text == "speaking" and len(mqtt.messages(f"{root}/state", _speaking)) > n,
            timeout=20,
        )
        mqtt.wait_for(f"{root}/state", predicate=lambda m, t=spoke.time: m.text == "idle" and m.time > t, timeout=20)
    speaker.wait_for_sound(threshold=1000, timeout=5)  # it did speak
    assert daemon.stop() == 0
    log = daemon.log()
    assert "espeak" in log
    assert "Unknown child process" not in log, log


def _speaking(message: object) -> bool:
    return getattr(message, "text", None) == "speaking"
