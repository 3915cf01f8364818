"""PCM helpers: streaming resampling, gain, and 16-bit mono WAV in and out. Pure, no devices.

numpy is imported where it is used: a daemon whose microphone takes its rate at unit gain
never loads it (13 MB).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path


class AudioError(Exception):
    """A sound device could not be found or opened."""


class Resampler:
    """Streaming linear-interpolation resampler for int16 mono; keeps state across blocks."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        import numpy as np

        self.step = src_rate / dst_rate
        self._pos = 0.0
        self._tail = np.zeros(0, dtype=np.float32)

    def process(self, pcm: bytes) -> bytes:
        """Resample one block; output length follows the rate ratio over time."""
        import numpy as np

        x = np.concatenate([self._tail, np.frombuffer(pcm, dtype=np.int16).astype(np.float32)])
        if len(x) < 2 or self._pos > len(x) - 1:
            self._tail = x
            return b""
        count = int((len(x) - 1 - self._pos) // self.step) + 1
        positions = self._pos + np.arange(count) * self.step
        y = np.interp(positions, np.arange(len(x)), x)
        next_pos = self._pos + count * self.step
        keep = int(next_pos)
        self._tail = x[keep:]
        self._pos = next_pos - keep
        return bytes(np.clip(np.round(y), -32768, 32767).astype(np.int16).tobytes())


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample a whole int16 mono buffer."""
    if src_rate == dst_rate:
        return pcm
    return Resampler(src_rate, dst_rate).process(pcm)


def apply_gain(pcm: bytes, gain: float) -> bytes:
    """Scale int16 samples, clipping instead of wrapping."""
    if gain == 1.0:
        return pcm
    import numpy as np

    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) * gain
    return bytes(np.clip(samples, -32768, 32767).astype(np.int16).tobytes())


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """An in-memory 16-bit mono WAV file, for upload."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def read_wav(path: Path, sample_rate: int) -> bytes:
    """Read a 16-bit PCM WAV as mono int16 at `sample_rate` (channels mixed, resampled)."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise AudioError(f"{path}: only 16-bit PCM WAV is supported")
            channels, rate = wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as error:
        raise AudioError(f"{path}: not a WAV file ({error})") from None
    if channels > 1:
        import numpy as np

        frames = np.frombuffer(data, dtype=np.int16).reshape(-1, channels).astype(np.int32)
        data = (frames.sum(axis=1) // channels).astype(np.int16).tobytes()
    return resample(data, rate, sample_rate)
