"""The MQTT link: paho's network thread on one side, the asyncio loop on the other.

paho reconnects by itself; on every (re)connect we re-subscribe and re-announce
`status online`. The broker publishes `offline` for us (last will) if we vanish.

The daemon's link is `persistent`: an MQTT 5 session with a stable client id and a session
expiry, so that the broker keeps the requests (QoS 1 subscriptions) sent while the daemon
reconnects or restarts and delivers them when it is back. Three things make that whole:

* A request is acknowledged (PUBACK) only once the daemon has handled it (`ack`), so one
  still in the inbox when the process stops is delivered again to the next one.
* A redelivered copy (DUP) of a request still waiting, or just handled, is dropped.
* What came from the backlog is marked: after resuming a session we publish a fence to
  ourselves; the broker queues it behind whatever it kept for us, so every request that
  arrives before the fence may have waited since we stopped reading (`Message.away_since`;
  assistant/daemon/freshness.py decides what that means).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from assistant.config import MqttConfig
from assistant.link.delivery import ConfirmingClient, Delivery, Settlement
from assistant.link.inbox import Inbox, Message

__all__ = ["OFFLINE", "ONLINE", "Message", "MqttError", "MqttLink", "describe_error"]

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with our client id
RECENT_ACKS = 256  # requests handled lately, to recognise a redelivered copy


def session_client_id(root: str) -> str:
    """The stable client id of a persistent session: one per site (`assistant/kitchen` -> `assistant-kitchen`)."""
    return root.replace("/", "-")


class MqttError(Exception):
    """The broker could not be reached or refused us."""


def describe_error(error: BaseException) -> str:
    """A short reason for a failed connection: the TLS verdict, or the OS error."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class MqttLink:
    """One broker connection with a last will, automatic re-subscription and an inbox."""

    def __init__(self, config: MqttConfig, root: str, *, will: bool = True, persistent: bool = False) -> None:
        """`persistent`: the daemon's session, kept by the broker while it is away (module docstring)."""
        self.config = config
        self.root = root
        self.persistent = persistent
        self.subscriptions: set[str] = set()
        self._qos: dict[str, int] = {}  # topic filter -> the QoS it is subscribed at
        self.messages = Inbox()  # requests first, house traffic coalesced by topic (see assistant.link.inbox)
        self.connected = asyncio.Event()
        self._answered = asyncio.Event()  # the broker accepted or refused us
        self._ever_connected = False
        self._last_socket_error: str | None = None
        self.on_connect: list[Callable[[], None]] = []  # run on the loop after every (re)connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refused: str | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}  # mid -> command waiting for its PUBACK
        self._late: dict[int, asyncio.Future[Settlement]] = {}  # mid -> unconfirmed command's fate
        # Since when (Unix time) we have not been reading our inputs: set by the daemon from its
        # last clean stop, then by every disconnect. None: not known (first start, a crash).
        self.offline_since: float | None = None
        self.held: Callable[[str], bool] = lambda topic: False  # requests acknowledged only once handled
        self.fence_topic = f"{root}/session/fence"
        self._fence: bytes | None = None  # while set, what arrives is the backlog of a resumed session
        self._away_since: float | None = None
        self._backlog = 0  # requests received before the fence came back
        self._session = 0  # a new number when the broker starts a fresh session: older mids mean nothing
        self._ack_lock = threading.Lock()
        self._waiting: set[tuple[int, str, bytes]] = set()  # requests received, not acknowledged yet
        self._recent: deque[tuple[int, str, bytes]] = deque(maxlen=RECENT_ACKS)  # acknowledged lately
        if persistent:
            self.client_id = config.client_id or session_client_id(root)
            self.client = ConfirmingClient(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
            self.subscribe([self.fence_topic], qos=1)
        else:
            self.client_id = config.client_id or f"assistant-{root.replace('/', '-')}-{uuid.uuid4().hex[:6]}"
            self.client = ConfirmingClient(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        if will:
            self.client.will_set(f"{root}/status", OFFLINE, qos=1, retain=True)
        if config.username:
            password = config.password.get_secret_value() if config.password else None
            self.client.username_pw_set(config.username, password)
        if config.tls.enabled:
            self.client.tls_set(
                ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
                certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
                keyfile=str(config.tls.key_file) if config.tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if config.tls.insecure else ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(config.tls.insecure)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_log = self._on_log
        self._announce = will

    async def start(self, timeout: float | None = 10.0) -> None:
        """Connect and wait up to `timeout` for the broker to accept us.

        The first attempt is made here so that its error (refused, TLS, DNS) can be told;
        paho's own retry loop only says that it failed. With `timeout=None` (the daemon)
        a failure is logged and paho keeps retrying with backoff.
        """
        self._loop = asyncio.get_running_loop()
        self.messages.attach(self._loop)
        where = f"{self.config.host}:{self.config.port}"
        session: dict[str, Any] = {}
        if self.persistent:  # never a clean start: not on the first connect either (a restart resumes)
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.config.session_expiry_s
            session = {"clean_start": False, "properties": properties}
        try:
            await asyncio.to_thread(
                self.client.connect, self.config.host, self.config.port, self.config.keepalive, **session
            )
        except (OSError, ssl.SSLError, ValueError) as error:
            reason = describe_error(error)
            if timeout is not None:
                raise MqttError(f"mqtt: cannot connect to {where} ({reason})") from None
            log.warning("cannot reach the broker at %s (%s); retrying", where, reason)
            self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive, **session)
        self.client.loop_start()
        if timeout is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._answered.wait()
        except TimeoutError:
            raise MqttError(f"mqtt: cannot connect to {where} (no answer)") from None
        if self._refused and not self.connected.is_set():
            self.client.loop_stop()
            raise MqttError(f"mqtt: {where} refused the connection ({self._refused})")

    def stop(self) -> None:
        """Say offline, then disconnect cleanly (a clean disconnect does not fire the will)."""
        if self.client.is_connected() and self._announce:
            self.client.publish(f"{self.root}/status", OFFLINE, qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topics: Iterable[str], qos: int | None = None) -> None:
        """Subscribe now and after every reconnect (at `qos`, by default the configured one)."""
        level = self.config.qos if qos is None else qos
        new = {t: level for t in topics if t not in self.subscriptions}
        self.subscriptions |= set(new)
        self._qos.update(new)
        if new and self.client.is_connected():
            self.client.subscribe(sorted(new.items()))

    def resubscribe(self, topics: Iterable[str]) -> None:
        """Subscribe again, so the broker re-sends what is retained there."""
        topics = sorted(set(topics))
        self.subscriptions |= set(topics)
        for topic in topics:
            self._qos.setdefault(topic, self.config.qos)
        if topics and self.client.is_connected():
            self.client.unsubscribe(topics)
            self.client.subscribe([(t, self._qos[t]) for t in topics])

    def ack(self, message: Message) -> None:
        """The daemon has handled (or answered) a held request: the broker may forget it now.

        Until then a persistent session keeps it, and delivers it again to the next process
        if this one stops first. A message of an earlier, forgotten session is not acknowledged.
        """
        if not (self.persistent and message.qos and message.session == self._session):
            return
        key = (message.mid, message.topic, message.payload)
        with self._ack_lock:
            self._waiting.discard(key)
            self._recent.append(key)
        self.client.ack(message.mid, message.qos)

    def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int | None = None
    ) -> mqtt.MQTTMessageInfo:
        """Queue a publish; paho keeps QoS>0 messages across a reconnect."""
        return self.client.publish(topic, payload, qos=self.config.qos if qos is None else qos, retain=retain)

    async def send_command(self, topic: str, payload: str, *, retain: bool = False, timeout: float = 5.0) -> Delivery:
        """Publish a device command (QoS 1) and tell truthfully what became of it.

        See assistant/link/delivery.py for the rule: delivered, not sent (and never will be),
        or unconfirmed with its fate settled later through `Delivery.settled`.
        """
        if not self.client.is_connected():
            log.warning("not connected to the broker: %s not sent", topic)
            return Delivery("not_sent", "not connected to the broker")
        loop = asyncio.get_running_loop()
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # refused by paho: it kept nothing
            log.warning("%s: not sent (%s)", topic, mqtt.error_string(info.rc))
            return Delivery("not_sent", mqtt.error_string(info.rc))
        if info.rc == mqtt.MQTT_ERR_SUCCESS:  # handed to the socket (NO_CONN: kept for a reconnect)
            acked: asyncio.Future[None] = loop.create_future()
            self._acks[info.mid] = acked  # before any await: a PUBACK is handed over after this
            try:
                async with asyncio.timeout(timeout):
                    await acked
                return Delivery("delivered")
            except TimeoutError:
                pass  # withdraw() below tells a PUBACK still on its way to the loop from none at all
            finally:
                self._acks.pop(info.mid, None)
        settled: asyncio.Future[Settlement] = loop.create_future()

        def on_settled(settlement: Settlement) -> None:  # paho's thread, at reconnect
            loop.call_soon_threadsafe(self._settle, info.mid, settlement)

        status = self.client.withdraw(info.mid, on_settled)
        if status == "delivered":
            return Delivery("delivered")
        if status == "not_sent":
            log.warning("%s: not sent (%s); withdrawn, it will not go out later", topic, mqtt.error_string(info.rc))
            connected = info.rc == mqtt.MQTT_ERR_SUCCESS
            reason = "still queued at the deadline" if connected else "not connected to the broker"
            return Delivery("not_sent", reason)
        self._late[info.mid] = settled
        log.warning("%s: sent, but the broker did not confirm it within %.1f s", topic, timeout)
        return Delivery("unconfirmed", f"the broker did not confirm it within {timeout:g} s", settled)

    def _settle(self, mid: int, settlement: Settlement) -> None:
        settled = self._late.pop(mid, None)
        if settled is not None and not settled.done():
            log.info("command %d settled late: %s", mid, settlement)
            settled.set_result(settlement)

    def event(self, name: str, data: dict[str, Any]) -> None:
        """Publish `<root>/event/<name>` as JSON (UTF-8; escaped where text cannot be encoded)."""
        text = json.dumps(data, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a model or a payload: \u escapes are valid JSON
            text = json.dumps(data)
        self.publish(f"{self.root}/event/{name}", text)

    # paho callbacks: these run on paho's network thread.

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.error("broker refused the connection: %s", reason)
            if self._loop:
                self._loop.call_soon_threadsafe(self._answered.set)
            return
        log.info("connected to mqtt %s:%d", self.config.host, self.config.port)
        if self.persistent:
            self._resume(client, bool(flags.session_present))
        if self._announce:
            client.publish(f"{self.root}/status", ONLINE, qos=1, retain=True)
        if self.subscriptions:
            # Subscribing again to a kept subscription replaces it without losing what is queued.
            client.subscribe([(t, self._qos[t]) for t in sorted(self.subscriptions)])
        if self._fence is not None:
            client.publish(self.fence_topic, self._fence, qos=1)  # queued behind the backlog
        if self._loop:
            self._loop.call_soon_threadsafe(self._connected)

    def _resume(self, client: mqtt.Client, session_present: bool) -> None:
        """After a (re)connect of a persistent session: is there a backlog, and since when?"""
        away_since = self.offline_since
        if session_present:
            self._away_since = away_since
            self._fence = uuid.uuid4().hex.encode()
            self._backlog = 0
            waited = "an unknown time" if away_since is None else f"{max(0.0, time.time() - away_since):.1f} s"
            log.info("resumed the session %s (away for %s): requests kept meanwhile come first", self.client_id, waited)
            return
        with self._ack_lock:  # a fresh session: nothing received before can be acknowledged now
            self._session += 1
            self._waiting.clear()
            self._recent.clear()
        self._fence = None
        if self._ever_connected or away_since is not None:
            log.warning(
                "the broker kept no session for %s (expired, or restarted without persistence):"
                " requests sent while the assistant was away are lost",
                self.client_id,
            )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        for reason in reasons:
            if isinstance(reason, ReasonCode) and reason.is_failure:
                log.error("the broker refused a subscription: %s", reason)

    def _connected(self) -> None:
        self._ever_connected = True
        self.connected.set()
        self._answered.set()
        for callback in self.on_connect:
            callback()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self.connected.clear)
        if self.connected.is_set():  # it was up (not a failed attempt): we stop reading now
            self.offline_since = time.time()
        if self.persistent and reason.value == SESSION_TAKEN_OVER:
            log.error(
                "another client connected with our client id %s: two daemons with the same site_id"
                " (or [mqtt] client_id) take the session from each other",
                self.client_id,
            )
        if not self._ever_connected and self._refused is None:
            # Closed before any CONNACK: a TLS listener fed plain MQTT, a client certificate
            # the broker wanted but did not get, ... Say so now rather than time out.
            self._refused = f"closed the connection before accepting it: {self._last_socket_error or reason}"
            self._loop.call_soon_threadsafe(self._answered.set)
        elif reason.is_failure and self._ever_connected:
            log.warning("lost the broker (%s); reconnecting", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._acknowledged, mid)

    def _acknowledged(self, mid: int) -> None:
        acked = self._acks.pop(mid, None)
        if acked is not None and not acked.done():
            acked.set_result(None)
        elif mid in self._late:
            self.client.forget(mid)
            self._settle(mid, "delivered")

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, message: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._last_socket_error = message

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Only filed here: paho's thread must never wait for the loop (see assistant.link.inbox).
        payload = bytes(message.payload)
        if message.topic == self.fence_topic:
            if payload == self._fence:
                log.info("the backlog of the resumed session is in: %d requests", self._backlog)
                self._fence = None
            client.ack(message.mid, message.qos)
            return
        if not self.persistent or message.qos == 0:
            self.messages.put(Message(message.topic, payload, message.retain))
            return
        if not self.held(message.topic):
            client.ack(message.mid, message.qos)  # house traffic, claims, bridge results: taken as they come
            self.messages.put(Message(message.topic, payload, message.retain))
            return
        key = (message.mid, message.topic, payload)
        with self._ack_lock:
            if message.dup and key in self._waiting:
                return  # redelivered while the first copy still waits in the inbox: that one is acknowledged
            handled = message.dup and key in self._recent
            if not handled:
                self._waiting.add(key)
        if handled:  # our acknowledgement was lost with the connection: it is done, say so again
            log.info("a request on %s came again after it was handled; not handled twice", message.topic)
            client.ack(message.mid, message.qos)
            return
        backlog = self._fence is not None
        self._backlog += backlog
        self.messages.put(
            Message(
                message.topic,
                payload,
                message.retain,
                mid=message.mid,
                qos=message.qos,
                session=self._session,
                backlog=backlog,
                away_since=self._away_since if backlog else None,
            )
        )
