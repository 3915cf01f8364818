"""Transcription of one utterance through the stage's OpenAI-compatible endpoint."""

from __future__ import annotations

from typing import Any

import openai

from assistant.audio.pcm import wav_bytes
from assistant.config import SttConfig


class Transcriber:
    """Sends each utterance as an in-memory WAV with the configured options."""

    def __init__(self, config: SttConfig, client: openai.AsyncOpenAI) -> None:
        self.config = config
        self.client = client

    def request_options(self) -> dict[str, Any]:
        """The optional fields that reach the wire, only those the user set."""
        options: dict[str, Any] = {"response_format": self.config.response_format}
        for name in ("language", "prompt", "temperature"):
            value = getattr(self.config, name)
            if value is not None:
                options[name] = value
        return options

    async def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        """Return the text of the utterance (empty when nothing was said)."""
        result: Any = await self.client.audio.transcriptions.create(
            model=self.config.model,
            file=("utterance.wav", wav_bytes(pcm, sample_rate), "audio/wav"),
            **self.request_options(),
        )
        text = result if isinstance(result, str) else getattr(result, "text", "")
        return str(text).strip()
