"""Before and around the daemon's work: credentials checked before READY, the watchdog, reloads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from assistant.agent.providers import CredentialError, resolve, stages_in_use, verify
from assistant.config import Config, ConfigError, load_config
from assistant.daemon import systemd
from assistant.daemon.events import Events
from assistant.link.client import MqttLink

log = logging.getLogger(__name__)

EXIT_CREDENTIALS = 3  # systemd: RestartPreventExitStatus, a rejected key will not fix itself


async def verify_credentials(
    config: Config, env: Mapping[str, str], events: Events, stopping: asyncio.Event
) -> Literal["verified", "rejected", "stopped"]:
    """Check each stage's endpoint and key before READY.

    A rejected key is permanent: report it ("rejected"; the daemon exits with
    EXIT_CREDENTIALS). An unreachable endpoint is transient: retry with backoff until it
    answers or we are stopped.
    """
    pending = {stage: resolve(config, stage, env) for stage in stages_in_use(config)}
    backoff = 1.0
    while pending and not stopping.is_set():
        results = await asyncio.gather(*(verify(api) for api in pending.values()), return_exceptions=True)
        for (stage, api), result in zip(list(pending.items()), results, strict=True):
            if isinstance(result, str):
                log.info("%s: %s %s (%s)", stage, api.provider, api.endpoint, result)
                del pending[stage]
            elif isinstance(result, CredentialError):
                log.error("%s: %s; fix the key or endpoint and restart", stage, result)
                events.error(None, "credentials", f"{stage}: {result}")
                return "rejected"
            else:
                log.warning("%s: %s not reachable (%s); retrying in %.0f s", stage, api.endpoint, result, backoff)
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await stopping.wait()
            backoff = min(backoff * 2, 60.0)
    return "stopped" if stopping.is_set() else "verified"


async def until_connected_or_stopped(link: MqttLink, stopping: asyncio.Event) -> bool:
    """Wait for the broker, but give way to SIGTERM: True once connected."""
    waits = [asyncio.create_task(link.connected.wait()), asyncio.create_task(stopping.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    return link.connected.is_set() and not stopping.is_set()


async def watchdog(interval_s: float) -> None:
    """Pet systemd's watchdog while this event loop runs: that is what liveness means.

    A hung loop stops petting and systemd restarts the daemon. A missing or stalled
    microphone does not: it is reported (`audio_error`) and retried, and MQTT requests
    are still served.
    """
    while True:
        systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)


def reload_config(path: Path, env: Mapping[str, str], events: Events) -> Config | None:
    """SIGHUP: the config file again, or None (reported) when it is not valid."""
    from assistant.voice.choice import choose_or_refuse

    try:
        config = load_config(path, env)
        choose_or_refuse(config.tts, config.device.state_dir, config.device.language)  # engine "piper", no voice
        return config
    except ConfigError as error:
        for problem in error.problems:
            log.error("reload refused: %s", problem)  # noqa: TRY400 - a bad file, not a crash
        events.error(None, "config", "reload refused: " + "; ".join(error.problems))
        return None
