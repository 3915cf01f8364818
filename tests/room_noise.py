"""Noisy rooms for endpointing tests and benches: sox noises and espeak-ng voices mixed at set levels.

Levels are RMS in dB relative to int16 full scale (a full-scale square wave is 0 dBFS),
as `assistant.audio.noise.frame_dbfs` and the wake word's `level_dbfs` measure them.
espeak-ng speech comes out at about -21 dBFS, so noise at -30 dBFS is 9 dB under the voice.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 16000
NOISES = ("pink", "brown", "fan")
LEVELS = (-35, -30, -25)
TALK = (
    "the weather report said it would rain this afternoon, and then my sister called to talk about "
    "her garden and the new bicycle she bought last week for the children"
)

Samples = npt.NDArray[np.float64]


def _read(path: Path) -> Samples:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)


def noise(kind: str, seconds: float, directory: Path) -> Samples:
    """sox noise: "pink", "brown", or "fan" (brown noise with a 120 Hz hum and its harmonics)."""
    path = directory / f"{kind}-{seconds:.1f}.wav"
    if not path.exists():
        length = f"{seconds:.3f}"
        command = ["sox", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(path), "synth", length]
        if kind == "pink":
            command += ["pinknoise"]
        elif kind == "brown":
            command += ["brownnoise"]
        elif kind == "fan":
            command += ["brownnoise"] + [a for f in (120, 240, 360) for a in ("synth", length, "sine", "mix", str(f))]
        else:
            raise ValueError(f"unknown noise {kind!r}")
        subprocess.run([*command, "vol", "0.5"], check=True, capture_output=True)
    return _read(path)[: round(seconds * RATE)]


def speech(text: str, directory: Path, voice: str = "en-us", wpm: int = 150) -> Samples:
    """espeak-ng speech at 16 kHz, trimmed to where the waveform is audible (|sample| > 300)."""
    path = directory / f"speech-{abs(hash((text, voice, wpm)))}.wav"
    if not path.exists():
        raw = directory / f".{path.name}.raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(path)], check=True
        )
        raw.unlink()
    samples = _read(path)
    loud = np.flatnonzero(np.abs(samples) > 300)
    return samples[loud[0] : loud[-1] + 1]


def talker(seconds: float, directory: Path) -> Samples:
    """A second voice that goes on talking (espeak-ng, another voice), `seconds` long."""
    said = speech(TALK, directory, voice="en-gb+m3", wpm=170)
    count = round(seconds * RATE)
    return np.tile(said, count // len(said) + 1)[:count]


def at_level(samples: Samples, dbfs: float) -> Samples:
    """`samples` scaled to an RMS level of `dbfs`."""
    rms = float(np.sqrt(np.mean(samples * samples)))
    return samples * (32768 * 10 ** (dbfs / 20) / rms)


def in_room(said: Samples, background: Samples, dbfs: float, lead_s: float, tail_s: float) -> bytes:
    """`said` after `lead_s` of background and followed by `tail_s` more, the background at `dbfs`: pcm16."""
    clean = np.concatenate([np.zeros(round(lead_s * RATE)), said, np.zeros(round(tail_s * RATE))])
    if len(background) < len(clean):
        raise ValueError("the background is shorter than the scene")
    mixed = clean + at_level(background[: len(clean)], dbfs)
    return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()
