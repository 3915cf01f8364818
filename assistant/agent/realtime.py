"""Speech to speech over the OpenAI / Azure Realtime API: one session per spoken request.

A `Session` opens when listening starts (the wake word, `listen`, or speech in "vad"
mode), so the WebSocket handshake overlaps the request being spoken. Microphone audio is
appended as it is heard (resampled to the API's 24 kHz pcm); the request ends by the
daemon's segmenter (a manual commit) or by the server's VAD; the reply streams back as
audio deltas while its function calls run through the chat agent's own tools
(`Agent.run_tool`: the same `expose` allowlist, the same outcomes). The session is closed
after its turn; the next request opens a new one that is given the remembered turns (the
chat agent's `Memory`), so memory follows one set of rules in both modes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.resources.realtime.realtime import AsyncRealtimeConnection, AsyncRealtimeConnectionManager
from openai.types.realtime import RealtimeServerEvent
from websockets.exceptions import InvalidStatus, WebSocketException

from assistant.agent.conversation import Agent, ToolCall, Usage
from assistant.agent.memory import Message
from assistant.agent.tools import Action, Tool
from assistant.audio.pcm import Resampler
from assistant.config import RealtimeConfig

log = logging.getLogger(__name__)

RATE = 24000  # the API's audio/pcm rate, both ways
SERVER_COMMIT_WAIT_S = 1.5  # server VAD: after our segmenter ended the request, how long the server may still take
TRANSCRIPT_WAIT_S = 3.0  # after the reply, how long the request's transcript may still take
CLOSE_WAIT_S = 1.0
BENIGN = {"response_cancel_not_active", "conversation_already_has_active_response", "input_audio_buffer_commit_empty"}
INCOMPLETE = {"max_output_tokens": "reply_truncated", "content_filter": "content_filtered"}


class RealtimeFailure(Exception):
    """The session could not answer: a refused or dropped connection, an error event, a failed response."""


@dataclass
class Answer:
    """What a session did for one request, as far as it got (also after a failure)."""

    transcript: str | None = None  # what the user said (None: no transcription, or not arrived)
    text: str = ""  # the reply's audio transcript
    audio_bytes: int = 0  # reply audio received (24 kHz pcm16)
    actions: list[Action] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    messages: list[Message] = field(default_factory=list)  # tool rounds, in the chat format Memory keeps
    cut: str | None = None  # reply_truncated, content_filtered


def flat_tool(tool: Tool) -> dict[str, Any]:
    """A tool as the Realtime API takes it: flat, not wrapped in `function` as chat completions are."""
    return {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters}


def session_settings(config: RealtimeConfig, instructions: str, tools: list[Tool]) -> dict[str, Any]:
    """The GA `session.update` body: audio settings under audio.input / audio.output."""
    pcm = {"type": "audio/pcm", "rate": RATE}
    detection = None
    if config.turn_detection == "server":
        detection = {
            "type": "server_vad",
            "silence_duration_ms": config.server_silence_ms,
            "create_response": True,
            "interrupt_response": False,  # the device is deaf while it speaks; a barge-in is the wake word
        }
    audio_in: dict[str, Any] = {"format": pcm, "turn_detection": detection}
    if config.transcription_model:
        audio_in["transcription"] = {"model": config.transcription_model}
    if config.noise_reduction:
        audio_in["noise_reduction"] = {"type": config.noise_reduction}
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {"input": audio_in, "output": {"format": pcm, "voice": config.voice}},
    }
    if tools:
        session["tools"] = [flat_tool(t) for t in tools]
        session["tool_choice"] = "auto"
    if config.max_output_tokens:
        session["max_output_tokens"] = config.max_output_tokens
    return session


def history_items(messages: list[Message]) -> list[dict[str, Any]]:
    """Remembered chat-format turns as Realtime conversation items."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "user":
            items.append(_message("user", "input_text", str(message.get("content") or "")))
        elif role == "assistant":
            if message.get("content"):
                items.append(_message("assistant", "output_text", str(message["content"])))
            for call in message.get("tool_calls") or []:
                function = call["function"]
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": function["name"],
                        "arguments": function["arguments"],
                    }
                )
        elif role == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message["tool_call_id"], "output": message["content"]}
            )
    return items


def _message(role: str, kind: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def heard(text: str, played_s: float, total_s: float) -> str:
    """The part of a reply that was played before a barge-in, by its share of the audio (whole words)."""
    if total_s <= 0 or played_s >= total_s:
        return text
    words = text.split()
    return " ".join(words[: round(len(words) * max(0.0, played_s) / total_s)])


def describe(error: BaseException) -> str:
    """A failure as event/error says it."""
    if isinstance(error, InvalidStatus):
        return f"the Realtime endpoint refused the connection: HTTP {error.response.status_code}"
    if isinstance(error, WebSocketException):
        return f"the Realtime connection dropped ({error})"
    return f"{type(error).__name__}: {error}"


class Session:
    """One Realtime conversation for one spoken request.

    `start` connects in the background; `append` and `clear` may be called before the
    connection is up (they are queued, in order). `respond` ends the request, plays nothing
    itself (`on_audio` gets the reply pcm as it arrives) and returns the `Answer`.
    `on_server_commit` is told when the server's VAD ended the request.
    """

    def __init__(
        self,
        config: RealtimeConfig,
        connect: Callable[[], AsyncRealtimeConnectionManager],
        agent: Agent,
        conversation_id: str | None,
        input_rate: int,
        on_server_commit: Callable[[], None] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """`timeout_s`: the longest wait for the service's next event while a request is answered."""
        self.config = config
        self.timeout_s = timeout_s
        self.connect = connect
        self.agent = agent
        tools = agent.tools() if agent.config.control_home_assistant else []
        self.tools = {tool.name: tool for tool in tools}
        self.settings = session_settings(config, agent.instructions(), tools)
        self.conversation_id = conversation_id
        self.resampler = Resampler(input_rate, RATE) if input_rate != RATE else None
        self.on_server_commit = on_server_commit
        self.outgoing: asyncio.Queue[str | None] = asyncio.Queue()
        self.incoming: asyncio.Queue[RealtimeServerEvent | RealtimeFailure] = asyncio.Queue()
        self.server_committed = asyncio.Event()
        self.answer = Answer()
        self.audio_item: str | None = None  # the reply's audio item, for a truncation
        self.responding = False
        self.closing = False
        self.task: asyncio.Task[None] | None = None

    # --- the connection ---------------------------------------------------------

    def start(self) -> None:
        """Connect and set the session up, in the background."""
        self.task = asyncio.create_task(self._run())

    @property
    def failed(self) -> bool:
        """The connection ended: this session cannot take a request any more."""
        return self.task is not None and self.task.done()

    async def _run(self) -> None:
        try:
            async with self.connect() as conn:
                await conn.send_raw(json.dumps({"type": "session.update", "session": self.settings}))
                sender = asyncio.create_task(self._send(conn))
                try:
                    async for event in conn:
                        if event.type == "input_audio_buffer.committed":
                            self.server_committed.set()
                            if self.on_server_commit is not None:
                                self.on_server_commit()
                        self.incoming.put_nowait(event)
                finally:
                    sender.cancel()
                if not self.closing:
                    self.incoming.put_nowait(RealtimeFailure("the Realtime service closed the session"))
        except (WebSocketException, OSError, TimeoutError, openai.OpenAIError) as error:
            if not self.closing:
                log.warning("realtime: %s", describe(error))
                self.incoming.put_nowait(RealtimeFailure(describe(error)))
        except Exception as error:  # whatever it was, the turn waiting on this session must hear of it
            log.exception("realtime: the session failed")
            self.incoming.put_nowait(RealtimeFailure(describe(error)))

    async def _send(self, conn: AsyncRealtimeConnection) -> None:
        with contextlib.suppress(WebSocketException, OSError):  # a lost connection: the reader reports it
            while (data := await self.outgoing.get()) is not None:
                await conn.send_raw(data)
            await conn.close()

    def send(self, event: dict[str, Any]) -> None:
        """Queue one client event (sent in order once connected)."""
        self.outgoing.put_nowait(json.dumps(event))

    def append(self, pcm: bytes) -> None:
        """Microphone audio (pcm16 at the input rate) for the request (dropped once the connection ended)."""
        if self.failed:
            return
        audio = self.resampler.process(pcm) if self.resampler is not None else pcm
        if audio:
            self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode("ascii")})

    def clear(self) -> None:
        """Forget the audio appended so far (speech started again)."""
        self.send({"type": "input_audio_buffer.clear"})

    async def close(self) -> None:
        """Send what is queued, then close; never raises."""
        self.closing = True
        self.outgoing.put_nowait(None)
        if self.task is not None:
            await asyncio.wait({self.task}, timeout=CLOSE_WAIT_S)
            self.task.cancel()

    # --- a request ----------------------------------------------------------------

    async def respond(
        self, on_audio: Callable[[bytes], None], on_transcript: Callable[[str], None], commit_now: bool = False
    ) -> Answer:
        """End the request, run the reply's tool rounds, and return the answer.

        `commit_now`: the whole request is appended already (a replay): commit it without
        waiting for the server's VAD. Raises RealtimeFailure; `self.answer` then holds what
        was done and said before it.
        """
        self.recall()
        if self.config.turn_detection == "server" and not commit_now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server_committed.wait(), SERVER_COMMIT_WAIT_S)
        if not self.server_committed.is_set():
            self.send({"type": "input_audio_buffer.commit"})
            self.send({"type": "response.create"})
        answer = self.answer
        for _ in range(self.agent.config.max_tool_iterations):
            calls = await self._one_response(on_audio, on_transcript)
            if not calls:
                break
            answer.messages.append({"role": "assistant", "content": None, "tool_calls": [_chat_call(c) for c in calls]})
            for call in calls:
                result = await self.agent.run_tool(self.tools, call, answer.actions)
                answer.messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
                output = {"type": "function_call_output", "call_id": call.id, "output": result}
                self.send({"type": "conversation.item.create", "item": output})
            self.send({"type": "response.create"})
        else:
            log.warning("realtime: the tool loop reached its cap of %d rounds", self.agent.config.max_tool_iterations)
        if self.config.transcription_model and answer.transcript is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRANSCRIPT_WAIT_S):
                    while answer.transcript is None:
                        self._take(await self._next(), on_audio, on_transcript, [])
        return answer

    def recall(self) -> None:
        """The remembered turns, put first in the conversation (before the request, even if already committed).

        Read when the turn starts, not when the session opened: a reply cut by a barge-in is
        remembered as heard just before the request that cut it is answered.
        """
        previous = "root"
        for number, item in enumerate(history_items(self.agent.memory.history(self.conversation_id))):
            item_id = f"memory_{id(self):x}_{number}"[-32:]
            self.send(
                {"type": "conversation.item.create", "previous_item_id": previous, "item": {"id": item_id, **item}}
            )
            previous = item_id

    async def _next(self) -> RealtimeServerEvent:
        try:
            async with asyncio.timeout(self.timeout_s):
                event = await self.incoming.get()
        except TimeoutError:
            raise RealtimeFailure(f"no word from the Realtime service for {self.timeout_s:g} s") from None
        if isinstance(event, RealtimeFailure):
            raise event
        return event

    async def _one_response(
        self, on_audio: Callable[[bytes], None], on_transcript: Callable[[str], None]
    ) -> list[ToolCall]:
        """Read events up to the end of one response; return its function calls."""
        calls: list[ToolCall] = []
        self.responding = True  # until response.done: a barge-in meanwhile cancels it
        while True:
            event = await self._next()
            if event.type == "response.done":
                response = event.response
                break
            self._take(event, on_audio, on_transcript, calls)
        self.responding = False
        if response.usage is not None:
            usage, details = self.answer.usage, response.usage.input_token_details
            usage.requests += 1
            usage.reported += 1
            usage.prompt_tokens += response.usage.input_tokens or 0
            usage.completion_tokens += response.usage.output_tokens or 0
            usage.cached_tokens += (details.cached_tokens or 0) if details is not None else 0
        status = response.status_details
        if response.status == "failed":
            error = status.error if status is not None else None
            code = (error.code or error.type) if error is not None else None
            raise RealtimeFailure(f"the response failed ({code}: {error.message if error else 'no details'})")
        if response.status == "incomplete":
            reason = status.reason if status is not None else None
            self.answer.cut = INCOMPLETE.get(reason or "", "stream_cut")
            return []
        if response.status == "cancelled":
            return []
        return calls

    def _take(
        self,
        event: RealtimeServerEvent,
        on_audio: Callable[[bytes], None],
        on_transcript: Callable[[str], None],
        calls: list[ToolCall],
    ) -> None:
        """One server event of a response, or of the request's transcription."""
        answer = self.answer
        if event.type == "response.output_audio.delta":
            audio = base64.b64decode(event.delta)
            self.audio_item = event.item_id
            answer.audio_bytes += len(audio)
            on_audio(audio)
        elif event.type == "response.output_audio_transcript.delta":
            answer.text += event.delta
        elif event.type == "response.output_item.done" and event.item.type == "function_call":
            item = event.item
            calls.append(ToolCall(item.call_id or item.id or "", item.name or "", item.arguments or ""))
        elif event.type == "conversation.item.input_audio_transcription.completed":
            answer.transcript = event.transcript.strip()
            on_transcript(answer.transcript)
        elif event.type == "conversation.item.input_audio_transcription.failed":
            log.warning("realtime: the request's transcription failed: %s", event.error)
            answer.transcript = ""
        elif event.type == "error":
            if event.error.code in BENIGN:
                log.debug("realtime: %s", event.error.message)
                return
            raise RealtimeFailure(f"{event.error.code or event.error.type}: {event.error.message}")

    async def interrupt(self, played_s: float) -> None:
        """A barge-in: stop the response, and cut the reply where the listener stopped hearing it."""
        if self.responding:
            self.send({"type": "response.cancel"})
        if self.audio_item is not None:
            truncate = {"item_id": self.audio_item, "content_index": 0, "audio_end_ms": int(played_s * 1000)}
            self.send({"type": "conversation.item.truncate", **truncate})
        await self.close()


def _chat_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
