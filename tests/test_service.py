"""Running as a service: sd_notify watchdog, SIGHUP reload, SIGTERM finishing the reply, the unit file."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from daemon import ROOT, Daemon, base_sections, no_microphone_alsa
from fake_openai import FakeOpenAI
from support import Broker, MqttRecorder, SpeakerRecorder

StartDaemon = Callable[..., tuple[Daemon, str]]


def receive(sock: socket.socket, until: float) -> list[str]:
    messages = []
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < until:
            sock.settimeout(max(0.01, until - time.monotonic()))
            messages.append(sock.recv(4096).decode())
    return messages


def test_without_a_microphone_the_watchdog_is_petted_and_requests_are_served(
    tmp_path: Path, fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    """A Pi with a speaker and no microphone, in wake.mode mqtt: the watchdog follows the daemon's
    own loop (it used to follow microphone frames, so systemd restarted the service in a loop),
    the missing microphone is reported once on event/error, and ask and say are served."""
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["wake"] = {"mode": "mqtt"}
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        _daemon, root = start_daemon(
            sections,
            OPENAI_API_KEY="test-key",
            NOTIFY_SOCKET=str(path),
            WATCHDOG_USEC="1000000",
            **no_microphone_alsa(tmp_path),
        )
        error = mqtt.wait_for(f"{root}/event/error", timeout=15).json()
        assert error["code"] == "audio_error" and "microphone unavailable" in error["message"], error
        messages = receive(notify, time.monotonic() + 2.5)
    assert messages.count("WATCHDOG=1") >= 3, messages  # every 0.5 s, microphone or not
    since = time.monotonic()
    mqtt.publish(f"{root}/ask", json.dumps({"text": "hello", "id": "a1"}))
    assert mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "a1").json()["text"] == "OK."
    mqtt.publish(f"{root}/say", json.dumps({"text": "Still here.", "id": "s1"}))
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking" and m.time > since, timeout=15)
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > since, timeout=15)
    errors = [m.json() for m in mqtt.messages(f"{root}/event/error")]
    assert [e["code"] for e in errors] == ["audio_error"], errors  # once per outage, not per retry


def test_sigterm_lets_the_current_reply_finish(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, speaker: SpeakerRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY="test-key")
    mqtt.publish(
        f"{root}/say", json.dumps({"text": "This sentence is spoken to the very end, even when stopping.", "id": "s"})
    )
    speaker.wait_for_sound(threshold=1000, timeout=15)
    stop_at = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=20) == 0
    quiet_at = speaker.wait_for_silence(threshold=1000, silence=0.3, timeout=10, since=stop_at)
    assert quiet_at - 0.3 - stop_at > 1.5, "the reply was cut off"
    assert "finishing the current turn" in daemon.log()
    assert mqtt.wait_for(f"{root}/status", predicate=lambda m: m.text == "offline", timeout=5)


def test_sighup_reloads_a_good_config_and_refuses_a_bad_one(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    config = Path(daemon.process.args[-1])  # type: ignore[index]
    discovery = f"homeassistant/device/assistant_{site}/config"
    assert mqtt.wait_for(discovery).json()["device"]["name"] == "Testy"

    config.write_text(config.read_text().replace('name = "Testy"', 'name = "Kitchen helper"'))
    mqtt.clear()
    daemon.process.send_signal(signal.SIGHUP)
    assert mqtt.wait_for(discovery, timeout=15).json()["device"]["name"] == "Kitchen helper"
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle", timeout=15)

    good = config.read_text()
    config.write_text(good.replace("silence_ms = 500", "silence_ms = 5"))
    daemon.process.send_signal(signal.SIGHUP)
    error = mqtt.wait_for(f"{root}/event/error", timeout=10).json()
    assert error["code"] == "config" and "vad.silence_ms" in error["message"]
    mqtt.publish(f"{root}/ask", json.dumps({"text": "still there?", "id": "h1"}))
    assert mqtt.wait_for(f"{root}/event/reply", timeout=15).json()["text"] == "OK."
    assert daemon.process.poll() is None
    config.write_text(good)


def test_unit_file_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd/assistant.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "LoadCredential=" in unit
    # verify needs the ExecStart binary to exist; everything else is checked as shipped
    (tmp_path / "assistant.service").write_text(unit.replace("/opt/assistant/venv/bin/assistant", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "assistant.service")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_sigterm_while_waiting_for_the_broker_stops_at_once(tmp_path: Path, fake: FakeOpenAI) -> None:
    from daemon import daemon_env, write_config
    from support import free_port

    sections = base_sections(free_port(), fake.url)  # nothing listens there
    config = write_config(tmp_path / "assistant.toml", sections)
    daemon = Daemon(config, daemon_env({}, OPENAI_API_KEY="test-key"), tmp_path / "d.log")
    deadline = time.monotonic() + 15
    while "retrying" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "cannot reach the broker" in daemon.log()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=5) == 0
