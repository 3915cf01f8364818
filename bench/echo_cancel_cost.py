"""What echo cancellation costs: the daemon's own (in the process) and PulseAudio's.

In the process (`[audio] echo_cancel`): the CPU time `EchoCanceller.clean` takes per second of
microphone audio while a reply plays (the reply heard back at -6 dB, 60 ms late), as a share of
one core, and the memory that loading WebRTC's AEC3 (pywebrtc-audio) adds to a Python process.
It does nothing while nothing plays.

PulseAudio's: starts a private PulseAudio (the tests' virtual speaker and microphone), loads the
canceller as config/echo-cancel.pa does (or not, for the baseline), then for `--seconds`
plays speech into the speaker at 16 kHz mono and records the microphone at once, as the
daemon does while it speaks, and reads the PulseAudio process's CPU time and resident
memory from /proc. The speaker is looped into the microphone (-6 dB) so the canceller
has echo to remove.

    .venv/bin/python bench/echo_cancel_cost.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support import PulseAudio, speech_wav, stop_process
from test_echo_cancel import shipped_canceller

TICK = os.sysconf("SC_CLK_TCK")


def usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, resident MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def measure(cancel: bool, seconds: float, wav: Path) -> tuple[float, float, float]:
    """(CPU % of one core, RSS before, RSS during) of PulseAudio over `seconds` of speaking."""
    pulse = PulseAudio.start()
    try:
        pulse.pactl("load-module", "module-loopback", "source=spk.monitor", "sink=micsrc", "latency_msec=40")
        sink, source = "spk", "vmic"
        if cancel:
            pulse.pactl(
                "load-module", "module-echo-cancel", *shipped_canceller(), "source_master=vmic", "sink_master=spk"
            )
            sink, source = "assistant_speaker", "assistant_mic"
        _, before = usage(pulse.process.pid)
        env = pulse.subprocess_env()
        record = subprocess.Popen(
            ["parec", f"--device={source}", "--raw", "--rate=16000", "--channels=1", "--format=s16le"],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        cpu_start, _ = usage(pulse.process.pid)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            subprocess.run(["paplay", f"--device={sink}", str(wav)], env=env, check=True)
        cpu_end, during = usage(pulse.process.pid)
        elapsed = time.monotonic() - started
        stop_process(record)
        return 100 * (cpu_end - cpu_start) / elapsed, before, during
    finally:
        pulse.stop()


def in_process(seconds: float, wav: Path) -> tuple[float, float]:
    """(CPU % of one core, MB added by loading AEC3) of the daemon's own canceller."""
    import numpy as np

    from assistant.audio.echo import EchoCanceller
    from assistant.audio.pcm import read_wav

    reply = np.frombuffer(read_wav(wav, 16000), dtype=np.int16)
    reply = np.tile(reply, int(seconds * 16000 / len(reply)) + 1)[: int(seconds * 16000)]
    mic = np.zeros(len(reply) + 960, dtype=np.float64)
    mic[960:] += reply * 0.5  # heard back at -6 dB, 60 ms late
    mic_pcm = mic.astype(np.int16)
    echo = EchoCanceller(16000)
    echo.played(reply.tobytes(), 16000, heard_by=1000.0 + len(reply) / 16000)
    frame = 480
    started = time.process_time()
    for i in range(0, len(reply) - frame + 1, frame):
        echo.clean(mic_pcm[i : i + frame].tobytes(), 1000.0 + i / 16000)
    cpu = 100 * (time.process_time() - started) / seconds
    rss = "int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE') / 2**20"
    load = f"import numpy; a = {rss}; import pywebrtc_audio; e = pywebrtc_audio.EchoCanceller(16000); "
    load += f"e.process(numpy.zeros(16000, 'int16'), numpy.zeros(16000, 'int16')); print({rss} - a)"
    added = float(subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, check=True).stdout)
    return cpu, added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    wav = speech_wav(
        "This is a long reply about the weather, the garden and nothing at all. " * 3,
        Path("/tmp") / f"echo-cost-{os.getpid()}.wav",
        wpm=175,
        pad_before=0.0,
        pad_after=0.0,
    )
    try:
        cpu, added = in_process(args.seconds, wav)
        print(f"in the process: {cpu:.2f} % of one core while a reply plays; AEC3 adds {added:.1f} MB RSS")
        print()
        print("| PulseAudio | CPU (% of one core) while speaking and listening | RSS idle -> speaking |")
        print("|---|---|---|")
        for cancel in (False, True):
            cpu, before, during = measure(cancel, args.seconds, wav)
            name = "with the WebRTC canceller" if cancel else "without"
            print(f"| {name} | {cpu:.1f} % | {before:.1f} -> {during:.1f} MB |")
    finally:
        wav.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
