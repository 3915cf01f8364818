"""Benchmark: start-up to ready, idle CPU and idle memory (RSS) of the daemon, per wake mode.

The default config (espeak-ng voice, the fast path on, the wake word `okay_nabu`) against
the real broker and PulseAudio, with the local test API. Each mode's daemon runs on its own
(not side by side) so one's start-up does not load another's measurement. "Ready" is the
retained `state` message, published after READY=1.

Each mode runs twice: through ALSA's default configuration, whose default device is
PulseAudio's plugin (as on a desktop, and in the tests), and through a lean ALSA
configuration of the kind scripts/install-service.sh --lean-alsa writes for a Pi speaking
straight to its sound card. There is no sound card here, so the lean one captures from a
FIFO that the bench fills with 30 ms of silence every 30 ms (ALSA's `file` plugin) and plays
into ALSA's `null` device: what differs from a Pi is the card's driver, not what the daemon
loads. `--profile` prints the resident size of the biggest mappings (`/proc/PID/smaps`).
`--starts N` also starts each mode's daemon N more times, to ready only, and gives the median
and range of those start-ups. The package is compiled to bytecode first, as pip does when it
installs it (an editable install under PYTHONDONTWRITEBYTECODE would compile it at every start).

    .venv/bin/python bench/idle.py [--idle-s 60] [--modes wakeword,vad,mqtt] [--starts 5] [--profile] [--echo-cancel]
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import errno
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import FakeOpenAI
from latency import cpu_seconds  # bench/ is on the path when run as a script
from storm import rss_mb
from support import MqttRecorder, PulseAudio, start_broker

LEAN_ALSA = """# the daemon's only ALSA configuration (ALSA_CONFIG_PATH): no plugins, no PulseAudio
pcm.!default {{
    type asym
    playback.pcm {{ type null }}
    capture.pcm {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{fifo}" format "raw" }}
}}
"""
FRAME_S = 0.030


@dataclass
class Figures:
    """What one daemon measured."""

    ready_s: float
    ready_cpu_s: float
    idle_cpu_pct: float
    rss_mb: float


@contextlib.contextmanager
def lean_alsa(work: Path) -> Iterator[dict[str, str]]:
    """The environment of a lean ALSA configuration, with its FIFO microphone fed in real time."""
    fifo = work / "mic.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    conf = work / "lean-alsa.conf"
    conf.write_text(LEAN_ALSA.format(fifo=fifo))
    # Opened read-write, the FIFO never blocks the writer nor breaks when the daemon closes it.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    stop = threading.Event()

    def feed() -> None:
        silence = bytes(round(16000 * FRAME_S) * 2)
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                os.write(fd, silence)
            except BlockingIOError:
                pass  # nobody reading: the pipe is full
            except OSError as error:
                if error.errno != errno.EAGAIN:
                    raise
            next_at += FRAME_S
            stop.wait(max(0.0, next_at - time.monotonic()))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield {"ALSA_CONFIG_PATH": str(conf)}
    finally:
        stop.set()
        feeder.join()
        os.close(fd)


def rss_by_mapping(smaps: str) -> dict[str, float]:
    """Resident MB per mapped file (anonymous memory under "[anon]"), from /proc/PID/smaps text."""
    sizes: dict[str, float] = {}
    name = "[anon]"
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):
            name = head[5].strip() if len(head) == 6 else "[anon]"
        elif line.startswith("Rss:"):
            sizes[name] = sizes.get(name, 0.0) + int(line.split()[1]) / 1024
    return sizes


def measure(
    pulse: PulseAudio,
    work: Path,
    mode: str,
    idle_s: float,
    profile: bool,
    alsa: dict[str, str],
    audio: dict[str, object] | None = None,
) -> Figures:
    """Start one daemon in `mode` (with `alsa`'s environment and `audio` added to its [audio]),
    time it to ready, then let it idle (`idle_s` 0: stop it once ready)."""
    broker = start_broker(workdir=work)
    api = FakeOpenAI()
    api.start()
    site = f"idle{mode}{uuid.uuid4().hex[:4]}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["wake"] = {"mode": mode}
    sections["audio"] = {**sections.get("audio", {}), **(audio or {})}
    sections["agent"] = {"local_intents": True}
    sections["tts"] = {"engine": "espeak"}
    sections["device"]["state_dir"] = str(work / f"state-{mode}")
    config = write_config(work / f"idle-{mode}.toml", sections, ENTITIES.format(ns=site))
    mqtt = MqttRecorder(broker.host, broker.port, [f"assistant/{site}/#"])
    started = time.monotonic()
    env = daemon_env(pulse.env, OPENAI_API_KEY="test-key", **alsa)
    daemon = Daemon(config, env, work / f"idle-{mode}{'-lean' if alsa else ''}.log")
    try:
        daemon.wait_ready(mqtt, f"assistant/{site}", timeout=60)
        ready_s = time.monotonic() - started
        pid = daemon.process.pid
        ready_cpu = cpu_seconds(pid)
        if idle_s <= 0:
            return Figures(ready_s, ready_cpu, float("nan"), rss_mb(pid))
        time.sleep(2.0)  # past start-up work
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(idle_s)
        idle = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
        sizes = rss_by_mapping(Path(f"/proc/{pid}/smaps").read_text())
        if profile:
            print(f"--- {mode}{', lean ALSA' if alsa else ''}: resident MB by mapping")
            for name, mb in sorted(sizes.items(), key=lambda item: -item[1])[:15]:
                print(f"{mb:7.1f}  {name}")
        return Figures(ready_s, ready_cpu, idle, rss_mb(pid))
    finally:
        daemon.stop()
        mqtt.close()
        api.stop()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--modes", default="wakeword,vad,mqtt")
    parser.add_argument("--profile", action="store_true", help="print resident MB per mapped file")
    parser.add_argument("--starts", type=int, default=0, help="more start-ups per mode and ALSA, to ready only")
    parser.add_argument("--echo-cancel", action="store_true", help="with [audio] echo_cancel = true")
    args = parser.parse_args()
    audio: dict[str, object] = {"echo_cancel": True} if args.echo_cancel else {}
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "assistant", quiet=1)

    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    pulse = PulseAudio.start()
    loads = []
    starts_of: dict[tuple[str, str], list[Figures]] = {}
    try:
        rows = []
        for mode in args.modes.split(","):
            via_pulse = measure(pulse, work, mode, args.idle_s, args.profile, {}, audio)
            loads.append(os.getloadavg()[0])
            with lean_alsa(work) as alsa:
                lean = measure(pulse, work, mode, args.idle_s, args.profile, alsa, audio)
            loads.append(os.getloadavg()[0])
            rows.append((mode, via_pulse, lean))
            for alsa_name in ("PulseAudio plugin", "lean"):
                starts_of[mode, alsa_name] = []
                for _ in range(args.starts):
                    with contextlib.ExitStack() as stack:
                        alsa = stack.enter_context(lean_alsa(work)) if alsa_name == "lean" else {}
                        starts_of[mode, alsa_name].append(measure(pulse, work, mode, 0, False, alsa, audio))
                loads.append(os.getloadavg()[0])
    finally:
        pulse.stop()
    print("| wake.mode | ALSA | start-up to ready (CPU time) | idle CPU | idle RSS |")
    print("|---|---|---|---|---|")
    for mode, via_pulse, lean in rows:
        for name, f in (("PulseAudio plugin", via_pulse), ("lean", lean)):
            print(
                f"| {mode} | {name} | {f.ready_s:.2f} s ({f.ready_cpu_s:.2f} s) "
                f"| {f.idle_cpu_pct:.2f} % of one core | {f.rss_mb:.0f} MB |"
            )
    for (mode, alsa_name), starts in starts_of.items():
        if starts:
            ready = sorted(f.ready_s for f in starts)
            cpu = sorted(f.ready_cpu_s for f in starts)
            print(
                f"{mode}, {alsa_name}: {len(starts)} more start-ups to ready: "
                f"median {statistics.median(ready):.2f} s ({ready[0]:.2f}-{ready[-1]:.2f}), "
                f"CPU median {statistics.median(cpu):.2f} s ({cpu[0]:.2f}-{cpu[-1]:.2f})"
            )
    print(
        f"({args.idle_s:.0f} s idle each, one daemon at a time; 1-min load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
