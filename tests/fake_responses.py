"""The Responses API's streamed wire format, for tests/fake_openai.py's ``/v1/responses``.

Home Assistant's openai_conversation (2025.4 on) calls ``client.responses.create(stream=True)``
and reads the stream event by event (``response.output_item.added`` starts a message or a function
call, ``response.output_text.delta`` and ``response.function_call_arguments.delta`` / ``.done``
carry them, ``response.completed`` ends it with the usage). The events here have the shapes of the
SDK's models under ``openai/types/responses`` (``sequence_number`` and ``logprobs`` as the current
API sends them; older SDKs ignore fields they do not know), so the real client parses them and
bench/side_by_side.py can point a real Home Assistant at the fake server.

A :class:`~fake_openai.ChatReply` is rendered as a text message (if it has text) followed by one
``function_call`` item per tool call; ``finish_reason`` ``"length"`` or ``"content_filter"`` ends the
stream with ``response.incomplete`` (reason ``max_output_tokens`` / ``content_filter``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def input_text(req: dict[str, Any]) -> str:
    """Everything the request carries for the model (instructions, input, tools), as one string."""
    return json.dumps([req.get("instructions"), req.get("input"), req.get("tools")], ensure_ascii=False)


def last_input_type(req: dict[str, Any]) -> str | None:
    """The type of the request's last input item ("message", "function_call_output", ...)."""
    items = req.get("input")
    if isinstance(items, str) or not items:
        return "message" if items else None
    last = items[-1]
    return str(last.get("type") or "message") if isinstance(last, dict) else None


def _response(req: dict[str, Any], response_id: str, created: int) -> dict[str, Any]:
    """The response object as the API echoes it in response.created (status in_progress, no output)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": str(req["model"]),
        "output": [],
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": req.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "auto",
        "store": req.get("store", True),
        "temperature": req.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") or [],
        "top_logprobs": 0,
        "top_p": req.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }


def events(
    req: dict[str, Any],
    text_pieces: list[str],
    calls: list[tuple[str, str, str]],
    finish_reason: str | None,
    input_tokens: int,
    pace: Callable[[], None] = lambda: None,
) -> Iterator[dict[str, Any]]:
    """The stream's events in order: `text_pieces` as one message, then each (call_id, name, arguments).

    `pace()` is called before each delta (the server's injected token delay).
    """
    sequence = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return {"type": kind, "sequence_number": sequence - 1, **fields}

    response = _response(req, "resp_" + secrets.token_hex(24), int(time.time()))
    yield event("response.created", response=response)
    yield event("response.in_progress", response=response)
    output: list[dict[str, Any]] = []
    if text_pieces:
        item_id = "msg_" + secrets.token_hex(24)
        index = len(output)
        message: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        yield event("response.output_item.added", output_index=index, item=message)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        yield event("response.content_part.added", **where, part=part)
        for piece in text_pieces:
            pace()
            yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
        text = "".join(text_pieces)
        yield event("response.output_text.done", **where, text=text, logprobs=[])
        part = {**part, "text": text}
        yield event("response.content_part.done", **where, part=part)
        message = {**message, "status": "completed", "content": [part]}
        yield event("response.output_item.done", output_index=index, item=message)
        output.append(message)
    for call_id, name, arguments in calls:
        item_id = "fc_" + secrets.token_hex(24)
        index = len(output)
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call_id,
            "name": name,
        }
        yield event("response.output_item.added", output_index=index, item=item)
        for fragment in _thirds(arguments):
            pace()
            yield event("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=fragment)
        yield event("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments)
        item = {**item, "status": "completed", "arguments": arguments}
        yield event("response.output_item.done", output_index=index, item=item)
        output.append(item)
    output_tokens = len(text_pieces) + sum(len(c[1]) + len(c[2]) for c in calls) // 4
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    incomplete = INCOMPLETE.get(finish_reason or "")
    final = {**response, "output": output, "usage": usage}
    if incomplete is None:
        yield event("response.completed", response={**final, "status": "completed"})
    else:
        final |= {"status": "incomplete", "incomplete_details": {"reason": incomplete}}
        yield event("response.incomplete", response=final)


def _thirds(text: str) -> list[str]:
    """Arguments in three deltas, as a model streams them."""
    if len(text) < 3:
        return [text]
    a, b = len(text) // 3, 2 * len(text) // 3
    return [text[:a], text[a:b], text[b:]]
