"""The Realtime mode in the daemon: a spoken request answered by a Realtime session.

Which path speaks what: a spoken request (the wake word, `listen`, or speech in "vad"
mode) streams into a Realtime session, and the reply is the session's own voice, played
through the one sound card as its deltas arrive. Typed `ask` requests and `say` keep the
chat agent and the [tts] voice: `say` must be spoken word for word, which a
speech-to-speech model does not promise, and an `ask` that is not spoken needs no audio.
So does the apology when a session fails, since the session is what failed.

A session is opened as listening starts, so its handshake overlaps the request; it
answers one request and is closed. A barge-in (the wake word while the reply plays)
cancels the response and truncates the reply where it stopped being heard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from openai.resources.realtime.realtime import AsyncRealtimeConnectionManager

from assistant.agent.conversation import CUT_SHORT, Agent, Reply
from assistant.agent.providers import make_client, resolve
from assistant.agent.realtime import RATE, Answer, RealtimeFailure, Session, heard
from assistant.config import Config
from assistant.daemon.events import Events
from assistant.daemon.speech import Speech
from assistant.daemon.state import Event, StateMachine
from assistant.daemon.turns import APOLOGY

log = logging.getLogger(__name__)

IDLE_CLOSE_S = 60.0  # a session opened for a request that never came is closed after this
PIECE_BYTES = RATE * 2 * 50 // 1000  # reply audio goes to the card in 50 ms pieces: a barge-in knows what was heard
UNTRANSCRIBED = "(a spoken request; not transcribed)"

Connect = Callable[[], AsyncRealtimeConnectionManager]


def realtime_connector(config: Config, env: Mapping[str, str]) -> tuple[Connect, float]:
    """How to open a session, and the stage's timeout: [realtime] over [openai], as every stage is resolved.

    On Azure the deployment names the model (`deployment=` in the URL). An Azure endpoint
    given as plain http (a local server) is reached over ws: the SDK would ask it for wss.
    """
    api = resolve(config, "realtime", env)
    model = api.deployment or config.realtime.model
    client = make_client(replace(api, deployment=None))
    endpoint = api.azure_endpoint or ""
    if api.provider == "azure" and endpoint.startswith("http://"):
        client = client.with_options(websocket_base_url=f"ws://{endpoint.removeprefix('http://').rstrip('/')}/openai")
    return (lambda: client.realtime.connect(model=model)), api.timeout_s


class RealtimeVoice:
    """Opens sessions as requests start, feeds them the microphone, and answers turns with them."""

    def __init__(
        self,
        config: Config,
        connector: tuple[Connect, float],
        *,
        agent: Agent,
        events: Events,
        speech: Speech,
        machine: StateMachine,
        end_utterance: Callable[[], None],
    ) -> None:
        self.config = config
        self.connect, self.timeout_s = connector
        self.agent = agent
        self.events = events
        self.speech = speech
        self.machine = machine
        self.end_utterance = end_utterance
        self.pending: Session | None = None  # opened for the request being spoken
        self.idle: asyncio.TimerHandle | None = None
        self.background: set[asyncio.Task[None]] = set()

    # --- the request being spoken ----------------------------------------------

    def prepare(self) -> None:
        """Open a session for the next request, unless one is open and healthy."""
        if self.pending is not None and self.pending.failed:
            self.close_later(self.pending)
            self.pending = None
        if self.pending is None:
            server = self.config.realtime.turn_detection == "server"
            self.pending = self.open_session(self.end_utterance if server else None)
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(IDLE_CLOSE_S, self._unused)

    def open_session(self, on_server_commit: Callable[[], None] | None, replay: bool = False) -> Session:
        """A new session, connecting in the background; `replay`: for a request already heard whole,
        so it is committed by us (a server VAD would answer it a second time)."""
        config = self.config.realtime
        session = Session(
            config.model_copy(update={"turn_detection": "local"}) if replay else config,
            self.connect,
            self.agent,
            self.config.device.site_id,
            self.config.audio.sample_rate,
            on_server_commit,
            self.timeout_s,
        )
        session.start()
        return session

    def request_audio(self, pcm: bytes, first: bool) -> None:
        """Microphone audio of the request; `first`: speech (re)started, what came before is dropped.

        A session that fails in the middle of a request is not replaced here (the start of the
        request would be lost): the turn sends the whole utterance to a new one (see `answer`).
        """
        if first or self.pending is None:
            self.prepare()
            assert self.pending is not None
            self.pending.clear()
        self.pending.append(pcm)

    def take(self) -> Session | None:
        """The request is complete: its session goes with the turn; the next request opens another."""
        session, self.pending = self.pending, None
        if self.idle is not None:
            self.idle.cancel()
        if session is not None:
            session.on_server_commit = None  # its request has ended: a late commit must not end the next one
        return session

    def _unused(self) -> None:
        if self.pending is not None:
            log.debug("closing a Realtime session no request used")
            self.close_later(self.take())

    def close_later(self, session: Session | None) -> None:
        """Close a session in the background (it sends what it has queued first)."""
        if session is None:
            return
        task = asyncio.create_task(session.close())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def close(self) -> None:
        """On stop: close the session waiting for a request, and those still closing."""
        self.close_later(self.take())
        if self.background:
            await asyncio.wait(self.background, timeout=2.0)

    # --- the turn ------------------------------------------------------------------

    async def answer(self, request_id: str, session: Session, utterance: bytes) -> Reply:
        """End the request, play the reply as it arrives, publish it; apologise if the session fails.

        A session whose connection ended before the request did (refused, dropped, expired)
        has answered nothing and run no tool: the utterance goes to a new session, once.
        """
        conversation_id = self.config.device.site_id
        replayed = session.failed
        if replayed:
            log.info("realtime: the session ended before the request did; sending the request to a new one")
            self.close_later(session)
            session = self.open_session(None, replay=True)
            session.append(utterance)
        self.machine.handle(Event.ANSWER)
        audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        played = [0]
        player = asyncio.create_task(self.speech.play_audio(audio, RATE, played, request_id))

        def on_audio(pcm: bytes) -> None:
            for start in range(0, len(pcm), PIECE_BYTES):
                audio.put_nowait(pcm[start : start + PIECE_BYTES])

        def on_transcript(text: str) -> None:
            self.events.transcript(request_id, text, conversation_id)

        try:
            try:
                answer = await session.respond(on_audio, on_transcript, commit_now=replayed)
            except RealtimeFailure as failure:
                audio.put_nowait(None)
                await player  # what arrived before the failure is heard, then the apology
                return await self.apologise(request_id, session.answer, failure)
            if answer.cut is not None:
                self.events.error(request_id, answer.cut, f"realtime: {CUT_SHORT[answer.cut][0]}")
            reply = Reply(answer.text.strip(), answer.actions, answer.usage, answer.cut)
            self.events.reply(request_id, reply, conversation_id, request=answer.transcript or "")
            audio.put_nowait(None)
            await player
        except asyncio.CancelledError:
            log.info("realtime: reply cut after %.2f s of audio", played[0] / 2 / RATE)
            await asyncio.shield(session.interrupt(played[0] / 2 / RATE))
            if played[0]:  # some of the reply was heard: that much is part of the conversation
                self.remember(session.answer, played[0])
            raise
        finally:
            player.cancel()
            self.close_later(session)
        self.remember(answer, played[0])
        return reply

    def remember(self, answer: Answer, played_bytes: int) -> None:
        """The turn as the chat agent's memory keeps it: the reply as far as it was heard."""
        said = heard(answer.text.strip(), played_bytes / 2 / RATE, answer.audio_bytes / 2 / RATE)
        turn = [
            {"role": "user", "content": answer.transcript or UNTRANSCRIBED},
            *answer.messages,
            {"role": "assistant", "content": said},
        ]
        self.agent.memory.remember(self.config.device.site_id, turn)

    async def apologise(self, request_id: str, partial: Answer, failure: RealtimeFailure) -> Reply:
        """event/error api_error, and a reply that says what was already said and done, then sorry."""
        self.events.error(request_id, "api_error", f"realtime: {failure}")
        said = partial.text.strip() if partial.audio_bytes else ""
        reply = Reply(
            " ".join(p for p in (said, APOLOGY) if p), partial.actions, partial.usage, "api_error" if said else None
        )
        self.events.reply(request_id, reply, self.config.device.site_id, request=partial.transcript or "")
        await self.speech.speak(APOLOGY, request_id)
        return reply
