"""A light that answers its commands the way a house with Home Assistant beside it does.

A zigbee2mqtt-like light publishes its new state when commanded; Home Assistant's
mqtt_statestream (with `publish_attributes: true`, as the README recommends) then
publishes the state and each attribute on its own topic: a burst of about six messages
caused by the command itself, arriving while the daemon waits for its PUBACK and
publishes its reply. Used by bench/command_latency.py and tests/test_reply_lag.py.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

STATESTREAM = "homeassistant/statestream"
_ids = itertools.count(1)


@dataclass
class Seen:
    """One message the house saw, timed on its paho thread (time.monotonic)."""

    topic: str
    payload: bytes
    time: float


@dataclass
class BurstHouse:
    """One light, `<ns>/kitchen/light/set`, answered with its state and a statestream burst.

    `burst` can be switched off between trials (then only the light's own state comes back).
    Every message on the watched topics (the command, `event/reply`, statestream) is kept in
    `seen`, timed on arrival.
    """

    host: str
    port: int
    ns: str
    root: str
    burst: bool = True
    seen: list[Seen] = field(default_factory=list)
    bursts: int = 0  # bursts published so far
    statestream_seen: int = 0  # statestream messages seen on the broker (ours or a real Home Assistant's)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        # the light (which also times what it sees) and Home Assistant, each with its own connection
        self.client = self._connect("light", [self.command_topic, f"{self.root}/event/reply"], self._on_message)
        self.ha = self._connect("ha", [self.state_topic, f"{STATESTREAM}/#"], self._on_light_state)

    def _connect(self, name: str, topics: list[str], on_message: Callable[..., None]) -> paho.Client:
        subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-house-{name}-{next(_ids)}")
        client.on_message = on_message
        client.on_subscribe = lambda *_args: subscribed.set()
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        client.subscribe([(topic, 0) for topic in topics])
        if not subscribed.wait(10):
            raise AssertionError(f"burst house: no SUBACK for {name}")
        return client

    @property
    def command_topic(self) -> str:
        return f"{self.ns}/kitchen/light/set"

    @property
    def state_topic(self) -> str:
        return f"{self.ns}/kitchen/light/state"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        now = time.monotonic()
        if message.topic == self.command_topic:  # the light: its new state at once
            on = message.payload.decode().strip().upper() != "OFF"
            client.publish(self.state_topic, "ON" if on else "OFF")
        with self._cond:
            self.seen.append(Seen(message.topic, bytes(message.payload), now))
            self._cond.notify_all()

    def _on_light_state(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        """Home Assistant saw the light change: its statestream for it, one message per attribute."""
        if message.topic.startswith(STATESTREAM + "/"):
            with self._cond:
                self.statestream_seen += 1
                self.seen.append(Seen(message.topic, bytes(message.payload), time.monotonic()))
                self._cond.notify_all()
            return
        if not self.burst:
            return
        on = message.payload.decode().strip().upper() != "OFF"
        base = f"{STATESTREAM}/light/kitchen"
        stamp = json.dumps(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
        attributes = {
            "state": "on" if on else "off",
            "brightness": json.dumps(255 if on else None),
            "color_mode": json.dumps("brightness" if on else None),
            "supported_color_modes": json.dumps(["brightness"]),
            "friendly_name": json.dumps("Kitchen light"),
            "supported_features": json.dumps(0),
            "last_changed": stamp,
            "last_updated": stamp,
        }
        for leaf, payload in attributes.items():
            client.publish(f"{base}/{leaf}", payload, retain=True)
        self.bursts += 1

    def wait_for(self, topic: str, after: float, timeout: float = 10.0) -> Seen:
        """The first message on `topic` seen at or after `after` (time.monotonic)."""

        def found() -> Seen | None:
            return next((s for s in self.seen if s.topic == topic and s.time >= after), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"burst house: nothing on {topic} within {timeout} s")
            hit = found()
            assert hit is not None
            return hit

    def close(self) -> None:
        for client in (self.client, self.ha):
            client.disconnect()
            client.loop_stop()
