"""Parsing what arrives on the MQTT input topics: plain text or a JSON object.

Everything is checked here, so the service only ever sees well-formed requests and
every bad payload becomes one clear `event/error`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_TEXT_CHARS = 2000


class BadRequest(Exception):
    """A payload that cannot be acted on; `request_id` is echoed when it was readable."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    """A text request (ask or say)."""

    text: str
    id: str
    speak: bool = False
    conversation_id: str | None = None


def new_id() -> str:
    """A short random request id for turns nobody named."""
    return uuid.uuid4().hex[:12]


def _is_text(value: Any) -> bool:
    """Whether every string in a decoded JSON value can be encoded as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_payload(payload: bytes) -> Any:
    """UTF-8 text within the size limit; a JSON object when it looks like one."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadRequest(f"payload too large ({len(payload)} bytes, at most {MAX_PAYLOAD_BYTES})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("payload is not UTF-8 text") from None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as error:
            raise BadRequest(f"invalid JSON: {error}") from None
        except RecursionError:
            raise BadRequest("invalid JSON: nested too deeply") from None
        if not _is_text(data):  # "\ud800" is valid JSON but no text: it cannot be sent on or spoken
            request_id = data.get("id") if isinstance(data, dict) and _is_text(data.get("id")) else None
            raise BadRequest(
                "invalid JSON: contains a lone surrogate, which is not text",
                str(request_id) if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None,
            )
        return data
    return stripped


def optional_str(data: dict[str, Any], key: str, request_id: str | None) -> str | None:
    """An optional string (or number) field; anything else is a BadRequest."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{key!r} must be a string", request_id)
    return str(value)


def text_request(payload: bytes, key: str, max_chars: int) -> tuple[dict[str, Any], str, str | None]:
    """Plain text, or a JSON object whose `key` holds the text: (fields, text, id)."""
    data = decode_payload(payload)
    if isinstance(data, str):
        data = {key: data}
    if not isinstance(data, dict):
        raise BadRequest(f"expected {key} text or a JSON object")
    request_id = optional_str(data, "id", None)
    text = data.get(key)
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{key!r} must be a non-empty string", request_id)
    if len(text) > max_chars:
        raise BadRequest(f"{key!r} is too long ({len(text)} characters, at most {max_chars})", request_id)
    return data, text.strip(), request_id


def parse_text_request(payload: bytes, *, speak_default: bool) -> Request:
    """`{"text", "id", "speak", "conversation_id"}` or plain text."""
    data, text, request_id = text_request(payload, "text", MAX_TEXT_CHARS)
    speak = data.get("speak", speak_default)
    if not isinstance(speak, bool):
        raise BadRequest("'speak' must be true or false", request_id)
    conversation_id = optional_str(data, "conversation_id", request_id)
    return Request(text, request_id or new_id(), speak, conversation_id)


BUTTON_PRESS = "PRESS"  # Home Assistant's default MQTT button payload: the same on every press, so not an id


def parse_signal(payload: bytes) -> str:
    """For listen / cancel: an optional id (plain text or `{"id"}`); returns the id.

    Without one (or with a button's constant PRESS) a fresh id is made, so that the
    events of each press can be told apart.
    """
    data = decode_payload(payload)
    if isinstance(data, dict):
        return optional_str(data, "id", None) or new_id()
    if isinstance(data, str) and len(data) <= 64:
        return new_id() if data in ("", BUTTON_PRESS) else data
    raise BadRequest('expected an empty payload, an id, or {"id": ...}')


def parse_switch(payload: bytes) -> bool:
    """ON / OFF (also true/false, 1/0, or {"state": ...}) for mute/set."""
    data = decode_payload(payload)
    if isinstance(data, dict):
        data = data.get("state")
    value = str(data).strip().lower()
    if value in ("on", "true", "1"):
        return True
    if value in ("off", "false", "0"):
        return False
    raise BadRequest("expected ON or OFF")
