"""Tests of the fake OpenAI server, driven by the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from fake_openai import ChatReply, FakeOpenAI  # tests/ is on sys.path (see conftest.py)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "turn_on",
            "description": "Turn an entity on.",
            "parameters": {"type": "object", "properties": {"entity_id": {"type": "string"}}},
        },
    }
]
MESSAGES: list[Any] = [{"role": "user", "content": "Turn on the kitchen light"}]


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeOpenAI]:
    """One fake server for the whole module."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(srv: FakeOpenAI) -> None:
    srv.reset()


@pytest.fixture
def client(srv: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """A plain OpenAI client without retries."""
    with openai.OpenAI(base_url=srv.base_url, api_key="test-key", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def wav_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 kHz mono 16-bit utterance made with espeak-ng and sox."""
    tmp = tmp_path_factory.mktemp("speech")
    raw, out = tmp / "raw.wav", tmp / "utterance.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(raw), "turn on the kitchen light"], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out), "pad", "0.2", "0.2"],
        check=True,
    )
    return out


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def _raw_request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# ----------------------------------------------------------------- transcription


def test_transcription_json_records_fields(srv: FakeOpenAI, client: openai.OpenAI, wav_path: Path) -> None:
    srv.transcript = "turn on the kitchen light"
    with wav_path.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=f, language="en", prompt="Kitchen, lights.", temperature=0.0
        )
    assert result.text == "turn on the kitchen light"
    [rec] = srv.of("audio/transcriptions")
    assert (rec.method, rec.path, rec.deployment, rec.api_version) == ("POST", "/v1/audio/transcriptions", None, None)
    assert rec.form == {
        "model": "gpt-4o-mini-transcribe",
        "language": "en",
        "prompt": "Kitchen, lights.",
        "temperature": "0.0",
    }
    filename, data, _ = rec.files["file"]
    assert filename == "utterance.wav"
    assert data == wav_path.read_bytes()
    assert rec.headers["authorization"] == "Bearer test-key"
    assert rec.headers["content-type"].startswith("multipart/form-data; boundary=")


def test_transcription_text_and_verbose_json(srv: FakeOpenAI, client: openai.OpenAI, wav_path: Path) -> None:
    srv.transcript = "hello world"
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav_path.read_bytes(), "audio/wav"), response_format="text"
    )
    assert text.strip() == "hello world"
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=wav_path, response_format="verbose_json", language="en"
    )
    assert verbose.text == "hello world"
    assert verbose.language == "english"
    assert verbose.duration == pytest.approx(_wav_seconds(wav_path), abs=0.01)
    srt = client.audio.transcriptions.create(model="whisper-1", file=wav_path, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and "hello world" in srt
    vtt = client.audio.transcriptions.create(model="whisper-1", file=wav_path, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")
    assert [r.form.get("response_format") for r in srv.of("audio/transcriptions")] == [
        "text",
        "verbose_json",
        "srt",
        "vtt",
    ]


def test_transcription_callable_and_stream(srv: FakeOpenAI, client: openai.OpenAI, wav_path: Path) -> None:
    seen: list[tuple[int, dict[str, str]]] = []

    def transcribe(wav: bytes, form: dict[str, str]) -> str:
        seen.append((len(wav), form))
        return "what time is it"

    srv.transcribe = transcribe
    stream = client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=wav_path, stream=True)
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) == 4 and "".join(deltas) == "what time is it"
    assert events[-1].type == "transcript.text.done" and events[-1].text == "what time is it"
    assert seen[0][0] == wav_path.stat().st_size and seen[0][1]["stream"] == "true"


def test_transcription_rejects_non_wav(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="WAV"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", b"ID3 not a wav", "audio/mpeg"))
    assert len(srv.of("audio/transcriptions")) == 1


def test_transcribe_delay(srv: FakeOpenAI, client: openai.OpenAI, wav_path: Path) -> None:
    srv.transcribe_delay_s = 0.15
    t0 = time.monotonic()
    client.audio.transcriptions.create(model="whisper-1", file=wav_path)
    assert time.monotonic() - t0 >= 0.15


# -------------------------------------------------------------------------- chat


def test_chat_non_stream_text(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.script.append(ChatReply(text="The kitchen light is on."))
    completion = client.chat.completions.create(model="gpt-5.4-mini", messages=MESSAGES, temperature=0.2)
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "The kitchen light is on."
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    [rec] = srv.of("chat/completions")
    assert rec.json is not None
    assert rec.json["model"] == "gpt-5.4-mini" and rec.json["messages"] == MESSAGES
    assert rec.json["temperature"] == 0.2
    # The script is empty now: the default reply.
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "OK."


def test_chat_non_stream_tool_calls(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.script.append(ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})]))
    completion = client.chat.completions.create(model="gpt-5.4-mini", messages=MESSAGES, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "turn_on"
    assert json.loads(call.function.arguments) == {"entity_id": "light.kitchen"}


def test_chat_handler_sees_request(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.chat_handler = lambda req: ChatReply(text="echo: " + req["messages"][-1]["content"])
    completion = client.chat.completions.create(model="gpt-5.4-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == "echo: Turn on the kitchen light"


def test_chat_stream_tool_call_deltas(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.script.append(
        ChatReply(
            text="Sure, turning them on.",
            tool_calls=[("turn_on", {"entity_id": "light.kitchen"}), ("turn_on", {"entity_id": "light.hall"})],
        )
    )
    stream = client.chat.completions.create(
        model="gpt-5.4-mini", messages=MESSAGES, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage_chunks = 0
    roles: list[str] = []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if not chunk.choices:
            usage_chunks += 1
            assert chunk.usage is not None and chunk.usage.completion_tokens > 0
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            content.append(delta.content)
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": [], "type": None})
            if tc.id:
                entry["id"] = tc.id
            if tc.type:
                entry["type"] = tc.type
            if tc.function and tc.function.name:
                entry["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"].append(tc.function.arguments)
        if choice.finish_reason:
            finish = choice.finish_reason
    assert roles == ["assistant"]
    assert "".join(content) == "Sure, turning them on."
    assert content[:2] == ["Sure,", " turning"]
    assert finish == "tool_calls" and usage_chunks == 1
    assert sorted(calls) == [0, 1]
    for index, entity in ((0, "light.kitchen"), (1, "light.hall")):
        entry = calls[index]
        assert entry["type"] == "function" and entry["id"].startswith("call_") and entry["name"] == "turn_on"
        assert len(entry["arguments"]) >= 3
        assert json.loads("".join(entry["arguments"])) == {"entity_id": entity}
    assert calls[0]["id"] != calls[1]["id"]


def test_chat_stream_helper(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.script.append(ChatReply(text="Done.", tool_calls=[("turn_on", {"entity_id": "light.kitchen"})]))
    with client.chat.completions.stream(model="gpt-5.4-mini", messages=MESSAGES, tools=TOOLS) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.delta" in kinds and "tool_calls.function.arguments.done" in kinds
    message = final.choices[0].message
    assert message.content == "Done."
    [call] = message.tool_calls or []
    assert call.type == "function"
    assert json.loads(call.function.arguments) == {"entity_id": "light.kitchen"}


def test_chat_stream_pacing(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.script.append(ChatReply(text="one two three four"))
    srv.first_token_delay_s = 0.2
    srv.token_delay_s = 0.05
    t0 = time.monotonic()
    arrivals: list[float] = []
    for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - t0)
    assert len(arrivals) == 4
    assert arrivals[0] >= 0.2
    assert arrivals[-1] - arrivals[0] >= 3 * 0.05 * 0.9


def test_bad_chat_request_is_400(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.post("/chat/completions", body={"model": "m"}, cast_to=object)


# ------------------------------------------------------------------------ speech


def test_speech_pcm_streams_chunks(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.tts_first_byte_delay_s = 0.1
    t0 = time.monotonic()
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input="The kitchen light is now on.", response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        pieces = list(response.iter_bytes())
    assert time.monotonic() - t0 >= 0.1
    audio = b"".join(pieces)
    assert len(audio) % 2 == 0
    assert len(audio) / 2 / 24000 > 0.5
    assert len(pieces) > 1
    [rec] = srv.of("audio/speech")
    assert rec.json is not None and rec.json["voice"] == "alloy" and rec.json["response_format"] == "pcm"


def test_speech_wav_and_unsupported_format(srv: FakeOpenAI, client: openai.OpenAI, tmp_path: Path) -> None:
    response = client.audio.speech.create(model="tts-1", voice="nova", input="Hello.", response_format="wav")
    out = tmp_path / "reply.wav"
    out.write_bytes(response.content)
    with wave.open(str(out), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        assert w.getnframes() > 2400
    with pytest.raises(openai.BadRequestError, match="unsupported"):
        client.audio.speech.create(model="tts-1", voice="nova", input="Hello.", response_format="mp3")


# ------------------------------------------------------------------------ images


def test_images_b64_and_url(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a red fox", model="gpt-image-1", n=2, size="1024x1024")
    assert result.created > 0
    assert result.data is not None and len(result.data) == 2
    assert base64.b64decode(result.data[0].b64_json or "").startswith(PNG_SIGNATURE)
    assert result.data[0].revised_prompt == "A picture of a red fox"
    by_url = client.images.generate(prompt="a cat", model="dall-e-3", response_format="url")
    assert by_url.data is not None
    url = by_url.data[0].url or ""
    assert url == f"{srv.url}/files/image.png"
    status, headers, body = _raw_request(url)
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(PNG_SIGNATURE)
    assert [r.json["n"] for r in srv.of("images/generations") if r.json and "n" in r.json] == [2]


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-5.4-mini" in ids
    assert client.models.retrieve("gpt-5.4-mini").owned_by == "fake"


# ------------------------------------------------------------------------- azure


def test_azure_deployment_paths(srv: FakeOpenAI, wav_path: Path) -> None:
    with openai.AzureOpenAI(
        azure_endpoint=srv.url, api_version="2024-10-21", api_key="test-key", azure_deployment="chat-dep", max_retries=0
    ) as azure:
        reply = azure.chat.completions.create(model="ignored", messages=MESSAGES)
        assert reply.choices[0].message.content == "OK."
        assert next(m.id for m in azure.models.list()) == "gpt-5.4-mini"
    with openai.AzureOpenAI(azure_endpoint=srv.url, api_version="2024-10-21", api_key="test-key", max_retries=0) as az:
        srv.transcript = "azure words"
        assert az.audio.transcriptions.create(model="stt-dep", file=wav_path).text == "azure words"
        assert az.chat.completions.create(model="model-as-dep", messages=MESSAGES).choices[0].message.content
    chat = srv.of("chat/completions")
    assert [(r.path, r.deployment, r.api_version) for r in chat] == [
        ("/openai/deployments/chat-dep/chat/completions", "chat-dep", "2024-10-21"),
        ("/openai/deployments/model-as-dep/chat/completions", "model-as-dep", "2024-10-21"),
    ]
    assert chat[0].query == {"api-version": "2024-10-21"}
    assert chat[0].headers["api-key"] == "test-key" and "authorization" not in chat[0].headers
    [models] = srv.of("models")
    assert (models.path, models.deployment, models.api_version) == ("/openai/models", None, "2024-10-21")
    [stt] = srv.of("audio/transcriptions")
    # Without azure_deployment the SDK puts the model (even a multipart field) into the path.
    assert (stt.path, stt.deployment) == ("/openai/deployments/stt-dep/audio/transcriptions", "stt-dep")
    assert stt.form["model"] == "stt-dep"


def test_azure_ad_token(srv: FakeOpenAI) -> None:
    with openai.AzureOpenAI(
        azure_endpoint=srv.url,
        api_version="2024-10-21",
        azure_ad_token="test-ad-token",
        azure_deployment="chat-dep",
        max_retries=0,
    ) as azure:
        azure.chat.completions.create(model="x", messages=MESSAGES)
    with (
        openai.AzureOpenAI(
            azure_endpoint=srv.url,
            api_version="2024-10-21",
            azure_ad_token="wrong",
            azure_deployment="chat-dep",
            max_retries=0,
        ) as azure,
        pytest.raises(openai.AuthenticationError),
    ):
        azure.chat.completions.create(model="x", messages=MESSAGES)
    ok, bad = srv.of("chat/completions")
    assert ok.headers["authorization"] == "Bearer test-ad-token" and "api-key" not in ok.headers
    assert bad.headers["authorization"] == "Bearer wrong"


def test_azure_without_api_version_is_404(srv: FakeOpenAI) -> None:
    status, _, body = _raw_request(
        f"{srv.url}/openai/deployments/d/chat/completions",
        "POST",
        json.dumps({"messages": []}).encode(),
        {"api-key": "test-key", "Content-Type": "application/json"},
    )
    assert status == 404 and "error" in json.loads(body)
    [rec] = srv.of("chat/completions")
    assert rec.deployment == "d" and rec.api_version is None


# ------------------------------------------------------------- auth and faults


def test_wrong_key_is_authentication_error(srv: FakeOpenAI) -> None:
    with openai.OpenAI(base_url=srv.base_url, api_key="nope") as bad, pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="m", messages=MESSAGES)
    assert exc.value.status_code == 401 and exc.value.code == "invalid_api_key"
    assert len(srv.of("chat/completions")) == 1  # recorded, and 401 is not retried


def test_unknown_route_is_404(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.get("/no/such/thing", cast_to=object)
    assert srv.requests[-1].op == "no/such/thing"


def test_429_with_retry_after_is_retried(srv: FakeOpenAI) -> None:
    srv.fail("chat/completions", 429, retry_after=0.01)
    with openai.OpenAI(base_url=srv.base_url, api_key="test-key", max_retries=2) as c:
        reply = c.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "OK."
    first, second = srv.of("chat/completions")
    assert second.t - first.t >= 0.01
    assert (first.headers["x-stainless-retry-count"], second.headers["x-stainless-retry-count"]) == ("0", "1")


def test_429_error_body_and_header(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    srv.fail("images/generations", 429, retry_after=0.05)
    with pytest.raises(openai.RateLimitError) as exc:
        client.images.generate(prompt="x")
    assert exc.value.response.headers["retry-after"] == "0.05"
    assert exc.value.body == {
        "message": "Rate limit reached",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_500s_exhaust_retries(srv: FakeOpenAI) -> None:
    srv.fail("chat/completions", 500, times=5, retry_after=0.01)
    with (
        openai.OpenAI(base_url=srv.base_url, api_key="test-key", max_retries=1) as c,
        pytest.raises(openai.InternalServerError),
    ):
        c.chat.completions.create(model="m", messages=MESSAGES)
    assert len(srv.of("chat/completions")) == 2


# ---------------------------------------------------------------- server itself


def test_keep_alive_and_concurrency(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    for _ in range(3):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert len({r.conn for r in srv.of("chat/completions")}) == 1  # one reused connection

    srv.chat_handler = lambda req: ChatReply(text="a b c d")
    srv.token_delay_s = 0.05

    def one(_: int) -> str:
        parts = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert results == ["a b c d"] * 8
    assert time.monotonic() - t0 < 8 * 3 * 0.05  # served in parallel


def test_wait_for_and_reset(srv: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(AssertionError, match="audio/speech"):
        srv.wait_for("audio/speech", timeout=0.05)
    client.models.list()
    assert len(srv.wait_for("models", timeout=1)) == 1
    srv.script.append(ChatReply(text="x"))
    srv.token_delay_s = 1.0
    srv.api_key = "other"
    srv.fail("models", 500)
    srv.reset()
    assert (srv.requests, srv.script, srv.token_delay_s, srv.api_key) == ([], [], 0.0, "test-key")
    client.models.list()  # the fault is gone too


def test_async_client_streams_and_reuses_connection(srv: FakeOpenAI) -> None:
    async def run() -> tuple[str, int]:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="test-key", max_retries=0) as c:
            text = ""
            for _ in range(2):
                stream = await c.chat.completions.create(model="m", messages=MESSAGES, stream=True)
                async for chunk in stream:
                    text += "".join(ch.delta.content or "" for ch in chunk.choices)
            async with c.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input="Hi.", response_format="pcm"
            ) as response:
                size = sum([len(b) async for b in response.iter_bytes()])
            return text, size

    text, size = asyncio.run(run())
    assert text == "OK.OK." and size > 4800
    # The async SDK drains an SSE body after [DONE], so the connection is reused.
    # (The sync Stream stops reading at [DONE] and its connection is closed instead.)
    assert len({r.conn for r in srv.requests}) == 1


def test_client_abandoning_a_stream(srv: FakeOpenAI, client: openai.OpenAI, capfd: pytest.CaptureFixture[str]) -> None:
    srv.script.append(ChatReply(text="one two three four five six"))
    srv.token_delay_s = 0.02
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    srv.token_delay_s = 0.0
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "OK."
    time.sleep(0.15)  # let the abandoned handler hit the closed socket
    assert "Traceback" not in capfd.readouterr().err


def test_stop_closes_keep_alive_connections() -> None:
    with FakeOpenAI() as other, openai.OpenAI(base_url=other.base_url, api_key="test-key", max_retries=0) as c:
        c.models.list()
        name = f"fake-openai-{other.port}"
        assert name in {t.name for t in threading.enumerate()}
        other.stop()
        with pytest.raises(openai.APIConnectionError):
            c.models.list()  # the pooled keep-alive connection was closed, nothing listens any more
        assert name not in {t.name for t in threading.enumerate()}
