"""The command line as a new user meets it, against the real broker, audio and local API."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from daemon import ENTITIES, base_sections, daemon_env, run_cli, write_config
from fake_openai import ChatReply, FakeOpenAI
from support import Broker, MqttRecorder, PulseAudio, SpeakerRecorder, SpeechFactory, correlate, free_port, read_wav

from assistant import __version__


def config_for(tmp_path: Path, broker_port: int, fake: FakeOpenAI, **changes: dict[str, Any]) -> tuple[Path, str]:
    sections = base_sections(broker_port, fake.url)
    for section, values in changes.items():
        sections[section] = {**sections.get(section, {}), **values}
    ns = sections["device"]["site_id"]
    return write_config(tmp_path / "assistant.toml", sections, ENTITIES.format(ns=ns)), ns


def test_version() -> None:
    result = run_cli(["--version"], {})
    assert result.returncode == 0
    assert result.stdout.strip() == f"assistant {__version__}"


def test_devices_lists_the_virtual_microphone(pulse: PulseAudio) -> None:
    result = run_cli(["devices"], daemon_env(pulse.env))
    assert result.returncode == 0, result.stderr
    assert "pulse" in result.stdout or "default" in result.stdout


def test_check_reports_every_part(tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio) -> None:
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake)
    result = run_cli(["check", "--config", str(config)], daemon_env(pulse.env, OPENAI_API_KEY="test-key"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ("config: ok", "audio: ok", "mqtt: ok", "stt: ok", "agent: ok", "tts: ok"):
        assert line in out
    assert "exposed light.kitchen" in out
    assert "hidden  lock.front_door" in out
    assert "test-key" not in out + result.stderr


def test_check_fails_on_wrong_key_and_dead_broker(tmp_path: Path, fake: FakeOpenAI, pulse: PulseAudio) -> None:
    config, _ns = config_for(tmp_path, free_port(), fake)  # nothing listens on that port
    result = run_cli(["check", "--config", str(config)], daemon_env(pulse.env, OPENAI_API_KEY="wrong-key"))
    assert result.returncode == 1
    assert "mqtt: FAILED" in result.stdout
    assert "agent: FAILED" in result.stdout and "401" in result.stdout
    assert "wrong-key" not in result.stdout + result.stderr


def test_ask_acts_for_real(
    tmp_path: Path, mqtt_broker: Broker, mqtt: MqttRecorder, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    config, ns = config_for(tmp_path, mqtt_broker.port, fake)
    fake.script = [
        ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen", "brightness_pct": 40})]),
        ChatReply(text="Kitchen light at 40 percent."),
    ]
    result = run_cli(
        ["ask", "--config", str(config), "dim", "the", "kitchen", "light"],
        daemon_env(pulse.env, OPENAI_API_KEY="test-key"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Kitchen light at 40 percent.")
    assert mqtt.wait_for(f"{ns}/kitchen/light/set").text == "ON"
    assert mqtt.wait_for(f"{ns}/kitchen/light/brightness/set").text == "102"
    body = fake.of("chat/completions")[0].json
    assert body is not None and body["messages"][-1] == {"role": "user", "content": "dim the kitchen light"}


def test_ask_reads_retained_state(
    tmp_path: Path, mqtt_broker: Broker, mqtt: MqttRecorder, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    config, ns = config_for(tmp_path, mqtt_broker.port, fake)
    mqtt.publish(f"{ns}/kitchen/light/state", "ON", retain=True)
    fake.script = [ChatReply(tool_calls=[("get_state", {"entity_id": "light.kitchen"})]), ChatReply(text="It is on.")]
    result = run_cli(
        ["ask", "--config", str(config), "is the kitchen light on"], daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    )
    assert result.returncode == 0, result.stderr
    second = fake.of("chat/completions")[1].json
    assert second is not None
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and '"state": "on"' in tool_message["content"]
    assert "Current states: light.kitchen on" in second["messages"][0]["content"]  # a small house: states listed


def test_say_with_espeak_reaches_the_speaker(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio, speaker: SpeakerRecorder
) -> None:
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake, tts={"engine": "espeak", "voice": "en-us"})
    text = "The washing machine has finished."
    result = run_cli(["say", "--config", str(config), text], daemon_env(pulse.env, OPENAI_API_KEY="test-key"))
    assert result.returncode == 0, result.stderr
    speaker.wait_for_silence(silence=0.3, timeout=10)
    reference_path = tmp_path / "ref.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(tmp_path / "raw.wav"), text], check=True)
    subprocess.run(["sox", str(tmp_path / "raw.wav"), "-r", "16000", str(reference_path)], check=True)
    reference, _rate = read_wav(reference_path)
    score, _lag = correlate(speaker.samples(), reference)
    assert score > 0.5, score
    assert fake.requests == []  # espeak is local


def test_listen_from_a_wav_file(
    tmp_path: Path, mqtt_broker: Broker, mqtt: MqttRecorder, fake: FakeOpenAI, pulse: PulseAudio, speech: SpeechFactory
) -> None:
    config, ns = config_for(tmp_path, mqtt_broker.port, fake, tts={"engine": "none"})
    fake.transcript = "switch off the kitchen light"
    fake.script = [ChatReply(tool_calls=[("turn_off", {"entity_id": "light.kitchen"})]), ChatReply(text="Off it goes.")]
    result = run_cli(
        ["listen", "--config", str(config), "--file", str(speech("switch off the kitchen light"))],
        daemon_env(pulse.env, OPENAI_API_KEY="test-key"),
    )
    assert result.returncode == 0, result.stderr
    assert "heard: switch off the kitchen light" in result.stdout
    assert "Off it goes." in result.stdout
    assert mqtt.wait_for(f"{ns}/kitchen/light/set").text == "OFF"


def test_listen_rejects_a_file_that_is_not_wav(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    result = run_cli(
        ["listen", "--config", str(config), "--file", str(junk)], daemon_env(pulse.env, OPENAI_API_KEY="x")
    )
    assert result.returncode == 1
    assert "not a WAV file" in result.stderr


def test_check_flags_secrets_readable_by_others(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake, openai={"api_key": "test-key"})
    config.chmod(0o644)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt_password").write_text("pw")
    (credentials / "mqtt_password").chmod(0o644)
    env = daemon_env(pulse.env, CREDENTIALS_DIRECTORY=str(credentials))
    result = run_cli(["check", "--config", str(config)], env)
    assert result.returncode == 1
    assert f"permissions: FAILED: {config} holds secrets and is readable by everyone" in result.stdout
    assert "credential" in result.stdout and "mqtt_password is readable by others" in result.stdout
    config.chmod(0o600)
    (credentials / "mqtt_password").chmod(0o600)
    result = run_cli(["check", "--config", str(config)], env)
    assert "permissions:" not in result.stdout
    assert result.returncode == 0, result.stdout
