"""A device command's reported outcome matches what the broker did.

Each trial sends one command while mosquitto is stopped (SIGSTOP), killed, or both,
and then compares what the daemon reported (now and later, with the same id) with
the broker's own log of the PUBLISH packets it received, across every broker process
that ran on the port. The rule is in assistant/link/delivery.py and the README:
`delivered` must be in a log, `not_sent` in none, nothing twice, `unknown` either way.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assistant.config import MqttConfig
from assistant.link.client import MqttLink
from assistant.link.delivery import Delivery
from tests.support import Broker

MakeBroker = Callable[..., Broker]
TIMEOUT_S = 0.3  # the command deadline in these trials; the broker answers a live PUBACK in about 1 ms
SETTLE_S = 30.0
_RECEIVED = re.compile(r"Received PUBLISH from (\S+) \(d\d, q\d, r\d, m\d+, '([^']+)'")


@dataclass
class Trial:
    """One command and what became of it."""

    kind: str
    topic: str
    now: str
    later: str | None = None

    @property
    def final(self) -> str:
        return self.later or self.now


def received(brokers: list[Broker], client_id: str, topic: str) -> int:
    """How many times the brokers that ran took a PUBLISH on `topic` from the daemon."""
    return sum(
        1 for broker in brokers for who, what in _RECEIVED.findall(broker.log()) if (who, what) == (client_id, topic)
    )


def false_reports(trials: list[Trial], brokers: list[Broker], client_id: str) -> list[str]:
    """Every trial whose report does not match the brokers' logs."""
    wrong = []
    for trial in trials:
        seen = received(brokers, client_id, trial.topic)
        if seen > 1:
            wrong.append(f"{trial}: received {seen} times (sent again after it was reported)")
        if trial.now == "delivered" and seen != 1:
            wrong.append(f"{trial}: reported delivered, received {seen} times")
        if trial.final == "delivered" and seen != 1:
            wrong.append(f"{trial}: settled as delivered, received {seen} times")
        if "not_sent" in (trial.now, trial.final) and seen:
            wrong.append(f"{trial}: reported not sent, but the broker received it")
        if trial.now == "unconfirmed" and trial.later is None:
            wrong.append(f"{trial}: unconfirmed and never settled")
    return wrong


async def settle(delivery: Delivery) -> str | None:
    if delivery.settled is None:
        return None
    async with asyncio.timeout(SETTLE_S):
        return await delivery.settled


async def wait_until(condition: Callable[[], bool], timeout: float = SETTLE_S) -> None:
    """Poll a condition that no event announces (a broker's log file), under a deadline."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - a log file and paho's flag announce nothing
            await asyncio.sleep(0.02)


class Bench:
    """A link to a broker that the trials stop, kill and restart on the same port."""

    def __init__(self, make_broker: MakeBroker, keepalive: int = 60) -> None:
        self.make_broker = make_broker
        self.brokers = [make_broker()]
        self.client_id = f"delivery-{self.broker.port}"
        config = MqttConfig(host="127.0.0.1", port=self.broker.port, keepalive=keepalive, client_id=self.client_id)
        self.link = MqttLink(config, "truth", will=False)
        self.trials: list[Trial] = []

    @property
    def broker(self) -> Broker:
        return self.brokers[-1]

    def topic(self, kind: str) -> str:
        return f"truth/{kind}/{len(self.trials)}/set"

    async def restart(self) -> None:
        self.broker.process.kill()
        await asyncio.to_thread(self.broker.process.wait)
        self.link.connected.clear()
        self.brokers.append(self.make_broker(port=self.broker.port))
        async with asyncio.timeout(SETTLE_S):
            await self.link.connected.wait()

    async def marker(self) -> None:
        """A confirmed command after a reconnect: anything paho re-sent went out before it."""
        topic = self.topic("marker")
        assert (await self.link.send_command(topic, "M", timeout=5)).status == "delivered"
        self.trials.append(Trial("marker", topic, "delivered"))

    async def stall(self) -> None:
        """Stopped broker: the command is written but not acknowledged; SIGCONT settles it."""
        topic = self.topic("stall")
        self.broker.process.send_signal(signal.SIGSTOP)
        try:
            delivery = await self.link.send_command(topic, "UNLOCK", timeout=TIMEOUT_S)
        finally:
            self.broker.process.send_signal(signal.SIGCONT)
        self.trials.append(Trial("stall", topic, delivery.status, await settle(delivery)))

    async def stall_then_kill(self) -> None:
        """Stopped, then killed with the command in its socket buffer, then restarted."""
        topic = self.topic("stall-kill")
        self.broker.process.send_signal(signal.SIGSTOP)
        delivery = await self.link.send_command(topic, "UNLOCK", timeout=TIMEOUT_S)
        await self.restart()
        self.trials.append(Trial("stall-kill", topic, delivery.status, await settle(delivery)))
        await self.marker()

    async def kill(self) -> None:
        """Killed just before the command, before the daemon has noticed."""
        topic = self.topic("kill")
        self.broker.process.kill()
        await asyncio.to_thread(self.broker.process.wait)
        delivery = await self.link.send_command(topic, "UNLOCK", timeout=TIMEOUT_S)
        self.link.connected.clear()
        self.brokers.append(self.make_broker(port=self.broker.port))
        async with asyncio.timeout(SETTLE_S):
            await self.link.connected.wait()
        self.trials.append(Trial("kill", topic, delivery.status, await settle(delivery)))
        await self.marker()

    async def down(self) -> None:
        """Killed and noticed: nothing is handed to the network at all."""
        topic = self.topic("down")
        self.broker.process.kill()
        await asyncio.to_thread(self.broker.process.wait)
        await wait_until(lambda: not self.link.client.is_connected())
        delivery = await self.link.send_command(topic, "UNLOCK", timeout=TIMEOUT_S)
        assert delivery.status == "not_sent"
        self.link.connected.clear()
        self.brokers.append(self.make_broker(port=self.broker.port))
        async with asyncio.timeout(SETTLE_S):
            await self.link.connected.wait()
        self.trials.append(Trial("down", topic, delivery.status))
        await self.marker()


def run_trials(make_broker: MakeBroker, plan: list[str], keepalive: int = 60) -> tuple[Bench, dict[str, Any]]:
    bench = Bench(make_broker, keepalive)

    async def main() -> None:
        await bench.link.start(timeout=10)
        try:
            await bench.marker()
            for kind in plan:
                await getattr(bench, kind.replace("-", "_"))()
            await bench.marker()
        finally:
            bench.link.stop()

    asyncio.run(main())
    tally: dict[str, int] = {}
    for trial in bench.trials:
        key = f"{trial.kind}: {trial.now}" + (f" -> {trial.later}" if trial.later else "")
        tally[key] = tally.get(key, 0) + 1
    return bench, tally


def test_no_false_report_with_the_broker_stopped_killed_and_restarted(make_broker: MakeBroker) -> None:
    plan = ["stall"] * 10 + ["stall-then-kill"] * 4 + ["kill"] * 4 + ["down"] * 2
    bench, tally = run_trials(make_broker, plan)
    print(f"\n{len(plan)} trials: {tally}")
    assert false_reports(bench.trials, bench.brokers, bench.client_id) == []
    stalls = [t for t in bench.trials if t.kind == "stall"]
    # a stopped broker cannot acknowledge: reported unconfirmed, then delivered once it resumes
    assert {(t.now, t.later) for t in stalls} == {("unconfirmed", "delivered")}
    # killed with the command in its socket buffer: it never took it, and it was not sent again
    for trial in bench.trials:
        if trial.kind == "stall-kill":
            assert (trial.now, trial.later) == ("unconfirmed", "unknown"), trial
            assert received(bench.brokers, bench.client_id, trial.topic) == 0


def test_a_stall_longer_than_keepalive_is_unknown_not_failed(make_broker: MakeBroker) -> None:
    """paho gives up on the stopped broker and reconnects. What sat in the old connection's
    socket buffer is the broker's to act on or drop when it resumes (mosquitto drops it if it
    reads the new CONNECT first), so the daemon must say neither done nor failed, and must not
    send it again."""
    bench = Bench(make_broker, keepalive=5)

    async def main() -> tuple[Delivery, str | None]:
        await bench.link.start(timeout=10)
        try:
            broker = bench.broker
            broker.process.send_signal(signal.SIGSTOP)
            try:
                delivery = await bench.link.send_command("truth/keepalive/set", "UNLOCK", timeout=TIMEOUT_S)
                await wait_until(lambda: not bench.link.client.is_connected())
                fate = await settle(delivery)  # paho reconnects (the stopped broker's backlog takes the SYN)
            finally:
                broker.process.send_signal(signal.SIGCONT)
            await wait_until(bench.link.client.is_connected)
            await bench.marker()  # the new connection is taken: the old one was read or dropped
            return delivery, fate
        finally:
            bench.link.stop()

    delivery, fate = asyncio.run(main())
    assert (delivery.status, fate) == ("unconfirmed", "unknown")
    assert received(bench.brokers, bench.client_id, "truth/keepalive/set") <= 1
