"""The local Realtime server speaks the protocol the real openai SDK client expects, both URL shapes."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest
from fake_openai import synth_pcm
from fake_realtime import RATE_LIMIT, FakeRealtime, RealtimeReply
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from support import correlate
from websockets.exceptions import ConnectionClosed, InvalidStatus

MODEL = "gpt-realtime-2.1-mini"
SESSION: dict[str, Any] = {
    "type": "realtime",
    "instructions": "Be brief.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "turn_detection": None,
            "transcription": {"model": "gpt-4o-mini-transcribe"},
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
    },
    "tools": [{"type": "function", "name": "turn_on", "parameters": {"type": "object", "properties": {}}}],
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRealtime]:
    with FakeRealtime() as fake:
        yield fake


@pytest.fixture
def realtime(server: FakeRealtime) -> FakeRealtime:
    server.reset()
    return server


def openai_client(fake: FakeRealtime, key: str = "test-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_url, api_key=key)


def azure_client(fake: FakeRealtime, **auth: str) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=fake.azure_url,
        api_version="2025-08-28",
        websocket_base_url=fake.azure_ws_url,
        **(auth or {"api_key": "test-key"}),  # type: ignore[arg-type]
    )


async def until(conn: AsyncRealtimeConnection, kind: str) -> list[Any]:
    """Every event up to and including the first of `kind`."""
    seen = []
    async with asyncio.timeout(20):
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                return seen
    raise AssertionError(f"the connection closed before {kind}: {[e.type for e in seen]}")


async def spoken_turn(client: openai.AsyncOpenAI, text: str) -> list[Any]:
    async with client.realtime.connect(model=MODEL) as conn:
        await conn.session.update(session=SESSION)  # type: ignore[arg-type]
        await until(conn, "session.updated")
        await conn.input_audio_buffer.append(audio=base64.b64encode(synth_pcm(text)).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await until(conn, "response.done")
        if not any(e.type == "conversation.item.input_audio_transcription.completed" for e in events):
            events += await until(conn, "conversation.item.input_audio_transcription.completed")
        return events


def check_spoken_reply(events: list[Any], said: str, answer: str) -> None:
    kinds = [e.type for e in events]
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created") < kinds.index("response.done")
    audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    score, _lag = correlate(np.frombuffer(audio, dtype=np.int16), np.frombuffer(synth_pcm(answer), dtype=np.int16))
    assert score > 0.9
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert transcript == answer
    heard = [e.transcript for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert heard == [said]
    assert events[kinds.index("response.done")].response.status == "completed"


def test_openai_shape_spoken_turn(realtime: FakeRealtime) -> None:
    realtime.transcript = "turn on the light"
    realtime.script.append(RealtimeReply(text="The light is on."))
    events = asyncio.run(spoken_turn(openai_client(realtime), "turn on the light"))
    check_spoken_reply(events, "turn on the light", "The light is on.")
    update = realtime.of("session.update")[0]
    assert update.path == "/v1/realtime" and update.query == {"model": MODEL}
    assert update.headers["authorization"] == "Bearer test-key"
    assert update.event["session"]["audio"]["input"]["turn_detection"] is None
    appended = sum(len(base64.b64decode(e.event["audio"])) for e in realtime.of("input_audio_buffer.append"))
    assert appended == len(synth_pcm("turn on the light"))


def test_azure_shape_with_key_and_with_ad_token(realtime: FakeRealtime) -> None:
    realtime.script += [RealtimeReply(text="Hello."), RealtimeReply(text="Hello.")]
    asyncio.run(spoken_turn(azure_client(realtime), "hello"))
    asyncio.run(spoken_turn(azure_client(realtime, azure_ad_token="test-key"), "hello"))
    first, second = (e for e in realtime.of("session.update"))
    assert first.path == second.path == "/openai/realtime"
    assert first.query == {"api-version": "2025-08-28", "deployment": MODEL}
    assert first.headers["api-key"] == "test-key" and "authorization" not in first.headers
    assert second.headers["authorization"] == "Bearer test-key" and "api-key" not in second.headers


@pytest.mark.parametrize("how", ["key", "path", "refused"])
def test_handshake_refusals(realtime: FakeRealtime, how: str) -> None:
    async def connect() -> None:
        client = openai_client(realtime, key="wrong" if how == "key" else "test-key")
        if how == "path":
            client = openai.AsyncOpenAI(base_url=realtime.openai_url.replace("/v1", "/v2"), api_key="test-key")
        async with client.realtime.connect(model=MODEL):
            pass

    if how == "refused":
        realtime.refuse_status = 429
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(connect())
    assert refused.value.response.status_code == {"key": 401, "path": 404, "refused": 429}[how]


def test_function_call_round_trip(realtime: FakeRealtime) -> None:
    def model(items: list[dict[str, Any]]) -> RealtimeReply:
        if items[-1]["type"] == "function_call_output":
            return RealtimeReply(text="Done.")
        return RealtimeReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})])

    realtime.responder = model

    async def run() -> tuple[list[Any], list[Any]]:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await conn.session.update(session=SESSION)  # type: ignore[arg-type]
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "light on"}]}
            )
            await conn.response.create()
            first = await until(conn, "response.done")
            call = next(e for e in first if e.type == "response.function_call_arguments.done")
            output = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"ok": True})}
            await conn.conversation.item.create(item=output)  # type: ignore[arg-type]
            await conn.response.create()
            return first, await until(conn, "response.done")

    first, second = asyncio.run(run())
    arguments = "".join(e.delta for e in first if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"entity_id": "light.kitchen"}
    done = next(e for e in first if e.type == "response.done").response
    assert done.output[0].type == "function_call" and done.output[0].name == "turn_on"
    assert "".join(e.delta for e in second if e.type == "response.output_audio_transcript.delta") == "Done."


def test_cancel_and_truncate(realtime: FakeRealtime) -> None:
    realtime.audio_chunk_delay_s = 0.05
    realtime.script.append(RealtimeReply(text="This is a rather long answer that nobody wants to hear in full."))

    async def run() -> list[Any]:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await conn.response.create()
            events = await until(conn, "response.output_audio.delta")
            await conn.response.cancel()
            events += await until(conn, "response.done")
            item_id = events[-1].response.output[0].id
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=100)
            events += await until(conn, "conversation.item.truncated")
            await conn.response.cancel()  # nothing to cancel any more: an error event, not a closed socket
            return events + await until(conn, "error")

    events = asyncio.run(run())
    done = next(e for e in events if e.type == "response.done").response
    assert done.status == "cancelled"
    assert next(e for e in events if e.type == "conversation.item.truncated").audio_end_ms == 100
    assert events[-1].error.code == "response_cancel_not_active"
    assert sum(e.type == "response.output_audio.delta" for e in events) < 20


def test_rate_limit_then_next_response_works(realtime: FakeRealtime) -> None:
    realtime.fail_next_response()
    realtime.fail_next_response(how="error", code="server_error", message="boom")

    async def run() -> list[list[Any]]:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            rounds = []
            for _ in range(3):
                await conn.response.create()
                rounds.append(await until(conn, "response.done"))
            return rounds

    limited, errored, ok = asyncio.run(run())
    status = limited[-1].response.status_details
    assert limited[-1].response.status == "failed" and status.error.code == RATE_LIMIT[0]
    assert any(e.type == "rate_limits.updated" for e in limited)
    assert next(e for e in errored if e.type == "error").error.code == "server_error"
    assert ok[-1].response.status == "completed"


def test_dropped_socket_and_expiry(realtime: FakeRealtime) -> None:
    realtime.drop_at("response.output_audio.delta")

    async def dropped() -> None:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await conn.response.create()
            await until(conn, "response.done")

    with pytest.raises(ConnectionClosed):
        asyncio.run(dropped())

    async def expired() -> list[Any]:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await until(conn, "session.created")
            await asyncio.to_thread(realtime.expire)
            seen = await until(conn, "error")
            async for event in conn:  # the server closes after the error: the iteration ends
                seen.append(event)
            return seen

    events = asyncio.run(expired())
    assert events[0].error.code == "session_expired"


def test_server_vad_commits_and_answers_by_itself(realtime: FakeRealtime) -> None:
    realtime.script.append(RealtimeReply(text="Yes."))
    session = {**SESSION, "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}}

    async def run() -> list[Any]:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await conn.session.update(session=session)  # type: ignore[arg-type]
            audio = synth_pcm("are you there") + bytes(24000)  # half a second of silence after it
            for start in range(0, len(audio), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(audio[start : start + 4800]).decode())
            return await until(conn, "response.done")

    kinds = [e.type for e in asyncio.run(run())]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
    assert realtime.of("input_audio_buffer.commit") == [] and realtime.of("response.create") == []


def test_beta_session_shape_is_refused(realtime: FakeRealtime) -> None:
    async def run() -> list[Any]:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await conn.session.update(session={"type": "realtime", "voice": "alloy"})  # type: ignore[typeddict-unknown-key]
            return await until(conn, "error")

    assert "voice" in asyncio.run(run())[-1].error.message


def test_model_list_answers_the_credential_check(realtime: FakeRealtime) -> None:
    async def run() -> list[str]:
        async with openai_client(realtime) as good, openai_client(realtime, key="wrong") as bad:
            models = await good.models.list()
            with pytest.raises(openai.AuthenticationError):
                await bad.models.list()
        return [m.id for m in models.data]

    assert "gpt-realtime-2.1-mini" in asyncio.run(run())


def test_expiry_at_an_event_and_the_first_audio_delay(realtime: FakeRealtime) -> None:
    realtime.first_audio_delay_s = 0.3
    realtime.script.append(RealtimeReply(text="Hi."))

    async def timed() -> None:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await conn.response.create()
            await until(conn, "response.done")

    asyncio.run(timed())
    first_audio = realtime.sent_at("response.output_audio.delta")[0] - realtime.sent_at("response.created")[0]
    assert 0.3 <= first_audio < 1.0  # held back at least the delay (the upper bound allows for a loaded machine)
    realtime.drop_at("response.created", how="expire")

    async def expired() -> list[Any]:
        async with openai_client(realtime).realtime.connect(model=MODEL) as conn:
            await conn.response.create()
            return [event async for event in conn]  # an error, then the server closes the session

    events = asyncio.run(expired())
    assert [e.type for e in events] == ["session.created", "error"] and events[-1].error.code == "session_expired"
