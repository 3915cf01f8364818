"""The output stream runs on silence while a reply is on its way, so the reply is heard from its first
sample; at rest it does not run. Real PortAudio, through ALSA's PulseAudio plugin, into the virtual speaker."""

from __future__ import annotations

import asyncio
import math
import os
import time
from array import array
from collections.abc import AsyncIterator

import numpy as np
from support import PulseAudio, SpeakerRecorder

from assistant.audio.devices import SoundCard

RATE = 16000
CLICK = array("h", (int(12000 * math.sin(2 * math.pi * 1000 * i / RATE)) for i in range(RATE // 50))).tobytes()
CLICK_LOUD = int((np.abs(np.frombuffer(CLICK, dtype=np.int16)) > 1000).sum())


async def playing(pulse: PulseAudio, running: bool, timeout: float = 5.0) -> None:
    """Wait until this process has (or has not) a running output stream in PulseAudio."""
    deadline = time.monotonic() + timeout
    ours = f'application.process.id = "{os.getpid()}"'
    while True:
        sinks = await asyncio.to_thread(pulse.pactl, "list", "sink-inputs")
        streams = [block for block in sinks.split("Sink Input #") if ours in block]
        if any("Corked: no" in block for block in streams) == running:
            return
        assert time.monotonic() < deadline, f"output stream {'never started' if running else 'still running'}:\n{sinks}"
        await asyncio.sleep(0.02)


async def reply() -> AsyncIterator[bytes]:
    yield CLICK + bytes(RATE // 2)  # a click, then silence


def test_a_reply_on_a_warm_stream_is_heard_from_its_first_sample(pulse: PulseAudio) -> None:
    async def scenario() -> int:
        card = SoundCard(None)
        try:
            with SpeakerRecorder(pulse) as speaker:
                card.warm(RATE)  # as when the reply has been asked for
                await playing(pulse, True)
                await card.play(reply(), lambda: RATE)
                speaker.wait_for_sound(threshold=1000, timeout=5)
                await playing(pulse, False)  # the stream stops once the reply has played
                return int((np.abs(speaker.samples().astype(np.int32)) > 1000).sum())
        finally:
            card.close()

    heard = asyncio.run(scenario())
    assert heard >= 0.9 * CLICK_LOUD, f"{heard} of the click's {CLICK_LOUD} loud samples were heard"


def test_a_warm_stream_with_nothing_to_play_stops(pulse: PulseAudio) -> None:
    async def scenario() -> None:
        card = SoundCard(None)
        try:
            card.warm(RATE)
            await playing(pulse, True)
            card.rest()  # no reply after all
            await playing(pulse, False)
            card.rest()  # twice is harmless, and a sound after it still plays
            with SpeakerRecorder(pulse) as speaker:
                card.warm(RATE)
                await playing(pulse, True)
                await card.play(reply(), lambda: RATE)
                speaker.wait_for_sound(threshold=1000, timeout=5)
            card.rest()  # after a sound: nothing to stop
            await playing(pulse, False)
        finally:
            card.close()

    asyncio.run(scenario())


def test_a_sound_on_a_stopped_stream_is_heard_whole_too(pulse: PulseAudio) -> None:
    """A chime, or a reply that comes at once: the stream starts with the sound, and loses none of it."""

    async def scenario() -> list[int]:
        card = SoundCard(None)
        heard = []
        try:
            for warm_first in (False, True):  # cold; and warmed just before the sound ("say")
                with SpeakerRecorder(pulse) as speaker:
                    if warm_first:
                        card.warm(RATE)
                    await card.play(reply(), lambda: RATE)
                    speaker.wait_for_sound(threshold=1000, timeout=5)
                    await playing(pulse, False)
                    heard.append(int((np.abs(speaker.samples().astype(np.int32)) > 1000).sum()))
        finally:
            card.close()
        return heard

    for heard in asyncio.run(scenario()):
        assert heard >= 0.9 * CLICK_LOUD, f"{heard} of the click's {CLICK_LOUD} loud samples were heard"
