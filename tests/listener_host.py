"""The daemon's side of the listener, for tests and benches that drive `Listener` frame by frame.

One stand-in for `assistant.audio.listener.Host`, so that when the protocol grows, every
test and bench keeps up in one place. It holds the real `StateMachine` (the listener reads
and moves it) and records what it is asked to do; a test that needs more (where in the
stream an upload was handed on, a byte count) subclasses it and overrides one method.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from assistant.audio.listener import Host, Listener
from assistant.audio.vad import Utterance
from assistant.config import parse_config
from assistant.daemon.state import Event, StateMachine


class ListenerHost:
    """Records uploads, claims, wake events, barge-ins and sounds; transcribes everything as ""."""

    def __init__(self, mode: str, muted: bool = False) -> None:
        self.machine = StateMachine(mode, muted=muted)
        self.mic_open_at = 0.0
        self.uploads: list[tuple[Utterance, str]] = []  # (utterance, request id)
        self.claims: list[dict[str, Any]] = []
        self.wakes: list[dict[str, Any]] = []  # the wake events' data
        self.barge_ins = 0
        self.sounds: list[str] = []

    @property
    def muted(self) -> bool:
        return self.machine.muted

    def wake_event(self, data: dict[str, Any]) -> None:
        self.wakes.append(data)

    def publish_claim(self, claim: dict[str, Any]) -> None:
        self.claims.append(claim)

    def submit_utterance(self, utterance: Utterance, request_id: str, early: asyncio.Task[str] | None) -> None:
        """As the daemon does: the request is queued and the device is transcribing."""
        self.uploads.append((utterance, request_id))
        self.machine.handle(Event.UTTERANCE)

    def request_audio(self, pcm: bytes, first: bool) -> None:
        pass

    def barge_in(self) -> None:
        self.barge_ins += 1

    async def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        return ""

    def play_sound(self, name: str) -> None:
        self.sounds.append(name)

    def complete_command(self, text: str) -> bool:
        return False


class StreamHost(ListenerHost):
    """Also notes where in the stream each upload was handed on: `at`, which whoever feeds
    the frames keeps up to date (in bytes fed, or seconds: the unit is theirs)."""

    def __init__(self, mode: str, muted: bool = False) -> None:
        super().__init__(mode, muted)
        self.at = 0.0
        self.handed_at: list[float] = []

    def submit_utterance(self, utterance: Utterance, request_id: str, early: asyncio.Task[str] | None) -> None:
        self.handed_at.append(self.at)
        super().submit_utterance(utterance, request_id, early)


def offline_listener(host: StreamHost, clock: Callable[[], float] | None = None) -> Listener:
    """A Listener for audio fed offline: "hey_mycroft", no arbitration wait, and no early
    transcription (every byte sent is in the final upload); on `clock`, by default `host.at`
    in seconds."""
    config = parse_config(
        {
            "wake": {"mode": "wakeword", "model": "hey_mycroft", "arbitration_ms": 0},
            "vad": {"early_ms": 0},
            "openai": {"base_url": "http://127.0.0.1:9/v1"},
        },
        {},
    )
    return Listener(config, host, clock=clock or (lambda: host.at))


_: Host = ListenerHost("mqtt")  # a type checker sees that it keeps to the protocol
