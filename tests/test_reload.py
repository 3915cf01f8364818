"""SIGHUP and SIGTERM in the middle of a reply: the turn under way finishes, nothing waiting is lost.

A real daemon (`assistant run`), the real broker and the local API server, whose chat
answer for the first request is held back until the test lets it go.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, base_sections, wait_log
from fake_openai import ChatReply, FakeOpenAI
from support import Broker, MqttRecorder

from assistant.link.session import session_client_id

StartDaemon = Callable[..., tuple[Daemon, str]]


class HeldChat:
    """A chat model whose answer to "slow question" waits until `release()`; others answer at once."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def __call__(self, body: dict[str, Any]) -> ChatReply:
        text = str(body["messages"][-1]["content"])
        if text == "slow question":
            self.arrived.set()
            self.released.wait(timeout=30)
            return ChatReply(text="The slow answer.")
        return ChatReply(text=f"Answer to {text}.")

    def wait_arrived(self) -> None:
        assert self.arrived.wait(timeout=15), "the slow question never reached the model"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def held(fake: FakeOpenAI) -> Iterator[HeldChat]:
    chat = HeldChat()
    fake.chat_handler = chat
    yield chat
    chat.release()  # never leave a server thread waiting


def ask(mqtt: MqttRecorder, root: str, text: str, request_id: str) -> None:
    mqtt.publish(f"{root}/ask", json.dumps({"text": text, "id": request_id}))


def wait_taken(broker: Broker, root: str, count: int, timeout: float = 15) -> None:
    """Until the daemon has taken its `count`th ask: it acknowledges a request (PUBACK) only
    once handled (here: queued), and the broker logs the PUBLISH it sent and that PUBACK."""
    client = re.escape(session_client_id(root))
    sent = re.compile(rf"Sending PUBLISH to {client} \(d\d, q1, r\d, m(\d+), '{re.escape(root)}/ask'")
    deadline = time.monotonic() + timeout
    while True:
        log = broker.log()
        asks = list(sent.finditer(log))
        if len(asks) >= count:
            mid = asks[count - 1].group(1)
            if re.search(rf"Received PUBACK from {client} \(Mid: {mid}\b", log[asks[count - 1].end() :]):
                return
        assert time.monotonic() < deadline, f"the daemon did not take ask {count} within {timeout} s:\n{log[-2000:]}"
        time.sleep(0.02)


def reply_to(mqtt: MqttRecorder, root: str, request_id: str, timeout: float = 20) -> dict[str, Any]:
    found = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == request_id, timeout=timeout)
    return dict(found.json())


def quiet(mqtt_broker: Broker, fake: FakeOpenAI) -> dict[str, dict[str, Any]]:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["tts"] = {"engine": "none"}
    sections["agent"]["instructions"] = "Old instructions."
    return sections


class NotifySocket:
    """A stand-in for systemd's notify socket, read on a thread so the daemon never blocks on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closed.is_set():
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        self.sock.close()

    def lifecycle(self) -> list[str]:
        """READY / RELOADING / STOPPING, in order."""
        return [m.split("\n")[0] for m in self.messages if m.startswith(("READY", "RELOADING", "STOPPING"))]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    notify = NotifySocket(tmp_path / "notify.sock")
    yield notify
    notify.close()


@pytest.mark.parametrize("mqtt_changes", [False, True], ids=["same-broker-settings", "new-broker-settings"])
def test_sighup_mid_reply_finishes_it_and_carries_the_queued_asks_over(
    mqtt_changes: bool,
    fake: FakeOpenAI,
    held: HeldChat,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
    notify_socket: NotifySocket,
) -> None:
    daemon, root = start_daemon(
        quiet(mqtt_broker, fake), OPENAI_API_KEY="test-key", NOTIFY_SOCKET=str(notify_socket.path)
    )
    config = Path(daemon.process.args[-1])  # type: ignore[index]
    text = config.read_text().replace("Old instructions.", "New instructions.")
    if mqtt_changes:  # the connection cannot be kept: the reloaded daemon connects again
        text = text.replace("[mqtt]\n", "[mqtt]\nkeepalive = 30\n")
    config.write_text(text)

    ask(mqtt, root, "slow question", "r1")
    held.wait_arrived()
    ask(mqtt, root, "queued before the reload", "r2")
    daemon.process.send_signal(signal.SIGHUP)
    wait_log(daemon, r"reloading /")
    ask(mqtt, root, "sent during the reload", "r3")
    held.release()

    assert reply_to(mqtt, root, "r1")["text"] == "The slow answer."
    assert reply_to(mqtt, root, "r2")["text"] == "Answer to queued before the reload."
    assert reply_to(mqtt, root, "r3")["text"] == "Answer to sent during the reload."
    assert mqtt.messages(f"{root}/event/error") == []
    # the carried-over requests were answered by the reloaded daemon, with its new settings
    systems = {
        str(r.json["messages"][-1]["content"]): str(r.json["messages"][0]["content"])
        for r in fake.of("chat/completions")
        if r.json is not None
    }
    assert systems["slow question"].startswith("Old instructions.")
    assert systems["queued before the reload"].startswith("New instructions.")
    assert systems["sent during the reload"].startswith("New instructions.")
    assert daemon.process.poll() is None
    wait_log(daemon, r"(?s)reloading /.*ready:")
    assert notify_socket.lifecycle() == ["READY=1", "RELOADING=1", "READY=1"]
    statuses = [m.text for m in mqtt.messages(f"{root}/status")]
    assert statuses == (["online", "offline", "online"] if mqtt_changes else ["online"])
    assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in notify_socket.messages)


def test_sigterm_mid_reply_finishes_it_and_answers_the_queued_ask(
    fake: FakeOpenAI, held: HeldChat, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(quiet(mqtt_broker, fake), OPENAI_API_KEY="test-key")
    ask(mqtt, root, "slow question", "t1")
    held.wait_arrived()
    ask(mqtt, root, "queued before the stop", "t2")
    wait_taken(mqtt_broker, root, 2)  # else it is left to the next instance (the session keeps it)
    daemon.process.send_signal(signal.SIGTERM)
    wait_log(daemon, r"finishing the current turn before stopping")
    held.release()
    assert reply_to(mqtt, root, "t1")["text"] == "The slow answer."
    error = mqtt.wait_for(f"{root}/event/error", predicate=lambda m: m.json()["id"] == "t2", timeout=15).json()
    assert error["code"] == "stopping"
    assert daemon.process.wait(timeout=15) == 0
    assert [m.json()["id"] for m in mqtt.messages(f"{root}/event/reply")] == ["t1"]


def test_asks_sent_throughout_a_reload_are_all_answered_and_the_device_stays_online(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(quiet(mqtt_broker, fake), OPENAI_API_KEY="test-key")
    sent: list[str] = []
    done = threading.Event()

    def keep_asking() -> None:
        while not done.is_set():
            sent.append(f"s{len(sent)}")
            ask(mqtt, root, "hello", sent[-1])
            time.sleep(0.02)  # a steady stream, not a flood (the turn queue holds 32)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        reply_to(mqtt, root, "s5")
        daemon.process.send_signal(signal.SIGHUP)
        wait_log(daemon, r"(?s)reloading /.*ready:")
        reply_to(mqtt, root, f"s{len(sent) + 5}")  # well after the new instance took over
    finally:
        done.set()
        asker.join()
    for request_id in sent:
        reply_to(mqtt, root, request_id)
    assert mqtt.messages(f"{root}/event/error") == []
    assert [m.text for m in mqtt.messages(f"{root}/status")] == ["online"]
    print(f"{len(sent)} asks, all answered")


def test_a_turn_still_running_after_the_grace_period_is_cut_and_answered(
    fake: FakeOpenAI, held: HeldChat, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(quiet(mqtt_broker, fake), OPENAI_API_KEY="test-key")
    ask(mqtt, root, "slow question", "c1")
    held.wait_arrived()
    ask(mqtt, root, "queued behind it", "c2")
    daemon.process.send_signal(signal.SIGHUP)
    error = mqtt.wait_for(f"{root}/event/error", predicate=lambda m: m.json()["id"] == "c1", timeout=20).json()
    assert error["code"] == "reloading" and "10 s" in error["message"]
    assert reply_to(mqtt, root, "c2")["text"] == "Answer to queued behind it."
    assert [m.json()["id"] for m in mqtt.messages(f"{root}/event/reply")] == ["c2"]
