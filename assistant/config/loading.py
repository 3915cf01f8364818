"""Where the config comes from (file lookup, TOML, environment) and the whole validated Config."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from assistant.config.home import HomeAssistantConfig
from assistant.config.sections import (
    DEFAULT_PATHS,
    AgentConfig,
    AudioConfig,
    ConfigError,
    DeviceConfig,
    ImagesConfig,
    MqttConfig,
    OpenAIConfig,
    RealtimeConfig,
    Section,
    SttConfig,
    TtsConfig,
    VadConfig,
    WakeConfig,
)


class Config(Section):
    """The whole validated configuration."""

    device: DeviceConfig = DeviceConfig()
    audio: AudioConfig = AudioConfig()
    vad: VadConfig = VadConfig()
    wake: WakeConfig = WakeConfig()
    openai: OpenAIConfig = OpenAIConfig()
    stt: SttConfig = SttConfig()
    agent: AgentConfig = AgentConfig()
    tts: TtsConfig = TtsConfig()
    images: ImagesConfig = ImagesConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    mqtt: MqttConfig = MqttConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()

    @property
    def topic_root(self) -> str:
        """`<topic_prefix>/<site_id>`: the namespace of this device's MQTT topics."""
        return f"{self.mqtt.topic_prefix}/{self.device.site_id}"


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """Return the config path: --config, $ASSISTANT_CONFIG, /etc/assistant, ./config."""
    if explicit:
        return Path(explicit)
    if env.get("ASSISTANT_CONFIG"):
        return Path(env["ASSISTANT_CONFIG"])
    for candidate in DEFAULT_PATHS:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(p) for p in DEFAULT_PATHS)
    raise ConfigError([f"config: no file found (looked in {looked}); copy config/assistant.example.toml"])


def _format_errors(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        key = ""
        for part in item["loc"]:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        message = "unknown setting" if item["type"] == "extra_forbidden" else item["msg"]
        message = message.removeprefix("Value error, ")
        lines.append(f"{key or 'config'}: {message}")
    return lines


def parse_config(data: dict[str, Any], env: Mapping[str, str] | None = None, credentials: bool = True) -> Config:
    """Validate a dict (from TOML) after environment overrides; raise ConfigError.

    `credentials=False` skips the check that each stage has a key (installing a voice needs none).
    """
    from assistant.config.environment import apply_env_overrides, read_secret  # late: it imports this module

    env = os.environ if env is None else env
    data = apply_env_overrides(data, env)
    password = read_secret("ASSISTANT_MQTT__PASSWORD", env)  # env var (already applied) or credential file
    if password and isinstance(data.get("mqtt", {}), dict):
        data.setdefault("mqtt", {}).setdefault("password", password)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None
    from assistant.agent.providers import credential_problems  # late: providers imports this module

    problems = credential_problems(config, env) if credentials else []
    if problems:
        raise ConfigError(problems)
    return config


def load_config(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None, credentials: bool = True
) -> Config:
    """Find, read and validate the configuration; raise ConfigError with every problem."""
    env = os.environ if env is None else env
    path = find_config_file(explicit, env)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"config: {path}: no such file"]) from None
    except PermissionError:
        raise ConfigError([f"config: {path}: permission denied"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"config: {path}: {error}"]) from None
    return parse_config(data, env, credentials)
