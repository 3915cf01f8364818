"""Requests sent while the daemon is away are kept by the broker and answered when it is back.

Everything is real: `assistant run`, mosquitto with persistence (killed with SIGKILL and
started again on the same port and database), paho publishers. A stream of asks runs
while the broker, or the daemon, is restarted over and over; every ask must get its
`event/reply` or an `event/error` with a clear code. Answers are read by an MQTT 5
client with a persistent session of its own, so that answers published while the test's
own connection was down are not lost to the count. bench/session_soak.py runs more cycles.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from daemon import Daemon, quiet_sections, wait_log
from fake_openai import FakeOpenAI
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import Broker, MqttRecorder

Launch = Callable[..., tuple[Daemon, str]]
MakeBroker = Callable[..., Broker]
MakeMqtt = Callable[..., MqttRecorder]

KEY = "test-key"
BROKER_CYCLES = int(os.environ.get("SESSION_BROKER_CYCLES", "12"))
DAEMON_CYCLES = int(os.environ.get("SESSION_DAEMON_CYCLES", "3"))
ASK_EVERY_S = 0.25
BACKLOG = r"the backlog of the resumed session is in: (\d+) requests"


def session_client(broker: Broker, client_id: str) -> paho.Client:
    """An MQTT 5 client that resumes its session (kept an hour) on every connect, reconnecting quickly."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]  # floats work
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    client.connect_async(broker.host, broker.port, keepalive=30, clean_start=False, properties=properties)
    return client


class Answers:
    """Every `event/reply` and `event/error` of one daemon, by request id, across outages."""

    def __init__(self, broker: Broker, root: str) -> None:
        self.root = root
        self.cond = threading.Condition()
        self.replies: Counter[str] = Counter()
        self.errors: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.client = session_client(broker, f"answers-{root.replace('/', '-')}")
        self.client.on_connect = lambda client, *_: client.subscribe(f"{root}/event/+", qos=1)
        self.client.on_message = self._on_message
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        kind = message.topic.rsplit("/", 1)[1]
        if kind not in ("reply", "error"):
            return
        data = json.loads(message.payload)
        with self.cond:
            if kind == "reply":
                self.replies[str(data["id"])] += 1
            else:
                self.errors[str(data["id"])].append(data)
            self.cond.notify_all()

    def answered(self, request_id: str) -> bool:
        return request_id in self.replies or request_id in self.errors

    def wait(self, ids: list[str], timeout: float) -> list[str]:
        """Until every id is answered; the ones that were not, at the deadline."""
        with self.cond:
            self.cond.wait_for(lambda: all(self.answered(i) for i in ids), timeout)
            return [i for i in ids if not self.answered(i)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Stream:
    """Asks published every ASK_EVERY_S at QoS 1 by a client that keeps what it cannot send yet."""

    def __init__(self, broker: Broker, root: str) -> None:
        self.root = root
        self.cycle = 0
        self.sent: list[tuple[str, int]] = []  # (id, cycle when published)
        self.cond = threading.Condition()
        self.stopped = threading.Event()
        self.client = session_client(broker, f"stream-{root.replace('/', '-')}")
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stopped.wait(ASK_EVERY_S):
            request_id = f"c{self.cycle}-{n}"
            n += 1
            # Not connected: paho keeps it and sends it once it is (QoS 1).
            self.client.publish(
                f"{self.root}/ask", json.dumps({"text": f"are you there? {request_id}", "id": request_id}), qos=1
            )
            with self.cond:
                self.sent.append((request_id, self.cycle))
                self.cond.notify_all()

    def next_id(self, timeout: float = 10) -> str:
        """The id of the next ask published from now on."""
        with self.cond:
            count = len(self.sent)
            assert self.cond.wait_for(lambda: len(self.sent) > count, timeout), "the stream stalled"
            return self.sent[count][0]

    def stop(self) -> list[tuple[str, int]]:
        self.stopped.set()
        self.thread.join()
        return list(self.sent)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def handled(fake: FakeOpenAI) -> Counter[str]:
    """How many times the model was asked each request (its id ends the text)."""
    texts = [str(r.json["messages"][-1]["content"]) for r in fake.of("chat/completions") if r.json]
    found = (re.search(r"are you there\? (c\d+-\d+)", text) for text in texts)
    return Counter(m.group(1) for m in found if m)


def report(
    what: str, sent: list[tuple[str, int]], answers: Answers, backlogs: list[int], fake: FakeOpenAI
) -> list[str]:
    """Print the counts per cycle; the ids that got no answer."""
    per_cycle: dict[int, Counter[str]] = defaultdict(Counter)
    asked = handled(fake)
    unanswered = []
    for request_id, cycle in sent:
        counts = per_cycle[cycle]
        counts["sent"] += 1
        if request_id in answers.replies:
            counts["replied"] += 1
            counts["handled twice"] += asked[request_id] > 1
        elif request_id in answers.errors:
            counts[answers.errors[request_id][0]["code"]] += 1
        else:
            counts["unanswered"] += 1
            unanswered.append(request_id)
    print(f"\n{what}: {len(sent)} asks over {len(backlogs)} restarts; backlog per restart: {backlogs}")
    for cycle in sorted(per_cycle):
        print(f"  cycle {cycle:2d}: {dict(per_cycle[cycle])}")
    total = sum(per_cycle.values(), Counter())
    print(f"  in all: {dict(total)}")
    return unanswered


def test_requests_sent_while_the_broker_restarts_are_all_answered(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """mosquitto (persistence on) is killed and started again BROKER_CYCLES times while asks
    keep coming; the asker's client comes back before the daemon, so asks reach the broker
    while the daemon is away: its session keeps them and every one is answered."""
    broker = make_broker(persistence=True)
    port = broker.port
    recorder = make_mqtt(broker=broker)
    daemon, root = launch(quiet_sections(port, fake.url), recorder, OPENAI_API_KEY=KEY)
    answers, stream = Answers(broker, root), Stream(broker, root)
    backlogs: list[int] = []
    try:
        for cycle in range(BROKER_CYCLES):
            stream.cycle = cycle
            live = stream.next_id()
            assert not answers.wait([live], timeout=30), f"cycle {cycle}: {live} not answered\n{daemon.log()[-3000:]}"
            broker.wait_saved()
            mark = len(daemon.log())
            broker.process.kill()  # SIGKILL: no goodbye, no last save
            broker.process.wait()
            broker = make_broker(port=port, persistence=True)
            found = wait_log(daemon, BACKLOG, timeout=30, after=mark)
            backlogs.append(int(found.group(1)))
        stream.cycle = BROKER_CYCLES
        answers.wait([stream.next_id()], timeout=30)
        sent = stream.stop()
        answers.wait([i for i, _ in sent], timeout=60)
        unanswered = report("broker restarts", sent, answers, backlogs, fake)
    finally:
        stream.close()
        answers.close()
    assert not unanswered, f"{len(unanswered)} asks never answered: {unanswered[:10]}\n{daemon.log()[-3000:]}"
    assert sum(backlogs) > 0, "no ask ever waited for the daemon: the test did not test the session"
    errors = [e[0] for i, e in answers.errors.items() if i not in answers.replies]
    why = f"{errors[:5]}\n{daemon.log()[-3000:]}"
    assert {e["code"] for e in errors} <= {"busy"}, why  # short outages: nothing is stale
    assert "the broker kept no session" not in daemon.log()


def test_requests_sent_while_the_daemon_restarts_are_all_answered(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """`assistant run` is stopped (SIGTERM, as systemd does) and started again DAEMON_CYCLES
    times while asks keep coming: the new process resumes the session of the old one."""
    broker = make_broker(persistence=True)
    recorder = make_mqtt(broker=broker)
    sections = quiet_sections(broker.port, fake.url)
    daemon, root = launch(sections, recorder, OPENAI_API_KEY=KEY)
    answers, stream = Answers(broker, root), Stream(broker, root)
    backlogs: list[int] = []
    try:
        for cycle in range(DAEMON_CYCLES):
            stream.cycle = cycle
            live = stream.next_id()
            assert not answers.wait([live], timeout=30), f"cycle {cycle}: {live} not answered\n{daemon.log()[-3000:]}"
            assert daemon.stop() == 0, daemon.log()[-3000:]
            daemon, _ = launch(sections, recorder, OPENAI_API_KEY=KEY)
            found = wait_log(daemon, BACKLOG, timeout=30)
            backlogs.append(int(found.group(1)))
        stream.cycle = DAEMON_CYCLES
        answers.wait([stream.next_id()], timeout=30)
        sent = stream.stop()
        answers.wait([i for i, _ in sent], timeout=60)
        unanswered = report("daemon restarts", sent, answers, backlogs, fake)
    finally:
        stream.close()
        answers.close()
    assert not unanswered, f"{len(unanswered)} asks never answered: {unanswered[:10]}\n{daemon.log()[-3000:]}"
    assert sum(backlogs) > 0, "no ask ever waited for the daemon: the test did not test the session"
    codes = {e[0]["code"] for i, e in answers.errors.items() if i not in answers.replies}
    assert codes <= {"busy", "stopping"}, codes


def test_a_request_kept_too_long_is_answered_stale_and_not_acted_on(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """Asks sent while the daemon is stopped; it comes back after what its state file says was
    ten minutes: without `sent_at` they may be that old (stale_request, age bounded); one with
    a fresh `sent_at` is acted on; one whose `sent_at` is an hour ago is stale exactly."""
    broker = make_broker(persistence=True)
    recorder = make_mqtt(broker=broker)
    sections = quiet_sections(broker.port, fake.url)
    daemon, root = launch(sections, recorder, OPENAI_API_KEY=KEY)
    assert daemon.stop() == 0, daemon.log()
    state = Path(sections["device"]["state_dir"]) / "state.json"
    saved = json.loads(state.read_text())
    assert isinstance(saved.get("offline_at"), float), saved  # the clean stop said when it stopped reading
    now = time.time()
    asks = {
        "unknown-age": {"text": "open the garage"},
        "fresh": {"text": "what time is it", "sent_at": now},
        "an-hour-ago": {"text": "turn off the oven", "sent_at": now - 3600},
    }
    for request_id, fields in asks.items():
        recorder.publish(f"{root}/ask", json.dumps({"id": request_id, **fields}))
    state.write_text(json.dumps({**saved, "offline_at": now - 600}))
    daemon, _ = launch(sections, recorder, OPENAI_API_KEY=KEY)
    answers = {
        m.json()["id"]: m
        for m in (
            recorder.wait_for(f"{root}/event/+", lambda m, i=i: m.json().get("id") == i, timeout=20) for i in asks
        )
    }
    assert answers["fresh"].topic.endswith("/event/reply"), answers["fresh"]
    for request_id, exact, low in (("unknown-age", False, 600), ("an-hour-ago", True, 3600)):
        error = answers[request_id].json()
        assert answers[request_id].topic.endswith("/event/error") and error["code"] == "stale_request", error
        assert error["age_exact"] is exact and low <= error["age_s"] < low + 60, error
    asked = json.dumps([r.json for r in fake.of("chat/completions")])
    assert "what time is it" in asked
    assert "garage" not in asked and "oven" not in asked  # stale: never acted on


def test_a_broker_without_persistence_loses_the_session_and_says_so(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """A broker restarted without persistence has forgotten the session: the daemon cannot get
    back what was sent meanwhile, and says so in its log rather than pretend."""
    broker = make_broker()
    port = broker.port
    recorder = make_mqtt(broker=broker)
    daemon, root = launch(quiet_sections(port, fake.url), recorder, OPENAI_API_KEY=KEY)
    mark = len(daemon.log())
    broker.process.kill()
    broker.process.wait()
    make_broker(port=port)
    wait_log(daemon, r"the broker kept no session for assistant-\S+ \(expired", timeout=30, after=mark)
    recorder.wait_connected(2, timeout=15)
    recorder.publish(f"{root}/ask", json.dumps({"text": "hello", "id": "after"}))
    recorder.wait_for(f"{root}/event/reply", lambda m: m.json()["id"] == "after", timeout=20)


def test_a_copy_of_a_request_is_handled_once(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """QoS 1 delivers at least once: the same id and payload again is a copy, answered once."""
    broker = make_broker()
    recorder = make_mqtt(broker=broker)
    daemon, root = launch(quiet_sections(broker.port, fake.url), recorder, OPENAI_API_KEY=KEY)
    copy = json.dumps({"text": "are you there? c0-0", "id": "c0-0"})
    for payload in (copy, copy, json.dumps({"text": "are you there? c0-1", "id": "c0-1"}), "are you there?"):
        recorder.publish(f"{root}/ask", payload)
    recorder.publish(f"{root}/ask", "are you there?")  # no id: the same words twice are two requests
    recorder.wait_for(f"{root}/event/reply", lambda m: m.json()["id"] == "c0-1", timeout=20)
    wait_log(daemon, r"a copy of a request on \S+/ask came again; handled once")
    texts = [str(r.json["messages"][-1]["content"]) for r in fake.wait_for("chat/completions", 4) if r.json]
    assert texts.count("are you there?") == 2, texts
    assert handled(fake) == Counter({"c0-0": 1, "c0-1": 1})
    assert [m.json()["id"] for m in recorder.messages(f"{root}/event/reply")].count("c0-0") == 1


def test_two_daemons_with_one_site_id_say_that_they_share_a_session(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """The client id names the session: a second daemon with the same site_id takes it, and the
    log says why the first lost its connection."""
    broker = make_broker()
    recorder = make_mqtt(broker=broker)
    sections = quiet_sections(broker.port, fake.url)
    first, _ = launch(sections, recorder, OPENAI_API_KEY=KEY)
    launch(sections, recorder, OPENAI_API_KEY=KEY)
    wait_log(first, r"another client connected with our client id assistant-\S+\? .* Two daemons", timeout=30)


def test_house_traffic_while_away_does_not_crowd_requests_out_of_the_queue(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """The broker keeps at most `max_queued_messages` for a session (10 here): 50 state changes
    while the daemon is stopped must not take the places of the 3 asks sent after them."""
    broker = make_broker(["max_queued_messages 10"])
    recorder = make_mqtt(broker=broker)
    sections = quiet_sections(broker.port, fake.url)
    site = sections["device"]["site_id"]
    daemon, root = launch(sections, recorder, OPENAI_API_KEY=KEY)
    assert daemon.stop() == 0, daemon.log()
    for n in range(50):
        recorder.publish(f"{site}/kitchen/light/state", "ON" if n % 2 else "OFF")  # QoS 1
    for n in range(3):
        recorder.publish(f"{root}/ask", json.dumps({"text": f"are you there? c0-{n}", "id": f"c0-{n}"}))
    daemon, _ = launch(sections, recorder, OPENAI_API_KEY=KEY)
    found = wait_log(daemon, BACKLOG, timeout=30)
    assert found.group(1) == "3", daemon.log()
    for n in range(3):
        recorder.wait_for(f"{root}/event/reply", lambda m, n=n: m.json()["id"] == f"c0-{n}", timeout=20)
    assert "Outgoing messages are being dropped" not in broker.log()


def test_after_a_crash_what_the_broker_kept_is_bounded_by_the_last_sign_of_life(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """Killed with SIGKILL, the daemon could not write when it stopped reading; the next start
    bounds the age of what the broker kept by the last `alive_at` it wrote (at start, then every
    minute): a crash and a quick restart act on them. Without either time, they are stale."""
    broker = make_broker()
    recorder = make_mqtt(broker=broker)
    sections = quiet_sections(broker.port, fake.url)
    for round_, forget in enumerate((False, True)):
        daemon, root = launch(sections, recorder, OPENAI_API_KEY=KEY)
        state = Path(sections["device"]["state_dir"]) / "state.json"
        wait_log(daemon, r"ready: ")
        daemon.process.kill()
        daemon.process.wait()
        saved = json.loads(state.read_text())
        assert saved["offline_at"] is None and isinstance(saved["alive_at"], float), saved
        if forget:  # as if the state file had been lost
            state.write_text(json.dumps({k: v for k, v in saved.items() if k != "alive_at"}))
        kept, dated = f"kept-{round_}", f"dated-{round_}"
        recorder.publish(f"{root}/ask", json.dumps({"text": f"open the garage {round_}", "id": kept}))
        recorder.publish(f"{root}/ask", json.dumps({"text": "what time is it", "id": dated, "sent_at": time.time()}))
        daemon, _ = launch(sections, recorder, OPENAI_API_KEY=KEY)
        answer = recorder.wait_for(f"{root}/event/+", lambda m, i=kept: m.json().get("id") == i, timeout=20)
        recorder.wait_for(f"{root}/event/reply", lambda m, i=dated: m.json()["id"] == i, timeout=20)
        asked = json.dumps([r.json for r in fake.of("chat/completions")])
        if not forget:
            wait_log(daemon, r"resumed the session \S+ \(away for \d+\.\d s\)")
            assert answer.topic.endswith("/event/reply"), answer
            assert "open the garage 0" in asked
        else:
            wait_log(daemon, r"resumed the session \S+ \(away for an unknown time\)")
            error = answer.json()
            assert error["code"] == "stale_request" and error["age_s"] is None and not error["age_exact"], error
            assert "open the garage 1" not in asked
        daemon.stop()
