"""The device's state: one enum, one transition table, and what follows from it.

Every change of state goes through `StateMachine.handle`. The published `state`
topic, systemd's STATUS= and what the listener hears (`Hearing`) are all read from
the machine, so they cannot disagree. A text request that will not be spoken does
not touch the state: the device is not busy for the people in the room, and its
wake word keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

log = logging.getLogger(__name__)


class State(StrEnum):
    """What the device is doing, as published on `<prefix>/state`."""

    IDLE = "idle"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    SPEAKING = "speaking"
    MUTED = "muted"


class Event(StrEnum):
    """What can happen to the device."""

    WAKE = "wake"  # a listening window opened: wake word, MQTT listen, follow-up
    SPEECH = "speech"  # speech started where it may start a request
    UTTERANCE = "utterance"  # speech ended: a spoken request, to transcribe
    SILENCE = "silence"  # the window closed without a request
    START = "start"  # a request that will be spoken started (MQTT ask with speak, say)
    ANSWER = "answer"  # the request is understood; the agent works on it
    SPEAK = "speak"  # reply audio starts
    DONE = "done"  # the turn ended, whichever way (answered, failed, cancelled by a barge-in)
    CANCEL = "cancel"  # the user aborted everything (MQTT cancel): stop listening too
    MUTE = "mute"
    UNMUTE = "unmute"


class Hearing(StrEnum):
    """What the listener does with microphone frames."""

    NOTHING = "nothing"  # muted, or mqtt mode with no window open
    WAKE_WORD = "wake_word"  # only the wake word (idle, or barge-in while busy)
    REQUEST = "request"  # the segmenter takes speech as a request


S, E = State, Event
BUSY = {S.TRANSCRIBING, S.THINKING, S.SPEAKING}
# (state, event) -> next state. IDLE as a target means "at rest": MUTED when muted.
# A pair that is not listed leaves the state as it is (e.g. MUTE while speaking: the
# reply goes on; the device rests as MUTED afterwards).
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.IDLE, E.WAKE): S.LISTENING,
    (S.IDLE, E.SPEECH): S.LISTENING,
    (S.IDLE, E.START): S.THINKING,
    (S.IDLE, E.SPEAK): S.SPEAKING,
    (S.IDLE, E.UTTERANCE): S.TRANSCRIBING,
    (S.IDLE, E.MUTE): S.MUTED,
    (S.LISTENING, E.UTTERANCE): S.TRANSCRIBING,
    (S.LISTENING, E.SILENCE): S.IDLE,
    (S.LISTENING, E.CANCEL): S.IDLE,
    (S.LISTENING, E.SPEAK): S.SPEAKING,
    (S.LISTENING, E.MUTE): S.MUTED,
    (S.TRANSCRIBING, E.ANSWER): S.THINKING,
    (S.TRANSCRIBING, E.SPEAK): S.SPEAKING,  # an apology: transcription failed
    (S.TRANSCRIBING, E.DONE): S.IDLE,
    (S.TRANSCRIBING, E.CANCEL): S.IDLE,
    (S.TRANSCRIBING, E.WAKE): S.LISTENING,  # the wake word again: a new request replaces this one
    (S.THINKING, E.SPEAK): S.SPEAKING,
    (S.THINKING, E.DONE): S.IDLE,
    (S.THINKING, E.CANCEL): S.IDLE,
    (S.THINKING, E.WAKE): S.LISTENING,
    (S.SPEAKING, E.DONE): S.IDLE,
    (S.SPEAKING, E.CANCEL): S.IDLE,
    (S.SPEAKING, E.WAKE): S.LISTENING,  # barge-in
    (S.MUTED, E.UNMUTE): S.IDLE,
    (S.MUTED, E.START): S.THINKING,
    (S.MUTED, E.SPEAK): S.SPEAKING,
}


class StateMachine:
    """Holds the state and the mute switch; tells `on_change` about every new state."""

    def __init__(self, wake_mode: str, muted: bool, on_change: Callable[[State], None] | None = None) -> None:
        self.wake_mode = wake_mode
        self.muted = muted
        self.on_change = on_change
        self.state = S.MUTED if muted else S.IDLE

    def handle(self, event: Event) -> State:
        """Apply one event; return the (possibly unchanged) state."""
        if event is E.MUTE:
            self.muted = True
        elif event is E.UNMUTE:
            self.muted = False
        target = TRANSITIONS.get((self.state, event), self.state)
        if target is S.IDLE and self.muted:
            target = S.MUTED
        if self.muted and target is S.LISTENING:
            target = S.MUTED if self.state in (S.IDLE, S.MUTED, S.LISTENING) else self.state
        if target is not self.state:
            log.debug("state %s --%s--> %s", self.state, event, target)
            self.state = target
            if self.on_change is not None:
                self.on_change(target)
        return self.state

    @property
    def busy(self) -> bool:
        """A turn that uses the speaker or the microphone is under way."""
        return self.state in BUSY

    def hearing(self) -> Hearing:
        """What the microphone is for right now."""
        if self.muted:
            return Hearing.NOTHING
        if self.state is S.LISTENING or (self.state is S.IDLE and self.wake_mode == "vad"):
            return Hearing.REQUEST
        if self.wake_mode == "wakeword":
            return Hearing.WAKE_WORD  # at rest, and for a barge-in while busy
        return Hearing.NOTHING
