"""Keep a started output stream running on silence while a sound is on its way.

Through ALSA's PulseAudio plugin, the first ~35 ms written to a freshly started output
stream are dropped: started by the reply itself, the stream would cut its first syllable.
A stream that is already running on silence plays the reply's first sample whole, once the
silence buffered ahead of it (up to one buffer, ~35 ms here) has played: as soon as a fresh
stream would have. Silence is written in short pieces, each its own job on the audio thread,
so other audio work waits for one piece at most; it never runs at rest, and it stops by
itself after `MAX_S` should nobody stop it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import sounddevice as sd

log = logging.getLogger(__name__)

WRITE_S = 0.005  # silence is written in pieces this long: a sound waits for at most one
MAX_S = 60.0


class KeepWarm:
    """Feeds a running stream with silence until `stop` (used on the audio thread only)."""

    def __init__(self, later: Callable[[Callable[[], None]], None]) -> None:
        self._later = later  # queues a job on the audio thread
        self._until = 0.0  # time.monotonic() until which silence is written; 0: off
        self._stream: Any = None
        self._silence = b""
        self._expire: Callable[[], None] = lambda: None
        self._failed: Callable[[], None] = lambda: None

    @property
    def on(self) -> bool:
        """Whether only silence has been written since `start`."""
        return bool(self._until)

    def start(self, stream: Any, rate: int, expire: Callable[[], None], failed: Callable[[], None]) -> None:
        """Feed `stream` (started, at `rate`); `expire` stops it after MAX_S, `failed` after an error."""
        self._stream, self._expire, self._failed = stream, expire, failed
        self._silence = bytes(int(rate * WRITE_S) * 2)
        self._until = time.monotonic() + MAX_S
        self._feed()

    def stop(self) -> None:
        """Write no more silence (a sound begins, or the stream stops or closes)."""
        self._until, self._stream = 0.0, None

    def _feed(self) -> None:
        if not self._until:
            return
        if time.monotonic() > self._until:
            self._expire()
            return
        try:
            self._stream.write(self._silence)  # blocks until there is room: paced by the device
        except sd.PortAudioError as error:
            log.debug("keeping the output stream warm: %s", error)
            self._failed()  # closed; the next sound reopens it
            return
        self._later(self._feed)
