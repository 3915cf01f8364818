"""Side by side: Home Assistant's own agents against the daemon, on one broker and one house.

One mosquitto, 72 zigbee2mqtt-like lights and switches (side_by_side_house.py) that both learn
by MQTT discovery, one local OpenAI-compatible server (tests/fake_openai.py) answering at once
with a tool call and then a sentence, and:

* Home Assistant 2025.4.4 (the tests' real one, side_by_side_ha.py): MQTT, mqtt_statestream with
  `publish_attributes: true`, the bridge package, its default conversation agent, and
  openai_conversation (Responses API, through `OPENAI_BASE_URL`), asked over REST
  (`/api/conversation/process`, one kept-alive connection);
* the daemon (side_by_side_daemon.py) in `wake.mode = "mqtt"`, knowing the house through
  discovery, the bridge's snapshot and statestream, asked over MQTT (`<prefix>/ask`).

Interleaved trials, each of them: a local command (Home Assistant's default agent vs the fast
path), then an LLM command (openai_conversation vs the daemon's agent), each time Home Assistant
and the daemon in turn on the same device (one switches it, the other switches it back; the order
alternates from trial to trial). Timed from the request leaving this process to the command on
the device's topic and to the reply, all on this process's clock; between requests the bench
waits for the device's new state to come back through statestream and the broker to go quiet.
Then: what each sends to the model (system prompt + tools, in tokens) for the 72 devices and for 8
more lights, idle CPU and memory, and a restart of each (start -> ready, then the first command).

    .venv/bin/python bench/side_by_side.py [--trials 30] [--idle-s 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import side_by_side_daemon as daemon_side  # bench/ is on the path when run as a script
import side_by_side_house as house
import side_by_side_report as report
from fake_openai import ChatReply, FakeOpenAI
from latency import cpu_seconds, rss_mb
from side_by_side_ha import DEFAULT_AGENT, BenchHomeAssistant, Conversation, succeeded
from support import MqttMessage, MqttRecorder, PulseAudio, start_broker

HA_VERSION = "2025.4.4"
EXTRA_LIGHTS = 8
QUIET_S = 0.15  # the broker counts as quiet after this long without a message
NOT_ASKED = "I cannot help with that."  # the model's answer outside the LLM trials: it does nothing


@dataclass
class Series:
    """One row's timings, in seconds."""

    to_command: list[float] = field(default_factory=list)
    to_reply: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class SideBySide:
    """Everything the bench starts, and the measurements (see the module docstring)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.series: dict[tuple[str, str], Series] = {
            (path, who): Series() for path in ("local", "llm") for who in ("ha", "daemon")
        }
        self.figures: dict[str, Any] = {}
        self.target: tuple[house.Device, bool] | None = None  # what the model is to switch, and on or off
        self.broker = start_broker(workdir=work)
        self.api = FakeOpenAI()
        self.api.start()
        self.api.chat_handler = self._daemon_model
        self.api.responses_handler = self._ha_model
        self.pulse = PulseAudio.start(keep_monitors=False)
        self.devices = house.build()
        self.zigbee = house.Zigbee2Mqtt(self.broker.host, self.broker.port, self.devices)
        self.zigbee.announce()
        self.mqtt = MqttRecorder(self.broker.host, self.broker.port, ["#"])
        self.ha: BenchHomeAssistant | None = None
        self.daemon: daemon_side.RunningDaemon | None = None

    # --- the model's answers: a tool call for the target, then a sentence once the tool has answered

    def _ha_model(self, req: dict[str, Any]) -> ChatReply:
        if self.target is None:
            return ChatReply(text=NOT_ASKED)
        device, on = self.target
        if req["input"][-1].get("type") == "function_call_output":
            return ChatReply(text=f"The {device.name} is {'on' if on else 'off'}.")
        return ChatReply(tool_calls=[("HassTurnOn" if on else "HassTurnOff", {"name": device.name})])

    def _daemon_model(self, req: dict[str, Any]) -> ChatReply:
        if self.target is None:
            return ChatReply(text=NOT_ASKED)
        device, on = self.target
        if req["messages"][-1].get("role") == "tool":
            return ChatReply(text=f"The {device.name} is {'on' if on else 'off'}.")
        return ChatReply(tool_calls=[("turn_on" if on else "turn_off", {"entity_id": device.entity_id})])

    # --- set-up

    def start(self) -> None:
        os.environ["OPENAI_BASE_URL"] = self.api.base_url  # read by Home Assistant's openai SDK
        (self.work / "ha").mkdir()
        self.ha = BenchHomeAssistant.start_new(HA_VERSION, self.work / "ha", self.broker)
        self.figures["ha first start s"] = self.ha.start_seconds[-1]
        self.ha.wait_entities([d.entity_id for d in self.devices])
        self.llm_agent = self.ha.add_openai(self.api.api_key)
        self.conversation = Conversation(self.ha)
        site = f"bench{uuid.uuid4().hex[:6]}"
        config = daemon_side.config(
            self.work / f"{site}.toml", site, self.broker.port, self.api.base_url, HA_VERSION, self.work / "state"
        )
        self.daemon = daemon_side.RunningDaemon(config, self.pulse.env, self.work / "daemon", self.mqtt)
        self.figures["daemon first start s"] = self.daemon.start()
        self._wait_daemon_knows(self.devices[-1])

    def _wait_daemon_knows(self, device: house.Device, timeout: float = 60) -> float:
        """Until a local command for `device` reaches it (the daemon has learned it); seconds from the
        first try to that command. Switches it and leaves it switched."""
        assert self.daemon is not None
        first = time.monotonic()
        while time.monotonic() - first < timeout:
            on = not device.is_on
            request_id, sent = self.daemon.ask(_local_text(device, on))
            done = self._wait_any(device, on, f"{self.daemon.root}/event/reply", request_id, sent)
            if done is not None and done.topic == device.command_topic:
                self._settle(device, on, sent)
                return done.time - first
        raise RuntimeError(f"the daemon did not learn {device.entity_id} within {timeout} s")

    def _wait_any(
        self, device: house.Device, on: bool, reply_topic: str, request_id: str, since: float
    ) -> MqttMessage | None:
        """The command for `device` or else the reply (the daemon replies after its command), or None."""

        def wanted(m: MqttMessage) -> bool:
            if m.topic == device.command_topic:
                return _commands(m, on)
            return m.topic == reply_topic and m.json().get("id") == request_id

        try:
            return self.mqtt.wait_for("#", wanted, timeout=20, since=since)
        except AssertionError:
            return None

    # --- one request each way

    def _wait_command(self, device: house.Device, on: bool, since: float) -> float | None:
        try:
            found = self.mqtt.wait_for(device.command_topic, lambda m: _commands(m, on), timeout=10, since=since)
        except AssertionError:
            return None
        return found.time

    def _settle(self, device: house.Device, on: bool, since: float) -> None:
        """Until Home Assistant's statestream shows the device's new state and the broker is quiet."""
        state_topic = f"{daemon_side.STATESTREAM}/{device.component}/{device.object_id}/state"
        expected = "on" if on else "off"
        try:
            self.mqtt.wait_for(state_topic, lambda m: m.text == expected, timeout=10, since=since)
        except AssertionError:
            print(f"warning: no statestream state {expected!r} for {device.entity_id}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            last = self.mqtt.last("#")
            if last is None or time.monotonic() - last.time >= QUIET_S:
                break
            time.sleep(0.02)  # the next look at the broker's traffic

    def one(self, path: str, who: str, device: house.Device, record: bool = True) -> None:
        """One request by `who` ("ha" or "daemon") on `path` ("local" or "llm") that switches `device`."""
        assert self.ha is not None and self.daemon is not None
        on = not device.is_on
        text = _local_text(device, on) if path == "local" else _llm_text(device, on)
        self.target = (device, on)
        series = self.series[(path, who)]
        self.mqtt.clear()
        model_requests = len(self.api.requests)
        if who == "ha":
            agent = DEFAULT_AGENT if path == "local" else self.llm_agent
            sent = time.monotonic()
            try:
                replied, answer = self.conversation.process(text, agent)
                ok = succeeded(answer)
            except (RuntimeError, OSError) as error:
                print(f"warning: Home Assistant: {error}")
                replied, ok = sent, False
        else:
            conversation = None if path == "local" else uuid.uuid4().hex  # a new conversation each time
            request_id, sent = self.daemon.ask(text, conversation)
            try:
                replied, reply = self.daemon.wait_reply(request_id, sent)
                ok = any(action.get("ok") is True for action in reply.get("actions", []))
            except AssertionError:
                replied, ok = sent, False
        commanded = self._wait_command(device, on, sent)
        asked_model = len(self.api.requests) > model_requests
        self.target = None
        self._settle(device, on, sent)
        if not record:
            return
        if commanded is None or not ok or asked_model != (path == "llm"):
            why = "no command" if commanded is None else "no success reply" if not ok else "model asked or not"
            series.failures.append(f"{text!r}: {why}")
            return
        series.to_command.append(commanded - sent)
        series.to_reply.append(replied - sent)

    def trials(self, count: int, warmup: int) -> None:
        """`warmup` uncounted trials, then `count` counted ones (see the module docstring)."""
        for number in range(-warmup, count):
            local = self.devices[(2 * number) % len(self.devices)]
            llm = self.devices[(2 * number + 1) % len(self.devices)]
            order = ("ha", "daemon") if number % 2 == 0 else ("daemon", "ha")
            for path, device in (("local", local), ("llm", llm)):
                for who in order:
                    self.one(path, who, device, record=number >= 0)
            if number >= 0 and (number + 1) % 10 == 0:
                print(f"  {number + 1} of {count} trials", flush=True)

    # --- prompt size

    def prompt_tokens(self) -> dict[str, tuple[int, int]]:
        """(system, tools) tokens of the latest first request each made to the model."""
        ha = [r.json for r in self.api.of("responses") if r.json and r.json["input"][-1].get("role") == "user"]
        daemon = [
            r.json for r in self.api.of("chat/completions") if r.json and r.json["messages"][-1]["role"] == "user"
        ]
        return {"ha": report.ha_prompt(ha[-1]), "daemon": report.daemon_prompt(daemon[-1])}

    def growth(self) -> None:
        """The prompts for the house, then for `EXTRA_LIGHTS` more lights (once both know them)."""
        self.figures["prompt"] = self.prompt_tokens()
        added = house.extra_lights(EXTRA_LIGHTS, len(self.devices) + 1)
        announced = time.monotonic()
        self.zigbee.announce(added)
        assert self.ha is not None
        self.ha.wait_entities([d.entity_id for d in added])
        last = added[-1].entity_id
        self.mqtt.wait_for(f"{daemon_side.SERVICE_TOPIC}/house", lambda m: last in m.text, timeout=60, since=announced)
        for device in added:
            self._wait_daemon_knows(device)
        self.devices += added
        for who in ("ha", "daemon"):
            self.one("llm", who, added[0], record=False)
        self.figures["prompt more"] = self.prompt_tokens()

    # --- idle, restarts

    def idle(self, seconds: float) -> None:
        assert self.ha is not None and self.daemon is not None and self.ha._process is not None
        pids = {"ha": self.ha._process.pid, "daemon": self.daemon.pid, "pulse": self.pulse.process.pid}
        time.sleep(2.0)  # past the last request's work
        before = {who: cpu_seconds(pid) for who, pid in pids.items()}
        began = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        self.figures["idle cpu %"] = {
            who: (cpu_seconds(pid) - before[who]) / elapsed * 100 for who, pid in pids.items()
        }
        self.figures["idle rss MB"] = {"ha": self.ha.memory_kib() / 1024, "daemon": rss_mb(self.daemon.pid)}
        self.figures["idle s"] = seconds

    def restarts(self) -> None:
        """Restart each (the other one running): start -> ready, then the first command after it."""
        assert self.ha is not None and self.daemon is not None
        self.daemon.stop()
        self.figures["daemon ready s"] = self.daemon.start()
        device = next(d for d in self.devices if not d.is_on)
        self.figures["daemon first command s"] = self._wait_daemon_knows(device)
        self.conversation.close()
        self.ha.restart()
        self.figures["ha ready s"] = self.ha.start_seconds[-1]
        device = next(d for d in self.devices if not d.is_on)
        self.figures["ha first command s"] = self._ha_first_command(device)

    def _ha_first_command(self, device: house.Device, timeout: float = 120) -> float:
        """Seconds from the first try of a local command right after the start to its command."""
        assert self.ha is not None
        first = time.monotonic()
        while time.monotonic() - first < timeout:
            sent = time.monotonic()
            try:
                _, answer = self.conversation.process(_local_text(device, True), DEFAULT_AGENT)
            except (RuntimeError, OSError):
                continue  # not ready for it yet: ask again
            commanded = self._wait_command(device, True, sent) if succeeded(answer) else None
            if commanded is not None:
                self._settle(device, True, sent)
                return commanded - first
        raise RuntimeError(f"Home Assistant did not carry out a command within {timeout} s of its start")

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        if self.ha is not None:
            self.conversation.close()
            self.ha.close()
        self.zigbee.close()
        self.mqtt.close()
        self.api.stop()
        self.broker.stop()
        self.pulse.stop()


def _local_text(device: house.Device, on: bool) -> str:
    return f"turn {'on' if on else 'off'} the {device.name.lower()}"


def _llm_text(device: house.Device, on: bool) -> str:
    """A wording neither fast path knows, so the request goes to the model."""
    return f"could you see to the {device.name.lower()} being {'on' if on else 'off'} for me"


def _commands(message: MqttMessage, on: bool) -> bool:
    """Whether a device command says ON (or OFF): zigbee2mqtt JSON or a bare word."""
    try:
        body = message.json()
    except ValueError:
        body = message.text
    state = body.get("state") if isinstance(body, dict) else body
    return str(state).upper() == ("ON" if on else "OFF")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2, help="uncounted trials first")
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-side-by-side-"))
    load_before = os.getloadavg()
    bench = SideBySide(work)
    try:
        print(f"starting Home Assistant {HA_VERSION} and the daemon (work directory {work})", flush=True)
        bench.start()
        print(f"{args.warmup} warm-up and {args.trials} counted trials", flush=True)
        bench.trials(args.trials, args.warmup)
        bench.growth()
        print(f"idle for {args.idle_s:.0f} s, then a restart of each", flush=True)
        bench.idle(args.idle_s)
        bench.restarts()
        assert bench.ha is not None
        versions = report.versions(bench.ha.venv)
    finally:
        bench.close()
    figures = bench.figures | {"load": (load_before, os.getloadavg()), "extra lights": EXTRA_LIGHTS}
    (work / "figures.json").write_text(
        json.dumps({"figures": figures, "series": {f"{p} {w}": vars(s) for (p, w), s in bench.series.items()}})
    )
    print(report.table(bench.series, figures, versions))
    print(f"(raw figures: {work / 'figures.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
