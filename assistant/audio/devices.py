"""Sound in and out through sounddevice (PortAudio), with one owner of the library.

`SoundCard` runs every PortAudio call on one thread, in order: the output stream's
writes, the microphone's open and close, and the device rescan that a vanished
microphone needs. So a rescan can never tear PortAudio down under a playing stream
(that cut replies and corrupted the heap), and nothing blocks the event loop.
Playback writes pcm chunks as they arrive, so speech starts before a reply has been
fully synthesized, and resamples when a device refuses a rate. The microphone that
uses this card is in assistant/audio/microphone.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sounddevice as sd

from assistant.audio.echo import EchoCanceller
from assistant.audio.lookup import find_device
from assistant.audio.pcm import Resampler
from assistant.audio.warm import KeepWarm

log = logging.getLogger(__name__)


WRITE_S = 0.05  # playback is written in pieces this long, so stopping is quick and safe


class SoundCard:
    """The one owner of PortAudio: plays sounds in order through one long-lived output stream.

    The output stream is opened once, stopped between sounds and reopened only after an
    error, so a device that allows a single stream works and a reply pays no open cost.
    While a reply is on its way, `warm` keeps it running on silence (not at rest): through
    ALSA's PulseAudio plugin the first ~35 ms written after a start are dropped, so a stream
    started by a sound begins with that much silence, and a warm one has it behind it. Sounds
    queue in arrival order (a chime asked for during a reply plays after it). PortAudio is
    touched on `self._thread` only.
    """

    def __init__(self, output_device: str | int | None, echo: EchoCanceller | None = None) -> None:
        self.output_device = output_device
        self.echo = echo  # told what is played and when it is heard, to take it out of the microphone
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio")
        self._turn: asyncio.Lock | None = None  # held while a sound plays or the devices are rescanned
        self._waiting = 0
        # Touched only on self._thread:
        self._out: Any = None
        self._out_rate = 0
        self._running = False
        self._started = False
        self._warm = KeepWarm(self.later)
        self._resampler: Resampler | None = None

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a PortAudio call on the audio thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _lock(self) -> asyncio.Lock:
        if self._turn is None:
            self._turn = asyncio.Lock()
        return self._turn

    def warm(self, sample_rate: int) -> None:
        """Start the output stream now, while a reply is being requested: silence until a sound or `rest`."""
        self.later(functools.partial(self._prime, sample_rate))

    def rest(self) -> None:
        """No sound is coming after all: stop the silence that `warm` started (not a sound)."""
        self.later(self._feed_no_more)

    async def play(
        self, chunks: AsyncIterator[bytes], sample_rate: Callable[[], int], stop: asyncio.Event | None = None
    ) -> bool:
        """Play a stream of pcm chunks after the sounds before it; False if cut short.

        The rate is asked for once the first chunk is there, since some sources
        (espeak-ng's WAV header) only know it then. Writes are short (WRITE_S), so a
        stop or a cancellation waits for at most one of them, then drops what is queued.
        """
        self._waiting += 1
        async with self._lock():
            self._waiting -= 1
            complete = False
            begun = False
            carry = b""
            try:
                async for chunk in chunks:
                    if stop is not None and stop.is_set():
                        return False
                    if not begun:
                        rate = sample_rate()
                        await self.call(self._begin, rate)
                        begun, step = True, max(2, int(rate * WRITE_S) * 2)
                    data = carry + chunk
                    cut = len(data) - len(data) % 2
                    data, carry = data[:cut], data[cut:]
                    for start in range(0, len(data), step):
                        if stop is not None and stop.is_set():
                            return False
                        await self.call(self._write, data[start : start + step])
                if begun and not self._waiting:
                    await self.call(self._drain)  # returns once the sound has played
                complete = not (stop is not None and stop.is_set())
                return complete
            except sd.PortAudioError:
                await asyncio.shield(self.call(self._close_output))  # reopened by the next sound
                raise
            finally:
                if begun and not complete:
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(self.call(self._halt))

    async def rescan(self, before: Callable[[], None] | None = None) -> None:
        """Let PortAudio find devices again, once no sound is playing (`before` runs first)."""
        async with self._lock():
            await self.call(self._rescan, before)

    def later(self, function: Callable[[], None]) -> None:
        """Queue a PortAudio call on the audio thread without waiting (nothing, once closed)."""
        with contextlib.suppress(RuntimeError):  # the thread has already shut down
            self._thread.submit(function)

    def close(self) -> None:
        """Close the output stream and let the audio thread end."""
        self._thread.submit(self._close_output)
        self._thread.shutdown(wait=True)

    # --- on the audio thread ---------------------------------------------------

    def _open_output(self, rate: int) -> None:
        if self._out is not None:
            return
        index = find_device(self.output_device, "output")
        try:
            self._out = sd.RawOutputStream(samplerate=rate, channels=1, dtype="int16", device=index)
        except sd.PortAudioError:
            native = int(sd.query_devices(index, "output")["default_samplerate"])
            log.info("output device does not take %d Hz; playing at %d Hz", rate, native)
            self._out = sd.RawOutputStream(samplerate=native, channels=1, dtype="int16", device=index)
        self._out_rate = int(self._out.samplerate)
        self._running = False

    def _prime(self, rate: int) -> None:
        self._open_output(rate)
        if not self._running:
            self._start()
            self._warm.start(self._out, self._out_rate, self._drain, self._close_output)

    def _feed_no_more(self) -> None:
        if self._warm.on:  # still only silence: no sound has begun since `warm`
            self._drain()

    def _begin(self, rate: int) -> None:
        self._warm.stop()
        self._open_output(rate)
        self._resampler = Resampler(rate, self._out_rate) if rate != self._out_rate else None
        if not self._running:
            self._start()

    def _write(self, data: bytes) -> None:
        if self._resampler is not None:
            data = self._resampler.process(data)
        ran_dry = self._out.write(data) or self._started
        self._started = False
        if self.echo is not None:
            # What is still buffered plays before the last sample written: a lower bound on when it
            # is heard (latency past the stream's buffer is not counted), so the reference leads.
            ahead = max(0.0, self._out.latency - self._out.write_available / self._out_rate)
            self.echo.played(data, self._out_rate, time.monotonic() + ahead, bool(ran_dry))

    def _start(self) -> None:
        """Start the stream with its own latency's worth of silence: through ALSA's PulseAudio
        plugin, what is written first after a start is dropped (the first syllable, a chime)."""
        self._out.start()
        self._running = True
        self._started = True  # what the next write holds does not follow what was played before
        self._out.write(bytes(int(self._out.latency * self._out_rate) * 2))

    def _drain(self) -> None:
        self._warm.stop()
        if self._out is not None and self._running:
            self._out.stop()
            self._running = False

    def _halt(self) -> None:
        """Stop at once, dropping what is buffered (a barge-in or a cancel)."""
        if self.echo is not None:
            self.echo.stopped()
        if self._out is not None and self._running:
            try:
                self._out.abort()
            except sd.PortAudioError as error:
                log.debug("stopping output stream: %s", error)
                self._close_output()
            self._running = False

    def _close_output(self) -> None:
        self._warm.stop()
        stream, self._out, self._running = self._out, None, False
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except sd.PortAudioError as error:
                log.debug("closing output stream: %s", error)

    def _rescan(self, before: Callable[[], None] | None) -> None:
        # PortAudio enumerates devices once; a device that came back needs a fresh scan,
        # and that scan invalidates every open stream: close ours first.
        if before is not None:
            before()
        self._close_output()
        sd._terminate()
        sd._initialize()
