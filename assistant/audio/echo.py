"""Echo cancellation in the process: what the microphone hears, less what the speaker played.

A device whose microphone hears its own speaker (any small box) hears its replies as loud as a
person standing next to it, and the wake word is lost under them. WebRTC's AEC3 (the
pywebrtc-audio wheel, about 1 MB) subtracts an adaptive estimate of that echo, given the
samples played as its reference. PulseAudio's module-echo-cancel does the same outside the
process, but must guess when each sample was played, and on the test rig heard no wake word
over a reply at 0 dB (0 of 7, README). Here the timing comes from the output stream itself.

The reference is a timeline. Each write to the output stream is placed where its last sample
will be heard: when the write returns, plus what is still buffered ahead of it. Writes follow
each other back to back; the timeline moves only to an earlier estimate, or past a gap: one the
stream reports (it ran dry), or a new sound. A later estimate alone is this thread waiting on a
busy machine, not the sound being late. Each microphone frame takes the stretch of the timeline
that played while it was captured, silence where nothing did. Both estimates err towards the
reference coming first: the capture time counts no input latency and the output time no latency
past the stream's buffer. AEC3 finds an echo 10 to about 340 ms behind its reference (measured
offline), and loses it when the echo comes first.

The canceller runs only while something plays and for `TAIL_S` after, so a device at rest
spends nothing on it. Its filter is kept between replies: it takes about 2.5 s of a loud echo to
converge, so from the second reply on it is ready at the first word.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from assistant.audio.pcm import Resampler

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

TAIL_S = 0.5  # the room's echo and the stream's own delays outlast the last sample written
KEEP_S = 2.0  # the timeline keeps what played this long ago: a frame taken late still finds it
NEW_SOUND_S = 0.5  # a write estimated to begin this long after the previous one ended starts a new sound
EARLY_S = 0.002  # one estimated to begin this much before the previous one ended moves the timeline


class CaptureClock:
    """When each microphone block was captured, on a steady clock despite jittery delivery.

    The time a block arrives, less its length, is only an upper bound on when it began, and it
    jitters by milliseconds. Blocks are back to back, so each is stamped where the last one ended:
    a jump in the stamps would move the echo against its reference and cost the canceller its
    convergence. Only a drift is followed: at once when a block arrives `EARLY_S` too early for its
    stamp, and after `WINDOW` blocks that all arrived over `LATE_S` too late for theirs (the card's
    clock runs slow against this one). A stamp that is late only moves the reference ahead of its
    echo, which the canceller allows for, hence the wider margin that way. A block that arrives
    late on a busy machine moves nothing; when the stream (re)starts, `restart` begins anew.
    """

    EARLY_S = 0.02
    LATE_S = 0.005
    WINDOW = 64

    def __init__(self) -> None:
        self._next = 0.0  # where the next block begins; 0: not yet known
        self._least_late = math.inf  # over the blocks of this window
        self._seen = 0

    def restart(self) -> None:
        """The stream starts (again): the next block is stamped by its arrival."""
        self._next, self._least_late, self._seen = 0.0, math.inf, 0

    def stamp(self, arrived: float, duration: float) -> float:
        """The capture time of a block `duration` long that arrived at `arrived` (monotonic)."""
        latest = arrived - duration
        if not self._next or latest < self._next - self.EARLY_S:
            self._next, self._least_late, self._seen = latest, math.inf, 0
        else:
            self._least_late = min(self._least_late, latest - self._next)
            self._seen += 1
            if self._seen == self.WINDOW:
                if self._least_late > self.LATE_S:
                    self._next += self._least_late
                self._least_late, self._seen = math.inf, 0
        begins = self._next
        self._next += duration
        return begins


class EchoCanceller:
    """The timeline of what was played (`played`, audio thread) and the canceller (`clean`, loop)."""

    def __init__(self, sample_rate: int) -> None:
        from pywebrtc_audio import EchoCanceller as Aec3

        self.sample_rate = sample_rate
        self._aec = Aec3(sample_rate=sample_rate)
        self._lock = threading.Lock()
        self._timeline: deque[tuple[float, npt.NDArray[np.int16]]] = deque()  # (heard from, samples)
        self._end = 0.0  # time.monotonic() at which the last sample written will have been heard
        self._resampler: Resampler | None = None
        self._resampler_rate = 0
        self.cleaned = 0  # frames the canceller has processed (the tests read it)

    def played(self, pcm: bytes, rate: int, heard_by: float, ran_dry: bool = False) -> None:
        """`pcm` (int16 at `rate`) was written; its last sample is heard at `heard_by` (monotonic).
        `ran_dry`: the stream played silence since the previous write (PortAudio's underflow)."""
        import numpy as np

        if rate != self.sample_rate:
            if self._resampler is None or self._resampler_rate != rate:
                self._resampler, self._resampler_rate = Resampler(rate, self.sample_rate), rate
            pcm = self._resampler.process(pcm)
        samples = np.frombuffer(pcm, dtype=np.int16)
        start = heard_by - len(samples) / self.sample_rate
        with self._lock:
            if self._end - EARLY_S <= start <= self._end + NEW_SOUND_S and not ran_dry:
                # Continues the previous write. An estimate is a lower bound on when it is heard,
                # made late by however long this thread waited: the earliest one is the truest.
                start = self._end
            self._timeline.append((start, samples))
            self._end = start + len(samples) / self.sample_rate
            while self._timeline and self._timeline[0][0] < start - KEEP_S:
                self._timeline.popleft()

    def stopped(self) -> None:
        """The output stream was stopped at once: what it still held is never heard."""
        now = time.monotonic()
        with self._lock:
            while self._timeline and self._timeline[-1][0] >= now:
                self._timeline.pop()
            self._end = min(self._end, now)

    def reference(self, start: float, count: int) -> npt.NDArray[np.int16] | None:
        """What played from `start` for `count` samples (silence around it); None if nothing
        played then nor within `TAIL_S` before."""
        import numpy as np

        rate = self.sample_rate
        with self._lock:
            if not self._timeline or start > self._end + TAIL_S:
                return None
            out = np.zeros(count, dtype=np.int16)
            for begins, samples in self._timeline:
                offset = round((begins - start) * rate)  # where the write begins, in out's samples
                first, last = max(offset, 0), min(offset + len(samples), count)
                if first < last:
                    out[first:last] = samples[first - offset : last - offset]
        return out

    def clean(self, frame: bytes, captured_from: float) -> bytes:
        """The microphone frame whose first sample was captured at `captured_from`, less the echo."""
        import numpy as np

        far = self.reference(captured_from, len(frame) // 2)
        if far is None:
            return frame
        self.cleaned += 1
        return bytes(self._aec.process(np.frombuffer(frame, dtype=np.int16), far).tobytes())
