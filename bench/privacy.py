"""Privacy: how much audio leaves the device while people talk in the room without the wake word.

Plays an hour-equivalent of room noise and ordinary speech (espeak-ng sentences in
several voices, never the wake word) through the daemon's real listening logic
(`assistant.audio.listener.Listener`: webrtcvad segmenter, pymicro-wakeword), faster than real
time, and counts every byte handed to transcription, in each wake mode.

    .venv/bin/python bench/privacy.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from listener_host import ListenerHost

from assistant.audio.listener import Listener
from assistant.audio.vad import Utterance
from assistant.config import Config, parse_config
from assistant.daemon.state import Event

RATE = 16000
FRAME = 480  # 30 ms
SENTENCES = [
    ("en-us", "Did you see the game last night? It was unbelievable."),
    ("en-gb", "I think we should paint the kitchen a lighter colour."),
    ("en-us+f3", "Can you pass me the salt and the pepper please."),
    ("en-029", "The children are coming home at half past four today."),
    ("en-us+m3", "Turn the music down a little, I'm on the phone."),
    ("en-gb-x-rp", "My croft of tomatoes did very well this summer."),
]


class CountingHost(ListenerHost):
    """Counts every byte that would be sent upstream; each turn ends as soon as it is handed on
    (the reply is not part of this bench), so the room is heard again as after a reply."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.bytes_sent = 0

    def submit_utterance(self, utterance: Utterance, request_id: str, early: asyncio.Task[str] | None) -> None:
        if early is None:  # the daemon reuses a still-valid early transcription instead of sending again
            self.bytes_sent += len(utterance.audio)
        super().submit_utterance(utterance, request_id, early)
        self.machine.handle(Event.DONE)

    async def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        self.bytes_sent += len(pcm)
        return ""


def espeak(text: str, voice: str, directory: Path) -> np.ndarray:
    raw, out = directory / "raw.wav", directory / "out.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)], check=True
    )
    with wave.open(str(out)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def room_audio(minutes: float, directory: Path) -> np.ndarray:
    """Noise at a living-room level with a sentence every few seconds (half the time talk)."""
    rng = np.random.default_rng(3)
    clips = [espeak(text, voice, directory) for voice, text in SENTENCES]
    total = int(minutes * 60 * RATE)
    audio = (rng.standard_normal(total) * 250).astype(np.float32)
    position, index = RATE, 0
    while position < total - 5 * RATE:
        clip = clips[index % len(clips)].astype(np.float32) * rng.uniform(0.4, 1.0)
        audio[position : position + len(clip)] += clip
        position += len(clip) + int(rng.uniform(0.5, 4.0) * RATE)
        index += 1
    return np.clip(audio, -32768, 32767).astype(np.int16)


async def listen(config: Config, audio: np.ndarray) -> CountingHost:
    host = CountingHost(config.wake.mode)
    clock = [0.0]  # audio time: the hour runs faster than real time
    listener = Listener(config, host, clock=lambda: clock[0])
    data = audio.tobytes()
    for start in range(0, len(data) - FRAME * 2, FRAME * 2):
        clock[0] += FRAME / RATE
        listener.feed(data[start : start + FRAME * 2])
        if start % (FRAME * 2 * 200) == 0:
            await asyncio.sleep(0)  # let early transcriptions run
    await asyncio.sleep(0.1)
    return host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        audio = room_audio(args.minutes, Path(directory))
    talk_s = float(np.count_nonzero(np.abs(audio) > 1500)) / RATE
    print(f"| wake.mode | audio sent upstream | requests | wakes | processing time for {args.minutes:.0f} min |")
    print("|---|---|---|---|---|")
    for mode in ("wakeword", "vad"):
        config = parse_config({"wake": {"mode": mode}, "openai": {"base_url": "http://127.0.0.1:9/v1"}}, {})
        started = time.process_time()
        host = asyncio.run(listen(config, audio))
        spent = time.process_time() - started
        print(
            f"| {mode} | {host.bytes_sent} bytes ({host.bytes_sent / 2 / RATE:.0f} s) | {len(host.uploads)} "
            f"| {len(host.wakes)} | {spent:.1f} s CPU |"
        )
    print(f"(about {talk_s / 60:.0f} min of loud speech samples in {args.minutes:.0f} min of room audio)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
