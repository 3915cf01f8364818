"""The MQTT link: paho's network thread on one side, the asyncio loop on the other.

paho reconnects by itself; on every (re)connect we re-subscribe and re-announce
`status online`. The broker publishes `offline` for us (last will) if we vanish.

The daemon's link is `persistent`: an MQTT 5 session that the broker keeps while the
daemon is away, with the requests sent meanwhile (assistant/link/session.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
import uuid
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
from assistant.link.session import Session, session_client_id

__all__ = ["OFFLINE", "ONLINE", "Message", "MqttError", "MqttLink", "describe_error"]

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
STOP_FLUSH_S = 5.0  # at a stop, how long events still queued may take to leave


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


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Send each packet at once (TCP_NODELAY), on paho's thread just after connecting.

    With Nagle's algorithm on (paho leaves it on), a small packet written while the previous one
    is not yet acknowledged by the broker's TCP stack waits for that ACK. The daemon writes
    `event/action` and `event/reply` back to back; a broker that holds its ACK (Linux delays
    ACKs up to 40 ms; a broker busy sending us a statestream burst may hold its PUBACK behind
    its own Nagle) would hold the reply, and the speech after it, that long.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError) as error:  # a Unix socket, a websocket wrapper: no Nagle to turn off
        log.debug("TCP_NODELAY not set: %s", error)


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
        # paho's thread keeps its own record: the loop's `connected` may lag behind, or run ahead.
        self._ever_connected = False
        self._up = False  # a connection is up now
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
        self.session: Session | None = None
        if persistent:
            self.client_id = config.client_id or session_client_id(root)
            self.client = ConfirmingClient(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
            self.session = Session(self.client_id, f"{root}/session/fence")
            self.subscribe([self.session.fence_topic], qos=1)
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
        self.client.on_socket_open = _no_delay
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
        """Say offline, then disconnect cleanly (a clean disconnect does not fire the will).

        The offline status queues behind every event not yet sent (paho keeps at most 20 in
        flight): waiting for it lets those go out first, where the disconnect would drop them.
        """
        if self.client.is_connected() and self._announce:
            self.client.publish(f"{self.root}/status", OFFLINE, qos=1, retain=True).wait_for_publish(STOP_FLUSH_S)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def default_qos(self) -> int:
        """A subscription's QoS unless told: 0 on a persistent session, so the broker keeps only
        what asks for it (our requests) while we are away, not a flood of states; else [mqtt] qos."""
        return 0 if self.persistent else self.config.qos

    def subscribe(self, topics: Iterable[str], qos: int | None = None) -> None:
        """Subscribe now and after every reconnect (at `qos`, by default `default_qos`)."""
        level = self.default_qos if qos is None else qos
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
            self._qos.setdefault(topic, self.default_qos)
        if topics and self.client.is_connected():
            self.client.unsubscribe(topics)
            self.client.subscribe([(t, self._qos[t]) for t in topics])

    def ack(self, message: Message) -> None:
        """The daemon has handled (or answered) a held request: the broker may forget it now.

        Until then a persistent session keeps it, and delivers it again to the next process
        if this one stops first. A message of an earlier, forgotten session is not acknowledged.
        """
        if self.session is not None and self.session.acknowledge(message):
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
        self._up = True
        fence = None
        if self.session is not None:
            expected = self._ever_connected or self.offline_since is not None
            fence = self.session.connected(bool(flags.session_present), self.offline_since, expected)
        self._ever_connected = True
        if self._announce:
            client.publish(f"{self.root}/status", ONLINE, qos=1, retain=True)
        if self.subscriptions:
            # Subscribing again to a kept subscription replaces it without losing what is queued.
            client.subscribe([(t, self._qos[t]) for t in sorted(self.subscriptions)])
        if self.session is not None and fence is not None:
            client.publish(self.session.fence_topic, fence, qos=1)  # queued behind the backlog
        if self._loop:
            self._loop.call_soon_threadsafe(self._connected)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        for reason in reasons:
            if isinstance(reason, ReasonCode) and reason.is_failure:
                log.error("the broker refused a subscription: %s", reason)

    def _connected(self) -> None:
        self.connected.set()
        self._answered.set()
        for callback in self.on_connect:
            callback()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        # Judged on this thread: the loop may clear `connected` before this line runs.
        was_up, self._up = self._up, False
        self._loop.call_soon_threadsafe(self.connected.clear)
        if was_up:  # not a failed attempt: we stop reading now
            self.offline_since = time.time()
            if self.session is not None:
                self.session.dropped(reason.value)
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
        if self.session is None:
            self.messages.put(Message(message.topic, bytes(message.payload), message.retain))
            return
        filed = self.session.received(client, message, self.held(message.topic))
        if filed is not None:
            self.messages.put(filed)
