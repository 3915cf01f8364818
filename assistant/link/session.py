"""The daemon's persistent MQTT session: what the broker kept for us, and what we still owe it.

An MQTT 5 session with a stable client id and a session expiry: the broker keeps the
requests (QoS 1 subscriptions) sent while the daemon reconnects or restarts, and delivers
them when it is back. Three things make that whole:

* A request is acknowledged (PUBACK) only once the daemon has handled it, so one still in
  the inbox when the process stops is delivered again to the next one.
* A redelivered copy (DUP) of a request still waiting, or just acknowledged, is dropped.
* What came from the backlog is marked: on resuming we publish a fence to ourselves; the
  broker queues it behind whatever it kept for us, so every request that arrives before
  the fence may have waited since we stopped reading (`Message.away_since`;
  assistant/daemon/freshness.py decides what that means). Waiting for the SUBACK would not
  do: the broker sends only a few unacknowledged messages at a time.

Everything here runs on paho's network thread, except `acknowledge` (the loop).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque

import paho.mqtt.client as mqtt

from assistant.link.inbox import Message

log = logging.getLogger(__name__)

RECENT_ACKS = 256  # requests acknowledged lately, to recognise a redelivered copy
FENCE_TIMEOUT_S = 30.0  # a fence not back by then (an ACL refusing it?) no longer marks the backlog
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with our client id
FLAPS, FLAP_WINDOW_S = 3, 30.0  # that many lost connections within the window: say what may cause it


def session_client_id(root: str) -> str:
    """The stable client id of a persistent session: one per site (`assistant/kitchen` -> `assistant-kitchen`)."""
    return root.replace("/", "-")


class Session:
    """Bookkeeping of one persistent session across reconnects (see the module docstring)."""

    def __init__(self, client_id: str, fence_topic: str) -> None:
        self.client_id = client_id
        self.fence_topic = fence_topic
        self._fence: bytes | None = None  # while set, what arrives is the backlog of a resumed session
        self._fence_deadline = 0.0  # time.monotonic()
        self._away_since: float | None = None
        self._backlog = 0  # requests received before the fence came back
        self._number = 0  # a new one when the broker starts a fresh session: older mids mean nothing
        self._lock = threading.Lock()
        self._waiting: set[tuple[int, str, bytes]] = set()  # requests received, not acknowledged yet
        self._recent: deque[tuple[int, str, bytes]] = deque(maxlen=RECENT_ACKS)  # acknowledged lately
        self._drops: deque[float] = deque(maxlen=FLAPS)  # time.monotonic() of the last lost connections
        self._flap_told = -FLAP_WINDOW_S

    def connected(self, present: bool, away_since: float | None, expected: bool) -> bytes | None:
        """On CONNACK: the fence to publish when the broker kept our session, else None.

        `away_since`: since when (Unix time) we have not read our inputs, None if unknown.
        `expected`: whether a session should be there (we connected before).
        """
        if present:
            self._away_since = away_since
            self._fence = uuid.uuid4().hex.encode()
            self._fence_deadline = time.monotonic() + FENCE_TIMEOUT_S
            self._backlog = 0
            waited = "an unknown time" if away_since is None else f"{max(0.0, time.time() - away_since):.1f} s"
            log.info("resumed the session %s (away for %s): requests kept meanwhile come first", self.client_id, waited)
            return self._fence
        with self._lock:  # a fresh session: nothing received before can be acknowledged now
            self._number += 1
            self._waiting.clear()
            self._recent.clear()
        self._fence = None
        if expected:
            log.warning(
                "the broker kept no session for %s (expired, or restarted without persistence):"
                " requests sent while the assistant was away are lost",
                self.client_id,
            )
        return None

    def dropped(self, reason: int) -> None:
        """A connection that was up ended: another client with our client id is one cause to name.

        A newer broker says so (reason 142, "session taken over"); mosquitto 2.0.11 only closes
        the old connection, so connections that keep dropping are named as a likely sign too.
        """
        now = time.monotonic()
        self._drops.append(now)
        flapping = len(self._drops) == FLAPS and now - self._drops[0] < FLAP_WINDOW_S
        if reason == SESSION_TAKEN_OVER or (flapping and now - self._flap_told > FLAP_WINDOW_S):
            self._flap_told = now
            log.error(
                "another client connected with our client id %s? (%s) Two daemons with the same site_id"
                " (or [mqtt] client_id) take the session from each other",
                self.client_id,
                "the broker says so"
                if reason == SESSION_TAKEN_OVER
                else f"{FLAPS} connections lost within {FLAP_WINDOW_S:.0f} s",
            )

    def received(self, client: mqtt.Client, message: mqtt.MQTTMessage, held: bool) -> Message | None:
        """What to file in the inbox for `message` (None: nothing); acknowledges what needs no handling.

        `held`: one of our requests, acknowledged only once handled (`acknowledge`).
        """
        payload = bytes(message.payload)
        if message.topic == self.fence_topic:
            if payload == self._fence:
                log.info("the backlog of the resumed session is in: %d requests", self._backlog)
                self._fence = None
            client.ack(message.mid, message.qos)
            return None
        if message.qos == 0:
            return Message(message.topic, payload, message.retain)
        if not held:
            client.ack(message.mid, message.qos)  # house traffic, claims, bridge results: taken as they come
            return Message(message.topic, payload, message.retain)
        key = (message.mid, message.topic, payload)
        with self._lock:
            if message.dup and key in self._waiting:
                return None  # redelivered while the first copy still waits in the inbox: that one is acknowledged
            handled = message.dup and key in self._recent
            if not handled:
                self._waiting.add(key)
        if handled:  # our acknowledgement was lost with the connection: it is done, say so again
            log.info("a request on %s came again after it was handled; not handled twice", message.topic)
            client.ack(message.mid, message.qos)
            return None
        if self._fence is not None and time.monotonic() > self._fence_deadline:
            log.warning(
                "our marker on %s did not come back within %.0f s (may the daemon publish there?):"
                " later requests are taken as live",
                self.fence_topic,
                FENCE_TIMEOUT_S,
            )
            self._fence = None
        backlog = self._fence is not None
        self._backlog += backlog
        return Message(
            message.topic,
            payload,
            message.retain,
            mid=message.mid,
            qos=message.qos,
            session=self._number,
            backlog=backlog,
            away_since=self._away_since if backlog else None,
        )

    def acknowledge(self, message: Message) -> bool:
        """Whether to acknowledge a handled request now (not one of a session the broker forgot)."""
        if not message.qos or message.session != self._number:
            return False
        key = (message.mid, message.topic, message.payload)
        with self._lock:
            self._waiting.discard(key)
            self._recent.append(key)
        return True
