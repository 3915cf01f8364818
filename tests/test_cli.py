"""The command line as a new user meets it, against the real broker, audio and local API."""

from __future__ import annotations

import grp
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from daemon import ENTITIES, base_sections, daemon_env, no_microphone_alsa, run_cli, write_config
from fake_openai import ChatReply, FakeOpenAI
from real_ha import BRIDGE_TOPIC, HomeAssistant
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


def test_version_and_help_load_nothing_heavy() -> None:
    """`--version` and `--help` answer without the openai SDK, pydantic or PortAudio (about 1 s on a Pi)."""
    probe = (
        "import sys\n"
        "from assistant.cli import main\n"
        "for argv in (['--version'], ['--help'], ['voices', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('openai', 'pydantic', 'sounddevice', 'numpy', 'jinja2') if m in sys.modules)\n"
        "print('loaded:', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stderr


def test_devices_lists_the_virtual_microphone(pulse: PulseAudio) -> None:
    result = run_cli(["devices"], daemon_env(pulse.env))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^ +\d+ pulse, ALSA \([1-9]\d* in", result.stdout, re.MULTILINE), result.stdout
    # the default input (marked > or *) is ALSA's default, which Debian routes to PulseAudio's vmic
    assert re.search(r"^[>*] +\d+ default, ALSA \([1-9]\d* in", result.stdout, re.MULTILINE), result.stdout


def test_check_reports_every_part(tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio) -> None:
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake)
    result = run_cli(["check", "--config", str(config)], daemon_env(pulse.env, OPENAI_API_KEY="test-key"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ("config: ok", "audio input: ok", "audio output: ok", "mqtt: ok", "stt: ok", "agent: ok", "tts: ok"):
        assert line in out
    assert "exposed light.kitchen" in out
    assert "hidden  lock.front_door" in out
    assert "test-key" not in out + result.stderr


def test_check_says_when_there_is_no_microphone(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    """A Pi with a speaker and no microphone: a failure when the wake mode needs one, a note when not."""
    env = daemon_env(pulse.env, OPENAI_API_KEY="test-key", **no_microphone_alsa(tmp_path))
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake)
    result = run_cli(["check", "--config", str(config)], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "audio input: FAILED: no input device" in result.stdout
    assert "audio output: ok" in result.stdout
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake, wake={"mode": "mqtt"})
    result = run_cli(["check", "--config", str(config)], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audio input: none (no input device" in result.stdout
    assert "not needed, wake.mode is mqtt" in result.stdout


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
    assert "light.kitchen on" not in second["messages"][0]["content"]  # states are read with get_state


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


def test_listen_from_a_file_that_starts_with_speech_sends_all_of_it(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio, speech: SpeechFactory
) -> None:
    # No silence before the first word: the noise floor, which judges nothing in its first
    # half second, must not cost the command its beginning.
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake, tts={"engine": "none"})
    fake.transcript = "what time is it"
    fake.script = [ChatReply(text="Noon.")]
    wav = speech("what time is it", pad_before=0.0)
    result = run_cli(["listen", "--config", str(config), "--file", str(wav)], daemon_env(pulse.env, OPENAI_API_KEY="k"))
    assert result.returncode == 0, result.stderr
    said, _rate = read_wav(wav)
    uploaded, _rate = read_wav_bytes(fake.of("audio/transcriptions")[-1].files["file"][1], tmp_path)
    score, lag = correlate(uploaded, said)
    assert score > 0.9 and lag >= 0, (score, lag)  # the upload holds the file's speech from its first sample


def read_wav_bytes(data: bytes, directory: Path) -> tuple[Any, int]:
    path = directory / "upload.wav"
    path.write_bytes(data)
    return read_wav(path)


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
    assert f"permissions: FAILED: {config} holds secrets (openai.api_key) and is readable by everyone" in result.stdout
    assert "credential" in result.stdout and "mqtt_password is readable by others" in result.stdout
    config.chmod(0o600)
    (credentials / "mqtt_password").chmod(0o600)
    result = run_cli(["check", "--config", str(config)], env)
    assert "permissions:" not in result.stdout
    assert result.returncode == 0, result.stdout


def bridge_config(
    tmp_path: Path, broker_port: int, fake: FakeOpenAI, ha: dict[str, Any] | None = None, **sections: dict[str, Any]
) -> tuple[Path, str]:
    """A house whose garden lights are not MQTT-native: their state comes from statestream,
    commands go through the service bridge."""
    site = f"t{uuid.uuid4().hex[:8]}"
    stream = f"ss{site}"
    bridge = {"statestream_topic": stream, "service_topic": "assistant/service", "discovery_prefix": f"dp{site}"}
    sections["homeassistant"] = bridge | (ha or {})
    config, _ns = config_for(tmp_path, broker_port, fake, device={"site_id": site}, **sections)
    return config, stream


def test_ask_through_the_bridge_reports_its_answer(
    tmp_path: Path, mqtt: MqttRecorder, fake: FakeOpenAI, pulse: PulseAudio, home_assistant: HomeAssistant
) -> None:
    config, stream = bridge_config(tmp_path, home_assistant.broker.port, fake)
    home_assistant.call("light", "turn_off", {"entity_id": "light.garden"})
    home_assistant.wait_state("light.garden", lambda s: s is not None and s["state"] == "off")
    mqtt.publish(f"{stream}/light/garden/state", "off", retain=True)
    mqtt.publish(f"{stream}/light/garden/friendly_name", '"Garden lights"', retain=True)
    # the daemon hears of a shed light that Home Assistant does not have (a stale statestream topic)
    mqtt.publish(f"{stream}/light/shed/state", "off", retain=True)
    # the house snapshot is retained, as a running daemon's request leaves it (each test's `mqtt`
    # wipes the broker's retained messages, Home Assistant's included)
    asked = time.monotonic()
    mqtt.publish(f"{BRIDGE_TOPIC}/house/get", "{}")
    mqtt.wait_for(f"{BRIDGE_TOPIC}/house", predicate=lambda m: m.time >= asked, timeout=30)
    env = daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    fake.script = [
        ChatReply(tool_calls=[("turn_on", {"entity_id": "light.garden"})]),
        ChatReply(text="The garden lights are on."),
    ]
    result = run_cli(["ask", "--config", str(config), "turn on the garden lights"], env)
    assert result.returncode == 0, result.stderr
    reply, action = result.stdout.splitlines()[:2]
    assert reply == "The garden lights are on."
    assert json.loads(action.removeprefix("  action: "))["ok"] is True, result.stdout
    garden = home_assistant.state("light.garden")
    assert garden is not None and garden["state"] == "on"
    tool_result = fake.of("chat/completions")[1].json["messages"][-1]  # type: ignore[index]
    assert tool_result["role"] == "tool" and '"result": "done"' in tool_result["content"]
    # Home Assistant has no such entity: its house snapshot does not list it, so the stale statestream
    # topic offers nothing (the daemon says so without asking the bridge)
    fake.script = [
        ChatReply(tool_calls=[("turn_on", {"entity_id": "light.shed"})]),
        ChatReply(text="I could not reach the shed light."),
    ]
    asked = time.monotonic()
    result = run_cli(["ask", "--config", str(config), "turn on the shed light"], env)
    assert result.returncode == 0, result.stderr
    action = json.loads(result.stdout.splitlines()[1].removeprefix("  action: "))
    assert action["ok"] is False and action["error"] == "no exposed entity 'light.shed'"
    assert [m for m in mqtt.messages(BRIDGE_TOPIC) if m.time >= asked] == []
    assert home_assistant.state("light.shed") is None


def test_listen_through_the_bridge_reports_its_answer(
    tmp_path: Path,
    mqtt: MqttRecorder,
    fake: FakeOpenAI,
    pulse: PulseAudio,
    speech: SpeechFactory,
    home_assistant: HomeAssistant,
) -> None:
    config, stream = bridge_config(tmp_path, home_assistant.broker.port, fake, tts={"engine": "none"})
    home_assistant.call("light", "turn_on", {"entity_id": "light.garden"})
    home_assistant.wait_state("light.garden", lambda s: s is not None and s["state"] == "on")
    mqtt.publish(f"{stream}/light/garden/state", "on", retain=True)
    fake.transcript = "switch off the garden lights"
    fake.script = [ChatReply(tool_calls=[("turn_off", {"entity_id": "light.garden"})]), ChatReply(text="Done.")]
    result = run_cli(
        ["listen", "--config", str(config), "--file", str(speech("switch off the garden lights"))],
        daemon_env(pulse.env, OPENAI_API_KEY="test-key"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["heard: switch off the garden lights", "Done."]
    assert json.loads(result.stdout.splitlines()[2].removeprefix("  action: "))["ok"] is True, result.stdout
    garden = home_assistant.state("light.garden")
    assert garden is not None and garden["state"] == "off"


def test_ask_reports_a_bridge_that_does_not_answer(
    tmp_path: Path, mqtt_broker: Broker, mqtt: MqttRecorder, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    # a topic no Home Assistant listens on (the session's real one answers on assistant/service)
    config, stream = bridge_config(
        tmp_path, mqtt_broker.port, fake, {"bridge_timeout_s": 1, "service_topic": "nobody/service"}
    )
    mqtt.publish(f"{stream}/light/garden/state", "off", retain=True)
    fake.script = [
        ChatReply(tool_calls=[("turn_on", {"entity_id": "light.garden"})]),
        ChatReply(text="Home Assistant did not answer."),
    ]
    result = run_cli(
        ["ask", "--config", str(config), "turn on the garden lights"], daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    )
    assert result.returncode == 0, result.stderr
    action = json.loads(result.stdout.splitlines()[1].removeprefix("  action: "))
    # Home Assistant may still act on it: unconfirmed, not failed (see "What a command's outcome means")
    assert (action["ok"], action["status"]) == (None, "unconfirmed")
    assert action["error"] == "unconfirmed: no answer from Home Assistant on nobody/service/result within 1 s"
    assert mqtt.wait_for("nobody/service").json()["entity_id"] == "light.garden"


def test_ask_reads_states_of_entities_learned_from_discovery(
    tmp_path: Path, mqtt_broker: Broker, mqtt: MqttRecorder, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    """The discovery config is retained, and so is the state on the topic it names: the turn
    starts only once both have been read."""
    config, _stream = bridge_config(tmp_path, mqtt_broker.port, fake)
    prefix = config.read_text().split('discovery_prefix = "')[1].split('"')[0]
    light = {"name": "Porch light", "uniq_id": "porch1", "cmd_t": f"{prefix}/porch/set", "stat_t": f"{prefix}/porch"}
    mqtt.publish(f"{prefix}/light/porch1/config", json.dumps(light), retain=True)
    mqtt.publish(f"{prefix}/porch", "ON", retain=True)
    fake.script = [
        ChatReply(tool_calls=[("get_state", {"entity_id": "light.porch_light"})]),
        ChatReply(text="The porch light is on."),
    ]
    result = run_cli(
        ["ask", "--config", str(config), "is the porch light on"], daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    )
    assert result.returncode == 0, result.stderr
    system = fake.of("chat/completions")[0].json["messages"][0]["content"]  # type: ignore[index]
    assert "light.porch_light" in system
    state = fake.of("chat/completions")[1].json["messages"][-1]["content"]  # type: ignore[index]
    assert json.loads(state)["state"] == "on", state


def test_check_flags_a_group_readable_config_holding_a_secret(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake, mqtt={"username": "u", "password": "Secret-9x7"})
    config.chmod(0o640)
    group = grp.getgrgid(config.stat().st_gid).gr_name
    env = daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    result = run_cli(["check", "--config", str(config)], env)
    assert result.returncode == 1, result.stdout
    assert (
        f"permissions: FAILED: {config} holds secrets (mqtt.password) and is readable by its group ({group}): "
        "move them to credential files (LoadCredential, see README), "
        f"or chmod 600 {config} with the file owned by the user the daemon runs as"
    ) in result.stdout
    assert "Secret-9x7" not in result.stdout + result.stderr


def test_check_does_not_flag_a_shared_config_without_secrets(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    """The installed layout: root:assistant 0640, the key in a credential file (or, here, the environment)."""
    config, _ns = config_for(tmp_path, mqtt_broker.port, fake)
    config.chmod(0o644)
    env = daemon_env(pulse.env, OPENAI_API_KEY="test-key", ASSISTANT_OPENAI__API_KEY="test-key")
    result = run_cli(["check", "--config", str(config)], env)
    assert "permissions:" not in result.stdout
    assert result.returncode == 0, result.stdout
