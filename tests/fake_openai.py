"""A local OpenAI / Azure OpenAI HTTP server for tests: only what the daemon calls.

It is a real HTTP/1.1 server (standard library only) that speaks the OpenAI wire
format closely enough for the real ``openai`` SDK to work against it:

* ``/v1/<op>`` (OpenAI, ``Authorization: Bearer KEY``) and
  ``/openai/deployments/<deployment>/<op>?api-version=V`` (Azure, ``api-key`` header or
  an AD token as bearer; ``/openai/models?api-version=V`` for the model list).
* ops, as the daemon uses them: ``models`` (the credential check), ``chat/completions``
  (SSE streaming only, text and tool-call deltas, a usage chunk when asked), ``responses`` (the
  Responses API as Home Assistant's openai_conversation streams it, for bench/side_by_side.py:
  tests/fake_responses.py),
  ``audio/transcriptions`` (multipart WAV upload; json, text or verbose_json),
  ``audio/speech`` (espeak-ng + sox; raw 24 kHz pcm, chunked) and
  ``images/generations`` (a tiny PNG as b64_json, or as a URL this server serves, as DALL-E answers).
* every request is recorded (:class:`Recorded`) before it is answered; faults (any
  status, with Retry-After) are injected with :meth:`FakeOpenAI.fail`, a cut stream
  with ``ChatReply(cut_after=N)``. Anything else is answered 400 or 404, never faked.

Typical use::

    with FakeOpenAI() as srv:
        srv.script.append(ChatReply(text="Hello there."))
        ...  # the daemon under test talks to srv.url
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

import fake_responses

__all__ = ["TTS_SAMPLE_RATE", "ChatReply", "FakeOpenAI", "Recorded", "synth_pcm"]

OPS: tuple[str, ...] = (
    "chat/completions",
    "responses",
    "audio/transcriptions",
    "audio/speech",
    "images/generations",
    "models",
)
MODELS: tuple[str, ...] = ("gpt-5.4-mini", "gpt-4o-mini-transcribe", "gpt-4o-mini-tts", "gpt-image-2")

TTS_SAMPLE_RATE = 24000
TTS_CHUNK_BYTES = 4800

_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request", "invalid_request_error", None),
    401: ("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
    404: ("Not found", "invalid_request_error", None),
    429: ("Rate limit reached", "requests", "rate_limit_exceeded"),
    500: ("Internal server error", "server_error", None),
}

_AZURE_PATH = re.compile(r"^/openai(?:/deployments/(?P<deployment>[^/]+))?/(?P<op>.+?)/?$")
_OPENAI_PATH = re.compile(r"^/v1/(?P<op>.+?)/?$")
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


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
    headers: dict[str, str]
    json: dict[str, Any] | None
    form: dict[str, str]
    files: dict[str, tuple[str, bytes, str]]
    deployment: str | None
    api_version: str | None
    t: float  # time.monotonic() when it arrived


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
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_message, default_type, default_code = _ERRORS.get(
            status, ("Error", "invalid_request_error" if status < 500 else "server_error", None)
        )
        self.status = status
        self.message = message or default_message
        self.type = default_type
        self.param = param
        self.code = code if code is not None else default_code
        self.headers = headers or {}
        super().__init__(f"{status} {self.message}")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _missing(name: str) -> _HTTPError:
    return _HTTPError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")


def _unsupported(name: str, value: object) -> _HTTPError:
    return _HTTPError(400, f"{name} {value!r} is not supported by the fake server", param=name)


# ------------------------------------------------------------------- audio/image


def synth_pcm(text: str, rate: int = TTS_SAMPLE_RATE, words_per_minute: int = 175) -> bytes:
    """Speak ``text`` with espeak-ng and return mono signed 16-bit little-endian PCM."""
    spoken = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "--stdout", "--", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    sox = ["sox", "-q", "-t", "wav", "-", "-t", "raw", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer"]
    return subprocess.run([*sox, "-L", "-"], input=spoken, capture_output=True, check=True, timeout=30).stdout


def _png(width: int = 4, height: int = 4, rgb: tuple[int, int, int] = (32, 128, 224)) -> bytes:
    """A valid tiny truecolour PNG built with zlib + struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")
    )


_PNG_B64 = base64.b64encode(_png()).decode("ascii")
IMAGE_FILES = "/files/images/"  # where URL answers point (as a CDN would serve them)


def _wav_duration(data: bytes) -> float:
    """Seconds of audio in a WAV file; raises ``_HTTPError(400)`` if it is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            frame_bytes = w.getsampwidth() * w.getnchannels()
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())
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


# ------------------------------------------------------------------- request parsing


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
        part = raw_part.removeprefix(b"\r\n")
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        content = content.removesuffix(b"\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        params: dict[str, str] = {}
        for pm in _DISPOSITION_PARAM.finditer(headers.get("content-disposition", "")):
            quoted: str | None = pm.group(2)
            value = quoted if quoted is not None else (pm.group(3) or "").strip()
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        field_name = params.get("name")
        if field_name is None:
            continue
        if "filename" in params:
            files[field_name] = (params["filename"], content, headers.get("content-type", "application/octet-stream"))
        else:
            form[field_name] = content.decode("utf-8", "replace")
    return form, files


def _parse_body(
    body: bytes, content_type: str
) -> tuple[dict[str, Any] | None, dict[str, str], dict[str, tuple[str, bytes, str]], _HTTPError | None]:
    """JSON object or multipart form of a request body, or the error to answer with."""
    if body and "json" in content_type:
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


def _route(path: str) -> tuple[str, bool, str | None]:
    """(op, is Azure, Azure deployment) for a URL path."""
    if m := _OPENAI_PATH.match(path):
        return m.group("op"), False, None
    if m := _AZURE_PATH.match(path):
        return m.group("op"), True, unquote(m.group("deployment")) if m.group("deployment") else None
    return path.strip("/"), False, None


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


def _pacer(fake: FakeOpenAI, arrived: float | None = None) -> Callable[[], None]:
    """What a stream calls before each token: it waits the injected first-token delay the first
    time and the per-token delay after, as a model streaming its answer would. With `arrived`
    (time.monotonic() of the request), each token is due on a schedule counted from it, as the
    speech's first byte is: parsing and sleeping late do not add up."""
    due = time.monotonic() if arrived is None else arrived
    first = True

    def pace() -> None:
        nonlocal first, due
        due += fake.first_token_delay_s if first else fake.token_delay_s
        first = False
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    return pace


# ------------------------------------------------------------------------ server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeOpenAI, port: int = 0) -> None:
        self.fake = fake
        self.conn_lock = threading.Lock()
        self.connections: set[socket.socket] = set()  # closed by stop(), keep-alive ones included
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    server: _Server

    # -- connection bookkeeping

    def setup(self) -> None:
        super().setup()
        sock = cast(socket.socket, self.request)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.conn_lock:
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

    # -- low level I/O (the SDK sends a Content-Length, never a chunked body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json", headers)

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
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
        headers = {key.lower(): value for key, value in self.headers.items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        body_json, form, files, parse_error = _parse_body(body, headers.get("content-type", ""))
        if self.command == "GET" and split.path.startswith(IMAGE_FILES):
            self._image_file(fake, split.path)
            return
        op, azure, deployment = _route(split.path)
        rec = Recorded(
            method=self.command,
            path=split.path,
            op=op,
            headers=headers,
            json=body_json,
            form=form,
            files=files,
            deployment=deployment,
            api_version=dict(parse_qsl(split.query)).get("api-version"),
            t=arrived,
        )
        fake._record(rec)
        try:
            self._dispatch(fake, rec, azure, parse_error)
        except _HTTPError as err:
            self._send_json(err.status, err.body(), err.headers)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise  # handle_one_request closes the connection
        except Exception as exc:  # a bug in a test's callback becomes a visible 500, not a hang
            err = _HTTPError(500, f"Fake server error: {type(exc).__name__}: {exc}")
            self._send_json(err.status, err.body())

    def _dispatch(self, fake: FakeOpenAI, rec: Recorded, azure: bool, parse_error: _HTTPError | None) -> None:
        op = rec.op
        if op not in OPS or (op == "models") != (rec.method == "GET"):
            raise _HTTPError(404, f"Invalid URL ({rec.method} {rec.path})")
        if azure and not rec.api_version:
            raise _HTTPError(404, "Resource not found", code="404")
        if not fake._authorized(rec.headers, azure):
            raise _HTTPError(401)
        fault = fake._take_fault(op)
        if fault is not None:
            extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            raise _HTTPError(fault.status, headers=extra)
        if parse_error is not None:
            raise parse_error

        if op == "models":
            models = [{"id": mid, "object": "model", "created": 0, "owned_by": "fake"} for mid in MODELS]
            self._send_json(200, {"object": "list", "data": models})
        elif op == "chat/completions":
            self._chat(fake, rec.json, rec.t)
        elif op == "responses":
            self._responses(fake, rec.json)
        elif op == "audio/transcriptions":
            self._transcription(fake, rec.form, rec.files, rec.t)
        elif op == "audio/speech":
            self._speech(fake, rec.json, rec.t)
        else:
            self._images(fake, rec.json)

    # -- ops

    def _chat(self, fake: FakeOpenAI, req: dict[str, Any] | None, arrived: float) -> None:
        if req is None:
            raise _HTTPError(400, "Expected a JSON body")
        if not isinstance(req.get("messages"), list):
            raise _missing("messages")
        if not req.get("model"):
            raise _missing("model")
        if req.get("stream") is not True:
            raise _unsupported("stream", req.get("stream"))  # the daemon always streams
        opts = req.get("stream_options")
        if opts is not None and fake.reject_stream_options:
            raise _HTTPError(400, "Unrecognized request argument supplied: stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        reply = fake._next_chat_reply(req)
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
        head = {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(req["model"]),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            obj = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                obj["usage"] = None  # every chunk but the last carries a null usage
            return obj

        pace = _pacer(fake, arrived)
        self._start_chunked("text/event-stream; charset=utf-8")
        self._sse(chunk({"role": "assistant", "content": "" if pieces or not calls else None, "refusal": None}))
        for count, piece in enumerate(pieces):
            if count == reply.cut_after:
                break
            pace()
            self._sse(chunk({"content": piece}))
        if reply.cut_after is not None:
            self._chunk(b"", last=True)  # a clean end of the body, before the stream's own end
            return
        for index, (call_id, name, args) in enumerate(calls):
            pace()
            function = {"name": name, "arguments": ""}
            self._sse(
                chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]})
            )
            for fragment in _split3(args):
                pace()
                self._sse(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
        self._sse(chunk({}, finish))
        if include_usage:
            self._sse({**head, "choices": [], "usage": _usage(fake, req["messages"], pieces, calls)})
        self._chunk(b"data: [DONE]\n\n", last=True)

    def _responses(self, fake: FakeOpenAI, req: dict[str, Any] | None) -> None:
        """POST /v1/responses, streamed: each event as `event: <type>` and `data: <json>`, no [DONE]."""
        if req is None:
            raise _HTTPError(400, "Expected a JSON body")
        if not req.get("input"):
            raise _missing("input")
        if not req.get("model"):
            raise _missing("model")
        if req.get("stream") is not True:
            raise _unsupported("stream", req.get("stream"))  # Home Assistant always streams
        reply = fake._next_reply(req, fake.responses_handler)
        calls = [
            (
                f"call_{secrets.token_hex(12)}",
                name,
                args if isinstance(args, str) else json.dumps(args, separators=(",", ":")),
            )
            for name, args in reply.tool_calls
        ]
        pace = _pacer(fake)
        input_tokens = max(1, len(fake_responses.input_text(req)) // 4)
        stream = fake_responses.events(req, _words(reply.text), calls, reply.finish_reason, input_tokens, pace)
        self._start_chunked("text/event-stream; charset=utf-8")
        deltas = 0
        for event in stream:
            if event["type"] == "response.output_text.delta":
                if deltas == reply.cut_after:
                    break  # a clean end of the body before the stream's own end
                deltas += 1
            data = json.dumps(event, separators=(",", ":")).encode()
            self._chunk(b"event: %s\ndata: %s\n\n" % (event["type"].encode(), data))
        self._chunk(b"", last=True)

    def _transcription(
        self, fake: FakeOpenAI, form: dict[str, str], files: dict[str, tuple[str, bytes, str]], arrived: float
    ) -> None:
        if "file" not in files:
            raise _missing("file")
        if not form.get("model"):
            raise _missing("model")
        duration = _wav_duration(files["file"][1])
        fmt = form.get("response_format") or "json"
        if fmt not in ("json", "text", "verbose_json") or form.get("stream") == "true":
            raise _unsupported("response_format", fmt)
        wait = arrived + fake.transcribe_delay_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        text = fake.transcript
        if fmt == "json":
            self._send_json(200, {"text": text})
        elif fmt == "verbose_json":
            language = {"en": "english", "de": "german"}.get(form.get("language") or "en", form.get("language"))
            self._send_json(
                200,
                {
                    "task": "transcribe",
                    "language": language,
                    "duration": round(duration, 3),
                    "text": text,
                    "segments": [],
                },
            )
        else:
            self._send_bytes(200, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _speech(self, fake: FakeOpenAI, req: dict[str, Any] | None, arrived: float) -> None:
        if req is None:
            raise _HTTPError(400, "Expected a JSON body")
        text = req.get("input")
        if not isinstance(text, str) or not text.strip():
            raise _missing("input")
        if not req.get("model"):
            raise _missing("model")
        if req.get("response_format") != "pcm":
            raise _unsupported("response_format", req.get("response_format"))
        speed = req.get("speed")
        wpm = 175
        if isinstance(speed, (int, float)) and speed > 0:
            wpm = max(80, min(450, round(175 * float(speed))))
        try:
            pcm = synth_pcm(text, words_per_minute=wpm)
        except (OSError, subprocess.SubprocessError) as exc:
            raise _HTTPError(500, f"Speech synthesis failed in the fake server: {exc}") from None
        wait = arrived + fake.tts_first_byte_delay_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._start_chunked("audio/pcm")
        for start in range(0, len(pcm), TTS_CHUNK_BYTES):
            end = start + TTS_CHUNK_BYTES
            self._chunk(pcm[start:end], last=end >= len(pcm))
        if not pcm:
            self._chunk(b"", last=True)

    def _images(self, fake: FakeOpenAI, req: dict[str, Any] | None) -> None:
        if req is None:
            raise _HTTPError(400, "Expected a JSON body")
        prompt = req.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _missing("prompt")
        response_format = req.get("response_format")
        if response_format not in (None, "b64_json", "url"):
            raise _unsupported("response_format", response_format)
        n = req.get("n")
        item = {"b64_json": _PNG_B64, "revised_prompt": "A picture of " + prompt}
        # DALL-E answers with a URL unless asked for base64; the GPT image models always give base64
        if response_format == "url" or (response_format is None and str(req.get("model", "")).startswith("dall-e")):
            signed = f"?se=2099-01-01&sig={secrets.token_hex(16)}"  # a signed link, as a CDN hands out
            item = {"url": f"{fake.url}{IMAGE_FILES}{secrets.token_hex(8)}.png{signed}"}
        count = n if isinstance(n, int) and n > 0 else 1
        self._send_json(200, {"created": int(time.time()), "data": [dict(item) for _ in range(count)]})

    def _image_file(self, fake: FakeOpenAI, path: str) -> None:
        """GET of an image URL handed out by images/generations (404 while `image_files_missing`)."""
        fake._record(Recorded("GET", path, "image file", {}, None, {}, {}, None, None, time.monotonic()))
        if fake.image_files_missing:
            self._send_bytes(404, b"<Error>BlobNotFound</Error>", "application/xml")
        else:
            self._send_bytes(200, _png(), "image/png")


# -------------------------------------------------------------------------- fake


class FakeOpenAI:
    """An in-process fake OpenAI/Azure OpenAI server. See the module docstring."""

    def __init__(self, api_key: str = "test-key", azure_ad_token: str = "test-ad-token") -> None:
        self._default_api_key = api_key
        self.azure_ad_token = azure_ad_token
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
        self.transcript: str = ""
        self.chat_handler: Callable[[dict[str, Any]], ChatReply] | None = None  # else script, else "OK."
        self.responses_handler: Callable[[dict[str, Any]], ChatReply] | None = None  # the same, for responses
        # Pacing, used by tests of early speech and by bench/latency.py.
        self.first_token_delay_s: float = 0.0
        self.token_delay_s: float = 0.0
        self.transcribe_delay_s: float = 0.0
        self.tts_first_byte_delay_s: float = 0.0
        self.cached_tokens: int = 0  # reported as usage.prompt_tokens_details.cached_tokens
        self.image_files_missing: bool = False  # image URLs answer 404 (an expired link)
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
        for sock in conns:  # a daemon's pooled connection must see the outage too
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
        scheme, _, token = headers.get("authorization", "").partition(" ")
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
            return fault

    def _next_chat_reply(self, req: dict[str, Any]) -> ChatReply:
        return self._next_reply(req, self.chat_handler)

    def _next_reply(self, req: dict[str, Any], handler: Callable[[dict[str, Any]], ChatReply] | None) -> ChatReply:
        if handler is not None:
            return handler(req)
        with self._lock:
            if self.script:
                return self.script.pop(0)
        return ChatReply(text="OK.")
