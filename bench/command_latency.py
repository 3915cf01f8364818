"""Benchmark: a typed command through the fast path, to the light's topic and to the reply.

The real daemon (fast path on, `wake.mode = "mqtt"`, PulseAudio's virtual microphone open)
and a real mosquitto; a light that answers its command with its state, and Home Assistant's
statestream burst for that change (tests/burst_house.py) in some of the trials, interleaved.
Timed on the light's own paho client: send of `ask` -> command on the light's topic, and
send -> `event/reply`. "A new wording" trials change the letter case every time, so the text
was never matched before (hassil runs); the others repeat two commands, as a household does.

With `--home-assistant 2025.4.4` a real Home Assistant (tests/real_ha.py) runs beside it instead of
the simulated burst, with the light as an MQTT light and mqtt_statestream as the README recommends;
the quiet trials then have Home Assistant paused (SIGSTOP).

    .venv/bin/python bench/command_latency.py [--trials 30] [--home-assistant VERSION]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from burst_house import STATESTREAM, BurstHouse
from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import FakeOpenAI
from latency import percentile  # bench/ is on the path when run as a script
from real_ha import HomeAssistant
from support import Broker, MqttRecorder, PulseAudio, start_broker

COMMANDS = ("turn on the kitchen light", "turn off the kitchen light")
HA_PACKAGE = """
mqtt_statestream:
  base_topic: {statestream}
  publish_attributes: true
  publish_timestamps: true
mqtt:
  light:
    - {{name: Kitchen light, object_id: kitchen, unique_id: bench_kitchen, command_topic: {ns}/kitchen/light/set,
       state_topic: {ns}/kitchen/light/state, brightness_command_topic: {ns}/kitchen/light/brightness/set}}
"""
# (burst, new wording): what each kind of trial is called in the table
KINDS = {
    (False, False): "light state only",
    (True, False): "with the statestream burst",
    (True, True): "with the burst, a new wording each time",
}
Result = tuple[float, float, bool]


def trial(house: BurstHouse, root: str, text: str, number: int) -> Result:
    """(send -> command, send -> reply) in seconds, and whether the reply said it was done."""
    sent = time.monotonic()
    house.client.publish(f"{root}/ask", json.dumps({"id": f"b{number}", "text": text}))
    command = house.wait_for(house.command_topic, sent)
    reply = house.wait_for(f"{root}/event/reply", sent)
    ok = json.loads(reply.payload).get("actions", [{}])[0].get("ok") is True
    return command.time - sent, reply.time - sent, ok


def new_wording(text: str, number: int) -> str:
    """`text` in a letter case not used before (hassil ignores case; the daemon's memory of texts does not)."""
    return "".join(c.upper() if (number >> (i % 16)) & 1 else c for i, c in enumerate(text))


def start_home_assistant(version: str, work: Path, broker: Broker, site: str) -> HomeAssistant:
    """A real Home Assistant with the light and statestream (configuration written before its start)."""
    (work / "ha").mkdir()
    ha = HomeAssistant(version, work / "ha", broker)
    ha._write_config()
    ha.write_package("bench", HA_PACKAGE.format(statestream=STATESTREAM, ns=site))
    ha.start()
    return ha


Results = dict[tuple[bool, bool], list[Result]]


def run_trials(house: BurstHouse, root: str, ha: HomeAssistant | None, trials: int) -> Results:
    """Warm up, then `trials` of each kind, interleaved."""
    for number in range(4):  # first matches, first statestream topics learned
        trial(house, root, COMMANDS[number % 2], number)
        time.sleep(0.2)
    results: Results = {kind: [] for kind in KINDS}
    streamed = dict.fromkeys(KINDS, 0)
    for number in range(trials * len(KINDS)):
        kind = list(KINDS)[number % len(KINDS)]
        burst, new = kind
        if ha is not None and ha._process is not None:  # Home Assistant's own statestream, or none while paused
            ha._process.send_signal(signal.SIGCONT if burst else signal.SIGSTOP)
            time.sleep(0.3)
        else:
            house.burst = burst
        text = COMMANDS[(number // len(KINDS)) % 2]
        seen = house.statestream_seen
        results[kind].append(trial(house, root, new_wording(text, 1 + number) if new else text, 100 + number))
        time.sleep(0.2)  # the burst is over; the next trial starts from a quiet house
        streamed[kind] += house.statestream_seen - seen
    for kind, count in streamed.items():
        print(f"{KINDS[kind]}: {count / trials:.1f} statestream messages a trial")
    return results


def print_results(results: Results, trials: int, version: str | None) -> None:
    """A Markdown table, ready for the README."""

    def summary(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.1f} / {percentile(values, 95) * 1000:.1f} ms"

    print(f"| fast path, {trials} trials each | send -> command, p50 / p95 | send -> reply, p50 / p95 |")
    print("|---|---|---|")
    for kind, name in KINDS.items():
        label = name
        if version:
            label = name.replace("the statestream burst", f"Home Assistant {version} running")
            label = label.replace("light state only", "Home Assistant paused").replace("the burst", "it running")
        rows = results[kind]
        print(f"| {label} | {summary([r[0] for r in rows])} | {summary([r[1] for r in rows])} |")
        if not all(r[2] for r in rows):
            print(f"  ({sum(not r[2] for r in rows)} replies did not report the command as done)")
    print(f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials of each kind")
    parser.add_argument("--home-assistant", metavar="VERSION", help="run a real Home Assistant beside the daemon")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-cmd-"))
    pulse = PulseAudio.start()
    broker = start_broker(workdir=work)
    api = FakeOpenAI()
    api.start()
    site = f"bench{uuid.uuid4().hex[:6]}"
    root = f"assistant/{site}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["wake"] = {"mode": "mqtt"}
    sections["agent"] = {"local_intents": True}
    sections["homeassistant"] = {"expose": ["light.*", "switch.*"], "statestream_topic": STATESTREAM}
    config = write_config(work / "assistant.toml", sections, ENTITIES.format(ns=site))
    ready = MqttRecorder(broker.host, broker.port, [f"{root}/state"])
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / "daemon.log")
    house = BurstHouse(broker.host, broker.port, site, root, burst=args.home_assistant is None)
    ha: HomeAssistant | None = None
    try:
        if args.home_assistant:
            ha = start_home_assistant(args.home_assistant, work, broker, site)
        daemon.wait_ready(ready, root, timeout=60)
        results = run_trials(house, root, ha, args.trials)
    finally:
        if ha is not None:
            if ha._process is not None:
                ha._process.send_signal(signal.SIGCONT)
            ha.close()
        house.close()
        daemon.stop()
        ready.close()
        api.stop()
        broker.stop()
        pulse.stop()
    print_results(results, args.trials, args.home_assistant)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
