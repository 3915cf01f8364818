"""Soak: hundreds of turns through the real broker and the local API with faults injected at random.

Each turn asks the daemon (over MQTT) to switch the kitchen light; at random the API answers
500 or 429 (retried), fails every try (an apology is due), the broker is restarted, or
the request is garbage. Reports turns answered, commands delivered, errors answered, and
the daemon's memory at the start and the end.

    .venv/bin/python bench/soak.py [--turns 300]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import ChatReply, FakeOpenAI
from latency import rss_mb  # bench/ is on the path when this runs
from support import MqttRecorder, PulseAudio, start_broker


def model(body: dict[str, object]) -> ChatReply:
    messages = body["messages"]
    assert isinstance(messages, list)
    if messages[-1]["role"] == "tool":
        return ChatReply(text="Done.")
    return ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})])


def main() -> int:  # noqa: PLR0915 - one linear scenario reads best in one place
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    pulse = PulseAudio.start()
    os.environ.update(pulse.env)
    broker = start_broker(workdir=work)
    port = broker.port
    api = FakeOpenAI()
    api.start()
    api.chat_handler = model
    site = "soak"
    root = f"assistant/{site}"
    sections = base_sections(port, api.url, site_id=site)
    sections["openai"]["max_retries"] = 2
    sections["tts"] = {"engine": "none"}
    config = write_config(work / "assistant.toml", sections, ENTITIES.format(ns=site))
    mqtt = MqttRecorder(broker.host, port, [f"{root}/#", f"{site}/#"])
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / "daemon.log")
    counts = {"answered": 0, "apologies": 0, "commands": 0, "bad_input_answered": 0, "broker_restarts": 0, "lost": 0}
    try:
        daemon.wait_ready(mqtt, root, timeout=60)
        time.sleep(1.0)
        rss_start = rss_mb(daemon.process.pid)
        started = time.monotonic()
        for turn in range(args.turns):
            fault = rng.choices(["none", "500", "429", "down", "broker", "garbage"], [60, 10, 10, 5, 3, 12])[0]
            if fault == "500":
                api.fail("chat/completions", 500, times=1)
            elif fault == "429":
                api.fail("chat/completions", 429, times=2, retry_after=0.05)
            elif fault == "down":
                api.fail("chat/completions", 500, times=3)  # every try fails: an apology
            elif fault == "broker":
                mqtt.close()
                broker.stop()
                broker = start_broker(port=port, workdir=work)
                mqtt = MqttRecorder(broker.host, port, [f"{root}/#", f"{site}/#"])
                mqtt.wait_for(f"{root}/status", predicate=lambda m: m.text == "online", timeout=60)
                counts["broker_restarts"] += 1
            if fault == "garbage":
                mqtt.publish(f"{root}/ask", rng.choice([b"{", b"\xff\xfe", b'{"text": 3}', b"", b"x" * 20000]))
                mqtt.wait_for(f"{root}/event/error", timeout=10)
                counts["bad_input_answered"] += 1
                mqtt.clear()
                continue
            request_id = f"t{turn}"
            mqtt.publish(f"{root}/ask", json.dumps({"text": "turn on the kitchen light", "id": request_id}))
            try:
                reply = mqtt.wait_for(
                    f"{root}/event/reply", predicate=lambda m, r=request_id: m.json()["id"] == r, timeout=30
                ).json()
            except AssertionError:
                counts["lost"] += 1
                continue
            counts["answered"] += 1
            if reply["text"].startswith("Sorry"):
                counts["apologies"] += 1
            elif any(a["ok"] for a in reply["actions"]):
                counts["commands"] += int(bool(mqtt.messages(f"{site}/kitchen/light/set")))
            mqtt.clear()
        elapsed = time.monotonic() - started
        rss_end = rss_mb(daemon.process.pid)
        alive = daemon.process.poll() is None
    finally:
        daemon.stop()
        mqtt.close()
        api.stop()
        broker.stop()
        pulse.stop()
    print("| figure | value |\n|---|---|")
    for name, value in counts.items():
        print(f"| {name.replace('_', ' ')} | {value} |")
    print(f"| turns | {args.turns} in {elapsed:.0f} s |")
    print(f"| daemon alive at the end | {alive} |")
    print(f"| resident memory, start -> end | {rss_start:.1f} -> {rss_end:.1f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
