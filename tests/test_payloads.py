"""MQTT input payloads: plain text or JSON, ids echoed, everything else a clear error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.config import parse_config
from assistant.daemon.payloads import MAX_PAYLOAD_BYTES, BadRequest, parse_signal, parse_text_request
from assistant.home.announce import discovery_payload


def test_plain_text() -> None:
    request = parse_text_request(b"  turn on the light ", speak_default=False)
    assert request.text == "turn on the light"
    assert request.speak is False
    assert len(request.id) == 12


def test_json_with_everything() -> None:
    request = parse_text_request(
        b'{"text": "hi", "id": "r1", "speak": true, "conversation_id": "c9"}', speak_default=False
    )
    assert (request.text, request.id, request.speak, request.conversation_id) == ("hi", "r1", True, "c9")


@pytest.mark.parametrize(
    ("payload", "message", "request_id"),
    [
        (b"", "'text' must be a non-empty string", None),
        (b'{"id": "r2"}', "'text' must be a non-empty string", "r2"),
        (b'{"text": 5, "id": 7}', "'text' must be a non-empty string", "7"),
        (b'{"text": "x", "speak": "yes", "id": "r3"}', "'speak' must be true or false", "r3"),
        (b'{"text": "x", "id": {"a": 1}}', "'id' must be a string", None),
        (b"{broken", "invalid JSON", None),
        (b"\xff\xfe\x00", "not UTF-8", None),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), "payload too large", None),
        (('{"text": "' + "a" * 3000 + '"}').encode(), "too long", None),
    ],
)
def test_bad_payloads(payload: bytes, message: str, request_id: str | None) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        parse_text_request(payload, speak_default=False)
    assert caught.value.request_id == request_id


def test_signal_ids() -> None:
    assert parse_signal(b'{"id": "abc"}') == "abc"
    assert parse_signal(b"kitchen-7") == "kitchen-7"
    assert len(parse_signal(b"")) == 12
    with pytest.raises(BadRequest):
        parse_signal(b"x" * 100)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_bad_request(payload: bytes) -> None:
    try:
        request = parse_text_request(payload, speak_default=True)
    except BadRequest:
        return
    assert request.text and isinstance(request.speak, bool)


def test_every_button_press_gets_its_own_id() -> None:
    config = parse_config({}, {"OPENAI_API_KEY": "k"})
    button = json.loads(discovery_payload(config))["components"]["listen"]
    press = button.get("payload_press", "PRESS").encode()  # what Home Assistant sends on a press
    ids = {parse_signal(press) for _ in range(3)} | {parse_signal(b"PRESS") for _ in range(3)}
    assert len(ids) == 6
    assert all(len(i) == 12 for i in ids)
