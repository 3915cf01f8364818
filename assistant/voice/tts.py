"""Speech synthesis: a cloud voice streamed as raw pcm, or espeak-ng on the device (Piper: voice/piper.py).

Each yields int16 mono pcm chunks as soon as they exist, so playback can start while
the rest is still being synthesized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import openai

from assistant.config import TtsConfig

log = logging.getLogger(__name__)

OPENAI_PCM_RATE = 24000  # the Speech API's "pcm" format: 24 kHz, 16-bit, mono
DEFAULT_OPENAI_VOICE = "alloy"
ESPEAK_WPM = 175


class TtsError(Exception):
    """Synthesis failed (API error, missing espeak-ng, bad voice)."""


class Voice(Protocol):
    """Anything that turns text into a stream of pcm chunks at `sample_rate`."""

    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yield int16 mono little-endian pcm chunks."""
        ...


class OpenAIVoice:
    """The Speech API with response_format "pcm", read in small chunks as it arrives."""

    sample_rate = OPENAI_PCM_RATE

    def __init__(self, config: TtsConfig, client: openai.AsyncOpenAI) -> None:
        self.config = config
        self.client = client

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Stream the spoken text."""
        extra = {"instructions": self.config.instructions} if self.config.instructions else {}
        async with self.client.audio.speech.with_streaming_response.create(
            model=self.config.model or "",
            voice=self.config.voice or DEFAULT_OPENAI_VOICE,
            input=text,
            response_format="pcm",
            speed=self.config.speed,
            **extra,  # type: ignore[arg-type]
        ) as response:
            async for chunk in response.iter_bytes(4800):
                yield chunk


class EspeakVoice:
    """espeak-ng on the device: offline, instant, robotic."""

    sample_rate = 22050  # espeak-ng's native rate; read from its WAV header too

    def __init__(self, config: TtsConfig, voice: str = "en") -> None:
        self.voice = voice
        self.wpm = round(ESPEAK_WPM * config.speed)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Run espeak-ng and stream its WAV output without the header."""
        try:
            process = await asyncio.create_subprocess_exec(
                "espeak-ng",
                "-v",
                self.voice,
                "-s",
                str(self.wpm),
                "--stdout",
                "--",
                text,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise TtsError("espeak-ng is not installed (apt-get install espeak-ng)") from None
        assert process.stdout is not None
        finished = False
        try:
            header = await process.stdout.readexactly(44)
            if header[:4] != b"RIFF":
                raise TtsError("espeak-ng did not produce a WAV stream")
            self.sample_rate = struct.unpack("<I", header[24:28])[0]
            while chunk := await process.stdout.read(4096):
                yield chunk
            finished = True
        except asyncio.IncompleteReadError:
            stderr = await process.stderr.read() if process.stderr else b""
            raise TtsError(f"espeak-ng failed: {stderr.decode(errors='replace').strip()}") from None
        finally:
            if not finished and process.returncode is None:  # stopped mid-sentence (barge-in, cancel)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            # Always reaped and read here: an exit left to the child watcher alone is logged
            # as an unknown child when the kernel got to it first (see cli.main on SIGCHLD).
            returncode = await process.wait()
            if finished and returncode != 0:
                log.warning("espeak-ng exited with status %s after speaking", returncode)


def make_voice(config: TtsConfig, client: openai.AsyncOpenAI | None, language: str, state_dir: Path) -> Voice | None:
    """The voice that `choose` picks (starting to load it if it is Piper), or None when replies are not spoken.

    Raises ConfigError when `engine = "piper"` and its voice is not there: at start-up that
    is exit status 2, like any other config problem.
    """
    from assistant.voice.choice import choose_or_refuse

    choice = choose_or_refuse(config, state_dir, language)
    log.info("voice: %s", choice.reason)
    if choice.engine == "openai":
        assert client is not None
        return OpenAIVoice(config, client)
    if choice.engine == "espeak":
        return EspeakVoice(config, choice.voice or language)
    if choice.engine == "piper":
        from assistant.voice.piper import PiperVoice

        assert choice.model is not None
        return PiperVoice(choice.model, config.speed)
    return None
