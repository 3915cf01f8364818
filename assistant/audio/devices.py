"""Sound in and out through sounddevice (PortAudio), with one owner of the library.

`SoundCard` runs every PortAudio call on one thread, in order: the output stream's
writes, the microphone's open and close, and the device rescan that a vanished
microphone needs. So a rescan can never tear PortAudio down under a playing stream
(that cut replies and corrupted the heap), and nothing blocks the event loop.
Capture hands fixed-size 16-bit mono frames to the loop through a bounded queue;
playback writes pcm chunks as they arrive, so speech starts before a reply has been
fully synthesized. Both resample when a device refuses a rate.
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

from assistant.audio.lookup import find_device
from assistant.audio.pcm import AudioError, Resampler, apply_gain
from assistant.audio.warm import KeepWarm

log = logging.getLogger(__name__)


WRITE_S = 0.05  # playback is written in pieces this long, so stopping is quick and safe
LATE_S = 0.25  # a gap between microphone frames this long is logged: the loop was held up
STALLED = b""  # queued by the stall timer: no frame for `stall_s` (a real frame is never empty)


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

    def __init__(self, output_device: str | int | None) -> None:
        self.output_device = output_device
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio")
        self._turn: asyncio.Lock | None = None  # held while a sound plays or the devices are rescanned
        self._waiting = 0
        # Touched only on self._thread:
        self._out: Any = None
        self._out_rate = 0
        self._running = False
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
        self._out.write(data)

    def _start(self) -> None:
        """Start the stream with its own latency's worth of silence: through ALSA's PulseAudio
        plugin, what is written first after a start is dropped (the first syllable, a chime)."""
        self._out.start()
        self._running = True
        self._out.write(bytes(int(self._out.latency * self._out_rate) * 2))

    def _drain(self) -> None:
        self._warm.stop()
        if self._out is not None and self._running:
            self._out.stop()
            self._running = False

    def _halt(self) -> None:
        """Stop at once, dropping what is buffered (a barge-in or a cancel)."""
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


class Microphone:
    """Capture frames of `frame_ms` at `sample_rate`, reopening the device if it vanishes.

    The PortAudio callback runs on its own thread: it only copies the block and hands
    it to the loop. A full queue drops the oldest frame, since late audio is useless.
    Opening, closing and rescanning go through the `SoundCard`, off the event loop.
    Counters say whether any audio was lost (`dropped`: the loop fell behind by more than
    the queue; `overruns`: PortAudio's own buffer overflowed) and how late the loop was
    (`longest_gap_s` between two frames taken); they are logged when the stream closes.
    """

    def __init__(
        self,
        card: SoundCard,
        device: str | int | None,
        sample_rate: int = 16000,
        frame_ms: int = 30,
        gain: float = 1.0,
        queue_frames: int = 200,
        stall_s: float = 2.0,
    ) -> None:
        self.card = card
        self.device = device
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self.gain = gain
        self.stall_s = stall_s
        self.captured = 0  # frames captured (cumulative over reopens)
        self.dropped = 0
        self.overruns = 0
        self.open_s = 0.0  # time the stream has been open, to compare with frames * frame_s
        self.longest_gap_s = 0.0
        self._opened_at: float | None = None
        self.trouble: str | None = None  # what is wrong with the microphone now, if anything
        self.on_trouble: Callable[[str | None], None] | None = None  # told when that changes
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_frames)
        self._open_ok = False  # on the loop: whether frames should be flowing
        self._live: sd.RawInputStream | None = None  # on the audio thread only: the stream last opened
        self._resampler: Resampler | None = None
        self._pending = bytearray()
        self._last_frame_at = 0.0  # time.monotonic() of the latest frame queued
        self._stall_timer: asyncio.TimerHandle | None = None

    def _open(self, loop: asyncio.AbstractEventLoop) -> Resampler | None:
        self._close_live()
        index = find_device(self.device, "input")

        def callback(indata: object, frames: int, when: object, status: sd.CallbackFlags) -> None:
            data = bytes(indata)  # type: ignore[call-overload]
            if status.input_overflow:
                self.overruns += 1
            loop.call_soon_threadsafe(self._put, data)

        try:
            stream = sd.RawInputStream(
                samplerate=self.sample_rate,
                channels=1,
                dtype="int16",
                device=index,
                blocksize=self.frame_bytes // 2,
                callback=callback,
            )
            resampler = None
        except sd.PortAudioError:
            # The device cannot record at our rate: record at its own and resample.
            native = int(sd.query_devices(index, "input")["default_samplerate"])
            log.info("input device does not take %d Hz; recording at %d Hz and resampling", self.sample_rate, native)
            stream = sd.RawInputStream(
                samplerate=native,
                channels=1,
                dtype="int16",
                device=index,
                blocksize=native * self.frame_bytes // 2 // self.sample_rate,
                callback=callback,
            )
            resampler = Resampler(native, self.sample_rate)
        self._live = stream  # closed by _close_live, queued after this: even if the opener was cancelled
        stream.start()
        return resampler

    def _put(self, block: bytes) -> None:
        if self._resampler is not None:
            block = self._resampler.process(block)
        block = apply_gain(block, self.gain)
        if not self._pending and len(block) == self.frame_bytes:
            self._queue_frame(block)  # the usual case: PortAudio's block is one frame
            return
        self._pending += block
        while len(self._pending) >= self.frame_bytes:
            frame = bytes(self._pending[: self.frame_bytes])
            del self._pending[: self.frame_bytes]
            self._queue_frame(frame)

    def _queue_frame(self, frame: bytes) -> None:
        self.captured += 1
        self._last_frame_at = time.monotonic()
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped % 100 == 1:
                log.warning("audio frames dropped: the loop is not keeping up (%d so far)", self.dropped)
        self._queue.put_nowait(frame)

    def _watch_stall(self, loop: asyncio.AbstractEventLoop) -> None:
        """A timer per `stall_s`, not a timeout per frame (33 a second): queues STALLED if none came."""
        due = self._last_frame_at + self.stall_s
        if time.monotonic() >= due:
            self._stall_timer = None
            if self._queue.full():  # the loop is stuck as well: the notice goes in last all the same
                self._queue.get_nowait()
            self._queue.put_nowait(STALLED)
        else:
            self._stall_timer = loop.call_at(loop.time() + due - time.monotonic(), self._watch_stall, loop)

    def _stop_watching(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _close_live(self) -> None:
        stream, self._live = self._live, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except sd.PortAudioError as error:
                log.debug("closing input stream: %s", error)

    def close(self) -> None:
        """Stop and release the device (on the audio thread, after whatever is queued there);
        log what was captured and lost so far."""
        self._stop_watching()
        self._open_ok = False
        self.card.later(self._close_live)
        self._closed_for_now()

    def _closed_for_now(self) -> None:
        if self._opened_at is None:
            return
        self.open_s += time.monotonic() - self._opened_at
        self._opened_at = None
        log.info(
            "microphone: %d frames (%.1f s of audio in %.1f s open), %d dropped, %d overruns, longest gap %.0f ms",
            self.captured,
            self.captured * self.frame_bytes / 2 / self.sample_rate,
            self.open_s,
            self.dropped,
            self.overruns,
            self.longest_gap_s * 1000,
        )

    async def frames(self) -> AsyncIterator[bytes]:
        """Yield frames forever; on a stalled or vanished device, reopen with backoff."""
        loop = asyncio.get_running_loop()
        backoff = 0.5
        taken_at: float | None = None  # when the previous frame was taken
        while True:
            if not self._open_ok:
                try:
                    self._pending.clear()
                    self._resampler = await self.card.call(self._open, loop)
                    self._open_ok = True
                    self._opened_at = self._last_frame_at = time.monotonic()
                    self._stop_watching()
                    while not self._queue.empty():  # a stall notice (and frames) from before
                        self._queue.get_nowait()
                    self._stall_timer = loop.call_later(self.stall_s, self._watch_stall, loop)
                    backoff = 0.5
                    log.info("microphone open (%s)", self.device if self.device is not None else "default")
                except (sd.PortAudioError, AudioError, ValueError) as error:
                    log.warning("microphone unavailable (%s); retrying in %.1f s", error, backoff)
                    self._report(f"microphone unavailable: {error}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    await self.card.rescan()
                    continue
            frame = await self._queue.get()
            if not frame:  # STALLED
                log.warning("microphone delivered nothing for %.1f s; reopening", self.stall_s)
                self._report(f"microphone delivered nothing for {self.stall_s:g} s")
                self._open_ok = False
                self._closed_for_now()
                await self.card.rescan(self._close_live)
                taken_at = None
                continue
            now = time.monotonic()
            if taken_at is not None and now - taken_at > self.longest_gap_s:
                self.longest_gap_s = now - taken_at
                if self.longest_gap_s >= LATE_S:  # each new worst, so a busy loop shows in the log once
                    log.warning("microphone frames waited %.0f ms for the loop", self.longest_gap_s * 1000)
            taken_at = now
            if self.trouble is not None:
                log.info("microphone is back")
                self._report(None)
            yield frame

    def _report(self, trouble: str | None) -> None:
        """Tell the owner when the microphone fails, and when it works again (once each)."""
        changed = (trouble is None) != (self.trouble is None)
        self.trouble = trouble
        if changed and self.on_trouble is not None:
            self.on_trouble(trouble)
