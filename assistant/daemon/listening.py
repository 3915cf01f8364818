"""What the listener needs from the daemon, given by the parts that do it.

The `Listener` (assistant/audio/listener.py) decides when microphone audio becomes a
request; this adapter is its only way out: utterances go to the turn queue, wake events
and claims to `Events`, chimes to `Speech`. It holds no state of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from assistant.audio.vad import Utterance
from assistant.daemon import systemd
from assistant.daemon.events import Events
from assistant.daemon.speech import Speech
from assistant.daemon.state import Event, StateMachine
from assistant.daemon.turns import Turns, VoiceTurn
from assistant.voice.stt import Transcriber

if TYPE_CHECKING:
    from assistant.daemon.realtime import RealtimeVoice


class ListenerHost:
    """The `Host` a `Listener` is built with (see assistant.audio.listener.Host)."""

    def __init__(
        self, machine: StateMachine, events: Events, speech: Speech, turns: Turns, transcriber: Transcriber
    ) -> None:
        self.machine = machine
        self.events = events
        self.speech = speech
        self.turns = turns
        self.transcriber = transcriber
        self.realtime: RealtimeVoice | None = None  # Realtime mode: requests stream into its sessions

    @property
    def muted(self) -> bool:
        """Whether the microphone is muted."""
        return self.machine.muted

    @property
    def mic_open_at(self) -> float:
        """Before this time.monotonic() the microphone hears our own sound (see Speech)."""
        return self.speech.mic_open_at

    @mic_open_at.setter
    def mic_open_at(self, value: float) -> None:
        self.speech.mic_open_at = value

    def wake_event(self, data: dict[str, Any]) -> None:
        """Publish `event/wake`: listening started, and why (a Realtime session starts opening)."""
        self.events.wake(data)
        if self.realtime is not None:
            self.realtime.prepare()

    def publish_claim(self, claim: dict[str, Any]) -> None:
        """Tell the other devices on the broker how well we heard the wake word."""
        self.events.claim(claim)

    def submit_utterance(self, utterance: Utterance, request_id: str, early: asyncio.Task[str] | None) -> None:
        """A spoken request is complete: queue it."""
        self.machine.handle(Event.UTTERANCE)
        session = self.realtime.take() if self.realtime is not None else None
        self.turns.submit(VoiceTurn(utterance.audio, utterance.sample_rate, request_id, early, session))

    def request_audio(self, pcm: bytes, first: bool) -> None:
        """Realtime mode: the request's audio as it is heard (`first`: speech started, with its pre-roll)."""
        if self.realtime is not None:
            self.realtime.request_audio(pcm, first)

    def barge_in(self) -> None:
        """Stop speaking and drop the current turn: the user has something new to say."""
        self.turns.interrupt()

    def transcribe(self, pcm: bytes, sample_rate: int) -> Coroutine[Any, Any, str]:
        """Transcription, for the listener's early (speculative) requests."""
        return self.transcriber.transcribe(pcm, sample_rate)

    def play_sound(self, name: str) -> None:
        """A short wake / done tone; the listener ignores the microphone while it plays."""
        self.speech.chime(name)

    def complete_command(self, text: str) -> bool:
        """Whether `text` is already a whole command (the listener may stop waiting for more)."""
        return self.turns.complete_command(text)

    def audio_trouble(self, problem: str | None) -> None:
        """The microphone failed or came back: a reported condition, never a reason to restart.

        MQTT requests (ask, say) are served all along; `check` says when there is no microphone.
        """
        if problem is not None:
            self.events.error(None, "audio_error", f"{problem}; retrying with backoff")
            systemd.notify(f"STATUS={self.machine.state} (no microphone: {problem})")
        else:
            systemd.notify(f"STATUS={self.machine.state}")
