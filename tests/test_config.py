"""Configuration: every problem named by its key, overrides from the environment, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from assistant.agent.providers import resolve
from assistant.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = {"OPENAI_API_KEY": "sk-test"}


def problems(data: dict[str, object], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, KEY_ENV if env is None else env)
    return caught.value.problems


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "config/assistant.example.toml", KEY_ENV)
    assert config.homeassistant.entities[0].entity_id == "light.kitchen"
    assert config.homeassistant.entities[0].mqtt["command_topic"] == "home/kitchen/light/set"
    assert config.wake.mode == "wakeword"


def test_defaults_need_only_a_key() -> None:
    config = parse_config({}, KEY_ENV)
    assert config.agent.chat_model == "gpt-5.4-mini"
    assert config.stt.model == "gpt-transcribe"
    assert config.tts.engine == "auto"  # Piper once a voice is installed, else espeak-ng
    assert config.topic_root.startswith("assistant/")


def test_each_bad_key_is_named() -> None:
    lines = problems(
        {
            "vad": {"silence_ms": 50, "aggressiveness": 7},
            "audio": {"frame_ms": 25},
            "mqtt": {"port": "many", "bogus": 1},
            "homeassistant": {"entities": [{"entity_id": "Kitchen Light"}]},
        }
    )
    text = "\n".join(lines)
    assert "vad.silence_ms: Input should be greater than or equal to 100" in text
    assert "vad.aggressiveness: Input should be less than or equal to 3" in text
    assert "audio.frame_ms:" in text
    assert "mqtt.port:" in text
    assert "mqtt.bogus: unknown setting" in text
    assert "homeassistant.entities[0].entity_id:" in text
    assert len(lines) == 6


def test_missing_api_key_is_reported() -> None:
    assert problems({}, env={}) == [
        "openai.api_key: missing for stt (set OPENAI_API_KEY, or base_url for a local server)",
        "openai.api_key: missing for agent (set OPENAI_API_KEY, or base_url for a local server)",
    ]


def test_local_server_needs_no_key() -> None:
    config = parse_config({"openai": {"base_url": "http://127.0.0.1:8000/v1"}}, {})
    assert resolve(config, "stt", {}).api_key is None


def test_azure_needs_endpoint_and_credentials() -> None:
    lines = problems({"openai": {"provider": "azure"}}, env={})
    assert "openai.azure_endpoint: required by stt (provider 'azure')" in lines
    assert any(line.startswith("openai.api_key: missing for agent (set AZURE_OPENAI_API_KEY") for line in lines)


def test_openai_tts_needs_a_model() -> None:
    assert problems({"tts": {"engine": "openai"}}) == [
        "tts: model: required when engine is 'openai' (e.g. \"gpt-4o-mini-tts\")"
    ]


def test_duplicate_entity() -> None:
    entity = {"entity_id": "light.kitchen", "command_topic": "a"}
    assert problems({"homeassistant": {"entities": [entity, entity]}}) == [
        "homeassistant.entities: entity_id 'light.kitchen' declared twice"
    ]


def test_environment_overrides() -> None:
    env = {
        **KEY_ENV,
        "ASSISTANT_MQTT__PORT": "1999",
        "ASSISTANT_MQTT__TLS__ENABLED": "true",
        "ASSISTANT_DEVICE__NAME": "Kitchen helper",
        "ASSISTANT_HOMEASSISTANT__EXPOSE": '["light.*"]',
        "ASSISTANT_CONFIG": "/ignored/here",
    }
    config = parse_config({"mqtt": {"port": 1883}}, env)
    assert config.mqtt.port == 1999
    assert config.mqtt.tls.enabled is True
    assert config.device.name == "Kitchen helper"
    assert config.homeassistant.expose == ["light.*"]


def test_bad_override_names_the_key() -> None:
    assert problems({}, {**KEY_ENV, "ASSISTANT_VAD__SILENCE_MS": "10"}) == [
        "vad.silence_ms: Input should be greater than or equal to 100"
    ]


def test_secrets_from_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "azure_openai_api_key").write_text("azure-secret\n")
    (tmp_path / "mqtt_password").write_text("mqtt-secret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    config = parse_config(
        {"openai": {"provider": "azure", "azure_endpoint": "https://x"}, "mqtt": {"username": "u"}}, env
    )
    api = resolve(config, "agent", env)
    assert api.api_key == "azure-secret"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "mqtt-secret"
    assert "azure-secret" not in repr(api)
    assert "mqtt-secret" not in repr(config)


def test_stage_overrides_inherit_the_rest() -> None:
    config = parse_config(
        {
            "openai": {"provider": "azure", "azure_endpoint": "https://res.openai.azure.com", "api_key": "k"},
            "stt": {"provider": "openai", "base_url": "http://whisper.lan/v1", "api_key": "local"},
            "agent": {"deployment": "chat-prod"},
        },
        {},
    )
    stt, agent = resolve(config, "stt", {}), resolve(config, "agent", {})
    assert (stt.provider, stt.base_url, stt.api_key) == ("openai", "http://whisper.lan/v1", "local")
    assert (agent.provider, agent.deployment, agent.api_key) == ("azure", "chat-prod", "k")
    assert agent.azure_endpoint == "https://res.openai.azure.com"


def test_cli_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[vad]\nsilence_ms = 10\n[mqtt]\nport = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"OPENAI_API_KEY": "x", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "vad.silence_ms: Input should be greater than or equal to 100",
        "mqtt.port: Input should be greater than or equal to 1",
    ]


def test_cli_reports_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[vad\n")
    for target in (path, tmp_path / "absent.toml"):
        result = subprocess.run(
            [sys.executable, "-m", "assistant", "run", "--config", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.startswith(f"config: {target}")


def test_unknown_entity_keys_are_named_with_a_suggestion() -> None:
    lines = problems(
        {
            "homeassistant": {
                "entities": [
                    {"entity_id": "light.kitchen", "comand_topic": "k/set", "cmd_t": "k/set", "bogus": "red"},
                    {"entity_id": "switch.fan", "command_topic": "f/set", "payload_onn": "1"},
                ]
            }
        }
    )
    assert lines == [
        "homeassistant.entities[0].comand_topic: unknown key (did you mean command_topic?)",
        "homeassistant.entities[0].cmd_t: unknown key (did you mean command_topic?)",
        "homeassistant.entities[0].bogus: unknown key",
        "homeassistant.entities[1].payload_onn: unknown key (did you mean payload_on?)",
    ]


def test_home_assistant_keys_without_abbreviation_are_accepted() -> None:
    entity = {
        "entity_id": "light.hall",
        "name": "Hall",
        "aliases": ["corridor"],
        "area": "Hall",
        "unique_id": "hall-1",
        "schema": "json",
        "brightness": True,
        "brightness_scale": 254,
        "supported_color_modes": ["color_temp"],
        "command_topic": "z2m/hall/set",
        "state_topic": "z2m/hall",
        "qos": 1,
        "retain": False,
        "availability": [{"topic": "z2m/bridge/state"}],
        "device": {"identifiers": ["z2m_1"], "name": "Hall"},
    }
    climate = {"entity_id": "climate.living", "temperature_command_topic": "c/t", "precision": 0.5, "temp_step": 0.5}
    config = parse_config({"homeassistant": {"entities": [entity, climate]}}, KEY_ENV)
    assert config.homeassistant.entities[0].mqtt["schema"] == "json"


def test_hand_declared_entities_cannot_share_a_command_topic() -> None:
    entities = [
        {"entity_id": "light.kitchen", "command_topic": "k/set"},
        {"entity_id": "lock.front_door", "command_topic": "door/set"},
        {"entity_id": "switch.fan", "command_topic": "f/set"},
        {"entity_id": "light.evil", "command_topic": "door/set"},
        {"entity_id": "cover.blind", "command_topic": "b/set", "set_position_topic": "k/set"},
        {"entity_id": "light.desk", "command_topic": "d/set", "brightness_command_topic": "d/set"},
    ]
    assert problems({"homeassistant": {"entities": entities}}) == [
        "homeassistant.entities[3].command_topic: already used by lock.front_door (topic 'door/set')",
        "homeassistant.entities[4].set_position_topic: already used by light.kitchen (topic 'k/set')",
    ]


def test_a_command_topic_must_be_publishable() -> None:
    entities = [
        {"entity_id": "light.a", "command_topic": "lights/+/set"},
        {"entity_id": "light.b", "command_topic": ""},
        {"entity_id": "light.c", "command_topic": "ok", "brightness_command_topic": 5},
    ]
    assert problems({"homeassistant": {"entities": entities}}) == [
        "homeassistant.entities[0].command_topic: must be a topic to publish to: text, without + or #",
        "homeassistant.entities[1].command_topic: must be a topic to publish to: text, without + or #",
        "homeassistant.entities[2].brightness_command_topic: must be a topic to publish to: text, without + or #",
    ]


@pytest.mark.parametrize(
    ("entities", "expected"),
    [
        (
            '[[homeassistant.entities]]\nentity_id = "light.kitchen"\ncomand_topic = "k/set"\n',
            "homeassistant.entities[0].comand_topic: unknown key (did you mean command_topic?)",
        ),
        (
            '[[homeassistant.entities]]\nentity_id = "lock.front_door"\ncommand_topic = "door/set"\n'
            '[[homeassistant.entities]]\nentity_id = "light.evil"\ncommand_topic = "door/set"\n',
            "homeassistant.entities[1].command_topic: already used by lock.front_door (topic 'door/set')",
        ),
    ],
)
def test_cli_exits_2_on_entity_key_problems(tmp_path: Path, entities: str, expected: str) -> None:
    path = tmp_path / "entities.toml"
    path.write_text(entities)
    for command in ("check", "run"):
        result = subprocess.run(
            [sys.executable, "-m", "assistant", command, "--config", str(path)],
            capture_output=True,
            text=True,
            env={"OPENAI_API_KEY": "x", "PATH": "/usr/bin:/bin"},
            check=False,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [expected]


# --------------------------------------------------------------------------- secrets and typed overrides


@pytest.mark.parametrize("password", ["123456", "true", "1e5", '"quoted"', "'single'", "[1, 2]", "p#ss = word"])
def test_mqtt_password_from_the_environment_is_taken_verbatim(password: str) -> None:
    config = parse_config({"mqtt": {"username": "u"}}, {**KEY_ENV, "ASSISTANT_MQTT__PASSWORD": password})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == password


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("OPENAI_API_KEY", "sk-abc\n"),
        ("OPENAI_API_KEY", "  sk-abc \r\n"),
        ("OPENAI_API_KEY", "\ufeffsk-abc\n"),
        ("ASSISTANT_OPENAI__API_KEY", "sk-abc\n"),
    ],
)
def test_surrounding_whitespace_is_stripped_from_keys(name: str, raw: str) -> None:
    env = {name: raw}
    config = parse_config({}, env)
    assert resolve(config, "agent", env).api_key == "sk-abc"


def test_a_numeric_key_override_is_text() -> None:
    env = {"ASSISTANT_OPENAI__API_KEY": "123456", "ASSISTANT_AGENT__AZURE_AD_TOKEN": "1e5"}
    config = parse_config({}, env)
    assert resolve(config, "stt", env).api_key == "123456"
    assert resolve(config, "agent", env).azure_ad_token == "1e5"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("OPENAI_API_KEY", "sk-abc\ndef"),
        ("OPENAI_API_KEY", "sk-abc\tdef"),
        ("OPENAI_API_KEY", "sk-abc\u200bdef"),
        ("ASSISTANT_MQTT__PASSWORD", "pass\x00word"),
        ("ASSISTANT_OPENAI__API_KEY", "sk-abc\r\ndef"),
        ("ASSISTANT_STT__API_KEY", "sk-abc\x1bdef"),
    ],
)
def test_a_control_character_inside_a_secret_is_refused_by_name(name: str, raw: str) -> None:
    lines = problems({"mqtt": {"username": "u"}}, {**KEY_ENV, name: raw})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{name}: ")
    assert "line break or control character" in lines[0]
    assert "abc" not in lines[0] and "pass" not in lines[0] and "def" not in lines[0]


def test_azure_secrets_are_checked_too() -> None:
    data = {"openai": {"provider": "azure", "azure_endpoint": "https://x"}}
    assert problems(data, {"AZURE_OPENAI_API_KEY": "k\n1"})[0].startswith("AZURE_OPENAI_API_KEY: ")
    assert problems(data, {"AZURE_OPENAI_AD_TOKEN": "t\n1"})[0].startswith("AZURE_OPENAI_AD_TOKEN: ")
    env = {"AZURE_OPENAI_AD_TOKEN": "token\n"}
    assert resolve(parse_config(data, env), "stt", env).azure_ad_token == "token"


def test_a_credential_file_with_two_lines_is_refused(tmp_path: Path) -> None:
    (tmp_path / "openai_api_key").write_text("sk-first\nsk-second\n")
    lines = problems({}, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert lines == [
        f"credential {tmp_path / 'openai_api_key'}: the value has a line break or control character inside it "
        "(the value is not shown); keep only the secret, on one line"
    ]


def test_a_secret_in_the_file_is_stripped_and_checked() -> None:
    config = parse_config({"openai": {"api_key": " sk-file \n"}, "mqtt": {"password": "123"}}, {})
    assert resolve(config, "agent", {}).api_key == "sk-file"
    lines = problems({"openai": {"api_key": "sk-a\nb"}}, {})
    assert lines == [
        "openai.api_key: the value has a line break or control character inside it (the value is not shown); "
        "keep only the secret, on one line"
    ]


def test_an_empty_secret_counts_as_unset() -> None:
    config = parse_config({"mqtt": {"username": "u"}}, {**KEY_ENV, "ASSISTANT_MQTT__PASSWORD": "  \n"})
    assert config.mqtt.password is None
    assert problems({}, {"OPENAI_API_KEY": " \n"})[0].startswith("openai.api_key: missing for stt")


def test_text_settings_take_any_text_from_the_environment() -> None:
    env = {
        **KEY_ENV,
        "ASSISTANT_DEVICE__NAME": "123",
        "ASSISTANT_MQTT__USERNAME": "true",
        "ASSISTANT_MQTT__HOST": "10.0.0.2",
        "ASSISTANT_DEVICE__STATE_DIR": "1e5",
        "ASSISTANT_AGENT__INSTRUCTIONS": '"Be brief." [always]',
        "ASSISTANT_TTS__ENGINE": "none",
    }
    config = parse_config({}, env)
    assert config.device.name == "123"
    assert config.mqtt.username == "true"
    assert config.mqtt.host == "10.0.0.2"
    assert config.device.state_dir == Path("1e5")
    assert config.agent.instructions == '"Be brief." [always]'
    assert config.tts.engine == "none"


def test_typed_settings_keep_typed_parsing() -> None:
    env = {
        **KEY_ENV,
        "ASSISTANT_AUDIO__INPUT_DEVICE": "2",
        "ASSISTANT_AUDIO__OUTPUT_DEVICE": "USB Audio",
        "ASSISTANT_AUDIO__SAMPLE_RATE": "48000",
        "ASSISTANT_WAKE__MODEL": "hey_jarvis",
        "ASSISTANT_VAD__MAX_UTTERANCE_S": "1e1",
    }
    config = parse_config({}, env)
    assert config.audio.input_device == 2
    assert config.audio.output_device == "USB Audio"
    assert config.audio.sample_rate == 48000
    assert config.wake.model == ["hey_jarvis"]
    assert config.vad.max_utterance_s == 10.0
    assert problems({}, {**KEY_ENV, "ASSISTANT_MQTT__BOGUS": "1"}) == ["mqtt.bogus: unknown setting"]


def test_home_assistant_version_is_checked_and_named() -> None:
    config = parse_config({"homeassistant": {"version": "2025.4.4"}}, {"OPENAI_API_KEY": "k"})
    assert config.homeassistant.ha_version == (2025, 4)
    assert parse_config({}, {"OPENAI_API_KEY": "k"}).homeassistant.ha_version is None  # the newest rules
    assert problems({"homeassistant": {"version": "25.4"}}) == [
        "homeassistant.version: '25.4' is not a Home Assistant version: write it as YYYY.M or YYYY.M.P (e.g. 2025.4.4)"
    ]
    assert problems({"homeassistant": {"version": "2025.13"}})[0].startswith("homeassistant.version: '2025.13' is not")
    assert problems({"homeassistant": {"version": 2025.10}}) == [
        'homeassistant.version: write the version in quotes ("2025.1" as a number loses a trailing 0)'
    ]
