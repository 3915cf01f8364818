"""When microphone audio becomes a request: wake word, endpointing, follow-up, barge-in.

In "wakeword" mode nothing but the wake word detector hears the room until it fires;
"vad" treats any speech as a request; "mqtt" listens only when asked. While the device
speaks, the segmenter is deaf (it would hear the device itself), but the wake word
still works: saying it stops the reply and starts a new request. When several devices
on one broker hear the same wake word, each publishes a claim and only the one that
heard it loudest answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from assistant.audio.vad import Pause, Resumed, Segmenter, SpeechStarted, Utterance, webrtc_classifier
from assistant.audio.wakeword import BATCH_BYTES, Detection, WakeWord
from assistant.config import Config
from assistant.daemon.payloads import new_id
from assistant.daemon.state import Event, State, StateMachine

log = logging.getLogger(__name__)

WAKE_PHRASE_S = 1.5  # a wake word and the detector's delay after it: the speaker's voice, not the room's
REST_GAP_S = 0.5  # frames heard at rest further apart than this (a reply, a paused microphone): stale
SAME_WAKE_S = 1.5  # detections this close together are one wake word heard by several devices


class Host(Protocol):
    """What the listener needs from the daemon."""

    machine: StateMachine
    mic_open_at: float

    @property
    def muted(self) -> bool: ...

    def wake_event(self, data: dict[str, Any]) -> None: ...
    def publish_claim(self, claim: dict[str, Any]) -> None: ...
    def submit_utterance(self, utterance: Utterance, request_id: str, early: asyncio.Task[str] | None) -> None: ...
    def request_audio(self, pcm: bytes, first: bool) -> None: ...
    def barge_in(self) -> None: ...
    def transcribe(self, pcm: bytes, sample_rate: int) -> Coroutine[Any, Any, str]: ...
    def play_sound(self, name: str) -> None: ...
    def complete_command(self, text: str) -> bool: ...


@dataclass(frozen=True)
class Claim:
    """Another device's wake word, as heard there."""

    site_id: str
    level_dbfs: float
    probability: float
    received: float  # time.monotonic() here


class Listener:
    """Feeds frames to the wake word detector or the segmenter, as the state allows."""

    def __init__(self, config: Config, host: Host, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.wake_config = config.wake
        self.host = host
        self.clock = clock
        audio = config.audio
        classifier = webrtc_classifier(config.vad.aggressiveness, audio.sample_rate)
        self.segmenter = Segmenter(config.vad, classifier, audio.sample_rate, audio.frame_ms)
        # the last frames given to the wake word detector: one batch of its (60 ms)
        self._recent: deque[bytes] = deque(maxlen=max(1, -(-BATCH_BYTES // self.segmenter.frame_bytes)))
        self.wake: WakeWord | None = None
        self.wake_missed = False  # frames went by that the wake word detector did not hear
        if config.wake.mode == "wakeword":
            self.wake = WakeWord(config.wake.model, config.wake.threshold, config.wake.refractory_s)
        self.listen_until = 0.0
        self.request_id: str | None = None
        self.early: asyncio.Task[str] | None = None
        self.finish_now = False  # the early transcription is a whole command: end the utterance
        # Realtime mode: the request's audio streams out as it is heard (host.request_audio), and
        # no early transcription is made (the session hears the audio itself).
        self.streaming = config.realtime.enabled
        self.claims: list[Claim] = []
        self.mine: tuple[Claim, str] | None = None  # our latest claim and its request id
        self._arbitration: asyncio.Task[None] | None = None
        # An utterance that ended before the wake word arbitration was decided: it is sent
        # only once this device is known to have heard the wake word best.
        self.held: Utterance | None = None
        self.on_open: Callable[[], None] | None = None  # told when a window opens (the microphone starts)
        self._rest_at = -math.inf  # when the segmenter last heard the room at rest

    # --- windows -------------------------------------------------------------

    def window_open(self) -> bool:
        """Whether speech may start a request now."""
        return self.wake_config.mode == "vad" or self.clock() < self.listen_until

    def needs_audio(self) -> bool:
        """Whether a frame can matter now; if not, the daemon stops reading the microphone.

        In "mqtt" mode nothing is heard between listen windows, and when muted nothing at all;
        but the room's noise floor is learnt first, so that a window's first words are judged
        against it rather than taken for the room.
        """
        machine = self.host.machine
        if machine.muted:
            return False
        return (
            not self.segmenter.noise.ready
            or self.wake is not None
            or self.wake_config.mode == "vad"
            or self.segmenter.in_speech
            or machine.state is State.LISTENING  # the window's end is noticed at a frame
            or self.window_open()
        )

    def wake_word_only(self) -> bool:
        """Whether only the wake word hears the frames now (it takes them 60 ms at a time)."""
        return (
            self.wake is not None
            and not self.segmenter.in_speech
            and self.host.machine.state is not State.LISTENING
            and not self.window_open()
        )

    def open(
        self,
        reason: str,
        request_id: str | None = None,
        timeout_s: float | None = None,
        preroll: bytes = b"",
        **extra: Any,
    ) -> str:
        """Listen for a request now (wake word, MQTT listen, follow-up); return its id.

        `preroll` is audio heard just before (the batch the wake word was detected in):
        the request's audio may start with it.
        """
        self.request_id = request_id or new_id()
        self.listen_until = self.clock() + (timeout_s or self.wake_config.listen_timeout_s)
        self.held = None
        self.segmenter.reset()
        # The room's voices are learnt at rest: not from the wake word just said, and not
        # from before a reply or a paused microphone (the room may have gone quiet since).
        fresh = self.clock() - self._rest_at <= REST_GAP_S
        self.segmenter.noise.forget_voices(WAKE_PHRASE_S if fresh else None, speaker=reason == "wakeword")
        if preroll:
            self.segmenter.seed(preroll)
        self.drop_early()
        self.host.wake_event({"id": self.request_id, "t": time.time(), "reason": reason, **extra})
        self.host.machine.handle(Event.WAKE)
        if self.on_open is not None:
            self.on_open()
        return self.request_id

    def close(self) -> None:
        """Stop listening and forget any speech in progress."""
        self.listen_until = 0.0
        self.held = None
        self.segmenter.reset()
        self.drop_early()
        self.host.machine.handle(Event.SILENCE)

    # --- frames --------------------------------------------------------------

    def feed(self, frame: bytes) -> None:
        """Take one microphone frame."""
        host, machine = self.host, self.host.machine
        if machine.muted:
            if self.segmenter.in_speech or machine.state is State.LISTENING:
                self.close()
            self.wake_missed = True
            return
        if machine.busy:
            if self.segmenter.in_speech:
                self.segmenter.reset()
                self.drop_early()
            if detection := self._hear_wake_word(frame):
                log.info("barge-in: %s heard while %s", detection.model, machine.state)
                host.barge_in()
                self.woken(detection, self._heard(frame))
            return
        if self.held is not None or self.clock() < host.mic_open_at:
            self.wake_missed = True
            return
        if not self.window_open() and not self.segmenter.in_speech:
            if machine.state is State.LISTENING:
                self.close()  # the window passed without a request
            self.segmenter.hear(frame)  # the room's noise floor, known before a request starts
            self._rest_at = self.clock()
            if detection := self._hear_wake_word(frame):
                self.woken(detection, self._heard(frame))
            return
        self.wake_missed = True
        self._segment(frame)

    def _hear_wake_word(self, frame: bytes) -> Detection | None:
        """Feed the wake word detector one frame.

        After frames it did not hear (a request's), it starts afresh: its context would be the
        audio before them, the last wake word, and it would stay disarmed for the next second of
        what it hears, deaf to a wake word said then (one said early in the reply after a barge-in).
        """
        self._recent.append(frame)
        if self.wake is None:
            return None
        if self.wake_missed:
            self.wake.reset()
            self.wake_missed = False
        return self.wake.process(frame)

    def _heard(self, frame: bytes) -> bytes:
        """The audio of the wake word detector's last batch (it runs 60 ms at a time), which
        the detection lies in: what follows the phrase in it is the command's beginning."""
        return b"".join(self._recent) if self._recent else frame

    def end_utterance(self) -> None:
        """End the utterance in progress at the next frame (the Realtime server's VAD ended it)."""
        if self.segmenter.in_speech:
            self.finish_now = True

    def _segment(self, frame: bytes) -> None:
        finishing = self.finish_now
        event = self.segmenter.finish() if finishing else self.segmenter.feed(frame)
        self.finish_now = False
        if self.streaming and not finishing:
            if isinstance(event, SpeechStarted):
                self.host.request_audio(self.segmenter.audio, first=True)  # the pre-roll and this frame
            elif self.segmenter.in_speech or isinstance(event, Utterance):
                self.host.request_audio(frame, first=False)
        if isinstance(event, Pause):
            if not self.streaming:
                self.drop_early()
                self.early = asyncio.create_task(self.host.transcribe(event.audio, event.sample_rate))
                self.early.add_done_callback(self._early_done)
        elif isinstance(event, Resumed):
            self.drop_early()
        elif isinstance(event, SpeechStarted):
            self.host.machine.handle(Event.SPEECH)
        elif isinstance(event, Utterance):
            log.debug("utterance %.2f-%.2f s (%.2f s of audio)", event.start_s, event.end_s, event.duration_s)
            if self._arbitrating():
                log.debug("utterance held until the wake word arbitration is decided")
                self.held = event
            else:
                self._submit(event)
        elif not self.segmenter.in_speech and not self.window_open():
            self.host.machine.handle(Event.SILENCE)  # too short to be a request

    def _submit(self, utterance: Utterance) -> None:
        request_id, self.request_id = self.request_id or new_id(), None
        early, self.early = self.early, None
        self.listen_until = 0.0
        self.held = None
        if self.wake_config.sound:
            self.host.play_sound("done")
        self.host.submit_utterance(utterance, request_id, early)

    def _early_done(self, task: asyncio.Task[str]) -> None:
        # Still paused, and what was said is already a command the fast path knows:
        # waiting out the rest of silence_ms would only add latency.
        usable = task is self.early and not task.cancelled() and task.exception() is None
        if usable and self.segmenter.in_speech and self.host.complete_command(task.result()):
            self.finish_now = True

    def drop_early(self) -> None:
        """Forget a transcription started at a pause: the speaker went on, or gave up."""
        self.finish_now = False
        if self.early is not None:
            self.early.cancel()
            self.early = None

    # --- wake word and arbitration ---------------------------------------------

    def woken(self, detection: Detection, heard: bytes = b"") -> None:
        """The wake word fired in the audio `heard` last: listen, tell the others, and let the
        best-placed device answer.

        The detector fires 0-90 ms after the phrase ends, so a command said without a pause
        has begun in the batch it fired in: that batch starts the request's pre-roll.
        """
        request_id = self.open(
            "wakeword",
            preroll=heard,
            model=detection.model,
            probability=round(detection.probability, 3),
            level_dbfs=round(detection.level_dbfs, 1),
        )
        if self.wake_config.sound:
            self.host.play_sound("wake")
        if self.wake_config.arbitration_ms > 0:
            mine = Claim(self.config.device.site_id, detection.level_dbfs, detection.probability, self.clock())
            self.host.publish_claim(
                {
                    "site_id": mine.site_id,
                    "id": request_id,
                    "level_dbfs": mine.level_dbfs,
                    "probability": mine.probability,
                }
            )
            if self._arbitration is not None:
                self._arbitration.cancel()
            self.mine = (mine, request_id)
            self._arbitration = asyncio.create_task(self._arbitrate(mine, request_id))

    def on_claim(self, payload: bytes) -> None:
        """Another device heard a wake word (our own claims come back too: ignored)."""
        try:
            data = json.loads(payload)
            claim = Claim(str(data["site_id"]), float(data["level_dbfs"]), float(data["probability"]), self.clock())
        except (ValueError, KeyError, TypeError):
            log.debug("ignoring a malformed wake claim: %r", payload[:200])
            return
        if claim.site_id == self.config.device.site_id:
            return
        self.claims = [c for c in self.claims if claim.received - c.received < 5.0] + [claim]
        if self.mine is not None:  # a better-placed device may detect later than we did
            mine, request_id = self.mine
            if claim.received - mine.received <= SAME_WAKE_S and _rank(claim) > _rank(mine):
                self._yield(claim, mine, request_id)

    async def _arbitrate(self, mine: Claim, request_id: str) -> None:
        await asyncio.sleep(self.wake_config.arbitration_ms / 1000)
        rivals = [c for c in self.claims if abs(c.received - mine.received) <= SAME_WAKE_S]
        best = max([mine, *rivals], key=_rank)
        if best is not mine:
            self._yield(best, mine, request_id)
        elif self.held is not None and self.request_id == request_id:
            self._submit(self.held)

    def _arbitrating(self) -> bool:
        """Whether the request being heard waits for the wake word arbitration.

        Frames can overtake the arbitration timer when the loop stalls, so an utterance
        may end first; it must not be sent before the decision (the worse-placed device
        would answer too).
        """
        pending = self._arbitration is not None and not self._arbitration.done()
        return pending and self.mine is not None and self.mine[1] == self.request_id

    def _yield(self, better: Claim, mine: Claim, request_id: str) -> None:
        self.mine = None
        if self.request_id == request_id and self.host.machine.state in (State.IDLE, State.LISTENING):
            log.info(
                "%s heard the wake word better (%.1f dBFS vs %.1f); staying quiet",
                better.site_id,
                better.level_dbfs,
                mine.level_dbfs,
            )
            self.close()


def _rank(claim: Claim) -> tuple[float, float, str]:
    """Who heard it best: the loudest, then the surest, then a fixed order so all agree."""
    return (claim.level_dbfs, claim.probability, claim.site_id)
