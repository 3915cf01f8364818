"""Benchmark: start-up to ready, idle CPU and idle memory (RSS) of the daemon, per wake mode.

The default config (espeak-ng voice, the fast path on, the wake word `okay_nabu`) against
the real broker and PulseAudio, with the local test API. Each mode's daemon runs on its own
(not side by side) so one's start-up does not load another's measurement. "Ready" is the
retained `state` message, published after READY=1.

RSS is also reported as it would be with a lean ALSA configuration on a Pi (the device
opened directly, see scripts/install-service.sh --lean-alsa): there is no sound card here to
open directly, so the PulseAudio client libraries' resident pages (`/proc/PID/smaps`:
libpulse, its ALSA plugin, and what they alone pull in) are subtracted. `--profile` prints
the resident size of every mapped library, biggest first.

    .venv/bin/python bench/idle.py [--idle-s 60] [--modes wakeword,vad,mqtt] [--profile]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import FakeOpenAI
from support import MqttRecorder, PulseAudio, start_broker

# Libraries a process maps only because ALSA's default device is PulseAudio's plugin.
PULSE_ONLY = re.compile(
    r"libpulse|libasound_module_|libsndfile|libFLAC|libvorbis|libogg|libopus|libmpg123|libmp3lame|"
    r"libdbus|libsystemd|libX11|libxcb|libXau|libXdmcp|libasyncns|libapparmor|libgcrypt|libgpg-error|"
    r"liblz4|libcap|libbsd|libmd"
)


@dataclass
class Figures:
    """What one daemon measured."""

    ready_s: float
    ready_cpu_s: float
    idle_cpu_pct: float
    rss_mb: float
    pulse_mb: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


def pulse_mb(sizes: dict[str, float]) -> float:
    """Resident MB of the libraries only the PulseAudio ALSA plugin brings in."""
    return sum(mb for name, mb in sizes.items() if PULSE_ONLY.search(Path(name).name))


def measure(pulse: PulseAudio, work: Path, mode: str, idle_s: float, profile: bool) -> Figures:
    """Start one daemon in `mode`, time it to ready, then let it idle."""
    broker = start_broker(workdir=work)
    api = FakeOpenAI()
    api.start()
    site = f"idle{mode}{uuid.uuid4().hex[:4]}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["wake"] = {"mode": mode}
    sections["agent"] = {"local_intents": True}
    sections["tts"] = {"engine": "espeak"}
    sections["device"]["state_dir"] = str(work / f"state-{mode}")
    config = write_config(work / f"idle-{mode}.toml", sections, ENTITIES.format(ns=site))
    mqtt = MqttRecorder(broker.host, broker.port, [f"assistant/{site}/#"])
    started = time.monotonic()
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / f"idle-{mode}.log")
    try:
        daemon.wait_ready(mqtt, f"assistant/{site}", timeout=60)
        ready_s = time.monotonic() - started
        pid = daemon.process.pid
        ready_cpu = cpu_seconds(pid)
        time.sleep(2.0)  # past start-up work
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(idle_s)
        idle = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
        sizes = rss_by_mapping(Path(f"/proc/{pid}/smaps").read_text())
        if profile:
            print(f"--- {mode}: resident MB by mapping")
            for name, mb in sorted(sizes.items(), key=lambda item: -item[1])[:25]:
                print(f"{mb:7.1f}  {name}")
        return Figures(ready_s, ready_cpu, idle, rss_mb(pid), pulse_mb(sizes))
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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    pulse = PulseAudio.start()
    try:
        results = {mode: measure(pulse, work, mode, args.idle_s, args.profile) for mode in args.modes.split(",")}
    finally:
        pulse.stop()
    load = os.getloadavg()
    print("| wake.mode | start-up to ready (CPU) | idle CPU | RSS via PulseAudio's ALSA plugin | RSS, lean ALSA |")
    print("|---|---|---|---|---|")
    for mode, f in results.items():
        print(
            f"| {mode} | {f.ready_s:.2f} s ({f.ready_cpu_s:.2f} s) | {f.idle_cpu_pct:.1f} % of one core "
            f"| {f.rss_mb:.0f} MB | {f.rss_mb - f.pulse_mb:.0f} MB |"
        )
    print(f"({args.idle_s:.0f} s idle each; load average {load[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
