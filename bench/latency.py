"""Benchmarks: end-of-speech to first reply audio, start-up time, idle CPU and memory.

Everything is real but the API, which is the local OpenAI-compatible test server with
injected delays (transcription 300 ms, first token 300 ms then 30 tokens/s, TTS first
byte 150 ms). Speech is played into the PulseAudio virtual microphone; both the
microphone feed and the virtual speaker are recorded through parec, so the end of
speech and the first reply sample are timed by the same clock with the same latency.
The harness's own share (the virtual microphone and speaker through ALSA's PulseAudio
plugin) is measured first with bench/echo.py, which answers a click with a click and
does nothing else; the daemon's overhead is what is left over the bound after it.

    .venv/bin/python bench/latency.py [--turns 20] [--idle-s 60] [--fast-path-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import ChatReply, FakeOpenAI
from support import Broker, MqttRecorder, PulseAudio, SpeakerRecorder, speech_wav, start_broker

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


def click_wav(path: Path) -> Path:
    """0.3 s of silence, a 20 ms 1 kHz click, 0.3 s of silence (16 kHz mono)."""
    rate = 16000
    t = np.arange(rate // 50) / rate
    click = (12000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    quiet = np.zeros(int(rate * 0.3), dtype=np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate([quiet, click, quiet]).tobytes())
    return path


def measure_harness(pulse: PulseAudio, wav: Path, turns: int) -> list[tuple[float, float]]:
    """The harness's own audio path, per click: (click -> echo, the same less the capture block's fill).

    bench/echo.py records the virtual microphone and plays to the virtual speaker with
    the daemon's settings and does nothing else; the click and its echo are timed by the
    same two parec recorders as the daemon's turns. The capture block's fill (the click
    waits in a 30 ms block until the block is full) is taken out: for the daemon it is
    the frame grid, which the daemon's own endpointing decides.
    """
    echo = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("echo.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=pulse.subprocess_env(),
    )
    assert echo.stdout is not None and echo.stdin is not None
    try:
        if echo.stdout.readline().strip() != "ready":
            raise RuntimeError("bench/echo.py did not start")
        results = []
        for _turn in range(turns):
            with SpeakerRecorder(pulse) as speaker, SpeakerRecorder(pulse, device="micsrc.monitor") as mic:
                pulse.play_into_mic(wav)
                echoed = speaker.wait_for_sound(threshold=SOUND_THRESHOLD, timeout=10)
                index, frames = (int(word) for word in echo.stdout.readline().split())
                clicked = mic.first_sound_time(threshold=SOUND_THRESHOLD)
                assert clicked is not None
                results.append((echoed - clicked, echoed - clicked - (frames - index) / 16000))
            time.sleep(0.2)
        return results
    finally:
        echo.stdin.close()
        try:
            echo.wait(timeout=5)
        except subprocess.TimeoutExpired:
            echo.kill()
            echo.wait()


def measure_idle(pid: int, seconds: float) -> tuple[float, float]:
    """CPU (percent of one core) and resident memory (MB) of an idle, listening daemon."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100, rss_mb(pid)


def lower_bounds(silence_s: float, early_s: float) -> tuple[float, float]:
    """What the injected delays alone cost before the first reply sample.

    The naive bound waits out the silence, then transcribes. With speculative
    transcription at the first pause the two overlap: max(silence, early + stt).
    Both then add the first token, the first sentence's tokens and the TTS first byte.
    """
    first_sentence = reply_pieces(REPLY.split(".", maxsplit=1)[0] + ".")
    after_transcript = FIRST_TOKEN_S + (first_sentence - 1) / TOKENS_PER_S + TTS_FIRST_BYTE_S
    naive = silence_s + STT_DELAY_S + after_transcript
    overlapped = max(silence_s, early_s + STT_DELAY_S) + after_transcript
    return naive, overlapped


def measure_fast_path(
    pulse: PulseAudio, mqtt: MqttRecorder, root: str, wav: Path, turns: int
) -> list[tuple[float, float]]:
    """(transcript -> MQTT command, end of speech -> MQTT command) per fast-path turn."""
    site = root.rsplit("/", maxsplit=1)[-1]
    results = []
    for _turn in range(turns):
        mqtt.clear()
        with SpeakerRecorder(pulse, device="micsrc.monitor") as mic:
            pulse.play_into_mic(wav)
            command = mqtt.wait_for(f"{site}/kitchen/light/set", timeout=30)
            transcript = mqtt.wait_for(f"{root}/event/transcript", timeout=5)
            loud = np.flatnonzero(np.abs(mic.samples().astype(np.int32)) > SPEECH_THRESHOLD)
            end_of_speech = mic.time_of_sample(int(loud[-1]))
        results.append((command.time - transcript.time, command.time - end_of_speech))
        mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle", timeout=30)
        time.sleep(0.3)
    return results


def measure_idle_modes(
    pulse: PulseAudio, broker: Broker, api: FakeOpenAI, work: Path, seconds: float
) -> dict[str, tuple[float, float]]:
    """CPU (percent of one core) and RSS (MB) of idle daemons listening in each wake mode, side by side."""
    daemons = {}
    mqtt = MqttRecorder(broker.host, broker.port, ["assistant/#"])
    try:
        for mode in ("wakeword", "vad", "mqtt"):
            sections = base_sections(broker.port, api.url, site_id=f"idle{mode}")
            sections["wake"] = {"mode": mode}
            config = write_config(work / f"idle-{mode}.toml", sections)
            daemons[mode] = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / f"idle-{mode}.log")
        for mode, daemon in daemons.items():
            daemon.wait_ready(mqtt, f"assistant/idle{mode}", timeout=60)
        time.sleep(2.0)  # past start-up work
        before = {mode: cpu_seconds(d.process.pid) for mode, d in daemons.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        return {
            mode: ((cpu_seconds(d.process.pid) - before[mode]) / elapsed * 100, rss_mb(d.process.pid))
            for mode, d in daemons.items()
        }
    finally:
        for daemon in daemons.values():
            daemon.stop()
        mqtt.close()


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


def fast_path_only(turns: int) -> int:
    """The fast path's rows alone: spoken commands, transcript and end of speech -> MQTT command."""
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    pulse = PulseAudio.start()
    os.environ.update(pulse.env)
    broker = start_broker(workdir=work)
    api = start_api()
    api.transcript = "turn on the kitchen light"
    site = f"bench{uuid.uuid4().hex[:6]}"
    root = f"assistant/{site}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["vad"] = {}
    sections["agent"] = {"local_intents": True}
    config = write_config(work / "assistant.toml", sections, ENTITIES.format(ns=site))
    mqtt = MqttRecorder(broker.host, broker.port, [f"{root}/#", f"{site}/#"])
    command = speech_wav("turn on the kitchen light", work / "command.wav", pad_before=0.8, pad_after=0.2)
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / "daemon.log")
    try:
        daemon.wait_ready(mqtt, root, timeout=60)
        fast = measure_fast_path(pulse, mqtt, root, command, turns)
    finally:
        daemon.stop()
        mqtt.close()
        api.stop()
        broker.stop()
        pulse.stop()
    to_command = [f[0] for f in fast]
    speech_to_command = [f[1] for f in fast]
    print_table(
        [
            ("turns", f"{len(fast)}"),
            (
                "fast path: transcript -> MQTT command, p50 / p95",
                f"{statistics.median(to_command) * 1000:.1f} / {percentile(to_command, 95) * 1000:.1f} ms",
            ),
            (
                "fast path: end of speech -> MQTT command, p50 / p95",
                f"{statistics.median(speech_to_command) * 1000:.0f} / "
                f"{percentile(speech_to_command, 95) * 1000:.0f} ms",
            ),
        ]
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=60.0, help="0: skip the idle measurement")
    parser.add_argument("--fast-path-only", action="store_true", help="only the fast path's spoken commands")
    args = parser.parse_args()
    if args.fast_path_only:
        return fast_path_only(args.turns)

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    pulse = PulseAudio.start()
    os.environ.update(pulse.env)
    broker = start_broker(workdir=work)
    api = start_api()
    site = f"bench{uuid.uuid4().hex[:6]}"
    root = f"assistant/{site}"
    sections = base_sections(broker.port, api.url, site_id=site)
    sections["vad"] = {}  # the shipped endpointing defaults
    sections["agent"] = {"local_intents": True}
    config = write_config(work / "assistant.toml", sections, ENTITIES.format(ns=site))
    mqtt = MqttRecorder(broker.host, broker.port, [f"{root}/#", f"{site}/#"])
    ask = speech_wav("what is the weather like", work / "ask.wav", pad_before=0.8, pad_after=0.2)
    command = speech_wav("turn on the kitchen light", work / "command.wav", pad_before=0.8, pad_after=0.2)

    harness = measure_harness(pulse, click_wav(work / "click.wav"), args.turns)
    started = time.monotonic()
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / "daemon.log")
    try:
        daemon.wait_ready(mqtt, root, timeout=60)
        startup_s = time.monotonic() - started
        latencies = measure_turns(pulse, mqtt, root, ask, args.turns)
        api.transcript = "turn on the kitchen light"
        fast = measure_fast_path(pulse, mqtt, root, command, args.turns)
    finally:
        daemon.stop()
        mqtt.close()
    try:
        idle = measure_idle_modes(pulse, broker, api, work, args.idle_s) if args.idle_s > 0 else {}
    finally:
        api.stop()
        broker.stop()
        pulse.stop()

    report(latencies, harness, fast, startup_s, idle, args.idle_s)
    return 0


def report(
    latencies: list[float],
    harness: list[tuple[float, float]],
    fast: list[tuple[float, float]],
    startup_s: float,
    idle: dict[str, tuple[float, float]],
    idle_s: float,
) -> None:
    """Print the figures, the harness's share apart from the daemon's."""
    vad = VadConfig()
    naive, overlapped = lower_bounds(vad.silence_ms / 1000, vad.early_ms / 1000)
    p50, p95 = statistics.median(latencies), percentile(latencies, 95)
    echo = statistics.median(h[1] for h in harness)
    to_command = [f[0] for f in fast]
    speech_to_command = [f[1] for f in fast]
    rows = [
        ("turns", f"{len(latencies)}"),
        ("end of speech -> first reply audio, p50 / p95", f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms"),
        ("lower bound from the delays (silence, then transcription)", f"{naive * 1000:.0f} ms"),
        ("lower bound with transcription started at the pause", f"{overlapped * 1000:.0f} ms"),
        (
            "overhead over that bound, p50 / p95 (harness included)",
            f"{(p50 - overlapped) * 1000:.0f} / {(p95 - overlapped) * 1000:.0f} ms",
        ),
        (
            "harness: click -> echo through the same audio path, p50 / p95 (capture block's fill excluded)",
            f"{echo * 1000:.0f} / {percentile([h[1] for h in harness], 95) * 1000:.0f} ms",
        ),
        (
            "harness: click -> echo, p50 (block's fill included)",
            f"{statistics.median(h[0] for h in harness) * 1000:.0f} ms",
        ),
        (
            "daemon overhead (over the bound, less the harness p50), p50 / p95",
            f"{(p50 - overlapped - echo) * 1000:.0f} / {(p95 - overlapped - echo) * 1000:.0f} ms",
        ),
        (
            "fast path: transcript -> MQTT command, p50 / p95",
            f"{statistics.median(to_command) * 1000:.1f} / {percentile(to_command, 95) * 1000:.1f} ms",
        ),
        (
            "fast path: end of speech -> MQTT command, p50 / p95",
            f"{statistics.median(speech_to_command) * 1000:.0f} / {percentile(speech_to_command, 95) * 1000:.0f} ms",
        ),
        ("start-up to ready", f"{startup_s:.2f} s"),
    ]
    for mode, (cpu, rss) in idle.items():
        rows.append((f"idle, wake.mode={mode}, {idle_s:.0f} s: CPU / RSS", f"{cpu:.1f} % of one core / {rss:.0f} MB"))
    print_table(rows)
    print("per turn, end of speech -> first reply audio (ms):", " ".join(f"{x * 1000:.0f}" for x in latencies))
    print(
        f"(silence_ms {vad.silence_ms}, early_ms {vad.early_ms}, transcription {STT_DELAY_S * 1000:.0f} ms, "
        f"first token {FIRST_TOKEN_S * 1000:.0f} ms, {TOKENS_PER_S} tokens/s, "
        f"TTS first byte {TTS_FIRST_BYTE_S * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
