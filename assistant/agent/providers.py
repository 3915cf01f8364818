"""API endpoints per stage: OpenAI, Azure OpenAI or any OpenAI-compatible server.

Each stage (stt, agent, tts) takes [openai] and overrides what it sets itself, so a
user can mix a local transcription server with Azure for chat.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import openai
from pydantic import SecretStr

from assistant.config import Config, ConfigError, StageApi
from assistant.config.environment import read_secret

Stage = str  # "stt" | "agent" | "tts" | "images" | "realtime"


@dataclass(frozen=True)
class ApiSettings:
    """The resolved connection settings of one stage."""

    stage: Stage
    provider: str
    api_key: str | None
    azure_ad_token: str | None
    organization: str | None
    project: str | None
    base_url: str | None
    azure_endpoint: str | None
    api_version: str | None
    deployment: str | None
    timeout_s: float
    max_retries: int

    def __repr__(self) -> str:  # never print secrets
        return f"ApiSettings(stage={self.stage!r}, provider={self.provider!r}, endpoint={self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages and logs."""
        if self.provider == "azure":
            return self.azure_endpoint or self.base_url or "?"
        return self.base_url or "https://api.openai.com/v1"


def stages_in_use(config: Config) -> list[Stage]:
    """The stages that call an API with this configuration."""
    stages = ["stt", "agent"]
    if config.tts.engine == "openai":
        stages.append("tts")
    if config.images.enabled:
        stages.append("images")
    if config.realtime.enabled:
        stages.append("realtime")
    return stages


def resolve(config: Config, stage: Stage, env: Mapping[str, str]) -> ApiSettings:
    """Merge [openai] with the stage's own overrides and the secrets in the environment."""
    shared: StageApi = config.openai
    own: StageApi = getattr(config, stage)

    def pick(name: str) -> Any:
        value = getattr(own, name)
        return getattr(shared, name) if value is None else value

    provider: str = pick("provider")
    key: SecretStr | None = pick("api_key")
    token: SecretStr | None = pick("azure_ad_token")
    api_key = key.get_secret_value() if key else None
    ad_token = token.get_secret_value() if token else None
    if api_key is None and ad_token is None:
        if provider == "azure":
            api_key = read_secret("AZURE_OPENAI_API_KEY", env)
            ad_token = None if api_key else read_secret("AZURE_OPENAI_AD_TOKEN", env)
        else:
            api_key = read_secret("OPENAI_API_KEY", env)
    return ApiSettings(
        stage=stage,
        provider=provider,
        api_key=api_key,
        azure_ad_token=ad_token,
        organization=pick("organization"),
        project=pick("project"),
        base_url=pick("base_url"),
        azure_endpoint=pick("azure_endpoint"),
        api_version=pick("api_version"),
        deployment=own.deployment,
        timeout_s=float(pick("timeout_s")),
        max_retries=int(pick("max_retries")),
    )


def credential_problems(config: Config, env: Mapping[str, str]) -> list[str]:
    """Missing endpoints or keys for the stages in use, one line each, naming the key."""
    problems = []
    for stage in stages_in_use(config):
        try:
            api = resolve(config, stage, env)
        except ConfigError as error:  # a secret in the environment that cannot be one
            problems += error.problems
            continue
        if api.provider == "azure":
            if not (api.azure_endpoint or api.base_url):
                problems.append(f"openai.azure_endpoint: required by {stage} (provider 'azure')")
            if not (api.api_key or api.azure_ad_token):
                problems.append(
                    f"openai.api_key: missing for {stage} (set AZURE_OPENAI_API_KEY or AZURE_OPENAI_AD_TOKEN)"
                )
        elif not api.api_key and not api.base_url:
            problems.append(f"openai.api_key: missing for {stage} (set OPENAI_API_KEY, or base_url for a local server)")
    return sorted(set(problems), key=problems.index)


@functools.cache
def _tls() -> ssl.SSLContext:
    """The TLS settings every client shares: each new one reads the CA store (25 ms of CPU here)."""
    import httpx2  # the SDK's HTTP library: the same defaults it would build for each client

    return httpx2.create_ssl_context()


def make_client(api: ApiSettings) -> openai.AsyncOpenAI:
    """An async client for the stage; the SDK retries with backoff and honours Retry-After."""
    http = openai.DefaultAsyncHttpxClient(verify=_tls())
    if api.provider == "azure":
        common: dict[str, Any] = {
            "http_client": http,
            "api_version": api.api_version,
            "azure_deployment": api.deployment,
            "organization": api.organization,
            "timeout": api.timeout_s,
            "max_retries": api.max_retries,
        }
        if api.azure_endpoint:
            common["azure_endpoint"] = api.azure_endpoint
        else:
            common["base_url"] = api.base_url
        if api.api_key:
            return openai.AsyncAzureOpenAI(api_key=api.api_key, **common)
        return openai.AsyncAzureOpenAI(azure_ad_token=api.azure_ad_token, **common)
    return openai.AsyncOpenAI(
        # A local OpenAI-compatible server usually takes any key, but the SDK wants one.
        api_key=api.api_key or "unused",
        organization=api.organization,
        project=api.project,
        base_url=api.base_url,
        timeout=api.timeout_s,
        max_retries=api.max_retries,
        http_client=http,
    )


def prewarm(clients: Iterable[openai.AsyncOpenAI]) -> None:
    """Build the SDK's parts that a turn's requests use, before the first turn needs them.

    The SDK creates `client.chat`, `client.audio` and their resources (and imports their
    types) on first use: 50-150 ms of CPU here, several times that on a Pi, which the first
    reply would otherwise wait for. Run on a worker thread while the request is spoken.
    """
    for client in clients:
        _ = client.chat.completions, client.audio.transcriptions, client.audio.speech.with_streaming_response


class CredentialError(Exception):
    """The endpoint rejected our credentials (or the request): retrying will not help."""


async def verify(api: ApiSettings) -> str:
    """Reach the stage's endpoint with its credentials; return a note on success.

    Raises CredentialError for permanent failures (401, 403, other 4xx) and
    openai.APIConnectionError / APITimeoutError / 429 / 5xx (openai.APIError) for
    transient ones, which are worth retrying.
    """
    client = make_client(api)
    try:
        await client.with_options(max_retries=0).models.list()
    except openai.NotFoundError:
        return "reachable; it has no model list"
    except (openai.RateLimitError, openai.InternalServerError):
        raise
    except openai.APIStatusError as error:
        raise CredentialError(f"{api.endpoint} answered {error.status_code} ({type(error).__name__})") from None
    finally:
        await client.close()
    return "credentials accepted"
