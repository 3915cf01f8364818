"""The room's noise floor, tracked frame by frame, so steady noise is not taken for speech.

webrtcvad judges each frame on its own and calls steady broadband noise at -30 dBFS or
more (a fan, an air conditioner, a fridge) speech for as long as it lasts: a segmenter
that trusts it alone never sees the end of a request. The level of such noise hardly
moves, while speech rises well above it between the dips at its word boundaries. So the
floor is the quietest the room has been lately: the lowest level, smoothed over a few
frames, of the last `window_s` seconds ("minimum statistics"). It follows the room down
at once, and up as soon as the level has held steady (within STEADY_DB) for STEADY_S:
speech never does, a fan switched on does at once; anything else is learnt within
`window_s`. The level is taken of the signal's first difference, a gentle high-pass:
most of a fan's or a hum's energy lies below the band that carries speech.

Pure arithmetic on int16 frames (about 20 us a 30 ms frame of room noise on x86_64, more
around speech); no numpy, so nothing heavy is loaded at rest.
"""

from __future__ import annotations

import math
import operator
import sys
from array import array
from collections import deque

FULL_SCALE_SQ = 32768.0**2
SILENT_DBFS = -100.0  # the level reported for digital silence instead of -inf
MARGIN_PER_EXCESS = 3.2  # a loud frame is this many times the noise's mean wavering above the floor
MIN_MARGIN_DB = 3.0
MAX_MARGIN_DB = 9.0
DROP_DB = 15.0  # inside an utterance, frames this far below its loudest are another voice
TAIL_S = 0.12  # how long a word's quiet tail (a final "t") may follow its loud part
STEADY_S = 1.0  # a level that has stayed within STEADY_DB this long is the room's, not a voice's
STEADY_DB = 6.0
WARMUP_S = 0.5  # the first audio after start-up only teaches the floor
VOICE_S = 5.0  # the room's voices are learnt from the last this many seconds heard at rest
VOICE_MIN_S = 1.5  # ... of which at least this much is needed
VOICE_PENDING_S = 0.3  # frames at rest are learnt this late: those an utterance starts with are not the room's
VOICE_SHARE = 0.05  # the room's voices are as loud as the loudest this share of the frames at rest
VOICE_TALK_SHARE = 0.25  # voices talk in the room if this share of the frames at rest ...
VOICE_ABOVE_DB = 6.0  # ... is this far above a loud frame's level (steady noise: 2 dB under it)
VOICE_SPREAD_DB = 6.0  # the room's voices are at most this much louder than that share (a cough is not)
VOICE_UNDER_DB = 6.0  # voices closer than this to the wake word's loudest are not told apart from its speaker


def _dbfs(mean_square: float) -> float:
    if mean_square <= 0.0:
        return SILENT_DBFS
    return max(SILENT_DBFS, 10.0 * math.log10(mean_square / FULL_SCALE_SQ))


def _samples(frame: bytes) -> array[int]:
    samples = array("h", frame)
    if sys.byteorder == "big":
        samples.byteswap()  # the audio is little-endian
    return samples


def frame_dbfs(frame: bytes) -> float:
    """The RMS level of int16 little-endian samples in dB relative to full scale (a
    full-scale square wave is 0 dBFS), floored at SILENT_DBFS."""
    samples = _samples(frame)
    return _dbfs(sum(map(operator.mul, samples, samples)) / len(samples)) if samples else SILENT_DBFS


def band_dbfs(frame: bytes) -> float:
    """The level of a frame's first difference (x[n] - x[n-1], n odd) in dBFS, floored at SILENT_DBFS.

    The difference is a gentle high-pass (-26 dB at 120 Hz, -8 dB at 1 kHz, +1 dB at
    3 kHz): it keeps the band that tells speech apart and drops most of what a fan, a
    fridge or a mains hum puts below it.
    """
    samples = _samples(frame)
    if len(samples) < 2:
        return SILENT_DBFS
    diff = list(map(operator.sub, samples[1::2], samples[::2]))  # every other pair: the same power, half the work
    return _dbfs(sum(map(operator.mul, diff, diff)) / len(diff))


class _Smoother:
    """The mean power of the last few frames, in dBFS: it rises with the first loud frame
    and falls a few frames after the last, so it bridges the short dips inside a word."""

    def __init__(self, frames: int) -> None:
        self._powers: deque[float] = deque(maxlen=max(1, frames))

    def __call__(self, dbfs: float) -> float:
        self._powers.append(10.0 ** (dbfs / 10.0))
        return 10.0 * math.log10(sum(self._powers) / len(self._powers))

    def clear(self) -> None:
        self._powers.clear()


class NoiseFloor:
    """Track the background level and say which frames stand out from it.

    `is_loud(frame, in_speech)` moves the floor and says whether the frame is loud enough
    to be speech: its (high-passed, smoothed) level is at least `margin_db` above the
    floor and above `min_dbfs`, so a dead-quiet room does not make a breath count as
    speech. The margin follows how much the noise's own level wavers: 3 dB, its least,
    over pink, brown and fan-like noise at -30 dBFS (measured), more over a background
    that rises and falls, such as voices.

    Inside an utterance a frame must also be within `drop_db` of the utterance's loudest
    (full-band) level, or follow such a frame by at most TAIL_S: a quieter voice
    further away (a second talker, a television) then does not hold the request open once
    its speaker has stopped, while a word's quiet ending still counts.

    Voices that talk all along (a television, another person) reach within 15 dB of the
    speaker's peak too, when they are only about 10 dB under. So the frames heard at rest
    (while no utterance is in progress) also teach how loud the room's voices are
    (`voice_dbfs`): the level only VOICE_SHARE of them exceed, if a voice talked through
    many of them (over steady noise, in a quiet room or after a lone cough none did, and
    nothing changes). A frame must then reach it to be speech, to start an utterance as
    well as to keep it going: the other voice seldom does, and never for long, while the
    nearer speaker does in every word. A share, not the loudest, and capped a few dB above
    the voices' usual level: a cough or a door in the seconds before hardly raises it.
    (Measured: with 5% every command 9 to 19 dB over another voice was heard, and 15 of 16
    at 4 dB; 3% lost more at 4 dB; 7% let the other voice start a request.) The caller
    makes it forget what was not the room, and tells it how loud the wake word was: voices
    about as loud cannot be told from the speaker's (`forget_voices`).
    """

    def __init__(
        self,
        frame_ms: int = 30,
        window_s: float = 5.0,
        smooth_frames: int = 2,
        min_dbfs: float = -70.0,
        drop_db: float = DROP_DB,
    ) -> None:
        self.min_dbfs = min_dbfs
        self.drop_db = drop_db
        self._band = _Smoother(smooth_frames)
        self._window: deque[float] = deque(maxlen=max(1, round(window_s * 1000 / frame_ms)))
        self._recent: deque[float] = deque(maxlen=max(1, round(STEADY_S * 1000 / frame_ms)))
        self._excess_rate = min(1.0, frame_ms / 1000)  # the wavering is averaged over about a second
        self._tail_frames = round(TAIL_S * 1000 / frame_ms)
        self._warmup_frames = round(WARMUP_S * 1000 / frame_ms)
        self._frame_ms = frame_ms
        self._voices: deque[float] = deque(maxlen=max(1, round(VOICE_S * 1000 / frame_ms)))
        self._voice_min_frames = round(VOICE_MIN_S * 1000 / frame_ms)
        self._pending: deque[float] = deque()  # the last VOICE_PENDING_S heard at rest, not learnt yet
        self._pending_frames = round(VOICE_PENDING_S * 1000 / frame_ms)
        self._voice_dbfs: float | None = None  # the cached `voice_dbfs`, until the next frame at rest
        self._speaker_dbfs: float | None = None  # how loud the wake word just said was (`forget_voices`)
        self.reset()

    @property
    def margin_db(self) -> float:
        """How far above the floor a frame must be to count as loud."""
        return min(MAX_MARGIN_DB, max(MIN_MARGIN_DB, MARGIN_PER_EXCESS * self.excess_db))

    def update(self, frame: bytes) -> float:
        """Take one frame; return its high-passed level smoothed over the last few frames (dBFS)."""
        level = self._band(band_dbfs(frame))
        self._window.append(level)
        self._recent.append(level)
        self.floor_dbfs = min(self._window)
        recent_low = min(self._recent)
        if recent_low > self.floor_dbfs and max(self._recent) - recent_low <= STEADY_DB:
            # a new steady noise (the fan was switched on): the quiet before it is forgotten
            self._window.clear()
            self._window.extend(self._recent)
            self.floor_dbfs = recent_low
        excess = level - self.floor_dbfs
        if excess < self.margin_db:  # a noise frame: how far the noise itself wanders
            self.excess_db += (excess - self.excess_db) * self._excess_rate
        return level

    @property
    def loud_dbfs(self) -> float:
        """The level a frame must reach to stand out from the room's steady noise."""
        return max(self.floor_dbfs + self.margin_db, self.min_dbfs)

    @property
    def voice_dbfs(self) -> float:
        """How loud the room's voices are (SILENT_DBFS if none talk): the (high-passed,
        smoothed) level that VOICE_SHARE of the frames lately heard at rest exceed, if a
        voice talked through VOICE_TALK_SHARE of them (a cough or a door does not), and at
        most VOICE_SPREAD_DB above their level (a cough or a door does not raise it much)."""
        if self._voice_dbfs is None:
            self._voice_dbfs = SILENT_DBFS
            if len(self._voices) >= self._voice_min_frames:
                levels = sorted(self._voices)
                talk = levels[int(len(levels) * (1.0 - VOICE_TALK_SHARE))]
                if talk >= self.loud_dbfs + VOICE_ABOVE_DB:
                    loudest = levels[min(len(levels) - 1, int(len(levels) * (1.0 - VOICE_SHARE)))]
                    voices = min(loudest, talk + VOICE_SPREAD_DB)
                    if self._speaker_dbfs is None or voices <= self._speaker_dbfs - VOICE_UNDER_DB:
                        self._voice_dbfs = voices
        return self._voice_dbfs

    def forget_voices(self, recent_s: float | None = None, speaker: bool = False) -> None:
        """Forget the last `recent_s` seconds heard at rest (a wake word just said is the
        speaker's voice, not the room's), or all of it (None: what was heard is stale, e.g.
        the device spoke or the microphone was off since).

        `speaker`: those seconds held the wake word, so their loudest is how loud the
        speaker is; voices in the room less than VOICE_UNDER_DB under it (the same
        person, talking just before, or someone as near) cannot be told apart from the
        command by their level, and are then not used (until the next `forget_voices`).
        """
        forgotten = []
        if recent_s is None:
            self._voices.clear()
            self._pending.clear()
        else:
            for _ in range(round(recent_s * 1000 / self._frame_ms)):
                if self._pending:
                    forgotten.append(self._pending.pop())
                elif self._voices:
                    forgotten.append(self._voices.pop())
        self._speaker_dbfs = max(forgotten) if speaker and forgotten else None
        self._voice_dbfs = None

    @property
    def ready(self) -> bool:
        """Whether the floor is known (WARMUP_S of the room heard); until then all is background."""
        return len(self._window) >= self._warmup_frames

    def is_loud(self, frame: bytes, in_speech: bool) -> bool:
        """Take one frame; whether it stands out from the room's noise (and, inside an
        utterance, from a quieter voice behind the speaker's)."""
        level = self.update(frame)
        loud = self.ready and level >= self.loud_dbfs
        if loud and self.voice_dbfs > SILENT_DBFS:
            loud = level >= self.voice_dbfs
        if in_speech:
            self._pending.clear()  # the start of this utterance
        else:
            self._pending.append(level)
            if len(self._pending) > self._pending_frames:
                self._voices.append(self._pending.popleft())
                self._voice_dbfs = None
        if not self.ready:
            return False  # the floor is not known yet: all is background
        if not in_speech and not loud:
            self.peak_dbfs = SILENT_DBFS
            return False
        full = frame_dbfs(frame)  # only measured around speech: the room at rest costs one pass
        if loud:
            self.peak_dbfs = max(self.peak_dbfs, full)
        if not in_speech:
            return True
        if full >= self.peak_dbfs - self.drop_db:
            self._quiet_run = 0
            return loud
        self._quiet_run += 1
        return loud and self._quiet_run <= self._tail_frames

    def reset(self) -> None:
        """Forget the room (e.g. a different microphone)."""
        self._band.clear()
        self._window.clear()
        self._recent.clear()
        self.floor_dbfs = SILENT_DBFS
        self.excess_db = 1.5
        self.peak_dbfs = SILENT_DBFS
        self._quiet_run = 0  # frames since the last one within drop_db of the peak
        self._voices.clear()
        self._pending.clear()
        self._voice_dbfs = None
        self._speaker_dbfs = None
