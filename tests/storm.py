"""A discovery storm against a running daemon: many retained discovery configs published as
fast as one paho client can, while asks arrive and the microphone runs. Shared by
tests/test_storm.py and bench/discovery_storm.py."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from daemon import Daemon
from paho.mqtt.enums import CallbackAPIVersion
from support import Broker, MqttRecorder

PREFIX = "homeassistant"
DISCOVERY_LINE = re.compile(r"discovery: read (\d+) configs in ([\d.]+) s; (\d+) entities known")
MICROPHONE_LINE = re.compile(
    r"microphone: (\d+) frames \(([\d.]+) s of audio in ([\d.]+) s open\), (\d+) dropped, (\d+) overruns,"
    r" longest gap (\d+) ms"
)


BROKER_QUEUE = 200_000
DROPPED = "$SYS/broker/publish/messages/dropped"
UPTIME = "$SYS/broker/uptime"  # published first in every $SYS update


def broker_config(queue: int = BROKER_QUEUE) -> list[str]:
    """mosquitto for a storm: a per-client queue that holds it (the default, 1000, makes the broker
    drop most of a storm for any client that reads slower than the publisher writes), no
    per-message log, and its $SYS counters published every second or two."""
    return [f"max_queued_messages {queue}", "log_dest none", "sys_interval 1"]


def broker_drops(recorder: MqttRecorder) -> int:
    """Messages the broker has dropped so far (its $SYS counter; the recorder must subscribe to DROPPED)."""
    last = recorder.last(DROPPED)
    return int(last.text) if last is not None else 0


def wait_sys_update(recorder: MqttRecorder, timeout: float = 15) -> None:
    """Until the broker's $SYS counters as of now have arrived (the recorder subscribes to UPTIME too).

    Each $SYS update starts with the uptime and then publishes the counters that changed. The
    first uptime seen from now on may come from an update made just before now, the second
    cannot; the sync after it makes sure that update's counters were recorded too.
    """
    first = recorder.wait_for(UPTIME, since=time.monotonic(), timeout=timeout)
    recorder.wait_for(UPTIME, lambda m: m.time > first.time, timeout=timeout)
    recorder.sync()


LATE_LINE = re.compile(r"microphone frames waited (\d+) ms for the loop")


def config_payload(n: int) -> bytes:
    """A zigbee2mqtt-like sensor config (about 500 bytes): device block, availability, template."""
    return json.dumps(
        {
            "name": "Temperature",
            "uniq_id": f"0x{n:016x}_temperature_storm",
            "obj_id": f"storm_{n}_temperature",
            "stat_t": f"storm/{n}",
            "val_tpl": "{{ value_json.temperature }}",
            "json_attr_t": f"storm/{n}",
            "unit_of_meas": "°C",
            "dev_cla": "temperature",
            "stat_cla": "measurement",
            "avty": [{"topic": "storm/bridge/state", "value_template": "{{ value_json.state }}"}],
            "dev": {
                "ids": [f"zigbee2mqtt_0x{n:016x}"],
                "name": f"Storm sensor {n}",
                "mf": "Aqara",
                "mdl": "Temperature and humidity sensor (WSDCGQ11LM)",
                "sw": "3000-0001",
                "via_device": "zigbee2mqtt_bridge_0x00124b0012345678",
            },
            "o": {"name": "Zigbee2MQTT", "sw": "1.40.2", "url": "https://www.zigbee2mqtt.io"},
        }
    ).encode()


def publish_configs(broker: Broker, count: int, client_id: str) -> float:
    """Publish `count` retained configs (QoS 0, as fast as paho goes); the seconds it took.

    Returns once the last one is on the wire: a QoS 1 marker sent after them is acknowledged.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(broker.host, broker.port)
    client.loop_start()
    started = time.monotonic()
    try:
        for n in range(count):
            info = client.publish(f"{PREFIX}/sensor/storm_{n}/config", config_payload(n), qos=0, retain=True)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise AssertionError(f"publish {n} failed: {paho.error_string(info.rc)}")
        client.publish("storm/done", b"", qos=1).wait_for_publish(120)
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class Asks:
    """Asks sent during the storm, and what became of each."""

    prefix: str = "storm"
    ids: list[str] = field(default_factory=list)
    replied: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    sent_at: dict[str, float] = field(default_factory=dict)

    def settle(self, recorder: MqttRecorder, root: str) -> None:
        """Sort the answers recorded so far."""
        for m in recorder.messages(f"{root}/event/reply"):
            if str(m.json().get("id")) in self.sent_at:
                self.replied.add(str(m.json().get("id")))
        for m in recorder.messages(f"{root}/event/error"):
            error = m.json()
            if error.get("code") == "busy" and str(error.get("id")) in self.sent_at:
                self.busy.add(str(error.get("id")))

    def unanswered(self) -> list[str]:
        """Asks with neither a reply nor a busy error."""
        return [i for i in self.ids if i not in self.replied and i not in self.busy]


def ask_during(recorder: MqttRecorder, root: str, stop: threading.Event, asks: Asks, every_s: float = 0.5) -> None:
    """Send an ask every `every_s` until `stop` is set."""
    while not stop.is_set():
        request_id = f"{asks.prefix}-{len(asks.ids)}"
        asks.ids.append(request_id)
        asks.sent_at[request_id] = time.monotonic()
        recorder.publish(f"{root}/ask", json.dumps({"text": "are you there?", "id": request_id}), qos=1, timeout=30)
        stop.wait(every_s)


def wait_answered(recorder: MqttRecorder, root: str, asks: Asks, timeout: float) -> None:
    """Until every ask has a reply or a busy error (or the timeout: the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        asks.settle(recorder, root)
        if not asks.unanswered() or time.monotonic() > deadline:
            return
        with contextlib.suppress(AssertionError):  # no news within the wait: look again
            recorder.wait_for(f"{root}/event/#", timeout=0.5, since=time.monotonic())


def wait_for_entities(
    daemon: Daemon, expected: int, timeout: float, after: int = 0, strict: bool = True
) -> tuple[re.Match[str], float]:
    """Until the daemon logs (past character `after`) that it knows `expected` entities:
    the line, and when it appeared. Past the timeout, fail (or, not `strict`, return the
    last such line: the broker may have dropped some configs)."""
    deadline = time.monotonic() + timeout
    while True:
        log = daemon.log()
        lines = list(DISCOVERY_LINE.finditer(log, after))
        for found in lines:
            if int(found.group(3)) >= expected:
                return found, time.monotonic()
        if daemon.process.poll() is not None or time.monotonic() > deadline:
            if lines and not strict:
                return lines[-1], deadline - timeout  # no time: it never got there
            shown = [m.group(0) for m in lines][-3:]
            raise AssertionError(f"the daemon did not learn {expected} entities in {timeout} s: {shown}\n{log[-3000:]}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Microphone:
    """The daemon's microphone figures, logged when it stops."""

    frames: int
    audio_s: float
    open_s: float
    dropped: int
    overruns: int
    longest_gap_ms: int


def microphone_figures(log: str) -> Microphone:
    """The last microphone line of a daemon's log."""
    found = list(MICROPHONE_LINE.finditer(log))
    assert found, f"no microphone figures in the log:\n{log[-3000:]}"
    g = found[-1].groups()
    return Microphone(int(g[0]), float(g[1]), float(g[2]), int(g[3]), int(g[4]), int(g[5]))


def longest_wait_ms(log: str, after: int = 0) -> int:
    """The longest wait of microphone frames for the loop logged past `after` (0: none over 250 ms)."""
    return max((int(m.group(1)) for m in LATE_LINE.finditer(log, after)), default=0)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB: now (VmRSS) or at its peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")
