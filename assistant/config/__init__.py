"""Configuration: the TOML file, environment overrides and secrets, validated into one `Config`.

One line per problem, naming the key, and exit status 2 (see cli.py). Modules: `sections` (the
settings), `home` (Home Assistant entities), `loading` (lookup and parsing), `environment`
(overrides and secrets).
"""

from assistant.config.home import (
    DEFAULT_EXPOSE,
    EntityConfig,
    HomeAssistantConfig,
)
from assistant.config.loading import (
    Config,
    find_config_file,
    load_config,
    parse_config,
)
from assistant.config.sections import (
    DEFAULT_INSTRUCTIONS,
    DEFAULT_PATHS,
    REALTIME_MODEL,
    RECOMMENDED_MAX_TOKENS,
    RECOMMENDED_MODEL,
    RECOMMENDED_REASONING_EFFORT,
    SECRET_PROBLEM,
    TUNING_KEYS,
    WAKE_MODELS,
    AgentConfig,
    AudioConfig,
    ConfigError,
    DeviceConfig,
    ImagesConfig,
    MqttConfig,
    OpenAIConfig,
    RealtimeConfig,
    Section,
    StageApi,
    SttConfig,
    TlsConfig,
    TtsConfig,
    VadConfig,
    WakeConfig,
    clean_secret,
)

__all__ = [
    "DEFAULT_EXPOSE",
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_PATHS",
    "REALTIME_MODEL",
    "RECOMMENDED_MAX_TOKENS",
    "RECOMMENDED_MODEL",
    "RECOMMENDED_REASONING_EFFORT",
    "SECRET_PROBLEM",
    "TUNING_KEYS",
    "WAKE_MODELS",
    "AgentConfig",
    "AudioConfig",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "EntityConfig",
    "HomeAssistantConfig",
    "ImagesConfig",
    "MqttConfig",
    "OpenAIConfig",
    "RealtimeConfig",
    "Section",
    "StageApi",
    "SttConfig",
    "TlsConfig",
    "TtsConfig",
    "VadConfig",
    "WakeConfig",
    "clean_secret",
    "find_config_file",
    "load_config",
    "parse_config",
]
