"""The daemon: microphone -> VAD -> transcription -> agent -> MQTT + speech.

One asyncio loop runs three tasks: capture (frames into the segmenter), the MQTT
dispatcher (inputs and entity states), and the turn worker, which handles one turn
at a time, whether it came from the microphone or from MQTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai

from assistant.agent.conversation import CUT_SHORT, Agent, Reply, Usage, cut_short
from assistant.agent.images import ImageMaker, ImagePublisher, ImageRequest, parse_image_request
from assistant.agent.providers import CredentialError, make_client, resolve, stages_in_use, verify
from assistant.agent.tools import Action, HomeTools, Tool
from assistant.audio.devices import Microphone, SoundCard
from assistant.audio.listener import Listener
from assistant.audio.vad import Utterance
from assistant.config import Config, ConfigError, load_config
from assistant.daemon import systemd
from assistant.daemon.payloads import (
    BadRequest,
    Request,
    decode_payload,
    new_id,
    optional_str,
    parse_signal,
    parse_switch,
    parse_text_request,
)
from assistant.daemon.state import Event, State, StateMachine
from assistant.daemon.store import Store
from assistant.fastpath import FastMatch, FastPath
from assistant.home.bridge import ServiceBridge
from assistant.home.entities import Command
from assistant.home.house import House
from assistant.home.registry import Registry
from assistant.link.client import Message, MqttLink
from assistant.link.delivery import Delivery
from assistant.voice.sentences import SentenceSplitter
from assistant.voice.stt import Transcriber
from assistant.voice.tts import TtsError, make_voice

log = logging.getLogger(__name__)

APOLOGY = "Sorry, I can't reach my language service right now. Please try again in a moment."
FAST_PATH_FAILED = "Sorry, that did not work."
FAST_PATH_UNCONFIRMED = "I sent that, but I could not confirm that it arrived."
EXIT_CREDENTIALS = 3  # systemd: RestartPreventExitStatus, a rejected key will not fix itself
STOP_STACKS_AFTER_S = 8.0
STOP_TASKS_TIMEOUT_S = 5.0
STOPPING = "the assistant is stopping; this request was not handled"
FINISH_REPLY_S = 10.0  # SIGTERM lets the current reply finish for this long (TimeoutStopSec is 20)
ECHO_TAIL_S = 0.25  # ignore the microphone briefly after speaking: the room still rings
TONE_RATE = 16000
HOUSE_SLICE_S = 0.005  # house traffic is read for this long between two turns of the loop
INPUTS = ("ask", "say", "listen", "cancel", "mute/set", "image/generate")


def _tone(frequencies: tuple[float, ...], seconds: float = 0.09) -> bytes:
    """A soft two-note chime (fade in/out so it does not click)."""
    t = np.arange(int(TONE_RATE * seconds)) / TONE_RATE
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)
    notes = [np.sin(2 * np.pi * f * t) * envelope for f in frequencies]
    return bytes((np.concatenate(notes) * 6000).astype(np.int16).tobytes())


TONES = {"wake": _tone((660.0, 880.0)), "done": _tone((880.0, 660.0))}


@dataclass
class VoiceTurn:
    """An utterance from the microphone."""

    audio: bytes
    sample_rate: int
    id: str = field(default_factory=new_id)
    early: asyncio.Task[str] | None = None  # transcription started at the last pause, if still valid


@dataclass
class SayTurn:
    """Text to speak as is."""

    text: str
    id: str


Turn = VoiceTurn | Request | SayTurn


class Assistant:
    """Wires the stages together and runs the state machine."""

    def __init__(
        self,
        config: Config,
        env: Mapping[str, str] | None = None,
        *,
        daemon: bool = True,
        config_path: Path | None = None,
        link: MqttLink | None = None,
    ) -> None:
        """`daemon=False` (one-off CLI turns) neither announces status nor publishes state.

        `link`: the connection of the instance before a reload, still up (see `kept_link`).
        """
        env = os.environ if env is None else env
        self.env = env
        self.config = config
        self.root = config.topic_root
        self.daemon = daemon
        self.link_taken_over = link is not None
        self.link = link if link is not None else MqttLink(config.mqtt, self.root, will=daemon)
        self.registry = Registry(config.homeassistant)
        ha = config.homeassistant
        self.bridge = (
            ServiceBridge(ha.service_topic, self.send_command, ha.bridge_timeout_s) if ha.service_topic else None
        )
        self.house = House(config, self.link, self.registry, self.bridge)
        self.store = Store(config.device.state_dir)
        self.machine = StateMachine(config.wake.mode, bool(self.store.load().get("muted", False)), self._state_changed)
        self.state_published = False  # the state goes out once the daemon is ready
        clients = {stage: make_client(resolve(config, stage, env)) for stage in stages_in_use(config)}
        self.transcriber = Transcriber(config.stt, clients["stt"])
        self.home_tools = HomeTools(self.registry, self.publish_command, self.bridge)
        self.images = (
            ImagePublisher(ImageMaker(config.images, clients["images"]), self.root, self.link.publish)
            if config.images.enabled
            else None
        )
        self.agent = Agent(config.agent, config.device, clients["agent"], self.registry, self.agent_tools)
        self.fast_path = (
            FastPath(self.registry, config.device.language, area=config.device.area)
            if config.agent.local_intents
            else None
        )
        self.background: set[asyncio.Task[Any]] = set()
        self.voice = make_voice(config.tts, clients.get("tts"), config.device.language)
        self.card = SoundCard(config.audio.output_device)
        self.turns: asyncio.Queue[Turn] = asyncio.Queue(maxsize=32)
        self.mic_open_at = 0.0
        self.claims_topic = f"{config.mqtt.topic_prefix}/arbitration"
        # Requests go ahead of house traffic (see assistant.link.inbox); our own inputs are answered
        # `busy` when they cannot be taken.
        self.requests = {f"{self.root}/{name}" for name in INPUTS}
        priority = {*self.requests, self.claims_topic}
        if self.bridge is not None:
            priority.add(self.bridge.result_topic)
        self.link.messages.is_request = priority.__contains__
        self.listener = Listener(config, self)
        self.stop_speaking = asyncio.Event()
        self.current: asyncio.Task[None] | None = None
        self.current_turn: Turn | None = None
        self.held: list[Turn] = []  # turns taken over from the instance before a reload, or held back when stopping
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.config_path = config_path
        self.next_config: Config | None = None  # set by a valid SIGHUP reload
        self.kept_link: MqttLink | None = None  # after a reload: the connection the next instance takes over
        self._lost_reported = 0

    # --- outputs -------------------------------------------------------------

    @property
    def muted(self) -> bool:
        """Whether the microphone is muted (kept across restarts)."""
        return self.machine.muted

    def _state_changed(self, state: State) -> None:
        """The state machine moved: publish `<root>/state` (retained) and tell systemd."""
        if self.daemon and self.state_published:
            self.link.publish(f"{self.root}/state", state, retain=True)
            systemd.notify(f"STATUS={state}")

    def publish_state(self) -> None:
        """Start publishing the state (the daemon is ready), and publish it now."""
        self.state_published = True
        self._state_changed(self.machine.state)

    def on_connect(self) -> None:
        """After every (re)connect: our retained outputs and discovery, again."""
        if self.state_published:
            self.link.publish(f"{self.root}/state", self.machine.state, retain=True)
        self.link.publish(f"{self.root}/mute", "ON" if self.muted else "OFF", retain=True)
        self.house.announce()

    def set_muted(self, muted: bool) -> None:
        """Mute or unmute the microphone; remembered across restarts."""
        self.machine.handle(Event.MUTE if muted else Event.UNMUTE)
        if muted:
            self.listener.close()
        self.store.save(muted=muted)
        self.link.publish(f"{self.root}/mute", "ON" if muted else "OFF", retain=True)
        log.info("microphone %s", "muted" if muted else "unmuted")

    def error(self, request_id: str | None, code: str, message: str) -> None:
        """Publish `event/error`."""
        log.warning("%s: %s", code, message)
        self.link.event("error", {"id": request_id, "code": code, "message": message})

    def agent_tools(self) -> list[Tool]:
        """The home's tools, and the picture tool when images are on."""
        tools = self.home_tools.tools()
        if self.images is not None and self.config.images.tool:
            tools.append(self.images.tool())
        return tools

    async def generate_image(self, request: ImageRequest) -> None:
        """Serve `<prefix>/image/generate`; failures are answered on event/error."""
        assert self.images is not None
        try:
            await self.images.run(request)
        except openai.APIError as error:
            self.error(request.id, "api_error", f"images: {type(error).__name__}: {error}")
        except RuntimeError as error:
            self.error(request.id, "api_error", f"images: {error}")

    async def publish_command(self, command: Command) -> Delivery:
        """Publish an entity command; say truthfully whether the broker took it."""
        return await self.send_command(command.topic, command.payload, command.retain)

    async def send_command(self, topic: str, payload: str, retain: bool = False) -> Delivery:
        """A device command or bridge request, confirmed within mqtt.command_timeout_s."""
        return await self.link.send_command(topic, payload, retain=retain, timeout=self.config.mqtt.command_timeout_s)

    # --- turns ---------------------------------------------------------------

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
        speaking = asyncio.create_task(self.speak_pieces(pieces, request_id)) if speak and self.voice else None
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
            self.error(request_id, "api_error", f"agent: {type(error).__name__}: {error}")
            # what was already said and done stays reported; a half-written sentence is dropped
            reply = Reply(" ".join([*said, APOLOGY]), actions, usage, "api_error" if said else None)
            splitter = SentenceSplitter()
            pieces.put_nowait(APOLOGY)
        except BaseException:
            if speaking is not None:
                speaking.cancel()
            raise
        if reply.cut in CUT_SHORT:
            self.error(request_id, reply.cut, f"agent: {CUT_SHORT[reply.cut][0]}; {len(reply.text)} characters arrived")
            reply, ending = cut_short(reply, said)
            splitter = SentenceSplitter()  # the unfinished sentence is not spoken
            pieces.put_nowait(ending)
        for piece in splitter.flush():
            pieces.put_nowait(piece)
        pieces.put_nowait(None)
        self.publish_reply(request_id, reply, conversation_id)
        if speaking is not None:
            await speaking
        return reply

    def publish_reply(self, request_id: str, reply: Reply, conversation_id: str | None, **extra: str) -> None:
        """`event/action` for each action taken, then `event/reply` listing them all.

        An unconfirmed action is published again, with the same id and `"late": true`,
        once its fate is known (see assistant/link/delivery.py). `usage` is the tokens the API
        reported for the turn (zeros when no model was asked, null when the API reported
        none); `partial` is true for a cut-short answer.
        """
        for action in reply.actions:
            self.link.event("action", {"id": request_id, **action.as_dict()})
            if action.settled is not None:
                action.settled.add_done_callback(lambda fate: self.publish_settled(request_id, fate))
        actions = [a.as_dict() for a in reply.actions]
        self.link.event(
            "reply",
            {
                "id": request_id,
                "text": reply.text,
                "conversation_id": conversation_id,
                "actions": actions,
                "usage": reply.usage.as_dict(),
                "partial": reply.cut is not None,
                **extra,
            },
        )

    def publish_settled(self, request_id: str, fate: asyncio.Future[Action]) -> None:
        """The final outcome of an action reported as unconfirmed."""
        if fate.cancelled():
            return
        final = fate.result()
        log.info("%s %s settled late: %s", final.tool, final.entity_id, final.outcome)
        self.link.event("action", {"id": request_id, **final.as_dict(), "late": True})

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
        log.info("fast path: %s -> %s (%s)", fast.intent, [c[0] for c in fast.calls], outcome)
        self.agent.memory.remember(
            conversation_id, [{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}]
        )
        self.publish_reply(request_id, reply, conversation_id, intent=fast.intent)
        if speak:
            await self.speak(reply.text, request_id)
        return reply

    def complete_command(self, text: str) -> bool:
        """Whether `text` is already a whole command (the listener may stop waiting for more)."""
        return self.fast_path is not None and self.fast_path.match(text) is not None

    async def speak(self, text: str, request_id: str | None) -> None:
        """Speak a whole text (say, apologies)."""
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        splitter = SentenceSplitter()
        for piece in [*splitter.feed(text), *splitter.flush(), None]:
            pieces.put_nowait(piece)
        await self.speak_pieces(pieces, request_id)

    async def speak_pieces(self, pieces: asyncio.Queue[str | None], request_id: str | None) -> None:
        """Speak pieces of text as they come, through one output stream, until None.

        The next piece is synthesized while the current one plays, so sentences follow
        each other without a gap. Failures are reported, never fatal.
        """
        voice = self.voice
        if voice is not None:
            self.card.warm(voice.sample_rate)  # the stream opens while the first sentence is requested
        first = await pieces.get()
        if voice is None or first is None:
            return
        self.machine.handle(Event.SPEAK)
        self.stop_speaking.clear()
        audio: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def synthesize() -> None:
            piece: str | None = first
            try:
                while piece is not None:
                    async for chunk in voice.synthesize(piece):
                        audio.put_nowait(chunk)
                    piece = await pieces.get()
            finally:
                audio.put_nowait(None)

        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await audio.get()) is not None:
                yield chunk
            await producer  # re-raise a synthesis error here

        producer = asyncio.create_task(synthesize())
        try:
            await self.card.play(chunks(), lambda: voice.sample_rate, self.stop_speaking)
        except (openai.APIError, TtsError, OSError) as error:
            self.error(request_id, "tts_error", f"{type(error).__name__}: {error}")
        except Exception as error:
            self.error(request_id, "audio_error", f"{type(error).__name__}: {error}")
        finally:
            producer.cancel()
            self.mic_open_at = time.monotonic() + ECHO_TAIL_S

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
        """Transcribe an utterance and answer it aloud; return the transcript and reply."""
        try:
            text = await self.transcript_of(turn)
        except openai.APIError as error:
            self.error(turn.id, "api_error", f"stt: {type(error).__name__}: {error}")
            self.publish_reply(turn.id, Reply(APOLOGY), self.config.device.site_id)
            await self.speak(APOLOGY, turn.id)
            return "", Reply(APOLOGY)
        conversation_id = self.config.device.site_id
        self.link.event("transcript", {"id": turn.id, "text": text, "conversation_id": conversation_id})
        if not text:
            return "", None
        self.machine.handle(Event.ANSWER)
        reply = await self.answer(text, turn.id, conversation_id, speak=True)
        if self.config.wake.followup_s > 0 and self.config.wake.mode != "vad" and reply.text.rstrip().endswith("?"):
            self.listener.open("followup", turn.id, timeout_s=self.config.wake.followup_s)
        return text, reply

    async def handle(self, turn: Turn) -> None:
        """Run one turn of any kind; the state machine hears that it is done, however it ends.

        A text request that will not be spoken leaves the state alone: the device is free.
        """
        try:
            if isinstance(turn, VoiceTurn):
                await self.voice_turn(turn)
            elif isinstance(turn, SayTurn):
                self.machine.handle(Event.START)
                await self.speak(turn.text, turn.id)
            else:
                if turn.speak:
                    self.machine.handle(Event.START)
                await self.answer(turn.text, turn.id, turn.conversation_id, turn.speak)
        finally:
            self.machine.handle(Event.DONE)

    async def turn_worker(self) -> None:
        """Handle queued turns one after another; `cancel` aborts the running one.

        Once stopping, no new turn is started: what is left waits in `held` for the next
        instance (a reload) or is answered on event/error (a stop).
        """
        while not self.stopping.is_set():
            turn = self.held.pop(0) if self.held else await self.turns.get()
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
                self.error(turn.id, "internal_error", "the turn failed; see the log")
            finally:
                self.current = None
                self.current_turn = None

    def take_over(self, turns: list[Turn]) -> None:
        """Turns the instance before a reload had not started: they are handled first."""
        for turn in turns:
            if isinstance(turn, VoiceTurn) and turn.early is not None:
                turn.early.cancel()  # it used the old settings; transcribe again with the new ones
                turn.early = None
        self.held = [*turns, *self.held]

    def unfinished_turns(self) -> list[Turn]:
        """After run(): the turns not started, in order (the next instance takes them over)."""
        turns, self.held = self.held, []
        while not self.turns.empty():
            turns.append(self.turns.get_nowait())
        return turns

    def drop_unfinished(self, code: str, message: str) -> None:
        """Answer every turn that will not be handled on event/error, so none ends in silence."""
        for turn in self.unfinished_turns():
            self.error(turn.id, code, message)

    def submit(self, turn: Turn) -> None:
        """Queue a turn, or say why it cannot be taken."""
        try:
            self.turns.put_nowait(turn)
        except asyncio.QueueFull:
            self.error(turn.id, "busy", "too many requests waiting; try again shortly")

    # --- audio ---------------------------------------------------------------

    # --- listening (see Listener) -------------------------------------------

    def wake_event(self, data: dict[str, Any]) -> None:
        """Publish `event/wake`: listening started, and why."""
        self.link.event("wake", data)

    def publish_claim(self, claim: dict[str, Any]) -> None:
        """Tell the other devices on the broker how well we heard the wake word."""
        self.link.publish(self.claims_topic, json.dumps(claim), qos=0)

    def submit_utterance(self, utterance: Utterance, request_id: str, early: asyncio.Task[str] | None) -> None:
        """A spoken request is complete: queue it."""
        self.machine.handle(Event.UTTERANCE)
        self.submit(VoiceTurn(utterance.audio, utterance.sample_rate, request_id, early))

    def barge_in(self) -> None:
        """Stop speaking and drop the current turn: the user has something new to say."""
        self.stop_speaking.set()
        if self.current is not None:
            self.current.cancel()

    def transcribe(self, pcm: bytes, sample_rate: int) -> Coroutine[Any, Any, str]:
        """Transcription, for the listener's early (speculative) requests."""
        return self.transcriber.transcribe(pcm, sample_rate)

    def play_sound(self, name: str) -> None:
        """A short wake / done tone; the listener ignores the microphone while it plays."""
        tone = TONES[name]
        self.mic_open_at = max(self.mic_open_at, time.monotonic() + len(tone) / 2 / TONE_RATE + ECHO_TAIL_S)

        async def one_chunk() -> AsyncIterator[bytes]:
            yield tone

        task = asyncio.create_task(self.card.play(one_chunk(), lambda: TONE_RATE))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def capture(self, microphone: Microphone) -> None:
        """Hand every microphone frame to the listener."""
        microphone.on_trouble = self.audio_trouble
        async for frame in microphone.frames():
            self.listener.feed(frame)

    def audio_trouble(self, problem: str | None) -> None:
        """The microphone failed or came back: a reported condition, never a reason to restart.

        MQTT requests (ask, say) are served all along; `check` says when there is no microphone.
        """
        if problem is not None:
            self.error(None, "audio_error", f"{problem}; retrying with backoff")
            systemd.notify(f"STATUS={self.machine.state} (no microphone: {problem})")
        else:
            systemd.notify(f"STATUS={self.machine.state}")

    # --- MQTT inputs ---------------------------------------------------------

    def input_topics(self) -> list[str]:
        """Topics this daemon reads."""
        inputs = [f"{self.root}/{name}" for name in INPUTS]
        return [*inputs, self.claims_topic, *self.house.topics()]

    async def dispatch(self) -> None:
        """Route incoming MQTT messages: requests first, house traffic in slices between them.

        A slice of house traffic (discovery configs, states) is followed by a look at the
        requests and a turn of the loop, so microphone frames and requests never wait for a
        discovery storm to be read (see assistant.link.inbox).
        """
        inbox = self.link.messages
        while True:
            await inbox.wait()
            self.serve_requests()
            house = inbox.take_house()
            done = 0
            while done < len(house):
                until = time.monotonic() + HOUSE_SLICE_S
                while done < len(house) and time.monotonic() < until:
                    self.route(house[done])
                    done += 1
                self.house.flush()
                await asyncio.sleep(0)  # frames, turns and timers run here
                self.serve_requests()

    def serve_requests(self) -> None:
        """Handle every waiting request, and answer `busy` to those that did not fit."""
        refused, lost = self.link.messages.take_refused()
        for message in refused:
            self.refuse(message)
        if lost > self._lost_reported:
            log.error("%d requests dropped without an answer: the input queue stayed full", lost - self._lost_reported)
            self._lost_reported = lost
        for message in self.link.messages.take_requests():
            self.route(message)

    def refuse(self, message: Message) -> None:
        """A request that arrived while too many were waiting: `event/error` busy, with its id if readable."""
        if message.topic not in self.requests:  # a claim or a bridge result: nobody to answer
            log.warning("input queue full; dropped a message on %s", message.topic)
            return
        signal = message.topic.endswith(("/listen", "/cancel"))  # where a plain-text payload is an id
        self.error(request_id_of(message.payload, signal), "busy", f"{message.topic}: too many requests waiting")

    def route(self, message: Message) -> None:
        """Handle one message; a bad payload is answered on event/error."""
        try:
            self.on_message(message)
        except BadRequest as error:
            self.error(error.request_id, "bad_request", f"{message.topic}: {error}")
        except Exception:  # one bad message must not end the dispatcher: report it and go on
            log.exception("handling a message on %s failed", message.topic)
            self.error(None, "internal_error", f"{message.topic}: the message could not be handled")

    def on_message(self, message: Message) -> None:
        """Handle one MQTT message."""
        if message.topic == self.claims_topic:
            self.listener.on_claim(message.payload)
            return
        if not message.topic.startswith(self.root + "/"):
            self.house.handle(message)
            return
        name = message.topic.removeprefix(self.root + "/")
        if name == "ask":
            self.submit(parse_text_request(message.payload, speak_default=False))
        elif name == "say":
            request = parse_text_request(message.payload, speak_default=True)
            self.submit(SayTurn(request.text, request.id))
        elif name == "listen":
            request_id = parse_signal(message.payload)
            if self.muted:
                raise BadRequest("the microphone is muted", request_id)
            if self.machine.busy:
                self.barge_in()  # as if the wake word was heard: the new request replaces the current one
            self.listener.open("mqtt", request_id)
        elif name == "cancel":
            parse_signal(message.payload)
            self.machine.handle(Event.CANCEL)
            self.listener.close()
            self.stop_speaking.set()
            if self.current is not None:
                self.current.cancel()
        elif name == "mute/set":
            self.set_muted(parse_switch(message.payload))
        elif name == "image/generate":
            image_request = parse_image_request(message.payload)
            if self.images is None:
                raise BadRequest("image generation is off (set [images] enabled = true)", image_request.id)
            task = asyncio.create_task(self.generate_image(image_request))
            self.background.add(task)  # image generation takes a while: it must not hold up voice turns
            task.add_done_callback(self.background.discard)
        else:
            self.house.handle(message)  # e.g. a state topic that happens to sit under our prefix

    # --- lifecycle -----------------------------------------------------------

    async def verify_credentials(self) -> bool:
        """Check each stage's endpoint and key before READY.

        A rejected key is permanent: report it and exit (EXIT_CREDENTIALS). An unreachable
        endpoint is transient: retry with backoff until it answers or we are stopped.
        """
        pending = {stage: resolve(self.config, stage, self.env) for stage in stages_in_use(self.config)}
        backoff = 1.0
        while pending and not self.stopping.is_set():
            results = await asyncio.gather(*(verify(api) for api in pending.values()), return_exceptions=True)
            for (stage, api), result in zip(list(pending.items()), results, strict=True):
                if isinstance(result, str):
                    log.info("%s: %s %s (%s)", stage, api.provider, api.endpoint, result)
                    del pending[stage]
                elif isinstance(result, CredentialError):
                    log.error("%s: %s; fix the key or endpoint and restart", stage, result)
                    self.error(None, "credentials", f"{stage}: {result}")
                    self.exit_code = EXIT_CREDENTIALS
                    return False
                else:
                    log.warning("%s: %s not reachable (%s); retrying in %.0f s", stage, api.endpoint, result, backoff)
            if pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self.stopping.wait()
                backoff = min(backoff * 2, 60.0)
        return not self.stopping.is_set()

    def _critical_task_done(self, task: asyncio.Task[None]) -> None:
        """A loop that ends by itself is a bug: log it and stop, so systemd restarts us."""
        if task.cancelled() or self.stopping.is_set():
            return
        error = task.exception()
        log.critical("%s ended unexpectedly", task.get_coro(), exc_info=error)
        self.exit_code = 1
        self.stopping.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config; switch to it only if it is valid, else keep running."""
        if self.config_path is None:
            log.warning("SIGHUP: no config file to reload")
            return
        if self.stopping.is_set() and self.next_config is None:
            log.warning("SIGHUP: already stopping; not reloading")
            return
        try:
            self.next_config = load_config(self.config_path, self.env)
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload refused: %s", problem)  # noqa: TRY400 - a bad file, not a crash
            self.error(None, "config", "reload refused: " + "; ".join(error.problems))
            return
        log.info("reloading %s", self.config_path)
        self.stopping.set()

    def request_stop(self) -> None:
        """SIGTERM / SIGINT: stop, even when a reload was under way."""
        self.next_config = None
        self.stopping.set()

    async def finish_current_turn(self) -> None:
        """On stop or reload, let the turn under way finish (within FINISH_REPLY_S), then cut it.

        Stopping mid-word, or dropping a request without a word, would leave the user with
        nothing; a turn that had to be cut is answered on event/error.
        """
        current, turn = self.current, self.current_turn
        if current is None or turn is None:
            return
        log.info("finishing the current turn before %s", "reloading" if self.next_config else "stopping")
        await asyncio.wait({current}, timeout=FINISH_REPLY_S)
        if not current.done():
            current.cancel()
            await asyncio.wait({current}, timeout=STOP_TASKS_TIMEOUT_S)
            code, why = ("reloading", "a reload") if self.next_config is not None else ("stopping", "a stop")
            self.error(turn.id, code, f"cut short by {why}: the request was still running after {FINISH_REPLY_S:.0f} s")

    async def until_connected_or_stopped(self) -> bool:
        """Wait for the broker, but give way to SIGTERM: True once connected."""
        waits = [asyncio.create_task(self.link.connected.wait()), asyncio.create_task(self.stopping.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        return self.link.connected.is_set() and not self.stopping.is_set()

    async def watchdog(self, interval_s: float) -> None:
        """Pet systemd's watchdog while this event loop runs: that is what liveness means.

        A hung loop stops petting and systemd restarts the daemon. A missing or stalled
        microphone does not: it is reported (`audio_error`) and retried, and MQTT requests
        are still served.
        """
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)

    async def run(self, audio: bool = True) -> int:
        """Run until SIGTERM / SIGINT (or a SIGHUP reload); READY once the broker and audio are up."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.link.subscribe(self.input_topics())
        self.link.on_connect.append(self.on_connect)
        if self.link_taken_over:
            # Still connected and subscribed since before the reload: nothing sent meanwhile was
            # missed. The new registry needs the retained discovery configs and states again.
            self.link.resubscribe(self.house.topics())
            if self.link.connected.is_set():
                self.on_connect()
        else:
            log.info("connecting to the broker at %s:%d", self.config.mqtt.host, self.config.mqtt.port)
            await self.link.start(timeout=None)
        if not await self.until_connected_or_stopped():
            self.link.stop()
            return self.exit_code
        coroutines: list[Coroutine[Any, Any, None]] = [self.dispatch(), self.turn_worker()]
        microphone = None
        if audio:
            microphone = Microphone(
                self.card,
                self.config.audio.input_device,
                self.config.audio.sample_rate,
                self.config.audio.frame_ms,
                self.config.audio.input_gain,
            )
            coroutines.append(self.capture(microphone))
        watchdog_usec = int(self.env.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec and self.env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
            coroutines.append(self.watchdog(watchdog_usec / 1e6 / 2))
        if not await self.verify_credentials():
            if self.exit_code == EXIT_CREDENTIALS:
                self.drop_unfinished("credentials", "an API key was rejected; this request was not handled")
            elif self.next_config is None:
                self.drop_unfinished("stopping", STOPPING)
            self.link.stop()
            return self.exit_code
        tasks = [asyncio.create_task(c) for c in coroutines]
        for task in tasks:
            task.add_done_callback(self._critical_task_done)
        self.publish_state()
        systemd.notify("READY=1")
        log.info("ready: %s (mode %s)", self.root, self.config.wake.mode)
        await self.stopping.wait()
        await self.wind_down(tasks, microphone)
        return self.exit_code

    async def wind_down(self, tasks: list[asyncio.Task[None]], microphone: Microphone | None) -> None:
        """Stop (SIGTERM) or hand over to the next instance (SIGHUP) without losing a request.

        The turn under way finishes (within FINISH_REPLY_S); turns not started go to the next
        instance on a reload and are answered on event/error on a stop.
        """
        if self.next_config is None:
            systemd.notify("STOPPING=1")
            log.info("stopping")
        else:  # systemd then waits for the READY=1 of the next instance
            systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        faulthandler.dump_traceback_later(STOP_STACKS_AFTER_S + FINISH_REPLY_S, exit=False)  # a hang shows where
        await self.finish_current_turn()
        for task in tasks:
            task.cancel()
        if self.current is not None:
            self.current.cancel()
        _done, pending = await asyncio.wait(tasks, timeout=STOP_TASKS_TIMEOUT_S)
        if pending:
            log.error("tasks did not stop in time: %s", [t.get_coro() for t in pending])
        if self.next_config is None:
            self.drop_unfinished("stopping", STOPPING)
        if microphone is not None:
            microphone.close()
        self.card.close()
        following = self.next_config
        if following is not None and following.mqtt == self.config.mqtt and following.topic_root == self.root:
            # The next instance keeps this connection: no request sent during the reload is
            # missed and Home Assistant never sees the device offline. A changed [mqtt] reconnects.
            self.link.on_connect.remove(self.on_connect)  # the next instance announces itself
            self.kept_link = self.link
        else:
            self.link.stop()
        faulthandler.cancel_dump_traceback_later()


def request_id_of(payload: bytes, signal: bool = False) -> str | None:
    """The `id` of a JSON request (or of a plain-text `signal`: listen, cancel), if it can be read."""
    try:
        data = decode_payload(payload)
        if isinstance(data, dict):
            return optional_str(data, "id", None)
    except BadRequest:
        return None
    return data if signal and isinstance(data, str) and 0 < len(data) <= 64 else None


def describe_reply(reply: Reply) -> str:
    """Reply text and actions, as the CLI prints them."""
    return "\n".join([reply.text] + [f"  action: {json.dumps(a.as_dict())}" for a in reply.actions])
