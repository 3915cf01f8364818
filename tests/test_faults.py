"""Fault injection and bad input against the real daemon (`python -m assistant run`).

Everything here is real: mosquitto brokers that are killed and restarted, the local
OpenAI-compatible server failing on purpose, a PulseAudio microphone that is unloaded
and loaded again, a state directory that cannot be created, and thousands of
hypothesis-generated payloads on every input topic.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from daemon import Daemon, base_sections, quiet_sections, wait_log
from fake_openai import ChatReply, FakeOpenAI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from support import (
    Broker,
    MqttMessage,
    MqttRecorder,
    PulseAudio,
    SpeakerRecorder,
    SpeechFactory,
    pcm_to_array,
    require_program,
)

Launch = Callable[..., tuple[Daemon, str]]
MakeBroker = Callable[..., Broker]
MakeMqtt = Callable[..., MqttRecorder]
StartDaemon = Callable[..., tuple[Daemon, str]]

KEY = "test-key"
REQUEST = "turn on the kitchen light"


# --------------------------------------------------------------------------- helpers


def ask(
    recorder: MqttRecorder, root: str, text: str, request_id: str, timeout: float = 15, **fields: Any
) -> dict[str, Any]:
    """Publish an ask and return its reply."""
    recorder.publish(f"{root}/ask", json.dumps({"text": text, "id": request_id, **fields}))
    reply = recorder.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == request_id, timeout=timeout)
    return dict(reply.json())


def error_for(recorder: MqttRecorder, root: str, request_id: str, timeout: float = 15) -> dict[str, Any]:
    """The first event/error about `request_id`."""
    found = recorder.wait_for(
        f"{root}/event/error", predicate=lambda m: m.json().get("id") == request_id, timeout=timeout
    )
    return dict(found.json())


@contextlib.contextmanager
def not_the_bug() -> Iterator[None]:
    """Set-up of an xfail test: a failure in here is not the bug, so it is made an error."""
    try:
        yield
    except AssertionError as error:
        raise RuntimeError(f"set-up failed: {error}") from error


def assert_alive(daemon: Daemon) -> None:
    assert daemon.process.poll() is None, f"daemon exited with {daemon.process.returncode}:\n{daemon.log()[-4000:]}"


# --------------------------------------------------------------------------- 1. broker restart


@dataclass
class Outage:
    """What happened to a turn whose tool call ran while the broker was down."""

    daemon: Daemon
    root: str
    recorder: MqttRecorder
    broker: Broker  # the restarted one
    discovery: str
    restarted_at: float
    actions: list[dict[str, Any]]  # the turn_on actions listed in the reply
    delivered: MqttMessage | None  # the command, if it reached the broker after all


def turn_across_a_broker_restart(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> Outage:
    """Ask to switch the light on; the model's tool call reaches the daemon only once the
    broker is gone; the broker comes back (same port) after about a second and a half."""
    broker = make_broker()
    recorder = make_mqtt(broker=broker)
    sections = quiet_sections(broker.port, fake.url)
    site = sections["device"]["site_id"]
    daemon, root = launch(sections, recorder, OPENAI_API_KEY=KEY)
    discovery = f"homeassistant/device/assistant_{site}/config"
    recorder.wait_for(discovery, timeout=10)
    assert ask(recorder, root, "hello", "before")["text"] == "OK."

    model_called, broker_killed = threading.Event(), threading.Event()

    def model(body: dict[str, Any]) -> ChatReply:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return ChatReply(text=f"Result: {last['content']}")
        if "kitchen light" in str(last["content"]):
            model_called.set()
            broker_killed.wait(20)
            return ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})])
        return ChatReply(text="OK.")

    fake.chat_handler = model
    recorder.publish(f"{root}/ask", json.dumps({"text": REQUEST, "id": "during"}))
    assert model_called.wait(15), "the model was never asked"
    chats_before = len(fake.of("chat/completions"))
    broker.stop()
    assert not broker.is_running()
    wait_log(daemon, r"lost the broker", timeout=10)
    broker_killed.set()
    fake.wait_for("chat/completions", chats_before + 1, timeout=15)  # the tool ran; its result went back

    restarted_at = time.monotonic()
    restarted = make_broker(port=broker.port)
    recorder.wait_connected(2, timeout=15)
    reply = recorder.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "during", timeout=45)
    actions = [a for a in reply.json()["actions"] if a["tool"] == "turn_on"]
    assert actions, reply
    try:
        delivered: MqttMessage | None = recorder.wait_for(
            f"{site}/kitchen/light/set", predicate=lambda m: m.text == "ON", timeout=5
        )
    except AssertionError:
        delivered = None
    print(f"\nturn_on during the outage: {actions}; delivered after the restart: {delivered is not None}")
    fake.chat_handler = None
    return Outage(daemon, root, recorder, restarted, discovery, restarted_at, actions, delivered)


def test_broker_restart_reconnects_reannounces_and_keeps_commands(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    outage = turn_across_a_broker_restart(fake, make_broker, make_mqtt, launch)
    daemon, root, recorder = outage.daemon, outage.root, outage.recorder
    online = recorder.wait_for(
        f"{root}/status", predicate=lambda m: m.text == "online", since=outage.restarted_at, timeout=10
    )
    recorder.wait_for(outage.discovery, since=outage.restarted_at, timeout=10)
    print(f"status online again {online.time - outage.restarted_at:.1f} s after the broker came back")
    assert len(re.findall(r"connected to mqtt", daemon.log())) == 2

    # the new broker knew nothing (no persistence): the retained outputs are there again
    late = make_mqtt([f"{root}/status", f"{root}/state", f"{root}/mute", outage.discovery], broker=outage.broker)
    late.sync()
    retained = {m.topic: m.text for m in late.messages() if m.retain}
    assert retained[f"{root}/status"] == "online"
    assert retained[f"{root}/state"] == "idle"
    assert retained[f"{root}/mute"] == "OFF"
    assert json.loads(retained[outage.discovery])["device"]["identifiers"]

    # the command issued while the broker was down (and the daemon knew it): never sent, said so
    assert [(a["status"], a["ok"]) for a in outage.actions] == [("failed", False)], outage.actions
    assert outage.delivered is None

    # re-subscribed: a new ask is answered
    assert ask(recorder, root, "are you back", "after", timeout=15)["text"] == "OK."
    assert_alive(daemon)
    assert daemon.stop() == 0, daemon.log()


def test_a_command_to_a_stalled_broker_is_unconfirmed_then_settled_with_the_same_id(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    """The broker stops (SIGSTOP) while the tool call publishes UNLOCK: the model and event/action
    hear "unconfirmed", never "failed"; when the broker resumes, the late PUBACK is published as
    event/action with the same id, and the lock got UNLOCK exactly once."""
    broker = make_broker()
    recorder = make_mqtt(broker=broker)
    sections = quiet_sections(broker.port, fake.url)
    sections["homeassistant"]["expose"] = ["light.*", "lock.*"]
    sections["mqtt"]["command_timeout_s"] = 0.5
    site = sections["device"]["site_id"]
    daemon, root = launch(sections, recorder, OPENAI_API_KEY=KEY)
    model_called, stalled = threading.Event(), threading.Event()
    tool_results: list[str] = []

    def model(body: dict[str, Any]) -> ChatReply:
        last = body["messages"][-1]
        if last["role"] == "tool":
            tool_results.append(last["content"])
            return ChatReply(text="I sent it, but I could not confirm it.")
        model_called.set()
        stalled.wait(20)
        return ChatReply(tool_calls=[("lock", {"entity_id": "lock.front_door", "action": "unlock"})])

    fake.chat_handler = model
    recorder.publish(f"{root}/ask", json.dumps({"text": "unlock the front door", "id": "door"}))
    assert model_called.wait(15), "the model was never asked"
    chats = len(fake.of("chat/completions"))
    broker.process.send_signal(signal.SIGSTOP)
    try:
        stalled.set()
        wait_log(daemon, r"did not confirm it within 0.5 s")
        fake.wait_for("chat/completions", chats + 1, timeout=15)  # the tool result went back to the model
    finally:
        broker.process.send_signal(signal.SIGCONT)
    assert json.loads(tool_results[0])["result"] == "unconfirmed", tool_results
    reply = recorder.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "door", timeout=15).json()
    assert [(a["status"], a["ok"]) for a in reply["actions"]] == [("unconfirmed", None)], reply
    late = recorder.wait_for(
        f"{root}/event/action", predicate=lambda m: m.json()["id"] == "door" and m.json().get("late"), timeout=15
    ).json()
    assert (late["status"], late["ok"], late["payload"], late["entity_id"]) == (
        "done",
        True,
        "UNLOCK",
        "lock.front_door",
    )
    recorder.sync()
    assert [m.text for m in recorder.messages(f"{site}/door/set")] == ["UNLOCK"]
    fake.chat_handler = None
    assert_alive(daemon)


# --------------------------------------------------------------------------- 2. API faults

APOLOGY_START = "Sorry, I can't reach my language service"


def test_chat_500_on_every_try_gives_api_error_and_an_apology(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = quiet_sections(mqtt_broker.port, fake.url)  # openai.max_retries = 2: three tries
    daemon, root = start_daemon(sections, OPENAI_API_KEY=KEY)
    fake.fail("chat/completions", 500, times=3)
    reply = ask(mqtt, root, "hello", "r500", timeout=30)
    assert reply["text"].startswith(APOLOGY_START), reply
    error = error_for(mqtt, root, "r500")
    assert error["code"] == "api_error" and "InternalServerError" in error["message"], error
    assert len(fake.of("chat/completions")) == 3
    assert ask(mqtt, root, "hello again", "r500-next")["text"] == "OK."
    assert_alive(daemon)


def test_stt_connection_refused_gives_an_apology(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    # The daemon checks every endpoint before it says ready (and waits for an unreachable
    # one), so stt points at a second server that is stopped once the daemon is up: from
    # then on its port refuses connections.
    stt_server = FakeOpenAI(api_key=KEY)
    stt_server.start()
    try:
        sections = quiet_sections(mqtt_broker.port, fake.url)
        sections["stt"] = {"base_url": stt_server.base_url}
        daemon, root = start_daemon(sections, OPENAI_API_KEY=KEY)
    finally:
        stt_server.stop()
    pulse.play_into_mic(speech("hello there"), wait=False)
    error = mqtt.wait_for(f"{root}/event/error", timeout=30).json()
    assert error["code"] == "api_error" and "stt: APIConnectionError" in error["message"], error
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=10).json()
    assert (reply["id"], reply["actions"]) == (error["id"], [])
    assert reply["text"].startswith(APOLOGY_START), reply
    mqtt.assert_no_message(f"{root}/event/transcript", duration=0.2)
    assert fake.of("audio/transcriptions") == []
    assert ask(mqtt, root, "still there?", "after-stt")["text"] == "OK."  # the agent is unaffected
    assert_alive(daemon)


def test_429_with_retry_after_is_retried_and_succeeds(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(quiet_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    fake.fail("chat/completions", 429, times=1, retry_after=1.5)
    assert ask(mqtt, root, "hello", "r429", timeout=20)["text"] == "OK."
    first, second = fake.of("chat/completions")
    assert second.t - first.t >= 1.4, f"retried after {second.t - first.t:.2f} s, before Retry-After"
    mqtt.assert_no_message(f"{root}/event/error", duration=0.2)
    assert mqtt.messages(f"{root}/event/error") == []
    assert_alive(daemon)


class CuttingChatServer:
    """An OpenAI-compatible chat endpoint whose streams can be cut off mid-way.

    It lists models (for the daemon's start-up check) and streams chat completions; while
    `cut_next` is above zero a stream stops after two content chunks and the TCP
    connection is closed without the terminating chunk or `[DONE]`.
    """

    def __init__(self, text: str = "The kitchen light is on now.") -> None:
        self.text = text
        self.cut_next = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": "gpt-5.4-mini", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.requests.append(self.path)
                    cut = outer.cut_next > 0
                    if cut:
                        outer.cut_next -= 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                words = re.findall(r"\S+\s*", outer.text)
                deltas = [{"role": "assistant", "content": ""}] + [{"content": w} for w in words]
                for index, delta in enumerate(deltas):
                    if cut and index == 3:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self._event({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _event(self, data: dict[str, Any]) -> None:
                data |= {"id": "chatcmpl-cut", "object": "chat.completion.chunk", "created": 0, "model": "m"}
                self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def cutting_server() -> Iterator[CuttingChatServer]:
    server = CuttingChatServer()
    try:
        yield server
    finally:
        server.close()


def test_chat_stream_cut_mid_way_gives_api_error_and_an_apology(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
    cutting_server: CuttingChatServer,
) -> None:
    sections = quiet_sections(mqtt_broker.port, fake.url)
    sections["agent"] |= {"base_url": cutting_server.base_url}
    daemon, root = start_daemon(sections, OPENAI_API_KEY=KEY)
    cutting_server.cut_next = 1
    mqtt.publish(f"{root}/ask", json.dumps({"text": "is the light on", "id": "cut"}))
    error = error_for(mqtt, root, "cut", timeout=20)
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "cut", timeout=5).json()
    assert len(cutting_server.requests) == 1
    assert error["code"] == "api_error" and "agent: APIConnectionError" in error["message"], error
    assert reply["text"].startswith(APOLOGY_START), reply
    assert ask(mqtt, root, "and now?", "after-cut")["text"] == "The kitchen light is on now."
    assert_alive(daemon)


# --------------------------------------------------------------------------- 3. TTS failure


def test_tts_failure_still_publishes_the_reply(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    fake.script = [ChatReply(text="The weather is fine today.")]
    fake.fail("audio/speech", 500, times=10)
    reply = ask(mqtt, root, "how is the weather", "tts1", speak=True)
    assert reply["text"] == "The weather is fine today."
    error = error_for(mqtt, root, "tts1", timeout=20)
    assert error["code"] == "tts_error" and "InternalServerError" in error["message"], error
    assert len(fake.of("audio/speech")) == 3  # first try and two retries
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle", since=mqtt.last(f"{root}/event/error").time)
    assert ask(mqtt, root, "and tomorrow?", "tts2")["text"] == "OK."
    assert_alive(daemon)


# --------------------------------------------------------------------------- 5. unwritable state


def test_state_directory_that_cannot_be_created(
    tmp_path: Path, fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    # chmod does not stop root, so the state directory sits under a regular file: mkdir fails
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    sections = quiet_sections(mqtt_broker.port, fake.url)
    sections["device"]["state_dir"] = str(blocker / "state")
    daemon, root = start_daemon(sections, OPENAI_API_KEY=KEY)
    mqtt.publish(f"{root}/mute/set", "ON")
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "muted")
    assert mqtt.wait_for(f"{root}/mute", predicate=lambda m: m.text == "ON")
    warning = wait_log(daemon, r"WARNING .*cannot save state to \S*a_file/state/state\.json \((.*)\)")
    assert "Not a directory" in warning.group(1), warning.group(0)
    assert ask(mqtt, root, "are you muted", "ro1")["text"] == "OK."
    mqtt.publish(f"{root}/mute/set", "OFF")
    assert mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle", since=time.monotonic() - 0.05)
    assert blocker.read_text() == "not a directory\n"
    assert_alive(daemon)


# --------------------------------------------------------------------------- 6. bad input fuzz

INPUT_TOPICS = ("ask", "say", "listen", "cancel", "mute/set", "image/generate")
FIELDS = ("text", "id", "speak", "conversation_id", "state", "prompt", "n", "size", "quality", "style")

# JSON values of every kind, nested a few levels deep (json.dumps writes NaN / Infinity, which
# Python's json.loads accepts back). Deep nesting and lone surrogates ("\ud800") have tests of
# their own below.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _repeat(chunk: bytes, size: int) -> bytes:
    return (chunk * (size // len(chunk) + 1))[:size]


payloads = st.one_of(
    st.binary(max_size=300),  # raw bytes, mostly not UTF-8
    st.builds(_repeat, st.binary(min_size=1, max_size=32), st.integers(16 * 1024, 100_000)),  # huge
    st.text(max_size=300).map(str.encode),  # unicode text (valid asks, says, ids)
    st.text(max_size=80).map(lambda t: ("{" + t).encode()),  # malformed JSON
    json_values.map(_dumps),  # nested JSON, arrays, numbers, strings, null
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6).map(_dumps),  # wrong types
    st.builds(
        lambda t, n: _dumps({"text": t * n, "speak": True}), st.text(min_size=1, max_size=4), st.integers(1, 6000)
    ),
    (st.integers() | st.floats()).map(lambda n: str(n).encode()),  # numbers
    st.sampled_from([b"", b" ", b"ON", b"off", b"{}", b"null", b"[]", b"true", b'{"text": ""}', b'{"state": "ON"}']),
)


FUZZ_EXAMPLES = 3000


def flood(broker: Broker, root: str) -> dict[str, int]:
    """Publish FUZZ_EXAMPLES hypothesis-generated payloads (QoS 0) to the daemon's input topics."""
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzz-{root.replace('/', '-')}")
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    sent = dict.fromkeys(INPUT_TOPICS, 0)
    size = 0
    started = time.monotonic()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,  # nothing written to .hypothesis/
        phases=[Phase.generate],  # publishing cannot fail, so there is nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(topic=st.sampled_from(INPUT_TOPICS), payload=payloads)
    def publish(topic: str, payload: bytes) -> None:
        nonlocal size
        info = publisher.publish(f"{root}/{topic}", payload, qos=0)
        assert info.rc == paho.MQTT_ERR_SUCCESS, paho.error_string(info.rc)
        sent[topic] += 1
        size += len(payload)

    try:
        publish()
        publisher.publish(f"{root}/fuzz-done", b"", qos=1).wait_for_publish(30)  # all that came before is out
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    print(f"\nfuzz: sent {sum(sent.values())} messages, {size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s")
    print(f"fuzz: per topic {sent}")
    return sent


def wait_until_dispatched(recorder: MqttRecorder, daemon: Daemon, root: str, timeout: float = 60) -> None:
    """Messages are dispatched in order: once a marker sent now is answered, all before it were.

    A request that arrives while the daemon's input queue is full is answered busy instead, so
    the marker is sent again until one is answered.
    """
    since = time.monotonic()
    deadline = since + timeout
    for attempt in itertools.count():
        assert_alive(daemon)
        recorder.publish(f"{root}/ask", _dumps({"text": 0, "id": f"marker-{attempt}"}))
        try:
            recorder.wait_for(f"{root}/event/error", predicate=lambda m: '"marker-' in m.text, since=since, timeout=2)
            return
        except AssertionError:
            assert time.monotonic() < deadline, f"the daemon did not get through the flood within {timeout} s"


def assert_bad_payloads_answered(recorder: MqttRecorder, root: str) -> None:
    """One bad payload of each kind gets its own bad_request (with its id when it had one)."""
    with_ids = [
        ("ask", b'{"text": 42, "id": "b1"}'),
        ("ask", b'{"text": "hi", "speak": "yes", "id": "b2"}'),
        ("ask", b'{"id": "b3"}'),
        ("say", b'{"text": [], "id": "b4"}'),
        ("say", b'{"text": "' + b"x" * 3000 + b'", "id": "b5"}'),
        ("image/generate", b'{"prompt": "a cat", "id": "b6"}'),  # images are off
        ("image/generate", b'{"prompt": "a cat", "n": 9, "id": "b7"}'),
    ]
    for topic, payload in with_ids:
        recorder.publish(f"{root}/{topic}", payload)
    for index in range(1, len(with_ids) + 1):
        assert error_for(recorder, root, f"b{index}", timeout=10)["code"] == "bad_request"
    without_ids = [("mute/set", b"MAYBE"), ("listen", b"x" * 65), ("cancel", b"\xff"), ("ask", b"{"), ("say", b"")]
    for topic, payload in without_ids:
        sent_at = time.monotonic()
        recorder.publish(f"{root}/{topic}", payload)
        error = recorder.wait_for(f"{root}/event/error", since=sent_at, timeout=10).json()
        assert error["code"] == "bad_request" and f"/{topic}: " in error["message"], error


def test_fuzzed_payloads_on_every_input_topic(
    fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    broker = make_broker()
    sections = quiet_sections(broker.port, fake.url)  # valid says (and asks with speak) queue no speech
    root = f"assistant/{sections['device']['site_id']}"
    recorder = make_mqtt([f"{root}/state", f"{root}/status", f"{root}/event/#"], broker=broker)  # not the flood
    daemon, _ = launch(sections, recorder, OPENAI_API_KEY=KEY)

    total = sum(flood(broker, root).values())
    wait_until_dispatched(recorder, daemon, root)
    errors = [m.json() for m in recorder.messages(f"{root}/event/error")]
    codes = collections.Counter(e["code"] for e in errors)
    replies = len(recorder.messages(f"{root}/event/reply"))
    refused = daemon.log().count("too many requests waiting")
    print(f"fuzz: {len(errors)} event/error {dict(codes)}, {replies} replies, {refused} refused busy")
    assert "without an answer" not in daemon.log()  # every request that did not fit was answered busy
    assert codes["busy"] == refused, (codes, refused)  # ... and each answer reached event/error
    assert codes["bad_request"] >= total // 4, codes
    assert set(codes) <= {"bad_request", "busy"}, [e for e in errors if e["code"] not in ("bad_request", "busy")]
    assert_bad_payloads_answered(recorder, root)

    recorder.publish(f"{root}/mute/set", "OFF")
    assert ask(recorder, root, "still alive?", "fuzz-final", timeout=15)["text"] == "OK."
    assert_alive(daemon)
    assert "CRITICAL" not in daemon.log()
    assert daemon.stop() == 0, daemon.log()[-4000:]


# --------------------------------------------------------------------------- 4. microphone


def source_outputs(pulse: PulseAudio) -> list[dict[str, str]]:
    """Every recording stream: its index, source name and owning process id."""
    sources = dict(line.split("\t")[:2] for line in pulse.pactl("list", "short", "sources").splitlines())
    streams = []
    for block in re.split(r"^Source Output #", pulse.pactl("list", "source-outputs"), flags=re.MULTILINE)[1:]:
        source = re.search(r"^\s*Source: (\d+)", block, re.MULTILINE)
        pid = re.search(r'application\.process\.id = "(\d+)"', block)
        streams.append(
            {
                "index": block.split("\n", 1)[0].strip(),
                "source": sources.get(source.group(1), "?") if source else "?",
                "pid": pid.group(1) if pid else "",
            }
        )
    return streams


def remap_module(pulse: PulseAudio) -> tuple[str, list[str]] | None:
    """(module index, arguments) of the remap source that is the virtual microphone."""
    for line in pulse.pactl("list", "short", "modules").splitlines():
        index, name, *rest = line.split("\t")
        args = rest[0].split() if rest else []
        if name == "module-remap-source" and f"source_name={PulseAudio.MIC_SOURCE}" in args:
            return index, args
    return None


@pytest.fixture
def mic_restored(pulse: PulseAudio) -> Iterator[list[str]]:
    """Yields the virtual microphone's module arguments; afterwards the microphone is back
    (loaded, default, not suspended) and recorders the test moved are where they were."""
    found = remap_module(pulse)
    assert found is not None, pulse.pactl("list", "short", "modules")
    before = {s["index"]: s["source"] for s in source_outputs(pulse)}
    try:
        yield found[1]
    finally:
        if remap_module(pulse) is None:
            pulse.pactl("load-module", "module-remap-source", *found[1])
        pulse.pactl("set-default-source", PulseAudio.MIC_SOURCE)
        pulse.pactl("suspend-source", PulseAudio.MIC_SOURCE, "0")
        for stream in source_outputs(pulse):
            home = before.get(stream["index"])
            if home not in (None, "?", stream["source"]):
                pulse.pactl("move-source-output", stream["index"], home)
        pulse.wait_monitors_ready()
        after = {s["index"]: s["source"] for s in source_outputs(pulse)}
        assert {i: after.get(i) for i in before if i in after} == {i: before[i] for i in before if i in after}
        assert pulse.pactl("get-default-source").strip() == PulseAudio.MIC_SOURCE


def daemon_source(pulse: PulseAudio, daemon: Daemon) -> str:
    """The source the daemon records from (PulseAudio moves streams between sources)."""
    mine = [s["source"] for s in source_outputs(pulse) if s["pid"] == str(daemon.process.pid)]
    assert len(mine) == 1, source_outputs(pulse)
    return mine[0]


def test_microphone_vanishes_and_comes_back(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
    mic_restored: list[str],
) -> None:
    daemon, root = start_daemon(quiet_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    assert daemon_source(pulse, daemon) == PulseAudio.MIC_SOURCE
    fake.transcript = REQUEST

    # 1. The device is unloaded for 3 s, then loaded again with the same arguments.
    module = remap_module(pulse)
    assert module is not None
    pulse.pactl("unload-module", module[0])
    time.sleep(3)  # an outage of three seconds: its length is the test
    assert_alive(daemon)
    # PulseAudio does not end the stream: it moves it to the fallback source...
    print(f"while the microphone is gone the daemon records from {daemon_source(pulse, daemon)}")
    pulse.pactl("load-module", "module-remap-source", *mic_restored)
    pulse.pactl("set-default-source", PulseAudio.MIC_SOURCE)
    # ... and back to the new default: the daemon hears again without reopening anything
    deadline = time.monotonic() + 5
    while daemon_source(pulse, daemon) != PulseAudio.MIC_SOURCE:
        assert time.monotonic() < deadline, source_outputs(pulse)
        time.sleep(0.1)
    pulse.play_into_mic(speech(REQUEST), wait=False)
    first = mqtt.wait_for(f"{root}/event/transcript", timeout=20).json()
    assert first["text"] == REQUEST
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle", since=time.monotonic() - 0.1, timeout=15)

    # 2. The device stops delivering audio (suspended): the daemon notices the stall, reopens
    #    the microphone until audio flows again, and hears the next request.
    mark = len(daemon.log())
    pulse.pactl("suspend-source", PulseAudio.MIC_SOURCE, "1")
    wait_log(daemon, r"microphone delivered nothing for [\d.]+ s; reopening", after=mark, timeout=10)
    pulse.pactl("suspend-source", PulseAudio.MIC_SOURCE, "0")
    wait_log(daemon, r"INFO \S+: microphone open", after=mark, timeout=10)
    pulse.play_into_mic(speech(REQUEST), wait=False)  # its leading second of silence covers the stream start
    second = mqtt.wait_for(
        f"{root}/event/transcript", predicate=lambda m: m.json()["id"] != first["id"], timeout=20
    ).json()
    assert second["text"] == REQUEST
    assert_alive(daemon)


LONG_REPLY = (
    "Here is a long answer, so that the microphone has time to stall while I am still talking. "
    "It goes on for several sentences, one after another, and every word of it must be heard."
)


def voiced_seconds(samples: Any, rate: int) -> float:
    """How long a recording holds sound, in 20 ms windows (pauses between words excluded)."""
    import numpy as np

    window = rate // 50
    frames = np.asarray(samples[: len(samples) // window * window], dtype=np.float64).reshape(-1, window)
    return float((np.sqrt((frames**2).mean(axis=1)) > 300).sum()) / 50


def test_microphone_stalls_while_a_long_reply_plays(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    start_daemon: StartDaemon,
    mic_restored: list[str],
) -> None:
    """The microphone stops delivering while the daemon speaks. The daemon used to tear PortAudio
    down under the playing output stream (reply cut, and often a heap-corruption abort). Now the
    reply plays to its end, the microphone is reopened afterwards, and nothing crashes."""
    from fake_openai import TTS_SAMPLE_RATE, synth_pcm

    sections = base_sections(mqtt_broker.port, fake.url)
    daemon, root = start_daemon(sections, OPENAI_API_KEY=KEY)
    reference = voiced_seconds(pcm_to_array(synth_pcm(LONG_REPLY, words_per_minute=175)), TTS_SAMPLE_RATE)
    for trial in range(4):
        mark = len(daemon.log())
        since = time.monotonic()
        mqtt.publish(f"{root}/say", json.dumps({"text": LONG_REPLY, "id": f"long-{trial}"}))
        mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking", since=since, timeout=15)
        pulse.pactl("suspend-source", PulseAudio.MIC_SOURCE, "1")
        try:
            wait_log(daemon, r"microphone delivered nothing for [\d.]+ s", after=mark, timeout=15)
            mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle", since=since, timeout=40)
        finally:
            pulse.pactl("suspend-source", PulseAudio.MIC_SOURCE, "0")
        assert_alive(daemon)
        wait_log(daemon, r"INFO \S+: microphone open", after=mark, timeout=30)
        played = voiced_seconds(speaker.samples()[speaker.sample_index_at(since) :], speaker.rate)
        print(f"trial {trial}: {played:.1f} s of {reference:.1f} s of speech played")
        assert played >= 0.85 * reference, f"the reply was cut: {played:.1f} s of {reference:.1f} s"
        request_id = f"long-{trial}"
        assert not mqtt.messages(f"{root}/event/error", predicate=lambda m, rid=request_id: m.json().get("id") == rid)
    assert_alive(daemon)
    assert daemon.stop() == 0, daemon.log()[-3000:]


# --------------------------------------------------------------------------- 7. secrets


API_SECRET = "sk-test-SECRET-123"
MQTT_USER, MQTT_SECRET = "voice", "mqtt-Pa55-SECRET-456"


def test_secrets_never_reach_the_log_or_mqtt(
    tmp_path: Path, fake: FakeOpenAI, make_broker: MakeBroker, make_mqtt: MakeMqtt, launch: Launch
) -> None:
    passwords = tmp_path / "passwords"
    subprocess.run(
        [require_program("mosquitto_passwd"), "-c", "-b", str(passwords), MQTT_USER, MQTT_SECRET],
        check=True,
        capture_output=True,
        timeout=10,
    )
    broker = make_broker([f"password_file {passwords}"], allow_anonymous=False)
    recorder = make_mqtt(broker=broker, username=MQTT_USER, password=MQTT_SECRET)
    fake.api_key = API_SECRET
    sections = base_sections(broker.port, fake.url)  # speech through the API too: three stages use the key
    sections["mqtt"]["username"] = MQTT_USER
    site = sections["device"]["site_id"]
    daemon, root = launch(
        sections,
        recorder,
        OPENAI_API_KEY=API_SECRET,
        ASSISTANT_MQTT__PASSWORD=MQTT_SECRET,
        ASSISTANT_LOG_LEVEL="DEBUG",
    )
    assert fake.of("models")[0].headers["authorization"] == "Bearer " + API_SECRET

    def model(body: dict[str, Any]) -> ChatReply:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return ChatReply(text="The kitchen light is on.")
        if "kitchen" in str(last["content"]):
            return ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})])
        return ChatReply(text="OK.")

    fake.chat_handler = model
    assert ask(recorder, root, REQUEST, "s1")["actions"][0]["ok"] is True
    fake.fail("chat/completions", 500, times=3)
    assert ask(recorder, root, "hello", "s2", timeout=30)["text"].startswith(APOLOGY_START)
    fake.fail("chat/completions", 401)
    assert ask(recorder, root, "hello", "s3", timeout=30)["text"].startswith(APOLOGY_START)
    fake.fail("audio/speech", 401)
    assert ask(recorder, root, "say something", "s4", speak=True)["text"] == "OK."
    assert error_for(recorder, root, "s4")["code"] == "tts_error"
    recorder.publish(f"{root}/ask", b'{"text": null, "id": "s5"}')
    assert error_for(recorder, root, "s5")["code"] == "bad_request"
    codes = [m.json()["code"] for m in recorder.messages(f"{root}/event/error")]
    assert codes.count("api_error") == 2, codes
    assert daemon.stop() == 0
    recorder.wait_for(f"{root}/status", predicate=lambda m: m.text == "offline")

    log = daemon.log()
    assert "DEBUG " in log and "AuthenticationError" in log, log[-3000:]
    messages = recorder.messages()
    assert any(m.topic == f"{site}/kitchen/light/set" for m in messages)
    print(f"scanned {len(log)} characters of log and {len(messages)} MQTT messages")
    for secret in (API_SECRET, MQTT_SECRET, API_SECRET.removeprefix("sk-"), "SECRET-123", "SECRET-456"):
        assert secret not in log, f"{secret!r} is in the daemon log"
        for message in messages:
            assert secret not in message.topic, message
            assert secret.encode() not in message.payload, message


# --------------------------------------------------------------------------- daemon bugs found by these tests, fixed


def died_of(daemon: Daemon, cause: str, check: Callable[[], None]) -> None:
    """Run `check`; if it fails because the daemon died of `cause`, raise AssertionError (the
    known bug); if the daemon died of anything else, raise RuntimeError, so that a strict
    `xfail(raises=AssertionError)` does not hide a different failure."""
    try:
        check()
    except AssertionError:
        daemon.process.poll()
        if daemon.process.returncode is None:
            raise
        if cause not in daemon.log():
            raise RuntimeError(f"the daemon died, but not of {cause}:\n{daemon.log()[-4000:]}") from None
        raise AssertionError(f"the daemon died of {cause} (exit code {daemon.process.returncode})") from None


def expect(
    recorder: MqttRecorder,
    daemon: Daemon,
    topic: str,
    predicate: Callable[[MqttMessage], bool] | None = None,
    since: float | None = None,
    timeout: float = 10,
) -> MqttMessage:
    """`recorder.wait_for`, but giving up as soon as the daemon has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return recorder.wait_for(topic, predicate, since=since, timeout=0.25)
        except AssertionError:
            if daemon.process.poll() is not None or time.monotonic() >= deadline:
                raise


def test_deeply_nested_json_is_a_bad_request(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, launch: Launch
) -> None:
    with not_the_bug():
        daemon, root = launch(quiet_sections(mqtt_broker.port, fake.url), mqtt, OPENAI_API_KEY=KEY)
    sent_at = time.monotonic()
    mqtt.publish(f"{root}/mute/set", b'{"state": ' + b"[" * 5000 + b"]" * 5000 + b"}")  # 10 KB

    def check() -> None:
        error = expect(mqtt, daemon, f"{root}/event/error", since=sent_at).json()
        assert error["code"] == "bad_request", error
        mqtt.publish(f"{root}/ask", json.dumps({"text": "hello", "id": "deep-after"}))
        expect(mqtt, daemon, f"{root}/event/reply", lambda m: m.json()["id"] == "deep-after")
        assert_alive(daemon)

    died_of(daemon, "RecursionError", check)


@pytest.mark.parametrize(
    ("topic", "payload", "request_id"),
    [
        ("ask", b'{"text": 42, "id": "\\ud800"}', None),  # an id that is not text cannot be named
        ("listen", b'{"id": "x\\udfff"}', None),
        ("ask", b'{"text": "hello", "id": "\\ud83d"}', None),
        ("ask", b'{"text": "hello \\ud800", "id": "sur-text"}', "sur-text"),  # the text itself: its id is named
    ],
    ids=["bad-ask-id", "listen-id", "good-ask-id", "ask-text"],
)
def test_lone_surrogates_in_json_are_answered(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    launch: Launch,
    topic: str,
    payload: bytes,
    request_id: str | None,
) -> None:
    with not_the_bug():
        daemon, root = launch(quiet_sections(mqtt_broker.port, fake.url), mqtt, OPENAI_API_KEY=KEY)
    sent_at = time.monotonic()
    mqtt.publish(f"{root}/{topic}", payload)

    def check() -> None:
        answer = expect(
            mqtt, daemon, f"{root}/event/#", lambda m: m.topic.endswith(("/error", "/reply", "/wake")), since=sent_at
        )
        assert_alive(daemon)
        data = answer.json()  # a lone surrogate is not text: the whole payload is a bad request, never acted on
        assert answer.topic == f"{root}/event/error", (answer.topic, data)
        assert (data["code"], data["id"]) == ("bad_request", request_id), data
        assert "lone surrogate" in data["message"], data
        mqtt.publish(f"{root}/ask", json.dumps({"text": "hello", "id": "sur-after"}))
        expect(mqtt, daemon, f"{root}/event/reply", lambda m: m.json()["id"] == "sur-after")
        assert_alive(daemon)

    died_of(daemon, "UnicodeEncodeError", check)
