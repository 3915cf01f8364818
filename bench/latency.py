"""Benchmarks: end-of-speech to first reply audio, start-up time, idle CPU and memory.

Everything is real but the API, which is the local OpenAI-compatible test server with
injected delays (transcription 300 ms, first token 300 ms then 30 tokens/s, TTS first
byte 150 ms). Speech is played into the PulseAudio virtual microphone; both the
microphone feed and the virtual speaker are recorded through parec, so the end of
speech and the first reply sample are timed by the same clock with the same latency.

    .venv/bin/python bench/latency.py [--turns 20] [--idle-s 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon import Daemon, base_sections, daemon_env, write_config
from fake_openai import ChatReply, FakeOpenAI
from support import MqttRecorder, PulseAudio, SpeakerRecorder, speech_wav, start_broker

from assistant.config import VadConfig

STT_DELAY_S = 0.300
FIRST_TOKEN_S = 0.300
TOKENS_PER_S = 30
TTS_FIRST_BYTE_S = 0.150
REPLY = "It is sunny and twenty degrees outside. Enjoy your afternoon in the garden."
SPEECH_THRESHOLD = 300
SOUND_THRESHOLD = 1000


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


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


def reply_pieces(text: str) -> int:
    """How many streamed pieces the test server sends for `text` (one a word)."""
    return len(text.split())


def measure_turns(pulse: PulseAudio, mqtt: MqttRecorder, root: str, wav: Path, turns: int) -> list[float]:
    """Seconds from the true end of speech to the first reply sample, per turn."""
    latencies = []
    for _turn in range(turns):
        mqtt.clear()
        with SpeakerRecorder(pulse) as speaker, SpeakerRecorder(pulse, device="micsrc.monitor") as mic:
            pulse.play_into_mic(wav)
            speaker.wait_for_sound(threshold=SOUND_THRESHOLD, timeout=30)
            mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle", timeout=30)
            loud = np.flatnonzero(np.abs(mic.samples().astype(np.int32)) > SPEECH_THRESHOLD)
            end_of_speech = mic.time_of_sample(int(loud[-1]))
            first_sound = speaker.first_sound_time(threshold=SOUND_THRESHOLD)
            assert first_sound is not None
            latencies.append(first_sound - end_of_speech)
        time.sleep(0.3)
    return latencies


def measure_idle(pid: int, seconds: float) -> tuple[float, float]:
    """CPU (percent of one core) and resident memory (MB) of an idle, listening daemon."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100, rss_mb(pid)


def lower_bounds(silence_s: float) -> tuple[float, float]:
    """What the injected delays alone cost: speaking at the first sentence, and after the whole reply."""
    first_sentence = reply_pieces(REPLY.split(".", maxsplit=1)[0] + ".")
    first = silence_s + STT_DELAY_S + FIRST_TOKEN_S + (first_sentence - 1) / TOKENS_PER_S + TTS_FIRST_BYTE_S
    return first, first + (reply_pieces(REPLY) - first_sentence) / TOKENS_PER_S


def start_api() -> FakeOpenAI:
    """The local OpenAI-compatible server with the benchmark's delays."""
    api = FakeOpenAI()
    api.start()
    api.transcribe_delay_s = STT_DELAY_S
    api.first_token_delay_s = FIRST_TOKEN_S
    api.token_delay_s = 1 / TOKENS_PER_S
    api.tts_first_byte_delay_s = TTS_FIRST_BYTE_S
    api.transcript = "what is the weather like"
    api.chat_handler = lambda body: ChatReply(text=REPLY)
    return api


def print_table(rows: list[tuple[str, str]]) -> None:
    """A Markdown table, ready for the README."""
    width = max(len(name) for name, _ in rows)
    print(f"| {'figure':{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:{width}} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    pulse = PulseAudio.start()
    os.environ.update(pulse.env)
    broker = start_broker(workdir=work)
    api = start_api()
    site = f"bench{uuid.uuid4().hex[:6]}"
    root = f"assistant/{site}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["vad"] = {}  # the shipped endpointing defaults
    config = write_config(work / "assistant.toml", sections)
    mqtt = MqttRecorder(broker.host, broker.port, [f"{root}/#"])
    wav = speech_wav("what is the weather like", work / "ask.wav", pad_before=0.8, pad_after=0.2)

    started = time.monotonic()
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / "daemon.log")
    try:
        daemon.wait_ready(mqtt, root, timeout=60)
        startup_s = time.monotonic() - started
        latencies = measure_turns(pulse, mqtt, root, wav, args.turns)
        idle_cpu, idle_rss = measure_idle(daemon.process.pid, args.idle_s)
    finally:
        daemon.stop()
        mqtt.close()
        api.stop()
        broker.stop()
        pulse.stop()

    silence_s = VadConfig().silence_ms / 1000
    bound_first, bound_whole = lower_bounds(silence_s)
    p50, p95 = statistics.median(latencies), percentile(latencies, 95)
    print_table(
        [
            ("turns", f"{len(latencies)}"),
            ("end of speech -> first reply audio, p50 / p95", f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms"),
            ("lower bound, speaking at the first sentence", f"{bound_first * 1000:.0f} ms"),
            ("lower bound, speaking after the whole reply", f"{bound_whole * 1000:.0f} ms"),
            (
                "overhead over the first-sentence bound, p50 / p95",
                f"{(p50 - bound_first) * 1000:.0f} / {(p95 - bound_first) * 1000:.0f} ms",
            ),
            (
                "overhead over the whole-reply bound, p50 / p95",
                f"{(p50 - bound_whole) * 1000:.0f} / {(p95 - bound_whole) * 1000:.0f} ms",
            ),
            ("start-up to ready", f"{startup_s:.2f} s"),
            (f"idle CPU, wake.mode=vad, {args.idle_s:.0f} s", f"{idle_cpu:.1f} % of one core"),
            ("idle resident memory", f"{idle_rss:.0f} MB"),
        ]
    )
    print(
        f"(endpointing silence {silence_s * 1000:.0f} ms, transcription {STT_DELAY_S * 1000:.0f} ms, first token "
        f"{FIRST_TOKEN_S * 1000:.0f} ms, {TOKENS_PER_S} tokens/s, TTS first byte {TTS_FIRST_BYTE_S * 1000:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
