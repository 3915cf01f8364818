"""The local API server speaks the wire format the real ``openai`` SDK parses.

Every daemon test trusts tests/fake_openai.py: if it drifted from what the SDK expects, those
tests would fail (or pass) for the wrong reason. So each endpoint family the daemon uses is
driven here once through the real async client, as the daemon drives it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import openai
import pytest
from fake_openai import TTS_SAMPLE_RATE, ChatReply, FakeOpenAI  # tests/ is on sys.path (see conftest.py)
from support import SpeechFactory

T = TypeVar("T")
MESSAGES: list[Any] = [{"role": "user", "content": "Turn on the kitchen light"}]
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


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(srv: FakeOpenAI) -> None:
    srv.reset()


def with_client(srv: FakeOpenAI, use: Callable[[openai.AsyncOpenAI], Awaitable[T]], **options: Any) -> T:
    """Run `use(client)` with an async OpenAI client (no retries unless asked), as the daemon makes it."""

    async def run() -> T:
        options.setdefault("max_retries", 0)
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="test-key", **options) as client:
            return await use(client)

    return asyncio.run(run())


async def read_stream(client: openai.AsyncOpenAI, **options: Any) -> dict[str, Any]:
    """Consume a streamed completion the way the agent does; what it got, chunk by chunk."""
    stream = await client.chat.completions.create(model="gpt-5.4-mini", messages=MESSAGES, stream=True, **options)
    got: dict[str, Any] = {"content": [], "calls": {}, "finish": None, "usage": []}
    async for chunk in stream:
        if chunk.usage is not None:
            got["usage"].append(chunk.usage)
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        got["finish"] = chunk.choices[0].finish_reason or got["finish"]
        if delta.content:
            got["content"].append(delta.content)
        for call in delta.tool_calls or []:
            entry = got["calls"].setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            if call.function:
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
    return got


def test_chat_streams_text_tool_call_deltas_usage_and_cuts(srv: FakeOpenAI) -> None:
    srv.cached_tokens = 5
    srv.script = [
        ChatReply(
            text="Sure, turning them on.",
            tool_calls=[("turn_on", {"entity_id": "light.kitchen"}), ("turn_on", {"entity_id": "light.hall"})],
        ),
        ChatReply(text="one two three four", cut_after=2),
    ]
    usage = {"stream_options": {"include_usage": True}}
    full = with_client(srv, lambda c: read_stream(c, tools=TOOLS, **usage))
    assert full["content"] == ["Sure,", " turning", " them", " on."]  # word by word, as a model writes
    assert full["finish"] == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in full["calls"].values()] == [
        ("turn_on", {"entity_id": "light.kitchen"}),
        ("turn_on", {"entity_id": "light.hall"}),
    ]
    assert all(c["id"].startswith("call_") for c in full["calls"].values())
    [total] = full["usage"]
    assert total.completion_tokens > 0 and total.prompt_tokens_details.cached_tokens == 5

    cut = with_client(srv, read_stream)  # the connection ends cleanly mid-reply: no finish, no error
    assert (cut["content"], cut["finish"], cut["usage"]) == (["one", " two"], None, [])

    srv.reject_stream_options = True  # the agent recognises this refusal by its text
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        with_client(srv, lambda c: read_stream(c, **usage))
    assert [r.json["stream"] for r in srv.of("chat/completions") if r.json] == [True, True, True]


RESPONSE_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "HassTurnOn",
        "description": "Turns on a device or entity",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
        "strict": False,
    }
]


async def read_response_events(client: openai.AsyncOpenAI, input: list[Any]) -> list[Any]:
    """Every event of a streamed response, as Home Assistant's openai_conversation reads them."""
    stream = await client.responses.create(
        model="gpt-4o-mini", input=input, tools=RESPONSE_TOOLS, max_output_tokens=150, store=False, stream=True
    )
    return [event async for event in stream]


def test_responses_stream_a_function_call_then_text_in_the_wire_format(srv: FakeOpenAI) -> None:
    """Home Assistant's agent turn: a function call, its output sent back, then the answer word by word."""
    from openai.types.responses import (
        ResponseCompletedEvent,
        ResponseCreatedEvent,
        ResponseFunctionCallArgumentsDeltaEvent,
        ResponseFunctionCallArgumentsDoneEvent,
        ResponseFunctionToolCall,
        ResponseOutputItemAddedEvent,
        ResponseOutputMessage,
        ResponseTextDeltaEvent,
    )

    def answer(req: dict[str, Any]) -> ChatReply:  # the bench's handler: a call, then text after its output
        if req["input"][-1].get("type") == "function_call_output":
            return ChatReply(text="The kitchen light is on.")
        return ChatReply(tool_calls=[("HassTurnOn", {"name": "Kitchen light"})])

    srv.responses_handler = answer
    asked = [{"type": "message", "role": "developer", "content": "You are a voice assistant."}]
    asked.append({"type": "message", "role": "user", "content": "Turn on the kitchen light"})
    called = with_client(srv, lambda c: read_response_events(c, asked))
    assert isinstance(called[0], ResponseCreatedEvent) and called[0].response.status == "in_progress"
    assert [e.sequence_number for e in called] == list(range(len(called)))
    added = [e for e in called if isinstance(e, ResponseOutputItemAddedEvent)]
    assert len(added) == 1 and isinstance(added[0].item, ResponseFunctionToolCall)
    call = added[0].item
    assert (call.name, call.arguments, call.call_id[:5]) == ("HassTurnOn", "", "call_")
    deltas = [e.delta for e in called if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    [done] = [e for e in called if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
    assert len(deltas) == 3 and "".join(deltas) == done.arguments == '{"name":"Kitchen light"}'
    assert isinstance(called[-1], ResponseCompletedEvent) and called[-1].response.status == "completed"
    assert called[-1].response.output[0].type == "function_call"
    assert called[-1].response.usage is not None and called[-1].response.usage.input_tokens > 0

    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"success": true}'}
    function_call = {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": done.arguments}
    answered = with_client(srv, lambda c: read_response_events(c, [*asked, function_call, result]))
    [message] = [e.item for e in answered if isinstance(e, ResponseOutputItemAddedEvent)]
    assert isinstance(message, ResponseOutputMessage) and message.role == "assistant"
    text = [e.delta for e in answered if isinstance(e, ResponseTextDeltaEvent)]
    assert text == ["The", " kitchen", " light", " is", " on."]
    assert isinstance(answered[-1], ResponseCompletedEvent)
    assert answered[-1].response.output[0].content[0].text == "The kitchen light is on."  # type: ignore[union-attr]

    first, second = srv.of("responses")
    assert first.json is not None and first.json["tools"] == RESPONSE_TOOLS and first.json["stream"] is True
    assert second.json is not None and second.json["input"][-1] == result


def test_responses_end_incomplete_or_cut_and_refuse_unstreamed_requests(srv: FakeOpenAI) -> None:
    from openai.types.responses import ResponseIncompleteEvent, ResponseTextDeltaEvent

    srv.script = [ChatReply(text="one two three", finish_reason="length"), ChatReply(text="one two three", cut_after=1)]
    ask = [{"role": "user", "content": "Hello"}]
    truncated = with_client(srv, lambda c: read_response_events(c, ask))
    assert isinstance(truncated[-1], ResponseIncompleteEvent)
    assert truncated[-1].response.incomplete_details is not None
    assert truncated[-1].response.incomplete_details.reason == "max_output_tokens"
    cut = with_client(srv, lambda c: read_response_events(c, ask))  # the body ends cleanly mid-reply
    assert [e.delta for e in cut if isinstance(e, ResponseTextDeltaEvent)] == ["one"]
    assert cut[-1].type == "response.output_text.delta"
    with pytest.raises(openai.BadRequestError, match="stream"):
        with_client(srv, lambda c: c.responses.create(model="gpt-4o-mini", input="Hello"))


def test_transcription_formats_and_multipart_upload(srv: FakeOpenAI, speech: SpeechFactory) -> None:
    wav = speech("turn on the kitchen light").read_bytes()
    srv.transcript = "turn on the kitchen light"

    async def transcribe(client: openai.AsyncOpenAI) -> list[Any]:
        results = []
        for fmt in ("json", "text", "verbose_json"):  # the values stt.response_format allows
            upload = ("utterance.wav", wav, "audio/wav")
            results.append(
                await client.audio.transcriptions.create(
                    model="gpt-4o-mini-transcribe", file=upload, response_format=fmt, language="de", temperature=0.2
                )
            )
        return results

    as_json, as_text, verbose = with_client(srv, transcribe)
    assert as_json.text == verbose.text == "turn on the kitchen light"
    assert as_text.strip() == "turn on the kitchen light"
    with wave.open(str(speech("turn on the kitchen light"))) as w:
        assert verbose.duration == pytest.approx(w.getnframes() / w.getframerate(), abs=0.01)
    assert verbose.language == "german"
    first = srv.of("audio/transcriptions")[0]
    assert first.form == {
        "model": "gpt-4o-mini-transcribe",
        "response_format": "json",
        "language": "de",
        "temperature": "0.2",
    }
    assert first.files["file"] == ("utterance.wav", wav, "audio/wav")

    not_wav = ("a.mp3", b"ID3 not a wav", "audio/mpeg")
    with pytest.raises(openai.BadRequestError, match="WAV"):
        with_client(srv, lambda c: c.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=not_wav))


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_both_streams_wait_the_injected_delays_before_each_word(srv: FakeOpenAI, api: str) -> None:
    """The first word comes after `first_token_delay_s`, each next one `token_delay_s` later (at
    least: a loaded machine only adds to it), in either API: latency tests rely on it."""
    srv.first_token_delay_s, srv.token_delay_s = 0.3, 0.1
    srv.script = [ChatReply(text="one two three four")]

    async def word_times(client: openai.AsyncOpenAI) -> list[float]:
        started = time.monotonic()
        if api == "chat":
            chat = await client.chat.completions.create(model="gpt-5.4-mini", messages=MESSAGES, stream=True)
            return [time.monotonic() - started async for c in chat if c.choices and c.choices[0].delta.content]
        response = await client.responses.create(model="gpt-4o-mini", input="Count to four", stream=True)
        return [time.monotonic() - started async for e in response if e.type == "response.output_text.delta"]

    times = with_client(srv, word_times)
    assert len(times) == 4
    assert all(at >= 0.3 + 0.1 * index for index, at in enumerate(times)), times  # sent no earlier


def test_speech_streams_raw_pcm_in_chunks(srv: FakeOpenAI) -> None:
    async def speak(client: openai.AsyncOpenAI) -> tuple[str, list[bytes]]:
        async with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alloy", input="The kitchen light is now on.", response_format="pcm"
        ) as response:
            return response.headers["content-type"], [chunk async for chunk in response.iter_bytes(4800)]

    content_type, chunks = with_client(srv, speak)
    audio = b"".join(chunks)
    assert content_type == "audio/pcm" and len(chunks) > 1
    assert len(audio) % 2 == 0 and 1.0 < len(audio) / 2 / TTS_SAMPLE_RATE < 4.0  # 16-bit mono at 24 kHz
    with pytest.raises(openai.BadRequestError, match="response_format"):  # never faked: the daemon asks for pcm
        with_client(srv, lambda c: c.audio.speech.create(model="m", voice="alloy", input="Hi.", response_format="mp3"))


def test_images_come_back_as_base64_png(srv: FakeOpenAI) -> None:
    result = with_client(srv, lambda c: c.images.generate(prompt="a red fox", model="gpt-image-2", n=2))
    assert result.data is not None and len(result.data) == 2
    assert base64.b64decode(result.data[0].b64_json or "").startswith(b"\x89PNG\r\n\x1a\n")
    assert result.data[0].revised_prompt == "A picture of a red fox"


def test_azure_paths_api_version_and_credentials(srv: FakeOpenAI, speech: SpeechFactory) -> None:
    wav = speech("hello there").read_bytes()
    srv.transcript = "azure words"

    async def run(**credentials: Any) -> tuple[list[str], str, str]:
        async with (
            openai.AsyncAzureOpenAI(
                azure_endpoint=srv.url,
                api_version="2024-10-21",
                azure_deployment="chat-dep",
                max_retries=0,
                **credentials,
            ) as chat,
            openai.AsyncAzureOpenAI(
                azure_endpoint=srv.url, api_version="2024-10-21", max_retries=0, **credentials
            ) as plain,
        ):
            models = [m.id async for m in chat.models.list()]
            reply = await read_stream(chat)
            heard = await plain.audio.transcriptions.create(model="stt-dep", file=("u.wav", wav, "audio/wav"))
            return models, "".join(reply["content"]), heard.text

    models, reply, heard = asyncio.run(run(api_key="test-key"))
    assert "gpt-5.4-mini" in models and reply == "OK." and heard == "azure words"
    assert [(r.path, r.deployment, r.api_version) for r in srv.requests] == [
        ("/openai/models", None, "2024-10-21"),
        ("/openai/deployments/chat-dep/chat/completions", "chat-dep", "2024-10-21"),
        # without azure_deployment the SDK puts the model into the path
        ("/openai/deployments/stt-dep/audio/transcriptions", "stt-dep", "2024-10-21"),
    ]
    assert all(r.headers["api-key"] == "test-key" and "authorization" not in r.headers for r in srv.requests)

    srv.reset()
    asyncio.run(run(azure_ad_token="test-ad-token"))
    assert all(r.headers["authorization"] == "Bearer test-ad-token" for r in srv.requests)
    assert all("api-key" not in r.headers for r in srv.requests)
    with pytest.raises(openai.AuthenticationError):
        asyncio.run(run(azure_ad_token="wrong"))


def test_faults_reach_the_sdk_as_the_real_api_sends_them(srv: FakeOpenAI) -> None:
    """The credential check's 401, a 429 with Retry-After (honoured by the SDK), 500s that outlast the retries."""
    with pytest.raises(openai.AuthenticationError) as refused:
        asyncio.run(_list_models(srv, api_key="wrong"))
    assert refused.value.code == "invalid_api_key" and len(srv.of("models")) == 1  # a 401 is not retried

    srv.fail("chat/completions", 429, retry_after=1.0)  # twice the SDK's own first backoff (at most 0.5 s)
    assert with_client(srv, read_stream, max_retries=2)["content"] == ["OK."]
    first, second = srv.of("chat/completions")
    assert second.t - first.t >= 1.0, "retried before Retry-After"
    assert (first.headers["x-stainless-retry-count"], second.headers["x-stainless-retry-count"]) == ("0", "1")

    srv.fail("models", 500, times=5)
    with pytest.raises(openai.InternalServerError):
        asyncio.run(_list_models(srv, api_key="test-key", max_retries=1))
    assert len(srv.of("models")) == 3  # the one 401, then one try and one retry


async def _list_models(srv: FakeOpenAI, **options: Any) -> list[str]:
    async with openai.AsyncOpenAI(base_url=srv.base_url, **{"max_retries": 0, **options}) as client:
        return [m.id async for m in client.models.list()]
