"""The config file's sections (device, audio, vad, wake, the API stages, mqtt), validated up front."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import unicodedata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_PATHS = (Path("/etc/assistant/assistant.toml"), Path("config/assistant.toml"))
DEFAULT_INSTRUCTIONS = (
    "You are {{ device.name }}, a voice assistant in a home. Answer in one or two short "
    "spoken sentences, without markdown. Use the tools to control or read the home; "
    "never claim an action you did not perform."
)


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Section(BaseModel):
    """A config section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_site_id() -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().lower()).strip("-") or "assistant"


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY; otherwise the XDG place for state.
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "assistant"


class DeviceConfig(Section):
    """Who this device is: its MQTT namespace, spoken name, language and room."""

    site_id: str = Field(default_factory=_default_site_id, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = "Assistant"
    language: str = "en"
    area: str | None = None
    state_dir: Path = Field(default_factory=_default_state_dir)


class AudioConfig(Section):
    """Sound devices, by name (substring) or index; None means the system default."""

    input_device: str | int | None = None
    output_device: str | int | None = None
    sample_rate: Literal[8000, 16000, 32000, 48000] = 16000
    frame_ms: Literal[10, 20, 30] = 30
    input_gain: float = Field(1.0, gt=0, le=64)
    # Take what the speaker plays out of what the microphone hears (WebRTC AEC3, in the process), so
    # the wake word is heard over the device's own voice: for a speaker the microphone hears.
    echo_cancel: bool = False

    @field_validator("echo_cancel")
    @classmethod
    def _canceller_installed(cls, value: bool) -> bool:
        if value and importlib.util.find_spec("pywebrtc_audio") is None:
            raise ValueError(
                "needs the pywebrtc-audio package (64-bit x86_64 or aarch64): scripts/setup.sh installs it there"
            )
        return value


class VadConfig(Section):
    """Endpointing: when an utterance starts and ends."""

    aggressiveness: int = Field(2, ge=0, le=3)
    start_ms: int = Field(90, ge=0, le=1000)
    silence_ms: int = Field(600, ge=100, le=5000)
    early_ms: int = Field(250, ge=0, le=5000)  # 0: no speculative transcription
    min_utterance_ms: int = Field(250, ge=0, le=10000)
    max_utterance_s: float = Field(15.0, gt=0, le=120)
    preroll_ms: int = Field(300, ge=0, le=2000)


WAKE_MODELS = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")  # bundled with pymicro-wakeword


class WakeConfig(Section):
    """What opens the microphone: a wake word, any speech ("vad"), or an MQTT request."""

    mode: Literal["wakeword", "vad", "mqtt"] = "wakeword"
    model: list[str] = ["okay_nabu"]
    threshold: float | None = Field(None, gt=0, lt=1)
    refractory_s: float = Field(2.0, ge=0, le=30)
    listen_timeout_s: float = Field(8.0, gt=0, le=60)
    followup_s: float = Field(5.0, ge=0, le=60)
    arbitration_ms: int = Field(200, ge=0, le=2000)
    sound: bool = False

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _bundled(cls, models: list[str]) -> list[str]:
        unknown = [m for m in models if m not in WAKE_MODELS]
        if unknown or not models:
            raise ValueError(f"unknown wake word {', '.join(unknown) or '(none)'}; available: {', '.join(WAKE_MODELS)}")
        return models


SECRET_PROBLEM = (
    "the value has a line break or control character inside it (the value is not shown); "
    "keep only the secret, on one line"
)
_INVISIBLE = ("Cc", "Cf", "Zl", "Zp")  # control, format (zero-width, BOM), line and paragraph separators


def clean_secret(value: str) -> str:
    """A secret without surrounding whitespace (or BOM); ValueError if anything invisible is inside.

    A pasted key often ends with a newline, which the HTTP client would refuse and we would
    misreport as "not reachable"; one with a line break inside is two values, not a key.
    """
    value = value.strip().removeprefix("\ufeff").strip()
    if any(unicodedata.category(char) in _INVISIBLE for char in value):
        raise ValueError(SECRET_PROBLEM)
    return value


def _secret_text(value: object) -> object:
    """Secrets in the file get the same cleaning as those from the environment; "" is unset."""
    return (clean_secret(value) or None) if isinstance(value, str) else value


class StageApi(Section):
    """API settings a stage may override; None inherits from [openai]."""

    provider: Literal["openai", "azure"] | None = None
    api_key: SecretStr | None = None
    azure_ad_token: SecretStr | None = None
    organization: str | None = None
    project: str | None = None
    base_url: str | None = None
    azure_endpoint: str | None = None
    api_version: str | None = None
    deployment: str | None = None
    timeout_s: float | None = Field(None, gt=0, le=600)
    max_retries: int | None = Field(None, ge=0, le=10)

    _secrets = field_validator("api_key", "azure_ad_token", mode="before")(_secret_text)


class OpenAIConfig(StageApi):
    """Shared API defaults for every stage."""

    provider: Literal["openai", "azure"] | None = "openai"
    api_version: str | None = "2024-10-21"
    timeout_s: float | None = Field(30.0, gt=0, le=600)
    max_retries: int | None = Field(2, ge=0, le=10)


class SttConfig(StageApi):
    """Transcription of each utterance."""

    model: str = "gpt-transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    response_format: Literal["json", "text", "verbose_json"] = "json"


RECOMMENDED_MODEL = "gpt-5.4-mini"
RECOMMENDED_MAX_TOKENS = 3000  # reasoning tokens count against it too
RECOMMENDED_REASONING_EFFORT = "low"  # a voice answer should not wait for long deliberation
TUNING_KEYS = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "logit_bias",
    "response_format",
    "reasoning_effort",
    "verbosity",
    "seed",
)


class AgentConfig(StageApi):
    """The chat model that answers and acts."""

    instructions: str = DEFAULT_INSTRUCTIONS
    control_home_assistant: bool = True
    recommended: bool = True
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=128000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    stop: list[str] | None = Field(None, max_length=4)
    logit_bias: dict[str, int] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    response_format: Literal["text", "json_object"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    seed: int | None = None
    service_tier: Literal["auto", "default", "flex", "priority"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    max_tool_iterations: int = Field(10, ge=1, le=50)
    local_intents: bool = True  # the offline fast path for common commands
    history_turns: int = Field(10, ge=0, le=100)
    history_ttl_s: float = Field(300, ge=0, le=86400)
    history_tokens: int = Field(6000, ge=500, le=200000)
    listing_tokens: int = Field(2500, ge=0, le=100000)  # the entity table in the prompt (see assistant.agent.catalog)
    states_in_prompt: bool = False  # also every state, when table and states fit in listing_tokens (else get_state)

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, bias: dict[str, int] | None) -> dict[str, int] | None:
        for token, value in (bias or {}).items():
            if not token.isdigit() or not -100 <= value <= 100:
                raise ValueError("keys must be token ids and values between -100 and 100")
        return bias

    @model_validator(mode="after")
    def _recommended_excludes_tuning(self) -> AgentConfig:
        if self.recommended:
            chosen = [key for key in TUNING_KEYS if getattr(self, key) is not None]
            if chosen:
                raise ValueError(f"{', '.join(chosen)}: only used with recommended = false")
        return self

    @property
    def chat_model(self) -> str:
        """The model (on Azure: the deployment, unless `deployment` is set) asked for."""
        return RECOMMENDED_MODEL if self.recommended or not self.model else self.model


PIPER_VOICES_URL = "https://huggingface.co/rhasspy/piper-voices/resolve/main/"


class TtsConfig(StageApi):
    """How replies are spoken: a local Piper or espeak-ng voice, a cloud voice, or not at all.

    "auto" is Piper when a Piper voice is installed (see assistant.voice.choice), else
    espeak-ng: installing a voice is all it takes to get the better one.
    """

    engine: Literal["auto", "piper", "espeak", "openai", "none"] = "auto"
    model: str | None = None
    voice: str | None = None
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    voices_url: str = Field(PIPER_VOICES_URL, pattern=r"^https?://")  # the Piper voices repository

    @model_validator(mode="after")
    def _model_for_openai(self) -> TtsConfig:
        if self.engine == "openai" and not self.model:
            raise ValueError("model: required when engine is 'openai' (e.g. \"gpt-4o-mini-tts\")")
        return self


class ImagesConfig(StageApi):
    """Image generation: `<prefix>/image/generate`, and an agent tool when enabled."""

    enabled: bool = False
    tool: bool = True
    model: str = "gpt-image-2"
    size: str = Field("1024x1024", pattern=r"^(auto|\d{3,4}x\d{3,4})$")
    quality: str | None = None
    style: Literal["vivid", "natural"] | None = None
    n: int = Field(1, ge=1, le=4)
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None


REALTIME_MODEL = "gpt-realtime-2.1-mini"  # gpt-realtime and gpt-realtime-mini shut down on 2027-01-20


class RealtimeConfig(StageApi):
    """Speech to speech: a spoken request streams into an OpenAI / Azure Realtime session.

    `turn_detection`: "local" ends the request with the daemon's own segmenter and commits
    it; "server" lets the service's VAD end it (whichever of the two ends it first wins).
    `transcription_model` transcribes what was said for event/transcript and memory (None:
    no transcript). Typed asks and `say` keep the chat agent and the [tts] voice.
    """

    enabled: bool = False
    model: str = REALTIME_MODEL
    voice: str = "marin"
    turn_detection: Literal["local", "server"] = "local"
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    server_silence_ms: int = Field(500, ge=100, le=5000)  # the server VAD's end-of-speech silence
    noise_reduction: Literal["near_field", "far_field"] | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=4096)


class TlsConfig(Section):
    """MQTT over TLS; verification is on unless `insecure` says otherwise."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError(f"cannot read {path}" if path.exists() else f"no such file: {path}")
        return path


class MqttConfig(Section):
    """The broker shared with Home Assistant."""

    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig = TlsConfig()
    client_id: str | None = None
    keepalive: int = Field(60, ge=5, le=3600)
    topic_prefix: str = Field("assistant", pattern=r"^[^#+]+$")
    qos: int = Field(1, ge=0, le=2)
    command_timeout_s: float = Field(5.0, gt=0, le=60)  # a device command unacknowledged by then is "unconfirmed"
    # A request older than this is answered stale_request, not acted on (assistant/daemon/freshness.py).
    request_max_age_s: float = Field(120.0, gt=0, le=86400)
    # How long the broker keeps our session (and the requests sent to it) while the daemon is away.
    session_expiry_s: int = Field(3600, ge=0, le=7 * 86400)

    _secrets = field_validator("password", mode="before")(_secret_text)
