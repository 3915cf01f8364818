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
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from assistant.home.commands import ServiceCall
from assistant.link.delivery import Delivery

log = logging.getLogger(__name__)

Sender = Callable[[str, str], Awaitable[Delivery]]
LATE_ANSWER_S = 300.0  # how long a late answer from Home Assistant is still waited for and reported


@dataclass
class BridgeOutcome:
    """What became of one call: done, failed, or unconfirmed with its fate in `late`.

    `late` resolves to (status, error): done or failed when Home Assistant answers
    after all, unknown when it has not answered within LATE_ANSWER_S.
    """

    status: str
    error: str | None
    payload: str
    late: asyncio.Future[tuple[str, str | None]] | None = field(default=None, repr=False)


class ServiceBridge:
    """Send service calls and wait for Home Assistant's answer, matched by id."""

    def __init__(self, topic: str, send: Sender, timeout_s: float = 5.0) -> None:
        self.topic = topic
        self.result_topic = f"{topic}/result"
        self.send = send
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[tuple[bool, str | None]]] = {}
        self._waiters: set[asyncio.Task[None]] = set()

    def request_payload(self, call: ServiceCall, request_id: str) -> str:
        """The JSON the Home Assistant automation reads as trigger.payload_json."""
        return json.dumps({"id": request_id, **asdict(call)})

    async def call(self, call: ServiceCall) -> BridgeOutcome:
        """Perform the call and say truthfully what became of it."""
        request_id = uuid.uuid4().hex[:12]
        payload = self.request_payload(call, request_id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, str | None]] = loop.create_future()
        self._pending[request_id] = future
        deadline = loop.time() + self.timeout_s
        delivery = await self.send(self.topic, payload)
        if delivery.status == "not_sent":
            self._pending.pop(request_id, None)
            return BridgeOutcome("failed", f"not sent: {delivery.reason}", payload)
        try:
            async with asyncio.timeout_at(deadline):
                ok, error = await asyncio.shield(future)  # shielded: a late answer still settles it
            self._pending.pop(request_id, None)
            return BridgeOutcome("done" if ok else "failed", error, payload)
        except TimeoutError:
            pass
        reason = (
            f"sent, but the broker did not confirm it ({delivery.reason})"
            if delivery.status == "unconfirmed"
            else f"no answer from Home Assistant on {self.result_topic} within {self.timeout_s:g} s"
        )
        late: asyncio.Future[tuple[str, str | None]] = loop.create_future()
        waiter = asyncio.create_task(self._wait_late(request_id, future, delivery, late))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        return BridgeOutcome("unconfirmed", f"unconfirmed: {reason}", payload, late)

    async def _wait_late(
        self,
        request_id: str,
        answer: asyncio.Future[tuple[bool, str | None]],
        delivery: Delivery,
        late: asyncio.Future[tuple[str, str | None]],
    ) -> None:
        """Settle an unanswered call: Home Assistant's late answer, a send that never left, or unknown."""
        try:
            async with asyncio.timeout(LATE_ANSWER_S):
                fate = delivery.settled
                if fate is not None:
                    either: list[asyncio.Future[Any]] = [answer, fate]
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if not answer.done() and fate.result() == "not_sent":
                        late.set_result(("failed", "not sent: the connection ended first"))
                        return
                ok, error = await answer
            late.set_result(("done", None) if ok else ("failed", error))
        except TimeoutError:
            late.set_result(("unknown", f"no answer from Home Assistant within {LATE_ANSWER_S:g} s"))
        finally:
            self._pending.pop(request_id, None)

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
