"""Turns: one request at a time, from the microphone or from MQTT, answered and spoken.

A turn is queued (`submit`) and the worker runs them one after another; `interrupt`
stops the one under way (barge-in, cancel). A reload hands the turns not started to the
next instance (`unfinished_turns`, `take_over`); a stop answers them on event/error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import openai

from assistant.agent.conversation import CUT_SHORT, Agent, Reply, Usage, cut_short
from assistant.agent.tools import Action, HomeTools
from assistant.config import Config
from assistant.daemon.events import Events
from assistant.daemon.payloads import Request, new_id
from assistant.daemon.speech import Speech
from assistant.daemon.state import Event, StateMachine
from assistant.fastpath import FastMatch, FastPath
from assistant.voice.sentences import SentenceSplitter
from assistant.voice.stt import Transcriber

if TYPE_CHECKING:  # the Realtime mode's modules (and websockets) are imported only when it is on
    from assistant.agent.realtime import Session
    from assistant.daemon.realtime import RealtimeVoice

log = logging.getLogger(__name__)

APOLOGY = "Sorry, I can't reach my language service right now. Please try again in a moment."
FAST_PATH_FAILED = "Sorry, that did not work."
FAST_PATH_UNCONFIRMED = "I sent that, but I could not confirm that it arrived."
FINISH_REPLY_S = 10.0  # SIGTERM lets the current reply finish for this long (TimeoutStopSec is 20)
STOP_TASKS_TIMEOUT_S = 5.0
QUEUE_SIZE = 32


@dataclass
class VoiceTurn:
    """An utterance from the microphone."""

    audio: bytes
    sample_rate: int
    id: str = field(default_factory=new_id)
    early: asyncio.Task[str] | None = None  # transcription started at the last pause, if still valid
    session: Session | None = None  # Realtime mode: the session that heard it, which answers it


@dataclass
class SayTurn:
    """Text to speak as is."""

    text: str
    id: str


Turn = VoiceTurn | Request | SayTurn


class Turns:
    """The turn queue and its worker, and how each kind of turn is answered.

    `follow_up(request_id)` is called when a spoken reply asks a question back: the
    daemon opens a listening window for the answer.
    """

    def __init__(
        self,
        config: Config,
        *,
        machine: StateMachine,
        events: Events,
        speech: Speech,
        agent: Agent,
        transcriber: Transcriber,
        home_tools: HomeTools,
        fast_path: FastPath | None,
        stopping: asyncio.Event,
        follow_up: Callable[[str], None],
    ) -> None:
        self.config = config
        self.machine = machine
        self.events = events
        self.speech = speech
        self.agent = agent
        self.transcriber = transcriber
        self.home_tools = home_tools
        self.fast_path = fast_path
        self.stopping = stopping
        self.follow_up = follow_up
        self.queue: asyncio.Queue[Turn] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.held: list[Turn] = []  # turns taken over from the instance before a reload, or held back when stopping
        self.current: asyncio.Task[None] | None = None
        self.current_turn: Turn | None = None
        self.realtime: RealtimeVoice | None = None  # set in Realtime mode: it answers spoken requests

    # --- answering -------------------------------------------------------------

    async def answer(self, text: str, request_id: str, conversation_id: str | None, speak: bool) -> Reply:
        """Run the agent on `text`, speaking each sentence as soon as it is written.

        Actions and the whole reply are published once the agent is done; speech may
        still be playing then.
        """
        fast = self.fast_path.match(text) if self.fast_path is not None else None
        if fast is not None:
            return await self.answer_locally(text, fast, request_id, conversation_id, speak)
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        splitter = SentenceSplitter()
        voiced = speak and self.speech.voice
        speaking = asyncio.create_task(self.speech.speak_pieces(pieces, request_id)) if voiced else None
        said: list[str] = []  # whole pieces handed to speech so far

        def on_text(delta: str) -> None:
            for piece in splitter.feed(delta):
                said.append(piece)
                pieces.put_nowait(piece)

        usage = Usage()
        actions: list[Action] = []
        try:
            reply = await self.agent.respond(text, conversation_id, on_text, usage, actions)
        except openai.APIError as error:
            self.events.error(request_id, "api_error", f"agent: {type(error).__name__}: {error}")
            # what was already said and done stays reported; a half-written sentence is dropped
            reply = Reply(" ".join([*said, APOLOGY]), actions, usage, "api_error" if said else None)
            splitter = SentenceSplitter()
            pieces.put_nowait(APOLOGY)
        except BaseException:
            if speaking is not None:
                speaking.cancel()
            raise
        if reply.cut in CUT_SHORT:
            self.events.error(
                request_id, reply.cut, f"agent: {CUT_SHORT[reply.cut][0]}; {len(reply.text)} characters arrived"
            )
            reply, ending = cut_short(reply, said)
            splitter = SentenceSplitter()  # the unfinished sentence is not spoken
            pieces.put_nowait(ending)
        for piece in splitter.flush():
            pieces.put_nowait(piece)
        pieces.put_nowait(None)
        self.events.reply(request_id, reply, conversation_id, request=text)
        if speaking is not None:
            await speaking
        return reply

    async def answer_locally(
        self, text: str, fast: FastMatch, request_id: str, conversation_id: str | None, speak: bool
    ) -> Reply:
        """Carry out a command the fast path recognised: no chat round trip at all."""
        tools = {tool.name: tool for tool in self.home_tools.tools()}
        actions = []
        for name, args in fast.calls:
            actions += (await tools[name].call(args)).actions if name in tools else []
        outcome = "done" if actions and all(a.ok for a in actions) else "failed"
        if actions and outcome == "failed" and all(a.ok is not False for a in actions):
            outcome = "unconfirmed"
        speech = {"done": fast.speech, "failed": FAST_PATH_FAILED, "unconfirmed": FAST_PATH_UNCONFIRMED}[outcome]
        reply = Reply(speech, actions)
        self.events.reply(request_id, reply, conversation_id, request=text, intent=fast.intent)  # first: it is awaited
        recognitions = self.fast_path.recognitions if self.fast_path is not None else 0
        log.info(
            "fast path: %s -> %s (%s; recognitions so far: %d)",
            fast.intent,
            [c[0] for c in fast.calls],
            outcome,
            recognitions,
        )
        self.agent.memory.remember(
            conversation_id, [{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}]
        )
        if speak:
            await self.speech.speak(reply.text, request_id)
        return reply

    def complete_command(self, text: str) -> bool:
        """Whether `text` is already a whole command (the listener may stop waiting for more)."""
        return self.fast_path is not None and self.fast_path.match(text) is not None

    async def transcript_of(self, turn: VoiceTurn) -> str:
        """The early transcription when it holds the whole utterance, else a fresh one."""
        if turn.early is not None:
            try:
                return await turn.early
            except (openai.APIError, asyncio.CancelledError) as error:
                if isinstance(error, asyncio.CancelledError) and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                log.info("early transcription failed (%s); transcribing again", type(error).__name__)
        return await self.transcriber.transcribe(turn.audio, turn.sample_rate)

    async def voice_turn(self, turn: VoiceTurn) -> tuple[str, Reply | None]:
        """Transcribe an utterance and answer it aloud; return the transcript and reply.

        In Realtime mode the session that heard the utterance answers it (see
        assistant/daemon/realtime.py); the fast path is not asked, no words exist before the reply.
        """
        if turn.session is not None and self.realtime is not None:
            reply = await self.realtime.answer(turn.id, turn.session, turn.audio)
            self.ask_back(turn.id, reply)
            return reply.text, reply
        try:
            text = await self.transcript_of(turn)
        except openai.APIError as error:
            self.events.error(turn.id, "api_error", f"stt: {type(error).__name__}: {error}")
            self.events.reply(turn.id, Reply(APOLOGY), self.config.device.site_id, request="")
            await self.speech.speak(APOLOGY, turn.id)
            return "", Reply(APOLOGY)
        conversation_id = self.config.device.site_id
        self.events.transcript(turn.id, text, conversation_id)
        if not text:
            return "", None
        self.machine.handle(Event.ANSWER)
        reply = await self.answer(text, turn.id, conversation_id, speak=True)
        self.ask_back(turn.id, reply)
        return text, reply

    def ask_back(self, request_id: str, reply: Reply) -> None:
        """A spoken reply that asks a question back: listen for the answer without the wake word."""
        wake = self.config.wake
        if wake.followup_s > 0 and wake.mode != "vad" and reply.text.rstrip().endswith("?"):
            self.follow_up(request_id)

    async def handle(self, turn: Turn) -> None:
        """Run one turn of any kind; the state machine hears that it is done, however it ends.

        A text request that will not be spoken leaves the state alone, at its start and at its
        end: the device is free meanwhile (a spoken request may even be waiting behind it).
        """
        silent = not isinstance(turn, VoiceTurn | SayTurn) and not turn.speak
        try:
            if isinstance(turn, VoiceTurn):
                await self.voice_turn(turn)
            elif isinstance(turn, SayTurn):
                self.machine.handle(Event.START)
                await self.speech.speak(turn.text, turn.id)
            else:
                if turn.speak:
                    self.machine.handle(Event.START)
                await self.answer(turn.text, turn.id, turn.conversation_id, turn.speak)
        finally:
            if not silent:
                self.machine.handle(Event.DONE)

    # --- the queue -------------------------------------------------------------

    async def worker(self) -> None:
        """Handle queued turns one after another; `interrupt` aborts the running one.

        Once stopping, no new turn is started: what is left waits in `held` for the next
        instance (a reload) or is answered on event/error (a stop).
        """
        while not self.stopping.is_set():
            turn = self.held.pop(0) if self.held else await self.queue.get()
            if self.stopping.is_set():
                self.held.insert(0, turn)
                return
            self.current_turn = turn
            self.current = asyncio.create_task(self.handle(turn))
            try:
                await self.current
            except asyncio.CancelledError:
                if self.stopping.is_set():
                    raise
                log.info("turn %s cancelled", turn.id)
            except Exception:
                log.exception("turn %s failed", turn.id)
                self.events.error(turn.id, "internal_error", "the turn failed; see the log")
            finally:
                self.current = None
                self.current_turn = None

    def submit(self, turn: Turn) -> None:
        """Queue a turn, or say why it cannot be taken."""
        try:
            self.queue.put_nowait(turn)
        except asyncio.QueueFull:
            self.events.error(turn.id, "busy", "too many requests waiting; try again shortly")

    def qsize(self) -> int:
        """How many turns wait in the queue."""
        return self.queue.qsize()

    def interrupt(self) -> None:
        """Stop speaking and drop the current turn (barge-in, cancel)."""
        self.speech.stop_speaking.set()
        if self.current is not None:
            self.current.cancel()

    def take_over(self, turns: list[Turn]) -> None:
        """Turns the instance before a reload had not started: they are handled first."""
        for turn in turns:
            if isinstance(turn, VoiceTurn) and turn.early is not None:
                turn.early.cancel()  # it used the old settings; transcribe again with the new ones
                turn.early = None
            if isinstance(turn, VoiceTurn) and turn.session is not None:
                asyncio.create_task(turn.session.close())  # noqa: RUF006 (it closes within a second)
                turn.session = None  # the old settings' session: the utterance is transcribed instead
        self.held = [*turns, *self.held]

    def unfinished_turns(self) -> list[Turn]:
        """After run(): the turns not started, in order (the next instance takes them over)."""
        turns, self.held = self.held, []
        while not self.queue.empty():
            turns.append(self.queue.get_nowait())
        return turns

    def drop_unfinished(self, code: str, message: str) -> None:
        """Answer every turn that will not be handled on event/error, so none ends in silence."""
        for turn in self.unfinished_turns():
            self.events.error(turn.id, code, message)

    async def finish_current_turn(self, reloading: Callable[[], bool]) -> None:
        """On stop or reload, let the turn under way finish (within FINISH_REPLY_S), then cut it.

        Stopping mid-word, or dropping a request without a word, would leave the user with
        nothing; a turn that had to be cut is answered on event/error. `reloading` is asked
        twice: a SIGTERM during the wait turns a reload into a stop.
        """
        current, turn = self.current, self.current_turn
        if current is None or turn is None:
            return
        log.info("finishing the current turn before %s", "reloading" if reloading() else "stopping")
        await asyncio.wait({current}, timeout=FINISH_REPLY_S)
        if not current.done():
            current.cancel()
            await asyncio.wait({current}, timeout=STOP_TASKS_TIMEOUT_S)
            code, why = ("reloading", "a reload") if reloading() else ("stopping", "a stop")
            self.events.error(
                turn.id, code, f"cut short by {why}: the request was still running after {FINISH_REPLY_S:.0f} s"
            )
