"""Bounds on everything from the house that can reach the model.

States and attributes come from MQTT, where anyone on the broker can publish anything:
a 10 MB state message, an attribute holding a list of 100,000 items, JSON nested a
thousand deep. Each value is capped once, where it is stored, so the registry, the
instructions template, `get_state` and the prompt all see bounded values. The caps
follow Home Assistant's own limit of 255 characters for a state.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_TEXT_CHARS = 255  # a state or a string attribute (Home Assistant's own state limit)
MAX_KEY_CHARS = 64  # an attribute name or a key inside an attribute
MAX_ITEMS = 16  # items of a list, keys of a dict inside an attribute
MAX_DEPTH = 3  # nesting inside one attribute value
MAX_VALUE_CHARS = 1024  # about what one attribute value may take once written as JSON
MAX_ATTRIBUTES = 32  # attributes kept per entity (the first ones seen)
MAX_SUMMARY_CHARS = 2000  # one entity as the model reads it (get_state, find_entities)
MAX_PAYLOAD_CHARS = 65536  # a state message longer than this is not parsed or templated, only capped
ELLIPSIS = "…"


CHARS_PER_TOKEN = 3


def estimate_tokens(text: str) -> int:
    """Tokens of `text`, estimated on the safe side: one per 3 characters (rounded up).

    No tokenizer ships with the daemon. English prose runs about 4 characters a token,
    entity ids, area names with numbers and states nearer 3 (bench/prompt_tokens.py
    compares with a real tokenizer), so a listing estimated within its budget is within
    it in fact.
    """
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def cap_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` cut to at most `limit` characters, the cut marked with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def cap_value(value: Any, budget: int = MAX_VALUE_CHARS) -> Any:
    """A JSON-able copy of `value` within the caps: strings cut, lists and dicts shortened,
    deep nesting and non-finite numbers replaced by text. Its JSON is about `budget`
    characters at most.
    """
    return _cap(value, budget, 0)[0]


def _cap(value: Any, budget: int, depth: int) -> tuple[Any, int]:
    """(capped value, its approximate JSON length)."""
    if value is None or isinstance(value, bool):
        return value, 5
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value), 6  # NaN and Infinity are not JSON: the API would refuse the request
        text = repr(value)
        return (value, len(text)) if len(text) <= MAX_TEXT_CHARS else (cap_text(text, min(budget, 40)), 40)
    if isinstance(value, str):
        text = cap_text(value, max(8, min(budget, MAX_TEXT_CHARS)))
        return text, len(text) + 2
    if isinstance(value, list | tuple | dict):
        if depth >= MAX_DEPTH:
            return ELLIPSIS, 3
        return _cap_container(value, budget, depth)
    text = cap_text(str(value), max(8, min(budget, MAX_TEXT_CHARS)))
    return text, len(text) + 2


def _cap_container(value: list[Any] | tuple[Any, ...] | dict[Any, Any], budget: int, depth: int) -> tuple[Any, int]:
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    kept: list[tuple[Any, Any]] = []
    used = 2
    for key, item in items[:MAX_ITEMS]:
        if used >= budget:
            break
        name = cap_text(str(key), MAX_KEY_CHARS) if isinstance(value, dict) else key
        capped, cost = _cap(item, budget - used, depth + 1)
        kept.append((name, capped))
        used += cost + (len(str(name)) + 4 if isinstance(value, dict) else 1)
    dropped = len(items) - len(kept)
    if isinstance(value, dict):
        result: dict[str, Any] = dict(kept)
        if dropped:
            result[ELLIPSIS] = f"{dropped} more"
        return result, used
    values = [item for _, item in kept]
    if dropped:
        values.append(f"{ELLIPSIS} {dropped} more")
    return values, used


def cap_attributes(current: dict[str, Any], updates: dict[str, Any]) -> None:
    """Merge `updates` into `current`, capped; new names beyond MAX_ATTRIBUTES are dropped."""
    for key, value in updates.items():
        name = cap_text(str(key), MAX_KEY_CHARS)
        if name in current or len(current) < MAX_ATTRIBUTES:
            current[name] = cap_value(value)


def bounded_attributes(attributes: dict[str, Any], limit: int = MAX_SUMMARY_CHARS) -> tuple[dict[str, Any], int]:
    """The attributes that fit in `limit` characters of JSON (in order), and how many did not."""
    kept: dict[str, Any] = {}
    used = 0
    for key, value in attributes.items():
        cost = len(json.dumps({key: value}, ensure_ascii=False, default=str))
        if used + cost > limit:
            break
        kept[key] = value
        used += cost
    return kept, len(attributes) - len(kept)
