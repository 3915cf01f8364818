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

from daemon import Daemon, base_sections, daemon_env, write_config  # noqa: E402
from fake_openai import ChatReply, FakeOpenAI  # noqa: E402
from support import MqttRecorder, PulseAudio, SpeakerRecorder, speech_wav, start_broker  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    pulse = PulseAudio.start()
    os.environ.update(pulse.env)
    broker = start_broker(workdir=work)
    api = FakeOpenAI()
    api.start()
    api.transcribe_delay_s = STT_DELAY_S
    api.first_token_delay_s = FIRST_TOKEN_S
    api.token_delay_s = 1 / TOKENS_PER_S
    api.tts_first_byte_delay_s = TTS_FIRST_BYTE_S
    api.transcript = "what is the weather like"
    api.chat_handler = lambda body: ChatReply(text=REPLY)
    site = f"bench{uuid.uuid4().hex[:6]}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["vad"] = {}  # the shipped endpointing defaults
    config = write_config(work / "assistant.toml", sections)
    from assistant.config import VadConfig

    silence_s = VadConfig().silence_ms / 1000
    mqtt = MqttRecorder(broker.host, broker.port, [f"assistant/{site}/#"])
    wav = speech_wav("what is the weather like", work / "ask.wav", pad_before=0.8, pad_after=0.2)

    started = time.monotonic()
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / "daemon.log")
    try:
        daemon.wait_ready(mqtt, f"assistant/{site}", timeout=60)
        startup_s = time.monotonic() - started
        latencies: list[float] = []
        for _turn in range(args.turns):
            mqtt.clear()
            with SpeakerRecorder(pulse) as speaker, SpeakerRecorder(pulse, device="micsrc.monitor") as mic:
                pulse.play_into_mic(wav)
                speaker.wait_for_sound(threshold=SOUND_THRESHOLD, timeout=30)
                mqtt.wait_for(f"assistant/{site}/state", predicate=lambda m: m.text == "idle", timeout=30)
                loud = np.flatnonzero(np.abs(mic.samples().astype(np.int32)) > SPEECH_THRESHOLD)
                end_of_speech = mic.time_of_sample(int(loud[-1]))
                first_sound = speaker.first_sound_time(threshold=SOUND_THRESHOLD)
                assert first_sound is not None
                latencies.append(first_sound - end_of_speech)
            time.sleep(0.3)
        first_sentence_pieces = reply_pieces(REPLY.split(".")[0] + ".")
        all_pieces = reply_pieces(REPLY)
        bound_first_sentence = silence_s + STT_DELAY_S + FIRST_TOKEN_S + (first_sentence_pieces - 1) / TOKENS_PER_S
        bound_first_sentence += TTS_FIRST_BYTE_S
        bound_whole_reply = bound_first_sentence + (all_pieces - first_sentence_pieces) / TOKENS_PER_S

        pid = daemon.process.pid
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle_s)
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
        idle_rss = rss_mb(pid)
    finally:
        daemon.stop()
        mqtt.close()
        api.stop()
        broker.stop()
        pulse.stop()

    p50, p95 = statistics.median(latencies), percentile(latencies, 95)
    rows = [
        ("turns", f"{len(latencies)}"),
        ("end of speech -> first reply audio, p50", f"{p50 * 1000:.0f} ms"),
        ("end of speech -> first reply audio, p95", f"{p95 * 1000:.0f} ms"),
        ("lower bound, speaking at the first sentence", f"{bound_first_sentence * 1000:.0f} ms"),
        ("lower bound, speaking after the whole reply", f"{bound_whole_reply * 1000:.0f} ms"),
        ("overhead over the first-sentence bound, p50 / p95", f"{(p50 - bound_first_sentence) * 1000:.0f} / "
         f"{(p95 - bound_first_sentence) * 1000:.0f} ms"),
        ("overhead over the whole-reply bound, p50 / p95", f"{(p50 - bound_whole_reply) * 1000:.0f} / "
         f"{(p95 - bound_whole_reply) * 1000:.0f} ms"),
        ("start-up to ready", f"{startup_s:.2f} s"),
        (f"idle CPU, wake.mode=vad, {args.idle_s:.0f} s", f"{idle_cpu:.1f} % of one core"),
        ("idle resident memory", f"{idle_rss:.0f} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'figure':{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:{width}} | {value} |")
    print(f"(endpointing silence {silence_s * 1000:.0f} ms, transcription {STT_DELAY_S * 1000:.0f} ms, first token "
          f"{FIRST_TOKEN_S * 1000:.0f} ms, {TOKENS_PER_S} tokens/s, TTS first byte {TTS_FIRST_BYTE_S * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
