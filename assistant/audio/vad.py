"""Endpointing: cut a stream of audio frames into utterances.

The segmenter is pure: it is fed frames and a speech/non-speech decision per frame,
and returns events. It does no I/O, so its timing can be tested to the frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import webrtcvad

from assistant.audio.noise import NoiseFloor, band_dbfs
from assistant.config import VadConfig


@dataclass(frozen=True)
class SpeechStarted:
    """Speech has begun; `start_s` is the stream time of its first speech frame."""

    start_s: float


@dataclass(frozen=True)
class Utterance:
    """A finished utterance: pcm16 mono audio (with pre-roll) and its speech bounds."""

    audio: bytes
    sample_rate: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        """Length of the audio, pre-roll and trailing silence included."""
        return len(self.audio) / 2 / self.sample_rate


@dataclass(frozen=True)
class Pause:
    """The speaker has been silent for `early_ms`: the audio so far may be the whole request."""

    audio: bytes
    sample_rate: int


@dataclass(frozen=True)
class Resumed:
    """Speech came back after a Pause: whatever was started on the Pause is stale."""


SegmentEvent = SpeechStarted | Pause | Resumed | Utterance


def webrtc_classifier(aggressiveness: int, sample_rate: int) -> Callable[[bytes], bool]:
    """A frame classifier backed by webrtcvad (about 3 us a 30 ms frame)."""
    vad = webrtcvad.Vad(aggressiveness)
    return lambda frame: bool(vad.is_speech(frame, sample_rate))


class Segmenter:
    """Turn frames into SpeechStarted / Pause / Resumed / Utterance events.

    Speech starts after `start_ms` of consecutive speech frames; the utterance keeps
    `preroll_ms` of audio before that so no first syllable is lost. It ends after
    `silence_ms` without speech, or at `max_utterance_s`. Utterances whose speech is
    shorter than `min_utterance_ms` (a cough, a click) are dropped. After `early_ms` of
    silence a Pause hands out the audio so far, so transcription can start while the
    end is still being awaited; Resumed says the speaker went on after all.

    A frame counts as speech only when webrtcvad says so and it is also louder than the
    room's noise floor (`NoiseFloor`): webrtcvad calls steady noise (a fan, a fridge)
    speech for as long as it lasts, and keeps calling frames speech for about 100 ms
    after the voice stops (its hangover), so the end is found sooner and truer.
    The silence counts from inside the last speech frame (its quiet 10 ms tail): the end
    comes at the frame edge nearest to `silence_ms` after the speech, not up to a frame later.
    """

    def __init__(
        self,
        config: VadConfig,
        is_speech: Callable[[bytes], bool],
        sample_rate: int = 16000,
        frame_ms: int = 30,
    ) -> None:
        self.config = config
        self.is_speech = is_speech
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._start_frames = max(1, -(-config.start_ms // frame_ms))
        self._silence_frames = max(1, -(-config.silence_ms // frame_ms))
        early = -(-config.early_ms // frame_ms) if config.early_ms else 0
        self._early_frames = early if 0 < early < self._silence_frames else 0
        self._preroll: deque[bytes] = deque(maxlen=max(self._start_frames, config.preroll_ms // frame_ms))
        self._frames_seen = 0
        self.noise = NoiseFloor(frame_ms)
        self.reset()

    def reset(self) -> None:
        """Forget any speech in progress (e.g. after the device itself has spoken)."""
        self._preroll.clear()
        self._run = 0
        self._in_speech = False
        self._audio = bytearray()
        self._start_s = 0.0
        self._last_speech_end_s = 0.0
        self._silence_run = 0
        self._quiet_tail_ms = 0  # the last speech frame's quiet end, once the silence has begun
        self._paused = False

    def hear(self, frame: bytes) -> None:
        """A frame heard while nothing is being segmented (the microphone waits for the wake
        word): the noise floor learns from it, so it knows the room when a request begins."""
        self.noise.is_loud(frame, in_speech=False)

    def seed(self, audio: bytes) -> None:
        """Start the pre-roll with audio heard just before segmenting began: the audio the
        wake word was detected in holds the start of a command said without a pause."""
        self._preroll.append(audio)

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and the Utterance that closes it."""
        return self._in_speech

    @property
    def audio(self) -> bytes:
        """The utterance in progress so far, pre-roll included (empty between utterances)."""
        return bytes(self._audio)

    def feed(self, frame: bytes) -> SegmentEvent | None:
        """Take one frame of exactly `frame_bytes`; return an event when one happens."""
        if len(frame) != self.frame_bytes:
            raise ValueError(f"frame must be {self.frame_bytes} bytes, got {len(frame)}")
        t0 = self._frames_seen * self.frame_ms / 1000
        self._frames_seen += 1
        speech = self.is_speech(frame)  # always asked: webrtcvad adapts to what it hears
        speech = self.noise.is_loud(frame, self._in_speech) and speech
        if not self._in_speech:
            return self._idle(frame, speech, t0)
        return self._speaking(frame, speech, t0)

    def _idle(self, frame: bytes, speech: bool, t0: float) -> SegmentEvent | None:
        self._preroll.append(frame)
        self._run = self._run + 1 if speech else 0
        if self._run < self._start_frames:
            return None
        self._in_speech = True
        self._start_s = t0 - (self._run - 1) * self.frame_ms / 1000
        self._last_speech_end_s = t0 + self.frame_ms / 1000
        self._audio = bytearray(b"".join(self._preroll))
        self._preroll.clear()
        self._silence_run = 0
        return SpeechStarted(self._start_s)

    def _speaking(self, frame: bytes, speech: bool, t0: float) -> SegmentEvent | None:
        self._audio += frame
        if speech:
            self._silence_run = 0
            self._last_speech_end_s = t0 + self.frame_ms / 1000
            if self._paused:
                self._paused = False
                return Resumed()
        else:
            if self._silence_run == 0:
                last = bytes(self._audio[-2 * self.frame_bytes : -self.frame_bytes])
                self._quiet_tail_ms = quiet_tail_ms(last, self.noise.loud_dbfs, self.sample_rate)
            self._silence_run += 1
            # No Pause for what `finish` would drop as too short: its audio would be sent for
            # early transcription all the same (a wake word's tail, a click).
            long_enough = (self._last_speech_end_s - self._start_s) * 1000 >= self.config.min_utterance_ms
            if self._silence_run == self._early_frames and long_enough and not self._silence_is_over():
                self._paused = True
                return Pause(bytes(self._audio), self.sample_rate)
        too_long = len(self._audio) / 2 / self.sample_rate >= self.config.max_utterance_s
        if not self._silence_is_over() and not too_long:
            return None
        return self.finish()

    def _silence_is_over(self) -> bool:
        """Whether `silence_ms` has passed since the speech ended, to the nearest frame edge.

        Frames come every `frame_ms`; waiting for a whole `silence_ms` after the end of the
        frame the speech ended in would add up to a frame (15 ms on average) every time.
        """
        if self._silence_run == 0:
            return False
        heard_ms = self._silence_run * self.frame_ms + self._quiet_tail_ms + SUB_FRAME_MS / 2  # mid-step
        return heard_ms + self.frame_ms / 2 >= self.config.silence_ms

    def finish(self) -> Utterance | None:
        """End the utterance in progress now (e.g. the pause already holds a complete command)."""
        if not self._in_speech:
            return None
        utterance = Utterance(bytes(self._audio), self.sample_rate, self._start_s, self._last_speech_end_s)
        self.reset()
        if (utterance.end_s - utterance.start_s) * 1000 < self.config.min_utterance_ms:
            return None
        return utterance


SUB_FRAME_MS = 10


def quiet_tail_ms(frame: bytes, loud_dbfs: float, sample_rate: int = 16000) -> int:
    """How long the end of a speech frame is quiet, in 10 ms steps (its high-passed level,
    as the noise floor measures it, below `loud_dbfs`).

    Only the frame that ends the speech is looked at, once: no cost while nobody speaks.
    """
    step = sample_rate * SUB_FRAME_MS // 1000 * 2
    quiet = 0
    for end in range(len(frame), step - 1, -step):
        if band_dbfs(frame[end - step : end]) >= loud_dbfs:
            break
        quiet += SUB_FRAME_MS
    return quiet
