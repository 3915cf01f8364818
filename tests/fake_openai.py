"""A fake OpenAI / Azure OpenAI HTTP server for tests.

It is a real HTTP/1.1 server (standard library only) that speaks the OpenAI wire
format closely enough for the real ``openai`` SDK to work against it:

* ``/v1/<op>`` (OpenAI) and ``/openai/deployments/<deployment>/<op>?api-version=V``
  (Azure; ``/openai/<op>?api-version=V`` for ``models``).
* ops: ``chat/completions`` (plain and SSE streaming, tool calls),
  ``audio/transcriptions`` (multipart WAV upload; json/text/verbose_json/srt/vtt and
  SSE streaming), ``audio/speech`` (espeak-ng + sox; pcm/wav, chunked),
  ``images/generations`` (tiny generated PNG) and ``models``.
* every request is recorded (:class:`Recorded`) before it is answered; faults can be
  injected with :meth:`FakeOpenAI.fail`.

Typical use::

    with FakeOpenAI() as srv:
        srv.script.append(ChatReply(text="Hello there."))
        client = openai.OpenAI(base_url=srv.base_url, api_key=srv.api_key)
        ...
        assert srv.of("chat/completions")[0].json["model"] == "gpt-5.4-mini"
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import secrets
import socket
import struct
import subprocess
import threading
import time
import wave
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "OPS",
    "ChatReply",
    "FakeOpenAI",
    "Recorded",
    "make_png",
    "pcm_to_wav",
    "synth_pcm",
    "synth_wav",
]

OPS: tuple[str, ...] = (
    "chat/completions",
    "audio/transcriptions",
    "audio/speech",
    "images/generations",
    "models",
)

MODELS: tuple[str, ...] = (
    "gpt-5.4-mini",
    "gpt-5.4",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe",
    "whisper-1",
    "gpt-4o-mini-tts",
    "tts-1",
    "gpt-image-1",
    "dall-e-3",
)

TTS_SAMPLE_RATE = 24000
TTS_CHUNK_BYTES = 4800

_LANGUAGES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
    "ja": "japanese",
    "zh": "chinese",
}

_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request", "invalid_request_error", None),
    401: ("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model", "invalid_request_error", None),
    404: ("Not found", "invalid_request_error", None),
    408: ("Request timed out", "timeout", None),
    409: ("Conflict", "invalid_request_error", None),
    422: ("Unprocessable entity", "invalid_request_error", None),
    429: ("Rate limit reached", "requests", "rate_limit_exceeded"),
    500: ("Internal server error", "server_error", None),
    502: ("Bad gateway", "server_error", None),
    503: ("Service unavailable", "server_error", None),
    504: ("Gateway timeout", "server_error", None),
}

_AZURE_PATH = re.compile(r"^/openai(?:/deployments/(?P<deployment>[^/]+))?/(?P<rest>.+?)/?$")
_OPENAI_PATH = re.compile(r"^/v1/(?P<rest>.+?)/?$")
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


# --------------------------------------------------------------------------- data


@dataclass
class ChatReply:
    """One scripted assistant turn.

    ``tool_calls`` holds ``(function name, arguments)``; arguments are normally a
    dict (serialised to JSON) but a raw string is sent verbatim (e.g. to test
    malformed arguments). ``finish_reason`` replaces the natural one (``stop`` /
    ``tool_calls``), e.g. ``length`` or ``content_filter``. ``cut_after`` ends a stream
    cleanly after that many content pieces, with no finish chunk, usage or ``[DONE]``.
    """

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    finish_reason: str | None = None
    cut_after: int | None = None


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    op: str
    query: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any] | None
    form: dict[str, str]
    files: dict[str, tuple[str, bytes, str]]
    deployment: str | None
    api_version: str | None
    t: float
    body: bytes = b""
    conn: int = 0  # serial number of the TCP connection (same value = keep-alive reuse)


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: float | None


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_message, default_type, default_code = _ERRORS.get(
            status, ("Error", "invalid_request_error" if status < 500 else "server_error", None)
        )
        self.status = status
        self.message = message or default_message
        self.type = type_ or default_type
        self.param = param
        self.code = code if code is not None else default_code
        self.headers = headers or {}
        super().__init__(f"{status} {self.message}")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# ------------------------------------------------------------------- audio/image


def synth_pcm(text: str, rate: int = TTS_SAMPLE_RATE, words_per_minute: int = 175) -> bytes:
    """Speak ``text`` with espeak-ng and return mono signed 16-bit little-endian PCM."""
    spoken = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "--stdout", "--", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return subprocess.run(
        [
            "sox",
            "-q",
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-L",
            "-",
        ],
        input=spoken,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout


def pcm_to_wav(pcm: bytes, rate: int = TTS_SAMPLE_RATE) -> bytes:
    """Wrap mono s16le PCM in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def synth_wav(text: str, rate: int = 16000) -> bytes:
    """Speak ``text`` and return a mono 16-bit WAV file (default 16 kHz)."""
    return pcm_to_wav(synth_pcm(text, rate=rate), rate=rate)


def make_png(width: int = 4, height: int = 4, rgb: tuple[int, int, int] = (32, 128, 224)) -> bytes:
    """A valid tiny truecolour PNG built with zlib + struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")
    )


_PNG = make_png()


def _wav_duration(data: bytes) -> float:
    """Seconds of audio in a WAV file; raises ``_HTTPError(400)`` if it is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            frame_bytes = w.getsampwidth() * w.getnchannels()
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())  # copes with streamed (bogus size) headers
    except (wave.Error, EOFError, struct.error, ValueError) as exc:
        raise _HTTPError(
            400,
            f"Invalid file format. The fake server only accepts WAV audio ({exc}).",
            param="file",
            code="invalid_value",
        ) from None
    if frame_bytes <= 0 or rate <= 0:
        raise _HTTPError(400, "Invalid file format: empty WAV header.", param="file", code="invalid_value")
    return len(frames) / frame_bytes / rate


def _words(text: str) -> list[str]:
    """Split text into word-sized pieces that concatenate back to ``text`` exactly."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces.append(rest)
    return pieces


def _split3(s: str) -> list[str]:
    if len(s) < 3:
        return [s]
    a, b = len(s) // 3, 2 * len(s) // 3
    return [s[:a], s[a:b], s[b:]]


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    m = _BOUNDARY.search(content_type)
    if not m:
        raise _HTTPError(400, "multipart/form-data without a boundary")
    delimiter = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    form: dict[str, str] = {}
    files: dict[str, tuple[str, bytes, str]] = {}
    for raw_part in body.split(delimiter)[1:]:
        if raw_part.startswith(b"--"):
            break
        part = raw_part[2:] if raw_part.startswith(b"\r\n") else raw_part
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        params: dict[str, str] = {}
        for pm in _DISPOSITION_PARAM.finditer(headers.get("content-disposition", "")):
            key = pm.group(1).lower()
            quoted: str | None = pm.group(2)
            value = quoted if quoted is not None else (pm.group(3) or "").strip()
            if key.endswith("*"):  # RFC 5987: utf-8''name
                key = key[:-1]
                value = unquote(value.split("''", 1)[-1])
            else:
                value = re.sub(r"\\(.)", r"\1", value)
            params[key] = value
        field_name = params.get("name")
        if field_name is None:
            continue
        if "filename" in params:
            part_type = headers.get("content-type", "application/octet-stream")
            files[field_name] = (params["filename"], content, part_type)
        else:
            form[field_name] = content.decode("utf-8", "replace")
    return form, files


def _op_of(rest: str) -> str:
    if rest == "models" or rest.startswith("models/"):
        return "models"
    return rest


def _parse_body(
    body: bytes, content_type: str
) -> tuple[dict[str, Any] | None, dict[str, str], dict[str, tuple[str, bytes, str]], _HTTPError | None]:
    """JSON object or multipart form of a request body, or the error to answer with."""
    if body and ("json" in content_type or (not content_type and body.lstrip()[:1] == b"{")):
        try:
            loaded = json.loads(body)
        except ValueError as exc:
            return None, {}, {}, _HTTPError(400, f"We could not parse the JSON body of your request. ({exc})")
        if not isinstance(loaded, dict):
            return None, {}, {}, _HTTPError(400, "The request body must be a JSON object.")
        return loaded, {}, {}, None
    if content_type.lower().startswith("multipart/form-data"):
        try:
            form, files = _parse_multipart(body, content_type)
        except _HTTPError as exc:
            return None, {}, {}, exc
        return None, form, files, None
    return None, {}, {}, None


def _route(path: str) -> tuple[str, str, bool, str | None]:
    """(op, path rest after the API prefix, is Azure, Azure deployment) for a URL path."""
    if m := _OPENAI_PATH.match(path):
        return _op_of(m.group("rest")), m.group("rest"), False, None
    if m := _AZURE_PATH.match(path):
        deployment = unquote(m.group("deployment")) if m.group("deployment") else None
        return _op_of(m.group("rest")), m.group("rest"), True, deployment
    if path.startswith("/files/"):
        return "files", path[1:], False, None
    return path.strip("/"), path.strip("/"), False, None


# ------------------------------------------------------------------------ server


def _usage(
    fake: FakeOpenAI, messages: list[Any], pieces: list[str], calls: list[tuple[str, str, str]]
) -> dict[str, Any]:
    """The usage object: about 4 characters a prompt token, a word a completion token."""
    prompt_tokens = max(1, len(json.dumps(messages)) // 4)
    completion_tokens = len(pieces) + sum(len(c[1]) + len(c[2]) for c in calls) // 4
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": min(fake.cached_tokens, prompt_tokens), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeOpenAI, port: int = 0) -> None:
        self.fake = fake
        self.conn_lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.conn_serial = 0
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    server: _Server

    conn_id: int = 0

    # -- connection bookkeeping

    def setup(self) -> None:
        super().setup()
        sock = cast(socket.socket, self.request)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.conn_lock:
            self.server.conn_serial += 1
            self.conn_id = self.server.conn_serial
            self.server.connections.add(sock)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(cast(socket.socket, self.request))
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # -- low level I/O

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _common_headers(self) -> None:
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        self.send_header("openai-processing-ms", "1")

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json", headers)

    def _send_error(self, err: _HTTPError) -> None:
        self._send_json(err.status, err.body(), err.headers)

    def _start_chunked(self, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._common_headers()
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _chunk(self, data: bytes, last: bool = False) -> None:
        out = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if last:
            out += b"0\r\n\r\n"
        if out:
            self.wfile.write(out)

    def _sse(self, obj: Any, last: bool = False) -> None:
        self._chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n", last=last)

    # -- dispatch

    def _handle(self) -> None:
        fake = self.server.fake
        arrived = time.monotonic()
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        body = self._read_body()
        body_json, form, files, parse_error = _parse_body(body, headers.get("content-type", ""))
        op, rest, azure, deployment = _route(split.path)
        rec = Recorded(
            method=self.command,
            path=split.path,
            op=op,
            query=query,
            headers=headers,
            json=body_json,
            form=form,
            files=files,
            deployment=deployment,
            api_version=query.get("api-version"),
            t=arrived,
            body=body,
            conn=self.conn_id,
        )
        fake._record(rec)
        try:
            self._dispatch(fake, rec, rest, azure, parse_error)
        except _HTTPError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise  # handle_one_request closes the connection
        except Exception as exc:  # a bug in a test's callback becomes a visible 500, not a hang
            self._send_error(_HTTPError(500, f"Fake server error: {type(exc).__name__}: {exc}"))

    def _dispatch(
        self, fake: FakeOpenAI, rec: Recorded, rest: str, azure: bool, parse_error: _HTTPError | None
    ) -> None:
        op, method = rec.op, rec.method
        if op == "files":
            if method == "GET" and rest == "files/image.png":
                self._send_bytes(200, _PNG, "image/png")
                return
            raise _HTTPError(404, "File not found")
        invalid_url = _HTTPError(404, f"Invalid URL ({method} {rec.path})")
        if op not in OPS:
            raise invalid_url
        if azure and not rec.api_version:
            raise _HTTPError(404, "Resource not found", code="404")
        if (op == "models") != (method == "GET") or method not in ("GET", "POST"):
            raise invalid_url
        if not fake._authorized(rec.headers, azure):
            raise _HTTPError(401, code="invalid_api_key")
        fault = fake._take_fault(op)
        if fault is not None:
            extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            raise _HTTPError(fault.status, headers=extra)
        if parse_error is not None:
            raise parse_error

        if op == "models":
            self._models(rest)
        elif op == "chat/completions":
            self._chat(fake, rec.json)
        elif op == "audio/transcriptions":
            self._transcription(fake, rec.form, rec.files, rec.t)
        elif op == "audio/speech":
            self._speech(fake, rec.json, rec.t)
        elif op == "images/generations":
            self._images(fake, rec.json)

    # -- ops

    def _models(self, rest: str) -> None:
        def model(mid: str) -> dict[str, Any]:
            return {"id": mid, "object": "model", "created": 0, "owned_by": "fake"}

        if rest.startswith("models/"):
            mid = unquote(rest[len("models/") :])
            if mid not in MODELS:
                raise _HTTPError(404, f"The model '{mid}' does not exist", param="model", code="model_not_found")
            self._send_json(200, model(mid))
            return
        self._send_json(200, {"object": "list", "data": [model(mid) for mid in MODELS]})

    def _chat(self, fake: FakeOpenAI, req: dict[str, Any] | None) -> None:
        if req is None:
            raise _HTTPError(400, "Expected a JSON body")
        if not isinstance(req.get("messages"), list):
            raise _HTTPError(
                400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
            )
        if not req.get("model"):
            raise _HTTPError(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        if req.get("stream_options") is not None and fake.reject_stream_options:
            raise _HTTPError(400, "Unrecognized request argument supplied: stream_options")
        reply = fake._next_chat_reply(req)
        model = str(req["model"])
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        calls = [
            (
                f"call_{secrets.token_hex(12)}",
                name,
                args if isinstance(args, str) else json.dumps(args, separators=(",", ":")),
            )
            for name, args in reply.tool_calls
        ]
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        pieces = _words(reply.text)
        usage = _usage(fake, req["messages"], pieces, calls)

        if req.get("stream") is not True:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply.text if (reply.text or not calls) else None,
                "refusal": None,
                "annotations": [],
            }
            if calls:
                message["tool_calls"] = [
                    {"id": cid_, "type": "function", "function": {"name": name, "arguments": args}}
                    for cid_, name, args in calls
                ]
            self._send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                },
            )
            return

        opts = req.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return obj

        self._start_chunked("text/event-stream; charset=utf-8")
        self._sse(chunk({"role": "assistant", "content": "" if pieces or not calls else None, "refusal": None}))
        first = True

        def pace() -> None:
            nonlocal first
            delay = fake.first_token_delay_s if first else fake.token_delay_s
            first = False
            if delay > 0:
                time.sleep(delay)

        for count, piece in enumerate(pieces):
            if count == reply.cut_after:
                self._chunk(b"", last=True)  # a clean end of the body, before the stream's own end
                return
            pace()
            self._sse(chunk({"content": piece}))
        if reply.cut_after is not None:
            self._chunk(b"", last=True)
            return
        for index, (call_id, name, args) in enumerate(calls):
            pace()
            self._sse(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for fragment in _split3(args):
                pace()
                self._sse(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
        self._sse(chunk({}, finish))
        if include_usage:
            self._sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
            )
        self._chunk(b"data: [DONE]\n\n", last=True)

    def _transcription(
        self,
        fake: FakeOpenAI,
        form: dict[str, str],
        files: dict[str, tuple[str, bytes, str]],
        arrived: float,
    ) -> None:
        if "file" not in files:
            raise _HTTPError(
                400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
            )
        if not form.get("model"):
            raise _HTTPError(400, "you must provide a model parameter", param="model")
        audio = files["file"][1]
        duration = _wav_duration(audio)
        transcribe = fake.transcribe
        text = transcribe(audio, dict(form)) if transcribe is not None else fake.transcript
        fmt = form.get("response_format") or "json"
        stream = form.get("stream", "").strip().lower() == "true"
        if fmt not in ("json", "text", "verbose_json", "srt", "vtt"):
            raise _HTTPError(
                400, f"response_format '{fmt}' is not supported by the fake server", param="response_format"
            )

        wait = arrived + fake.transcribe_delay_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)

        if stream:
            self._start_chunked("text/event-stream; charset=utf-8")
            for piece in _words(text):
                self._sse({"type": "transcript.text.delta", "delta": piece})
            n_in = max(1, int(duration * 10))
            n_out = len(_words(text))
            self._sse(
                {
                    "type": "transcript.text.done",
                    "text": text,
                    "usage": {
                        "type": "tokens",
                        "input_tokens": n_in,
                        "output_tokens": n_out,
                        "total_tokens": n_in + n_out,
                    },
                },
                last=True,
            )
            return

        if fmt == "json":
            self._send_json(200, {"text": text})
        elif fmt == "verbose_json":
            lang = form.get("language") or "en"
            self._send_json(
                200,
                {
                    "task": "transcribe",
                    "language": _LANGUAGES.get(lang, lang),
                    "duration": round(duration, 3),
                    "text": text,
                    "segments": [],
                },
            )
        elif fmt == "text":
            self._send_bytes(200, (text + "\n").encode(), "text/plain; charset=utf-8")
        elif fmt == "srt":
            srt = f"1\n{_timestamp(0, ',')} --> {_timestamp(duration, ',')}\n{text}\n\n"
            self._send_bytes(200, srt.encode(), "text/plain; charset=utf-8")
        else:
            vtt = f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(duration, '.')}\n{text}\n\n"
            self._send_bytes(200, vtt.encode(), "text/plain; charset=utf-8")

    def _speech(self, fake: FakeOpenAI, req: dict[str, Any] | None, arrived: float) -> None:
        if req is None:
            raise _HTTPError(400, "Expected a JSON body")
        text = req.get("input")
        if not isinstance(text, str) or not text.strip():
            raise _HTTPError(
                400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
            )
        if not req.get("model"):
            raise _HTTPError(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        fmt = req.get("response_format") or "mp3"
        if fmt not in ("pcm", "wav"):
            raise _HTTPError(
                400,
                f"response_format '{fmt}' is unsupported in the fake server (use 'pcm' or 'wav')",
                param="response_format",
            )
        if req.get("stream_format") not in (None, "audio"):
            raise _HTTPError(
                400,
                f"stream_format '{req.get('stream_format')}' is unsupported in the fake server",
                param="stream_format",
            )
        speed = req.get("speed")
        wpm = 175
        if isinstance(speed, (int, float)) and speed > 0:
            wpm = max(80, min(450, round(175 * float(speed))))
        try:
            pcm = synth_pcm(text, words_per_minute=wpm)
        except (OSError, subprocess.SubprocessError) as exc:
            raise _HTTPError(500, f"Speech synthesis failed in the fake server: {exc}") from None
        payload = pcm if fmt == "pcm" else pcm_to_wav(pcm)
        content_type = "audio/pcm" if fmt == "pcm" else "audio/wav"

        wait = arrived + fake.tts_first_byte_delay_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._start_chunked(content_type)
        for start in range(0, len(payload), TTS_CHUNK_BYTES):
            if start and fake.tts_chunk_delay_s > 0:
                time.sleep(fake.tts_chunk_delay_s)
            end = start + TTS_CHUNK_BYTES
            self._chunk(payload[start:end], last=end >= len(payload))
        if not payload:
            self._chunk(b"", last=True)

    def _images(self, fake: FakeOpenAI, req: dict[str, Any] | None) -> None:
        if req is None:
            raise _HTTPError(400, "Expected a JSON body")
        prompt = req.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _HTTPError(
                400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
            )
        n = req.get("n")
        count = n if isinstance(n, int) and n > 0 else 1
        if req.get("response_format") == "url":
            item: dict[str, Any] = {"url": f"{fake.url}/files/image.png"}
        else:
            item = {"b64_json": base64.b64encode(_PNG).decode("ascii")}
        item["revised_prompt"] = "A picture of " + prompt
        self._send_json(200, {"created": int(time.time()), "data": [dict(item) for _ in range(count)]})


# -------------------------------------------------------------------------- fake


class FakeOpenAI:
    """An in-process fake OpenAI/Azure OpenAI server. See the module docstring."""

    def __init__(self, api_key: str = "test-key", azure_ad_token: str = "test-ad-token") -> None:
        self._default_api_key = api_key
        self._default_azure_ad_token = azure_ad_token
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._faults: dict[str, deque[_Fault]] = {}
        self.requests: list[Recorded] = []
        self.script: list[ChatReply] = []
        self._set_defaults()

    def _set_defaults(self) -> None:
        self.api_key: str = self._default_api_key
        self.azure_ad_token: str = self._default_azure_ad_token
        self.transcript: str = ""
        self.transcribe: Callable[[bytes, dict[str, str]], str] | None = None
        self.chat_handler: Callable[[dict[str, Any]], ChatReply] | None = None
        self.first_token_delay_s: float = 0.0
        self.token_delay_s: float = 0.0
        self.transcribe_delay_s: float = 0.0
        self.tts_first_byte_delay_s: float = 0.0
        self.tts_chunk_delay_s: float = 0.0  # extra: pause between streamed TTS chunks
        self.cached_tokens: int = 0  # reported as usage.prompt_tokens_details.cached_tokens
        self.reject_stream_options: bool = False  # answer 400 to stream_options, as Azure before 2024-08-01 did

    # -- lifecycle

    def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1 (`port`, or a free one) and serve from a daemon thread; no-op if running."""
        if self._server is not None:
            return
        server = _Server(self, port)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-openai-{server.server_address[1]}",
            daemon=True,
        )
        self._server = server
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop serving and close every open (keep-alive) connection; no-op if stopped."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        with server.conn_lock:
            conns = list(server.connections)
        for sock in conns:  # end keep-alive connections so no handler outlives the server
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port (only while started)."""
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the Azure endpoint."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``url + "/v1"``: the OpenAI base URL."""
        return self.url + "/v1"

    # -- configuration

    def fail(self, op: str, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests for ``op`` with ``status`` and an OpenAI error body."""
        if times <= 0:
            return
        with self._lock:
            self._faults.setdefault(op, deque()).append(_Fault(status, times, retry_after))

    def reset(self) -> None:
        """Forget requests, script, faults, handlers and delays (back to constructor defaults)."""
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self._faults.clear()
            self._set_defaults()

    # -- inspection

    def of(self, op: str) -> list[Recorded]:
        """The recorded requests for ``op``, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.op == op]

    def wait_for(self, op: str, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """Block until ``count`` requests for ``op`` were recorded; ``AssertionError`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.requests if r.op == op]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} {op!r} request(s) within {timeout}s, got {len(found)}; "
                        f"seen: {[(r.method, r.path) for r in self.requests]}"
                    )
                self._cond.wait(remaining)

    # -- used by the handler

    def _record(self, rec: Recorded) -> None:
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()

    def _authorized(self, headers: dict[str, str], azure: bool) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        if not azure:
            return bearer is not None and bearer == self.api_key
        return headers.get("api-key") == self.api_key or (bearer is not None and bearer == self.azure_ad_token)

    def _take_fault(self, op: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(op)
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.popleft()
            return _Fault(fault.status, 1, fault.retry_after)

    def _next_chat_reply(self, req: dict[str, Any]) -> ChatReply:
        handler = self.chat_handler
        if handler is not None:
            return handler(req)
        with self._lock:
            if self.script:
                return self.script.pop(0)
        return ChatReply(text="OK.")


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    with FakeOpenAI() as _srv:
        print(_srv.base_url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
