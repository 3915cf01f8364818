"""Secrets from the environment reach the broker and the API verbatim, or are refused by name.

A real mosquitto with a password file, the real paho and openai clients against the local
server: what the broker and the server received is what the user set.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon import ENTITIES, Daemon, base_sections, daemon_env, run_cli, write_config
from fake_openai import FakeOpenAI
from support import Broker, MqttRecorder, PulseAudio, require_program

MakeBroker = Callable[..., Broker]
MakeMqtt = Callable[..., MqttRecorder]

# Each user's password is something a TOML reading would change: a number, a boolean, a
# float, a quoted string (TOML would drop the quotes).
USERS = {"numeric": "123456", "boolean": "true", "float": "1e5", "quoted": '"quoted"'}
KEY = "test-key"


@pytest.fixture
def password_broker(tmp_path: Path, make_broker: MakeBroker) -> Broker:
    """A mosquitto that only lets in the users of USERS, each with its password."""
    passwords = tmp_path / "passwords"
    for number, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if number == 0 else []
        subprocess.run(
            [require_program("mosquitto_passwd"), *create, "-b", str(passwords), user, password],
            check=True,
            capture_output=True,
            timeout=10,
        )
    return make_broker([f"password_file {passwords}"], allow_anonymous=False)


@pytest.fixture
def config_file(tmp_path: Path, password_broker: Broker, fake: FakeOpenAI) -> Iterator[tuple[Path, str]]:
    """A daemon config for the password broker (no user: the tests set it) and its topic root."""
    sections: dict[str, dict[str, Any]] = base_sections(password_broker.port, fake.url)
    sections["tts"] = {"engine": "none"}
    site = sections["device"]["site_id"]
    sections["device"]["state_dir"] = str(tmp_path / "state")
    yield write_config(tmp_path / "assistant.toml", sections, ENTITIES.format(ns=site)), f"assistant/{site}"


def test_daemon_uses_a_numeric_password_and_a_key_with_a_trailing_newline(
    tmp_path: Path,
    fake: FakeOpenAI,
    password_broker: Broker,
    make_mqtt: MakeMqtt,
    pulse: PulseAudio,
    config_file: tuple[Path, str],
) -> None:
    config, root = config_file
    recorder = make_mqtt(broker=password_broker, username="numeric", password="123456")
    env = daemon_env(
        pulse.env,
        ASSISTANT_MQTT__USERNAME="numeric",
        ASSISTANT_MQTT__PASSWORD="123456",
        OPENAI_API_KEY=KEY + "\n",  # as pasted
    )
    daemon = Daemon(config, env, tmp_path / "daemon.log")
    try:
        daemon.wait_ready(recorder, root)
        assert fake.of("models")[0].headers["authorization"] == f"Bearer {KEY}"
        recorder.publish(f"{root}/ask", json.dumps({"text": "hello", "id": "n1"}))
        reply = recorder.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "n1", timeout=15)
        assert reply.json()["text"] == "OK."
        assert fake.of("chat/completions")[0].headers["authorization"] == f"Bearer {KEY}"
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert "not reachable" not in daemon.log()


@pytest.mark.parametrize("user", ["quoted", "boolean", "float"])
def test_check_connects_with_the_password_as_written(
    user: str, fake: FakeOpenAI, pulse: PulseAudio, config_file: tuple[Path, str]
) -> None:
    config, _root = config_file
    env = daemon_env(pulse.env, ASSISTANT_MQTT__USERNAME=user, ASSISTANT_MQTT__PASSWORD=USERS[user], OPENAI_API_KEY=KEY)
    result = run_cli(["check", "--config", str(config)], env)
    assert "mqtt: ok" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_when_the_quotes_are_missing(
    fake: FakeOpenAI, pulse: PulseAudio, config_file: tuple[Path, str]
) -> None:
    """What the old TOML reading sent for '"quoted"': the broker must refuse it (so the test above can fail)."""
    config, _root = config_file
    env = daemon_env(
        pulse.env, ASSISTANT_MQTT__USERNAME="quoted", ASSISTANT_MQTT__PASSWORD="quoted", OPENAI_API_KEY=KEY
    )
    result = run_cli(["check", "--config", str(config)], env)
    assert "mqtt: FAILED" in result.stdout and result.returncode == 1, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENAI_API_KEY", "sk-first-half\nsecond-half"),
        ("ASSISTANT_MQTT__PASSWORD", "first-half\r\nsecond-half"),
        ("ASSISTANT_OPENAI__API_KEY", "first-half\x1bsecond-half"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check"])
def test_a_secret_with_a_line_break_inside_exits_2_naming_it(
    command: str, name: str, value: str, pulse: PulseAudio, config_file: tuple[Path, str]
) -> None:
    config, _root = config_file
    env = daemon_env(pulse.env, ASSISTANT_MQTT__USERNAME="numeric", **{"OPENAI_API_KEY": KEY, name: value})
    result = run_cli([command, "--config", str(config)], env, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"{name}: the value has a line break or control character inside it (the value is not shown); "
        "keep only the secret, on one line"
    ]
    assert "half" not in result.stdout + result.stderr
