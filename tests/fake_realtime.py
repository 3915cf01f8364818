"""A local OpenAI / Azure OpenAI Realtime server for tests: the GA event protocol over a WebSocket.

It is a real WebSocket server (the ``websockets`` package the SDK's ``realtime`` extra
brings) that the real ``openai`` realtime client connects to, unmocked:

* URL shapes: ``/v1/realtime?model=M`` (OpenAI, ``Authorization: Bearer KEY``) and
  ``/openai/realtime?api-version=V&deployment=D`` (Azure, ``api-key`` header or an AD token
  as bearer). A wrong key, path or missing parameter is refused before the upgrade (401 /
  404 / 400), as is a connection while :attr:`FakeRealtime.refuse_status` is set (a 429).
* client events: ``session.update`` (checked like the real server: ``type`` must be
  ``realtime``, audio ``audio/pcm`` at 24 kHz), ``input_audio_buffer.append`` / ``commit`` /
  ``clear``, ``conversation.item.create`` (messages and ``function_call_output``),
  ``conversation.item.truncate``, ``response.create`` and ``response.cancel``.
* server events: ``session.created`` / ``updated``, ``input_audio_buffer.committed`` /
  ``cleared`` / ``speech_started`` / ``speech_stopped`` (server VAD, by frame energy),
  ``conversation.item.added`` / ``done``, input transcription ``delta`` / ``completed``,
  ``response.created``, ``response.output_item.added`` / ``done``,
  ``response.output_audio.delta`` (espeak-ng speech as base64 24 kHz pcm) with
  ``response.output_audio_transcript.delta``, ``response.function_call_arguments.delta`` /
  ``done``, ``response.done`` (completed, cancelled or failed), ``conversation.item.truncated``,
  ``rate_limits.updated`` and ``error``.
* scripting: :attr:`responder` answers each ``response.create`` from the conversation so
  far (else :attr:`script`, else "OK."); :attr:`transcript` is what the user "said";
  delays (:attr:`first_audio_delay_s`); faults (:meth:`fail_next_response` with a rate
  limit or any error, :meth:`drop_at` to cut the socket at an event, :meth:`expire` to end
  every session). Every client event is recorded (:class:`Recorded`) before it is handled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from fake_openai import synth_pcm
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

RATE = 24000
MODELS = ("gpt-realtime-2.1-mini", "gpt-realtime-2.1", "gpt-4o-mini-transcribe")
AUDIO_CHUNK_BYTES = 4800  # 100 ms of 24 kHz pcm16 a delta
RATE_LIMIT = ("rate_limit_exceeded", "Rate limit reached for gpt-realtime-2.1-mini. Please try again in 2s.")
EXPIRED = ("session_expired", "Your session hit the maximum duration of 60 minutes.")


@dataclass
class RealtimeReply:
    """One scripted response: spoken ``text`` and/or ``tool_calls`` of (name, arguments)."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)


@dataclass
class Recorded:
    """One client event as the server saw it, with its connection's request."""

    connection: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    event: dict[str, Any]
    t: float  # time.monotonic() when it arrived

    @property
    def type(self) -> str:
        return str(self.event.get("type"))


@dataclass
class _Session:
    """One connection's state."""

    number: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=bytearray)
    items: list[dict[str, Any]] = field(default_factory=list)
    heard: dict[str, str] = field(default_factory=dict)  # audio item id -> what was said in it
    stalled: bool = False
    response: asyncio.Task[None] | None = None
    speaking: bool = False  # server VAD: speech under way
    quiet_ms: float = 0.0
    counter: int = 0

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.number}_{self.counter}"

    @property
    def server_vad(self) -> dict[str, Any] | None:
        detection = self.config.get("audio", {}).get("input", {}).get("turn_detection", {"type": "server_vad"})
        return detection if detection and detection.get("type") in ("server_vad", "semantic_vad") else None

    @property
    def transcription(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.config.get("audio", {}).get("input", {}).get("transcription")
        return result


class FakeRealtime:
    """The server, on its own thread and event loop; use as a context manager."""

    def __init__(self, api_key: str = "test-key", host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-realtime", daemon=True)
        self._server: Server | None = None
        self._sessions: dict[int, tuple[_Session, ServerConnection]] = {}
        self._lock = threading.Lock()
        self._connections = 0
        self._speech: dict[str, bytes] = {}  # espeak-ng renderings, kept: synthesis is not the server's delay
        self.reset()

    # --- control, from the test thread ----------------------------------------

    def reset(self) -> None:
        """Forget events, script, faults and delays."""
        with self._lock:
            self.events: list[Recorded] = []
            self.sent: list[tuple[int, dict[str, Any], float]] = []  # (connection, server event, monotonic time)
            self.handshakes: list[tuple[str, dict[str, str]]] = []  # (path with query, headers) of every attempt
        self.script: list[RealtimeReply] = []
        self.responder: Callable[[list[dict[str, Any]]], RealtimeReply] | None = None
        self.transcript = ""
        self.first_audio_delay_s = 0.0
        self.audio_chunk_delay_s = 0.0  # between audio deltas (0: as fast as the socket takes them)
        self.transcription_delay_s = 0.0
        self.refuse_status: int | None = None  # answer every handshake with this status
        self._response_faults: list[tuple[str, str, str]] = []  # (how, code, message)
        self._drops: list[tuple[str, str]] = []  # (server event type, "drop" or "expire"), once each

    def fail_next_response(self, code: str = RATE_LIMIT[0], message: str = RATE_LIMIT[1], how: str = "failed") -> None:
        """The next response.create fails: ``how`` "failed" (response.done failed) or "error" (an error event)."""
        self._response_faults.append((how, code, message))

    def drop_at(self, event_type: str, how: str = "drop") -> None:
        """Instead of the next server event of this type: cut the socket (no close frame); with
        ``how="expire"`` end the session as at its time limit (an error, then a close); with
        ``how="stall"`` send nothing more on that connection, which stays open."""
        if how not in ("drop", "expire", "stall"):
            raise ValueError(f"drop_at: how must be drop, expire or stall, not {how!r}")
        self._drops.append((event_type, how))

    def expire(self) -> None:
        """End every open session as the real server does at its time limit: an error, then a close."""
        for session, ws in list(self._sessions.values()):
            asyncio.run_coroutine_threadsafe(self._expire(session, ws), self._loop).result(5)

    def of(self, event_type: str) -> list[Recorded]:
        """The client events of one type received so far."""
        with self._lock:
            return [e for e in self.events if e.type == event_type]

    def server_events(self, event_type: str) -> list[dict[str, Any]]:
        """The server events of one type sent so far."""
        with self._lock:
            return [event for _n, event, _t in self.sent if event["type"] == event_type]

    def sent_at(self, event_type: str) -> list[float]:
        """When each server event of one type was sent (time.monotonic())."""
        with self._lock:
            return [t for _n, event, t in self.sent if event["type"] == event_type]

    def wait_for(self, event_type: str, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """Until at least `count` client events of this type have arrived."""
        deadline = time.monotonic() + timeout
        while len(found := self.of(event_type)) < count:
            if time.monotonic() > deadline:
                got = [e.type for e in self.events]
                raise AssertionError(f"{count} x {event_type} not received in {timeout} s; got {got}")
            time.sleep(0.01)
        return found

    @property
    def openai_url(self) -> str:
        """The `base_url` for `AsyncOpenAI` (http; the SDK makes it ws)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def azure_url(self) -> str:
        """The `azure_endpoint` for `AsyncAzureOpenAI` (it needs `websocket_base_url` = `azure_ws_url`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def azure_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/openai"

    # --- lifecycle ------------------------------------------------------------

    def __enter__(self) -> Self:
        self._thread.start()

        async def start() -> Server:
            return await serve(self._serve, self.host, 0, process_request=self._check, max_size=None)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                with contextlib.suppress(TimeoutError):  # a client that never closes does not hold the tests up
                    await asyncio.wait_for(self._server.wait_closed(), 3)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- the handshake ---------------------------------------------------------

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse a bad URL or key before the upgrade, with the status the real service gives."""
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query))
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        with self._lock:
            self.handshakes.append((request.path, headers))
        if self.refuse_status is not None:
            return _refuse(connection, self.refuse_status, "rate_limit_exceeded", RATE_LIMIT[1])
        if re.fullmatch(r"/v1/models|/openai(/deployments/[^/]+)?/models", url.path):  # the credential check (HTTP)
            if not self._authorized(headers, azure=url.path.startswith("/openai")):
                return _refuse(connection, 401, "invalid_api_key", "Incorrect API key provided.")
            models = [{"id": m, "object": "model", "owned_by": "system"} for m in MODELS]
            return _answer(connection, 200, {"object": "list", "data": models})
        if url.path == "/v1/realtime":
            if not query.get("model"):
                return _refuse(connection, 400, "missing_model", "Missing required parameter: 'model'.")
            if not self._authorized(headers, azure=False):
                return _refuse(connection, 401, "invalid_api_key", "Incorrect API key provided.")
        elif url.path == "/openai/realtime":
            if not query.get("api-version") or not query.get("deployment"):
                return _refuse(connection, 400, "missing_parameter", "api-version and deployment are required.")
            if not self._authorized(headers, azure=True):
                return _refuse(connection, 401, "invalid_api_key", "Access denied due to invalid subscription key.")
        else:
            return _refuse(connection, 404, "not_found", f"No realtime endpoint at {url.path}.")
        return None

    def _authorized(self, headers: dict[str, str], azure: bool) -> bool:
        bearer = headers.get("authorization") == f"Bearer {self.api_key}"
        return bearer or (azure and headers.get("api-key") == self.api_key)

    # --- a connection ----------------------------------------------------------

    async def _serve(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        with self._lock:
            self._connections += 1
            number = self._connections
        headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        session = _Session(number, url.path, dict(parse_qsl(url.query)), headers)
        session.config = {"type": "realtime", "model": session.query.get("model") or session.query.get("deployment")}
        self._sessions[number] = (session, ws)
        try:
            await self._send(session, ws, {"type": "session.created", "session": session.config})
            async for message in ws:
                event = json.loads(message)
                with self._lock:
                    self.events.append(Recorded(number, session.path, session.query, headers, event, time.monotonic()))
                await self._handle(session, ws, event)
        except ConnectionClosed:
            pass
        finally:
            if session.response is not None:
                session.response.cancel()
            self._sessions.pop(number, None)

    async def _send(self, session: _Session, ws: ServerConnection, event: dict[str, Any]) -> None:
        event = {"event_id": session.new_id("event"), **event}
        fault = next((f for f in self._drops if f[0] == event["type"]), None)
        if fault is not None and fault[1] == "stall":
            self._drops.remove(fault)
            session.stalled = True
        if session.stalled:
            return  # the connection stays up, but nothing comes from the server any more
        if fault is not None:
            self._drops.remove(fault)
            if fault[1] == "expire":
                await self._expire(session, ws)
            else:
                ws.transport.abort()  # no close frame: as a network that went away
            raise ConnectionClosed(None, None)
        with self._lock:
            self.sent.append((session.number, event, time.monotonic()))
        await ws.send(json.dumps(event))

    async def _error(self, session: _Session, ws: ServerConnection, code: str, message: str, cause: Any = None) -> None:
        error = {"type": "invalid_request_error", "code": code, "message": message, "param": None, "event_id": cause}
        await self._send(session, ws, {"type": "error", "error": error})

    async def _handle(self, session: _Session, ws: ServerConnection, event: dict[str, Any]) -> None:
        kind = event.get("type")
        cause = event.get("event_id")
        if kind == "session.update":
            problem = _session_problem(event.get("session", {}))
            if problem:
                await self._error(session, ws, "invalid_value", problem, cause)
                return
            session.config = _merge(session.config, event["session"])
            await self._send(session, ws, {"type": "session.updated", "session": session.config})
        elif kind == "input_audio_buffer.append":
            audio = base64.b64decode(event["audio"])
            session.buffer += audio
            if session.server_vad is not None:
                await self._vad(session, ws, audio)
        elif kind == "input_audio_buffer.commit":
            if len(session.buffer) < RATE * 2 // 10:  # the real service wants at least 100 ms
                await self._error(session, ws, "input_audio_buffer_commit_empty", "buffer too small", cause)
                return
            await self._commit(session, ws)
        elif kind == "input_audio_buffer.clear":
            session.buffer.clear()
            session.speaking = False
            await self._send(session, ws, {"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            item = {"id": session.new_id("item"), **event["item"], "status": "completed"}
            after = event.get("previous_item_id")
            known = [i["id"] for i in session.items]
            if after is not None and after != "root" and after not in known:
                await self._error(session, ws, "item_not_found", f"no item {after!r} to add after", cause)
                return
            await self._add_item(session, ws, item, after)
        elif kind == "conversation.item.truncate":
            await self._send(
                session,
                ws,
                {
                    "type": "conversation.item.truncated",
                    "item_id": event["item_id"],
                    "content_index": event.get("content_index", 0),
                    "audio_end_ms": event["audio_end_ms"],
                },
            )
        elif kind == "response.create":
            if session.response is not None and not session.response.done():
                await self._error(session, ws, "conversation_already_has_active_response", "busy", cause)
                return
            session.response = asyncio.create_task(self._respond(session, ws))
        elif kind == "response.cancel":
            if session.response is None or session.response.done():
                await self._error(session, ws, "response_cancel_not_active", "no active response", cause)
                return
            session.response.cancel()
        else:
            await self._error(session, ws, "unknown_event", f"Unknown event type {kind!r}.", cause)

    async def _vad(self, session: _Session, ws: ServerConnection, audio: bytes) -> None:
        """A simple energy detector in the place of the server's VAD."""
        vad = session.server_vad or {}
        samples = memoryview(audio).cast("h") if len(audio) % 2 == 0 else memoryview(b"").cast("h")
        loud = bool(samples) and math.sqrt(sum(s * s for s in samples) / len(samples)) > 500
        ms = len(audio) / 2 / RATE * 1000
        if loud:
            session.quiet_ms = 0.0
            if not session.speaking:
                session.speaking = True
                start = int(len(session.buffer) / 2 / RATE * 1000)
                await self._send(session, ws, {"type": "input_audio_buffer.speech_started", "audio_start_ms": start})
        elif session.speaking:
            session.quiet_ms += ms
            if session.quiet_ms >= vad.get("silence_duration_ms", 500):
                session.speaking = False
                end = int(len(session.buffer) / 2 / RATE * 1000)
                await self._send(session, ws, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end})
                await self._commit(session, ws)
                if vad.get("create_response", True):
                    session.response = asyncio.create_task(self._respond(session, ws))

    async def _commit(self, session: _Session, ws: ServerConnection) -> None:
        item = {
            "id": session.new_id("item"),
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        session.heard[item["id"]] = self.transcript
        previous = session.items[-1]["id"] if session.items else None
        seconds = len(session.buffer) / 2 / RATE
        session.buffer.clear()
        event = {"type": "input_audio_buffer.committed", "item_id": item["id"], "previous_item_id": previous}
        await self._send(session, ws, event)
        await self._add_item(session, ws, item)
        if session.transcription is not None:
            item["audio_seconds"] = seconds
            asyncio.create_task(self._transcribe(session, ws, item))  # noqa: RUF006 (ends with the socket)

    async def _transcribe(self, session: _Session, ws: ServerConnection, item: dict[str, Any]) -> None:
        await asyncio.sleep(self.transcription_delay_s)
        text = self.transcript
        item["content"][0]["transcript"] = text
        with contextlib.suppress(ConnectionClosed):
            for piece in _pieces(text):
                delta = {"item_id": item["id"], "content_index": 0, "delta": piece}
                await self._send(session, ws, {"type": "conversation.item.input_audio_transcription.delta", **delta})
            usage = {"type": "duration", "seconds": round(item["audio_seconds"], 2)}
            done = {"item_id": item["id"], "content_index": 0, "transcript": text, "usage": usage}
            await self._send(session, ws, {"type": "conversation.item.input_audio_transcription.completed", **done})

    async def _add_item(
        self, session: _Session, ws: ServerConnection, item: dict[str, Any], after: str | None = None
    ) -> None:
        """Add an item at the end, or after `after` ("root": first), as conversation.item.create may ask."""
        ids = [i["id"] for i in session.items]
        at = len(ids) if after is None else 0 if after == "root" else ids.index(after) + 1
        previous = session.items[at - 1]["id"] if at > 0 else None
        session.items.insert(at, item)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._send(session, ws, {"type": kind, "previous_item_id": previous, "item": item})

    def _reply(self, session: _Session) -> RealtimeReply:
        if self.responder is not None:
            # the model hears audio itself: the responder sees each audio item's "heard" text at once,
            # while the transcription events follow asynchronously as upstream
            items = copy.deepcopy(session.items)
            for item in items:
                if item["id"] in session.heard:
                    item["content"][0]["heard"] = session.heard[item["id"]]
            return self.responder(items)
        return self.script.pop(0) if self.script else RealtimeReply(text="OK.")

    async def _respond(self, session: _Session, ws: ServerConnection) -> None:
        """One response: audio with its transcript, or function calls, then response.done."""
        started = time.monotonic()
        response: dict[str, Any] = {"id": session.new_id("resp"), "object": "realtime.response", "output": []}
        response["status"] = "in_progress"
        output: list[dict[str, Any]] = response["output"]
        try:
            await self._send(session, ws, {"type": "response.created", "response": dict(response)})
            if self._response_faults:
                how, code, message = self._response_faults.pop(0)
                await self._fail(session, ws, response, how, code, message)
                return
            reply = self._reply(session)
            for name, arguments in reply.tool_calls:
                await self._function_call(session, ws, response["id"], name, arguments, output)
            if reply.text:
                await self._speak(session, ws, response["id"], reply.text, output, started)
            response["status"] = "completed"
        except asyncio.CancelledError:
            response["status"] = "cancelled"
            response["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        except ConnectionClosed:
            return
        with contextlib.suppress(ConnectionClosed):
            heard = sum(len(json.dumps(item)) for item in session.items) // 4  # about 4 characters a token
            said = (
                sum(len(item.get("arguments", "")) + len(json.dumps(item.get("content", ""))) for item in output) // 4
            )
            usage = {
                "total_tokens": heard + said,
                "input_tokens": heard,
                "output_tokens": said,
                "input_token_details": {"cached_tokens": 0, "text_tokens": heard, "audio_tokens": 0},
            }
            await self._send(session, ws, {"type": "response.done", "response": {**response, "usage": usage}})

    async def _fail(
        self, session: _Session, ws: ServerConnection, response: dict[str, Any], how: str, code: str, message: str
    ) -> None:
        if how == "error":
            await self._error(session, ws, code, message)
        if code == RATE_LIMIT[0]:
            limit = {"name": "tokens", "limit": 1000, "remaining": 0, "reset_seconds": 2.0}
            await self._send(session, ws, {"type": "rate_limits.updated", "rate_limits": [limit]})
        response["status"] = "failed"
        response["status_details"] = {"type": "failed", "error": {"type": "requests", "code": code, "message": message}}
        await self._send(session, ws, {"type": "response.done", "response": response})

    async def _function_call(
        self,
        session: _Session,
        ws: ServerConnection,
        response_id: str,
        name: str,
        arguments: dict[str, Any] | str,
        output: list[dict[str, Any]],
    ) -> None:
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        item = {"id": session.new_id("item"), "type": "function_call", "name": name, "call_id": session.new_id("call")}
        output.append(item)
        where = {"response_id": response_id, "output_index": 0}
        await self._send(
            session, ws, {"type": "response.output_item.added", **where, "item": {**item, "arguments": ""}}
        )
        ids = {"item_id": item["id"], "call_id": item["call_id"], **where}
        for piece in _thirds(text):
            await self._send(session, ws, {"type": "response.function_call_arguments.delta", **ids, "delta": piece})
        done = {"type": "response.function_call_arguments.done", **ids, "name": name, "arguments": text}
        await self._send(session, ws, done)
        item |= {"arguments": text, "status": "completed"}
        await self._send(session, ws, {"type": "response.output_item.done", **where, "item": item})
        session.items.append(item)

    async def _speak(
        self,
        session: _Session,
        ws: ServerConnection,
        response_id: str,
        text: str,
        output: list[dict[str, Any]],
        started: float,
    ) -> None:
        """The reply's audio (first delta `first_audio_delay_s` after the response started) and transcript."""
        item: dict[str, Any] = {"id": session.new_id("item"), "type": "message", "role": "assistant", "content": []}
        output.append(item)
        where = {"response_id": response_id, "item_id": item["id"], "output_index": 0, "content_index": 0}
        await self._send(session, ws, {"type": "response.output_item.added", **where, "item": item})
        part = {"type": "output_audio", "transcript": ""}
        await self._send(session, ws, {"type": "response.content_part.added", **where, "part": part})
        session.items.append(item)
        item["content"].append(part)
        if text not in self._speech:
            self._speech[text] = await asyncio.to_thread(synth_pcm, text, RATE)
        pcm = self._speech[text]
        await asyncio.sleep(max(0.0, started + self.first_audio_delay_s - time.monotonic()))
        chunks = [pcm[i : i + AUDIO_CHUNK_BYTES] for i in range(0, len(pcm), AUDIO_CHUNK_BYTES)]
        words = _pieces(text)
        for index, chunk in enumerate(chunks):
            if index < len(words):  # the transcript runs a little ahead of the audio, as it does upstream
                part["transcript"] += words[index]
                await self._send(
                    session, ws, {"type": "response.output_audio_transcript.delta", **where, "delta": words[index]}
                )
            delta = base64.b64encode(chunk).decode("ascii")
            await self._send(session, ws, {"type": "response.output_audio.delta", **where, "delta": delta})
            if self.audio_chunk_delay_s:
                await asyncio.sleep(self.audio_chunk_delay_s)
        for word in words[len(chunks) :]:
            part["transcript"] += word
            await self._send(session, ws, {"type": "response.output_audio_transcript.delta", **where, "delta": word})
        await self._send(session, ws, {"type": "response.output_audio.done", **where})
        await self._send(session, ws, {"type": "response.output_audio_transcript.done", **where, "transcript": text})
        await self._send(session, ws, {"type": "response.content_part.done", **where, "part": part})
        item["status"] = "completed"
        await self._send(session, ws, {"type": "response.output_item.done", **where, "item": item})

    async def _expire(self, session: _Session, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._error(session, ws, *EXPIRED)
            await ws.close(1000, "session expired")


def _answer(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    text = json.dumps(body)
    response = connection.respond(status, text)
    response.headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(text.encode())))])
    return response


def _refuse(connection: ServerConnection, status: int, code: str, message: str) -> Response:
    response = _answer(
        connection, status, {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    )
    if status == 429:
        response.headers["Retry-After"] = "1"
    return response


def _session_problem(config: dict[str, Any]) -> str | None:
    """What the GA service refuses in a session.update (the beta shape among it)."""
    if config.get("type") != "realtime":
        return "session.type: must be 'realtime'"
    for beta in ("voice", "input_audio_format", "output_audio_format", "turn_detection", "modalities"):
        if beta in config:
            return f"session.{beta}: unknown parameter (the GA API takes audio settings under audio.input/output)"
    for way in ("input", "output"):
        audio_format = config.get("audio", {}).get(way, {}).get("format")
        if audio_format is not None and audio_format != {"type": "audio/pcm", "rate": RATE}:
            return f"session.audio.{way}.format: only audio/pcm at 24000 Hz is supported by the fake server"
    for tool in config.get("tools", []):
        if tool.get("type") != "function" or "name" not in tool or "function" in tool:
            return "session.tools: each tool is a flat {type: function, name, parameters}"
    return None


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        merged[key] = _merge(old[key], value) if isinstance(value, dict) and isinstance(old.get(key), dict) else value
    return merged


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)] if text else []


def _thirds(text: str) -> list[str]:
    a, b = len(text) // 3, 2 * len(text) // 3
    return [piece for piece in (text[:a], text[a:b], text[b:]) if piece]
