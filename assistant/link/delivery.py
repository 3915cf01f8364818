"""Device commands over MQTT, and the truth about whether each one went out.

The rule (also in the README, "What a command's outcome means"):

- ``delivered``: the broker acknowledged the command (QoS 1 PUBACK) in time.
- ``not_sent``: no byte of it ever left the daemon. It was never handed to the
  network (no connection), or it was still queued when its time ran out and was
  withdrawn. It can never go out later.
- ``unconfirmed``: it was written to the network but the broker did not acknowledge
  it in time (a stalled or dying broker). It may or may not take effect; the daemon
  never sends it again. Its fate is settled later and published with the same id:
  ``delivered`` when the late acknowledgement arrives on the same connection,
  ``not_sent`` when the connection ends with the command still in the daemon's write
  queue, ``unknown`` when the connection ends after it was written (a broker that
  had it in its socket buffer may still act on it when it resumes).

paho keeps every unacknowledged QoS 1 message and sends it again after a reconnect;
that is right for events but wrong for a command already reported to the household.
`ConfirmingClient` withdraws such commands at the one place paho re-arms them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

Status = Literal["delivered", "not_sent", "unconfirmed"]
Settlement = Literal["delivered", "not_sent", "unknown"]


@dataclass
class Delivery:
    """What became of one command: `status` now, and for `unconfirmed`, its fate later."""

    status: Status
    reason: str | None = None
    settled: asyncio.Future[Settlement] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool | None:
        """True delivered, False not sent, None not known (yet)."""
        return {"delivered": True, "not_sent": False}.get(self.status)


class ConfirmingClient(mqtt.Client):
    """paho's client, able to withdraw an unacknowledged command so it is never resent.

    Relies on paho 2.x internals (`_out_messages`, `_out_packet`, `_out_message_mutex`):
    pinned `<3` in pyproject.toml and exercised by tests/test_delivery.py against a real
    broker that is stopped, killed and restarted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # mid -> callback(settlement), run on paho's thread when the connection ends
        self._withdrawn: dict[int, Callable[[Settlement], None]] = {}
        self._withdrawn_lock = threading.Lock()

    def withdraw(self, mid: int, on_settled: Callable[[Settlement], None]) -> Status:
        """Make sure `mid` is never sent (again); say whether it may already be out.

        `not_sent`: it had not been handed to the socket and is now gone. `delivered`:
        the acknowledgement won the race. `unconfirmed`: it was (or is being) written;
        `on_settled` is called later with its fate, unless a late PUBACK comes first.
        """
        with self._out_message_mutex:
            message = self._out_messages.get(mid)
            if message is None:
                return "delivered"  # acknowledged just now (the caller checks is_published)
            if message.state in (mqtt.mqtt_ms_queued, mqtt.mqtt_ms_publish):
                # queued behind the in-flight limit, or waiting for a connection: never written
                del self._out_messages[mid]
                return "not_sent"
            with self._withdrawn_lock:
                self._withdrawn[mid] = on_settled
            return "unconfirmed"

    def forget(self, mid: int) -> None:
        """A withdrawn command was acknowledged after all: nothing left to settle."""
        with self._withdrawn_lock:
            self._withdrawn.pop(mid, None)

    def reconnect(self) -> MQTTErrorCode:
        """Settle withdrawn commands before paho re-arms its unacknowledged messages.

        This runs on paho's network thread, the only writer of `_out_packet`, so the
        check below cannot race with a write: a command whose packet is still queued
        with nothing written never left; one that is not there did.
        """
        with self._withdrawn_lock:
            withdrawn, self._withdrawn = self._withdrawn, {}
        if withdrawn:
            unwritten = {
                packet["mid"]
                for packet in self._out_packet
                if packet["command"] & 0xF0 == mqtt.PUBLISH and packet["pos"] == 0
            }
            with self._out_message_mutex:
                for mid, on_settled in withdrawn.items():
                    if self._out_messages.pop(mid, None) is None:
                        continue  # acknowledged in the meantime: already settled as delivered
                    on_settled("not_sent" if mid in unwritten else "unknown")
        return super().reconnect()
