"""The persistent session's bookkeeping (assistant/link/session.py), with real paho messages."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from assistant.link.session import Session, session_client_id
from tests.support import Broker

FENCE = "assistant/kitchen/session/fence"
ASK = "assistant/kitchen/ask"


class Acks(paho.Client):
    """A real paho client, never connected, that records what it would acknowledge."""

    def __init__(self) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> paho.MQTTErrorCode:
        self.acked.append(mid)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS


def message(topic: str, payload: bytes, mid: int, qos: int = 1, dup: bool = False) -> paho.MQTTMessage:
    made = paho.MQTTMessage(mid, topic.encode())
    made.payload, made.qos, made.dup = payload, qos, dup
    return made


def test_client_id_is_one_per_site() -> None:
    assert session_client_id("assistant/kitchen") == "assistant-kitchen"
    assert session_client_id("home/assistant/kitchen") != session_client_id("home/assistant/hall")


def test_requests_before_the_fence_are_the_backlog_and_after_it_live() -> None:
    session, client = Session("assistant-kitchen", FENCE), Acks()
    away = time.time() - 42
    fence = session.connected(True, away, expected=True)
    assert fence is not None
    kept = session.received(client, message(ASK, b"kept", 1), held=True)
    assert kept is not None and kept.backlog and kept.away_since == away
    assert session.received(client, message(FENCE, fence, 2), held=False) is None
    live = session.received(client, message(ASK, b"live", 3), held=True)
    assert live is not None and not live.backlog and live.away_since is None
    assert client.acked == [2]  # the fence; the requests wait until handled


def test_a_fresh_session_has_no_backlog_and_forgets_what_was_owed() -> None:
    session, client = Session("assistant-kitchen", FENCE), Acks()
    assert session.connected(False, None, expected=False) is None
    old = session.received(client, message(ASK, b"before", 7), held=True)
    assert old is not None and not old.backlog
    assert session.connected(False, time.time(), expected=True) is None  # the broker forgot us
    assert not session.acknowledge(old)  # mid 7 of the old session means nothing now


def test_a_redelivered_copy_is_dropped_whether_waiting_or_handled() -> None:
    session, client = Session("assistant-kitchen", FENCE), Acks()
    session.connected(False, None, expected=False)
    first = session.received(client, message(ASK, b"a", 5), held=True)
    assert first is not None
    assert session.received(client, message(ASK, b"a", 5, dup=True), held=True) is None  # still waiting
    assert session.acknowledge(first)
    assert session.received(client, message(ASK, b"a", 5, dup=True), held=True) is None  # handled already
    assert client.acked == [5]  # acknowledged again: our first PUBACK was lost
    again = session.received(client, message(ASK, b"a", 5), held=True)  # not a DUP: a new request
    assert again is not None


def test_house_traffic_is_acknowledged_at_once() -> None:
    session, client = Session("assistant-kitchen", FENCE), Acks()
    session.connected(False, None, expected=False)
    house = session.received(client, message("homeassistant/light/x/config", b"{}", 9), held=False)
    assert house is not None and house.qos == 0 and client.acked == [9]


def test_connections_that_keep_dropping_name_a_shared_client_id(caplog: pytest.LogCaptureFixture) -> None:
    session = Session("assistant-kitchen", FENCE)
    session.dropped(0x80)
    session.dropped(0x80)
    assert "another client" not in caplog.text  # two drops: the network, a broker restart
    session.dropped(0x80)
    assert "another client connected with our client id assistant-kitchen?" in caplog.text
    caplog.clear()
    session.dropped(142)  # a broker that says so is believed at once
    assert "the broker says so" in caplog.text


def test_on_a_persistent_link_only_what_asks_for_it_is_kept_by_the_broker() -> None:
    """House traffic (a state topic learned from discovery later) is subscribed at QoS 0, so the
    broker queues none of it while the daemon is away; requests at QoS 1."""
    from assistant.config import MqttConfig
    from assistant.link.client import MqttLink

    link = MqttLink(MqttConfig(), "assistant/kitchen", persistent=True)
    link.subscribe(["assistant/kitchen/ask"], qos=1)
    link.subscribe(["zigbee2mqtt/lamp"])  # as assistant/home/house.py does
    link.resubscribe(["homeassistant/+/+/config"])
    assert link._qos == {
        "assistant/kitchen/session/fence": 1,
        "assistant/kitchen/ask": 1,
        "zigbee2mqtt/lamp": 0,
        "homeassistant/+/+/config": 0,
    }
    assert link.client_id == "assistant-kitchen"
    clean = MqttLink(MqttConfig(), "assistant/kitchen")  # one-off CLI turns: never the daemon's session
    clean.subscribe(["zigbee2mqtt/lamp"])
    assert clean._qos == {"zigbee2mqtt/lamp": 1} and clean.client_id != "assistant-kitchen"


def test_a_drop_is_timed_even_when_the_loop_notices_it_first(
    make_broker: Callable[..., Broker], caplog: pytest.LogCaptureFixture
) -> None:
    """The bound on a kept request's age starts when the connection dropped. paho's thread
    judges that the connection was up; the loop clearing `connected` first (it can, on a busy
    machine) once left the bound unknown, and requests kept a second were answered stale."""
    from assistant.config import MqttConfig
    from assistant.link.client import MqttLink

    broker = make_broker(persistence=True)

    async def main() -> tuple[float, float, float | None]:
        link = MqttLink(MqttConfig(host=broker.host, port=broker.port), "assistant/kitchen", persistent=True)
        link.subscribe(["assistant/kitchen/ask"], qos=1)
        await link.start()
        try:
            await asyncio.to_thread(broker.wait_saved)  # our session survives the kill
            link.connected.clear()  # as the loop does when it runs before paho's callback
            dropped = time.time()
            broker.process.kill()
            await asyncio.to_thread(broker.process.wait)
            back = make_broker(port=broker.port, persistence=True, workdir=broker.dir)
            assert back.port == broker.port
            async with asyncio.timeout(30):
                await link.connected.wait()
            return dropped, time.time(), link.offline_since
        finally:
            link.stop()

    caplog.set_level(logging.INFO, logger="assistant.link")
    dropped, reconnected, offline_since = asyncio.run(main())
    assert offline_since is not None and dropped <= offline_since <= reconnected
    assert re.search(r"resumed the session assistant-kitchen \(away for \d+\.\d s\)", caplog.text), caplog.text
