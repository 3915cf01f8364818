"""The service bridge: Home Assistant actions for entities that are not MQTT-native.

The daemon publishes `{"id", "domain", "service", "entity_id", "data"}` on
`service_topic`; the automation shipped in config/homeassistant/ performs it (only
allow-listed services on allow-listed entities) and answers on `<service_topic>/result`
with `{"id", "ok", "error"}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict

from assistant.commands import ServiceCall

log = logging.getLogger(__name__)

Publisher = Callable[[str, str], object]


class ServiceBridge:
    """Send service calls and wait for Home Assistant's answer, matched by id."""

    def __init__(self, topic: str, publish: Publisher, timeout_s: float = 5.0) -> None:
        self.topic = topic
        self.result_topic = f"{topic}/result"
        self.publish = publish
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[tuple[bool, str | None]]] = {}

    def request_payload(self, call: ServiceCall, request_id: str) -> str:
        """The JSON the Home Assistant automation reads as trigger.payload_json."""
        return json.dumps({"id": request_id, **asdict(call)})

    async def call(self, call: ServiceCall) -> tuple[bool, str | None, str]:
        """Perform the call; returns (ok, error, payload sent)."""
        request_id = uuid.uuid4().hex[:12]
        payload = self.request_payload(call, request_id)
        future: asyncio.Future[tuple[bool, str | None]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self.publish(self.topic, payload)
            async with asyncio.timeout(self.timeout_s):
                ok, error = await future
        except TimeoutError:
            ok, error = False, f"no answer from Home Assistant on {self.result_topic} within {self.timeout_s:.0f} s"
        finally:
            self._pending.pop(request_id, None)
        return ok, error, payload

    def on_result(self, payload: bytes) -> None:
        """Resolve the waiting call named by the result's id."""
        try:
            result = json.loads(payload)
            request_id = str(result["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed service bridge result: %r", payload[:200])
            return
        future = self._pending.get(request_id)
        if future is not None and not future.done():
            ok = result.get("ok") is True
            future.set_result((ok, None if ok else str(result.get("error") or "Home Assistant refused the call")))
