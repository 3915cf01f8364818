"""The voice output: replies sentence by sentence, and the wake / done chimes.

Everything the device says goes through the one `SoundCard`, so chimes and replies play
in order on a device that allows one output stream. While it sounds, and for a short tail
after (the room still rings), the microphone is not taken as a request: `mic_open_at` is
when the listener may hear again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections.abc import AsyncIterator
from typing import Any

import openai

from assistant.audio.devices import SoundCard
from assistant.daemon.events import Events
from assistant.daemon.state import Event, StateMachine
from assistant.voice.sentences import SentenceSplitter
from assistant.voice.tts import TtsError, Voice

log = logging.getLogger(__name__)

ECHO_TAIL_S = 0.25  # ignore the microphone briefly after speaking: the room still rings
TONE_RATE = 16000


def _tone(frequencies: tuple[float, ...], seconds: float = 0.09) -> bytes:
    """A soft two-note chime (fade in/out so it does not click). Plain Python: numpy is not loaded at rest."""
    times = [i / TONE_RATE for i in range(int(TONE_RATE * seconds))]
    envelope = [min(1.0, min(t, seconds - t) / 0.01) for t in times]
    samples = array(
        "h",
        (
            int(math.sin(2 * math.pi * f * t) * e * 6000)
            for f in frequencies
            for t, e in zip(times, envelope, strict=True)
        ),
    )
    return samples.tobytes()


TONES = {"wake": _tone((660.0, 880.0)), "done": _tone((880.0, 660.0))}


class Speech:
    """Speaks text through the voice and the sound card; the state machine hears when it starts."""

    def __init__(self, voice: Voice | None, card: SoundCard, machine: StateMachine, events: Events) -> None:
        self.voice = voice
        self.card = card
        self.machine = machine
        self.events = events
        self.stop_speaking = asyncio.Event()  # set: the reply under way stops (barge-in, cancel)
        self.mic_open_at = 0.0  # time.monotonic() before which the microphone hears our own sound
        self.background: set[asyncio.Task[Any]] = set()

    async def speak(self, text: str, request_id: str | None) -> None:
        """Speak a whole text (say, apologies)."""
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        splitter = SentenceSplitter()
        for piece in [*splitter.feed(text), *splitter.flush(), None]:
            pieces.put_nowait(piece)
        await self.speak_pieces(pieces, request_id)

    async def speak_pieces(self, pieces: asyncio.Queue[str | None], request_id: str | None) -> None:
        """Speak pieces of text as they come, through one output stream, until None.

        The next piece is synthesized while the current one plays, so sentences follow
        each other without a gap. Failures are reported, never fatal.
        """
        voice = self.voice
        if voice is None:
            return
        self.card.warm(voice.sample_rate)  # the stream runs (on silence) while the first sentence is requested
        first: str | None = None
        try:
            first = await pieces.get()
        finally:
            if first is None:
                self.card.rest()  # nothing to say after all (or cancelled): no silence at rest
        if first is None:
            return
        self.machine.handle(Event.SPEAK)
        self.stop_speaking.clear()
        audio: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def synthesize() -> None:
            piece: str | None = first
            try:
                while piece is not None:
                    async for chunk in voice.synthesize(piece):
                        audio.put_nowait(chunk)
                    piece = await pieces.get()
            finally:
                audio.put_nowait(None)

        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await audio.get()) is not None:
                yield chunk
            await producer  # re-raise a synthesis error here

        producer = asyncio.create_task(synthesize())
        try:
            await self.card.play(chunks(), lambda: voice.sample_rate, self.stop_speaking)
        except (openai.APIError, TtsError, OSError) as error:
            self.events.error(request_id, "tts_error", f"{type(error).__name__}: {error}")
        except Exception as error:
            self.events.error(request_id, "audio_error", f"{type(error).__name__}: {error}")
        finally:
            producer.cancel()
            self.card.rest()  # if no sound began (synthesis failed first)
            self.mic_open_at = time.monotonic() + ECHO_TAIL_S

    async def play_audio(
        self, audio: asyncio.Queue[bytes | None], sample_rate: int, played: list[int], request_id: str | None
    ) -> None:
        """Play pcm as it arrives, until None: a reply that comes as audio (the Realtime mode).

        `played[0]` counts the bytes handed to the sound card so far, so a barge-in knows
        how much of the reply was heard. Playback errors are reported, never fatal.
        """
        self.card.warm(sample_rate)
        first: bytes | None = None
        try:
            first = await audio.get()
        finally:
            if first is None:
                self.card.rest()
        if first is None:
            return
        self.machine.handle(Event.SPEAK)
        self.stop_speaking.clear()

        async def chunks() -> AsyncIterator[bytes]:
            chunk: bytes | None = first
            while chunk is not None:
                yield chunk
                played[0] += len(chunk)  # the card asks for the next chunk once this one is written
                chunk = await audio.get()

        try:
            await self.card.play(chunks(), lambda: sample_rate, self.stop_speaking)
        except Exception as error:
            self.events.error(request_id, "audio_error", f"{type(error).__name__}: {error}")
        finally:
            self.card.rest()  # if no sound began
            self.mic_open_at = time.monotonic() + ECHO_TAIL_S

    def chime(self, name: str) -> None:
        """A short wake / done tone; the listener ignores the microphone while it plays."""
        tone = TONES[name]
        self.mic_open_at = max(self.mic_open_at, time.monotonic() + len(tone) / 2 / TONE_RATE + ECHO_TAIL_S)

        async def one_chunk() -> AsyncIterator[bytes]:
            yield tone

        task = asyncio.create_task(self.card.play(one_chunk(), lambda: TONE_RATE))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
