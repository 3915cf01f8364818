"""Benchmark: the Realtime mode's end of speech to first reply audio, with the server's delay injected.

Everything is real but the API: `assistant run` as a subprocess, the PulseAudio virtual
microphone and speaker, the SDK's realtime client talking to the local Realtime server
(tests/fake_realtime.py), which holds the first audio delta back `--delay-ms` after the
response starts (the model's time to first audio). Both turn detections are measured:

* the end of the request: the client's `input_audio_buffer.commit` (local) or the server's
  `input_audio_buffer.committed` (server VAD), as the server saw it, to the first reply
  sample on the speaker. Target: at most the injected delay plus 100 ms (p95).
* the true end of speech (the last loud sample fed to the microphone) to the first reply
  sample: that plus the silence that ends a request (vad.silence_ms, or the server's).

    .venv/bin/python bench/realtime_latency.py [--turns 15] [--delay-ms 300]
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

from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import FakeOpenAI
from fake_realtime import FakeRealtime, RealtimeReply
from latency import SOUND_THRESHOLD, SPEECH_THRESHOLD, percentile, print_table, rss_mb
from support import MqttRecorder, PulseAudio, SpeakerRecorder, speech_wav, start_broker

from assistant.config import RealtimeConfig, VadConfig

REPLY = "It is sunny and twenty degrees outside. Enjoy your afternoon in the garden."


def measure(
    pulse: PulseAudio, mqtt: MqttRecorder, rt: FakeRealtime, root: str, wav: Path, turns: int, server: bool
) -> list[tuple[float, float]]:
    """(end of request -> first reply sample, end of speech -> first reply sample) per turn."""
    results = []
    for _turn in range(turns):
        mqtt.clear()
        started = time.monotonic()
        with SpeakerRecorder(pulse) as speaker, SpeakerRecorder(pulse, device="micsrc.monitor") as mic:
            pulse.play_into_mic(wav)
            first_sound = speaker.wait_for_sound(threshold=SOUND_THRESHOLD, timeout=30, since=started)
            mqtt.wait_for(f"{root}/state", predicate=lambda m, t=started: m.text == "idle" and m.time > t, timeout=30)
            loud = np.flatnonzero(np.abs(mic.samples().astype(np.int32)) > SPEECH_THRESHOLD)
            end_of_speech = mic.time_of_sample(int(loud[-1]))
        if server:
            ended = next(t for t in rt.sent_at("input_audio_buffer.committed") if t > started)
        else:
            ended = next(e.t for e in rt.of("input_audio_buffer.commit") if e.t > started)
        results.append((first_sound - ended, first_sound - end_of_speech))
        time.sleep(0.3)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--delay-ms", type=float, default=300.0)
    args = parser.parse_args()
    delay = args.delay_ms / 1000

    work = Path(tempfile.mkdtemp(prefix="bench-rt-"))
    pulse = PulseAudio.start()
    os.environ.update(pulse.env)
    broker = start_broker(workdir=work)
    api = FakeOpenAI()
    api.start()
    ask = speech_wav("what is the weather like", work / "ask.wav", pad_before=0.8, pad_after=0.2)
    rows: list[tuple[str, str]] = []
    try:
        with FakeRealtime() as rt:
            rt.first_audio_delay_s = delay
            rt.audio_chunk_delay_s = 0.1  # the reply streams at about the pace it is spoken, as upstream
            rt.transcript = "what is the weather like"
            rt.responder = lambda items: RealtimeReply(text=REPLY)
            for detection in ("local", "server"):
                site = f"bench{uuid.uuid4().hex[:6]}"
                root = f"assistant/{site}"
                sections = base_sections(broker.port, api.url, site_id=site)
                sections["vad"] = {}  # the shipped endpointing defaults
                sections["realtime"] = {"enabled": True, "base_url": rt.openai_url, "turn_detection": detection}
                config = write_config(work / f"{detection}.toml", sections, ENTITIES.format(ns=site))
                mqtt = MqttRecorder(broker.host, broker.port, [f"{root}/#"])
                daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), work / f"{detection}.log")
                try:
                    daemon.wait_ready(mqtt, root, timeout=60)
                    measure(pulse, mqtt, rt, root, ask, 1, detection == "server")  # warm-up: espeak-ng's rendering
                    results = measure(pulse, mqtt, rt, root, ask, args.turns, detection == "server")
                    rss = rss_mb(daemon.process.pid)
                finally:
                    daemon.stop()
                    mqtt.close()
                to_request = [r[0] for r in results]
                to_speech = [r[1] for r in results]
                p95 = percentile(to_request, 95)
                rows += [
                    (
                        f"{detection}: end of request -> first reply audio, p50 / p95",
                        f"{statistics.median(to_request) * 1000:.0f} / {p95 * 1000:.0f} ms "
                        f"({'meets' if p95 <= delay + 0.1 else 'misses'} the target {(delay + 0.1) * 1000:.0f} ms)",
                    ),
                    (
                        f"{detection}: end of speech -> first reply audio, p50 / p95",
                        f"{statistics.median(to_speech) * 1000:.0f} / {percentile(to_speech, 95) * 1000:.0f} ms",
                    ),
                    (f"{detection}: daemon RSS after the turns", f"{rss:.0f} MB"),
                ]
    finally:
        api.stop()
        broker.stop()
        pulse.stop()
    print_table([("turns per mode", str(args.turns)), *rows])
    print(
        f"(first-audio delay {delay * 1000:.0f} ms; vad.silence_ms {VadConfig().silence_ms}, "
        f"realtime.server_silence_ms {RealtimeConfig().server_silence_ms})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
