"""The microphone: fixed-size frames handed to the event loop, a vanished device reopened.

Capture hands 16-bit mono frames to the loop through a bounded queue. Opening, starting,
stopping and closing the stream go through the `SoundCard` (assistant/audio/devices.py),
the one owner of PortAudio. When nothing can use the audio (in `mqtt` mode between listen
windows, or muted) the stream is stopped but kept open, so no frame wakes the process and
starting it again when a window opens takes milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import sounddevice as sd

from assistant.audio.devices import SoundCard
from assistant.audio.echo import CaptureClock
from assistant.audio.lookup import find_device
from assistant.audio.pcm import AudioError, Resampler, apply_gain

log = logging.getLogger(__name__)

LATE_S = 0.25  # a gap between microphone frames this long is logged: the loop was held up
STALLED = b""  # queued by the stall timer: no frame for `stall_s` (a real frame is never empty)


class Microphone:
    """Capture frames of `frame_ms` at `sample_rate`, reopening the device if it vanishes.

    The PortAudio callback runs on its own thread: it only copies the block and hands
    it to the loop. A full queue drops the oldest frame, since late audio is useless.
    Opening, closing and rescanning go through the `SoundCard`, off the event loop.
    Counters say whether any audio was lost (`dropped`: the loop fell behind by more than
    the queue; `overruns`: PortAudio's own buffer overflowed) and how late the loop was
    (`longest_gap_s` between two frames taken); they are logged when the stream closes
    or pauses.

    `pause()` stops the stream until `resume()`: no callback runs and nothing wakes the
    loop meanwhile. The stream stays open, so resuming is one `start` (a few ms), and
    speech that begins as a listen window opens is heard from its first word.
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
        self.open_s = 0.0  # time the stream has been running, to compare with frames * frame_s
        self.longest_gap_s = 0.0
        self._opened_at: float | None = None
        self.trouble: str | None = None  # what is wrong with the microphone now, if anything
        self.on_trouble: Callable[[str | None], None] | None = None  # told when that changes
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_frames)
        self._open_ok = False  # on the loop: whether the stream is open (running unless paused)
        self._paused = False  # on the loop: stopped by pause() until frames() starts it again
        self._resumed = asyncio.Event()  # set by resume(): frames() starts the stream
        self._resume_asked_at = 0.0  # time.monotonic() of the latest resume(), for the log
        self._live: sd.RawInputStream | None = None  # on the audio thread only: the stream last opened
        self._resampler: Resampler | None = None
        self._pending = bytearray()
        self._pending_from = 0.0  # time.monotonic() at which the first pending sample was captured
        self.echo = card.echo  # takes the speaker's sound out of each frame, if echo cancellation is on
        self._clock = CaptureClock()  # on the callback's thread, or the audio thread while stopped
        # Blocks per wake-up of the loop: 2 while only the wake word listens (it takes 60 ms at
        # a time anyway), which halves the wake-ups at idle; 1 whenever speech is endpointed.
        self.batch = 1
        self._held: list[tuple[bytes, float]] = []  # on the callback's thread: blocks not handed over yet
        self._last_frame_at = 0.0  # time.monotonic() of the latest frame queued
        self._stall_timer: asyncio.TimerHandle | None = None

    def _open(self, loop: asyncio.AbstractEventLoop) -> Resampler | None:
        self._close_live()
        index = find_device(self.device, "input")
        rate = float(self.sample_rate)  # the stream's, once open
        clock = self._clock  # the old stream is closed: its callback no longer stamps
        clock.restart()

        def callback(indata: object, frames: int, when: object, status: sd.CallbackFlags) -> None:
            held = self._held
            captured_from = clock.stamp(time.monotonic(), frames / rate)  # input latency not counted
            held.append((bytes(indata), captured_from))  # type: ignore[call-overload]
            if status.input_overflow:
                self.overruns += 1
            if len(held) >= self.batch:
                self._held = []
                loop.call_soon_threadsafe(self._put_all, held)

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
            rate = float(native)
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

    def _put_all(self, blocks: list[tuple[bytes, float]]) -> None:
        for block, captured_from in blocks:
            self._put(block, captured_from)

    def _put(self, block: bytes, captured_from: float) -> None:
        if self._resampler is not None:
            block = self._resampler.process(block)
        block = apply_gain(block, self.gain)
        if not self._pending and len(block) == self.frame_bytes:
            self._queue_frame(block, captured_from)  # the usual case: PortAudio's block is one frame
            return
        if not self._pending:
            self._pending_from = captured_from
        self._pending += block
        while len(self._pending) >= self.frame_bytes:
            frame = bytes(self._pending[: self.frame_bytes])
            del self._pending[: self.frame_bytes]
            self._queue_frame(frame, self._pending_from)
            self._pending_from += self.frame_bytes / 2 / self.sample_rate

    def _queue_frame(self, frame: bytes, captured_from: float) -> None:
        if self.echo is not None:
            frame = self.echo.clean(frame, captured_from)
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

    def pause(self) -> None:
        """Stop reading the device until `resume()`: nothing can use its audio now.

        Called between frames by the one who takes them; the stream stays open.
        """
        self._resumed.clear()
        if self._paused or not self._open_ok:
            return
        self._paused = True
        self._stop_watching()
        self.card.later(self._stop_live)
        self._closed_for_now("paused")

    def resume(self) -> None:
        """Read the device again (at once: the caller is about to need the audio)."""
        if self._paused and not self._resumed.is_set():
            self._resume_asked_at = time.monotonic()
            self._resumed.set()

    def _stop_live(self) -> None:
        if self._live is not None:
            try:
                self._live.abort()
            except sd.PortAudioError as error:  # found again when it is started
                log.debug("stopping input stream: %s", error)

    def _start_live(self) -> None:
        if self._live is None:
            raise AudioError("the input stream was closed")
        self._held = []  # from before the pause
        self._clock.restart()
        self._live.start()

    def close(self) -> None:
        """Stop and release the device (on the audio thread, after whatever is queued there);
        log what was captured and lost so far."""
        self._stop_watching()
        self._open_ok = False
        self.card.later(self._close_live)
        self._closed_for_now("closed")

    def _closed_for_now(self, how: str) -> None:
        if self._opened_at is None:
            return
        self.open_s += time.monotonic() - self._opened_at
        self._opened_at = None
        log.info(
            "microphone: %d frames (%.1f s of audio in %.1f s open), %d dropped, %d overruns, longest gap %.0f ms; %s",
            self.captured,
            self.captured * self.frame_bytes / 2 / self.sample_rate,
            self.open_s,
            self.dropped,
            self.overruns,
            self.longest_gap_s * 1000,
            how,
        )

    async def frames(self) -> AsyncIterator[bytes]:
        """Yield frames forever; on a stalled or vanished device, reopen with backoff."""
        loop = asyncio.get_running_loop()
        backoff = 0.5
        taken_at: float | None = None  # when the previous frame was taken
        while True:
            if self._paused:
                await self._start_again(loop)
                taken_at = None
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
                self._closed_for_now("reopening")
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

    async def _start_again(self, loop: asyncio.AbstractEventLoop) -> None:
        """Paused: wait for `resume()`, then start the stream (a failure reopens it)."""
        await self._resumed.wait()
        self._paused = False
        if not self._open_ok:
            return
        self._pending.clear()
        while not self._queue.empty():  # frames from before the pause
            self._queue.get_nowait()
        try:
            await self.card.call(self._start_live)
        except (sd.PortAudioError, AudioError) as error:
            log.warning("microphone did not start again (%s); reopening", error)
            self._open_ok = False
            return
        self._opened_at = self._last_frame_at = time.monotonic()
        self._stall_timer = loop.call_later(self.stall_s, self._watch_stall, loop)
        log.info("microphone resumed (started in %.0f ms)", (self._opened_at - self._resume_asked_at) * 1000)

    def _report(self, trouble: str | None) -> None:
        """Tell the owner when the microphone fails, and when it works again (once each)."""
        changed = (trouble is None) != (self.trouble is None)
        self.trouble = trouble
        if changed and self.on_trouble is not None:
            self.on_trouble(trouble)
