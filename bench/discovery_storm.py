"""Discovery storm: 100,000 retained discovery configs while the microphone runs and asks arrive.

Two storms against `assistant run` (a subprocess, with the PulseAudio virtual microphone,
the real mosquitto and the local API server):

1. live: the daemon is running when a fast paho client publishes the configs (QoS 0,
   retained) as fast as it can; an ask is sent every 0.5 s meanwhile.
2. re-read (twice): Home Assistant says `online` on homeassistant/status, so the daemon
   subscribes again and the broker sends every retained config at once; asks again. The
   daemon's memory after each shows whether anything piles up.
3. restart: the daemon is started again with all those configs retained on the broker,
   so they arrive at once on subscription; asks again.

Prints, per storm: configs, time to absorb them, entities known, asks answered (replies,
busy), microphone frames lost and the longest gap between frames, peak RSS.

    .venv/bin/python bench/discovery_storm.py [--configs 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import FakeOpenAI
from storm import (
    BROKER_QUEUE,
    DROPPED,
    Asks,
    ask_during,
    broker_config,
    broker_drops,
    longest_wait_ms,
    microphone_figures,
    publish_configs,
    rss_mb,
    wait_answered,
    wait_for_entities,
)
from support import MqttRecorder, PulseAudio, start_broker

DECLARED = 2  # the hand-declared entities of ENTITIES


def storm(
    daemon: Daemon,
    recorder: MqttRecorder,
    root: str,
    expected: int,
    start: Callable[[], object] | None,
    timeout: float = 300,
) -> dict[str, float]:
    """Asks while the storm (begun by `start`, if given) is absorbed; returns the figures."""
    dropped_before = broker_drops(recorder)
    recorder.clear()
    asks = Asks(prefix=f"storm{time.monotonic_ns()}")
    stop = threading.Event()
    asker = threading.Thread(target=ask_during, args=(recorder, root, stop, asks), daemon=True)
    started = time.monotonic()
    mark = len(daemon.log())
    asker.start()
    if start is not None:
        start()
    line, seen_at = wait_for_entities(daemon, expected, timeout=timeout, after=mark, strict=False)
    stop.set()
    asker.join()
    time.sleep(1.5)  # the broker's drop counter is published every second
    dropped = broker_drops(recorder) - dropped_before
    wait_answered(recorder, root, asks, timeout=60)
    replies = [m for m in recorder.messages(f"{root}/event/reply") if m.json()["id"] in asks.sent_at]
    waits = [m.time - asks.sent_at[m.json()["id"]] for m in replies]
    return {
        "configs read": int(line.group(1)),
        "read in s": float(line.group(2)),
        "absorbed after s": seen_at - started - 1.0,  # the line is logged once no config came for 1 s
        "entities known": int(line.group(3)),
        "asks": len(asks.ids),
        "replied": len(asks.replied & set(asks.ids)),
        "busy": len(asks.busy & set(asks.ids)),
        "unanswered": len(asks.unanswered()),
        "median reply s": statistics.median(waits) if waits else float("nan"),
        "slowest reply s": max(waits, default=float("nan")),
        "broker dropped": dropped,
        "frames waited ms": longest_wait_ms(daemon.log(), mark),
        "RSS MB": rss_mb(daemon.process.pid),
        "peak RSS MB": rss_mb(daemon.process.pid, "VmHWM"),
    }


def stop_and_listen(daemon: Daemon, figures: dict[str, float]) -> None:
    """Stop the daemon and add its microphone figures."""
    assert daemon.stop() == 0, daemon.log()[-3000:]
    mic = microphone_figures(daemon.log())
    figures.update(
        {
            "audio s": mic.audio_s,
            "microphone open s": mic.open_s,
            "frames dropped": mic.dropped,
            "overruns": mic.overruns,
            "longest frame gap ms": mic.longest_gap_ms,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=100_000)
    parser.add_argument(
        "--broker-queue",
        type=int,
        default=BROKER_QUEUE,
        help="mosquitto max_queued_messages (its default, 1000, drops most of a storm at the broker)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="storm-"))
    pulse = PulseAudio.start()
    os.environ.update(pulse.env)
    broker = start_broker(broker_config(args.broker_queue), workdir=work)
    api = FakeOpenAI()
    api.start()
    site = "storm"
    root = f"assistant/{site}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["tts"] = {"engine": "none"}
    config = write_config(work / "assistant.toml", sections, ENTITIES.format(ns=site))
    env = daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    recorder = MqttRecorder(broker.host, broker.port, [f"{root}/event/#", f"{root}/state", DROPPED])
    expected = args.configs + DECLARED
    timeout = 300 if args.broker_queue >= args.configs else 30  # a broker that drops never gets there
    results: dict[str, dict[str, float]] = {}
    daemons: list[Daemon] = []
    try:
        daemon = Daemon(config, env, work / "live.log")
        daemons.append(daemon)
        daemon.wait_ready(recorder, root, timeout=60)
        sent: list[float] = []
        publisher = threading.Thread(
            target=lambda: sent.append(publish_configs(broker, args.configs, "storm-publisher")), daemon=True
        )
        results["live"] = storm(daemon, recorder, root, expected, publisher.start, timeout)
        publisher.join()
        results["live"]["published in s"] = sent[0] if sent else float("nan")
        for turn in (1, 2):  # Home Assistant restarts: every retained config is read again
            online = partial(recorder.publish, "homeassistant/status", "online")
            results[f"re-read {turn}"] = storm(daemon, recorder, root, expected, online, timeout)
        stop_and_listen(daemon, results["re-read 2"])

        recorder.clear()  # the last daemon's retained "idle" must not count as this one being ready
        daemon = Daemon(config, env, work / "restart.log")
        daemons.append(daemon)
        daemon.wait_ready(recorder, root, timeout=120)
        results["restart"] = storm(daemon, recorder, root, expected, None, timeout)
        stop_and_listen(daemon, results["restart"])
    finally:
        for started in daemons:
            started.stop()
        recorder.close()
        api.stop()
        broker.stop()
        pulse.stop()
    print_table(results)
    print(f"logs: {work}")
    return 0


def print_table(results: dict[str, dict[str, float]]) -> None:
    """One column per storm, one row per figure (microphone figures: per daemon, cumulative)."""
    names = sorted({name for figures in results.values() for name in figures})
    print(f"\n{'':24}" + "".join(f"{phase:>12}" for phase in results))
    for name in names:
        values = [results[phase].get(name, float("nan")) for phase in results]
        print(f"{name:24}" + "".join(f"{v:>12.0f}" if float(v).is_integer() else f"{v:>12.2f}" for v in values))


if __name__ == "__main__":
    sys.exit(main())
