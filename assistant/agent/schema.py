"""Checks a tool's arguments against the very JSON schema that advertises the tool.

One schema per tool both tells the model what to send and decides what is accepted, so
the two cannot drift apart. Only the subset the tools use is understood: `type`,
`enum`, `minimum` / `maximum`, `minLength` / `maxLength`, `required`, `properties`,
`additionalProperties` (true or false), `items`, `minItems` / `maxItems`. An unknown
keyword is a programming error, raised at once (see `check_schema`).
"""

from __future__ import annotations

import json
import math
from typing import Any

KEYWORDS = {
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
}
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class SchemaError(ValueError):
    """Arguments that do not fit the schema; the message says where and why, for the model."""


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse a schema that uses keywords this validator would silently ignore."""
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError(f"schema keywords not supported: {sorted(unknown)}")
    if "type" in schema and schema["type"] not in _TYPES:
        raise ValueError(f"schema type not supported: {schema['type']!r}")
    for sub in schema.get("properties", {}).values():
        check_schema(sub)
    if isinstance(schema.get("items"), dict):
        check_schema(schema["items"])


def validate(value: Any, schema: dict[str, Any], path: str = "arguments") -> None:
    """Raise SchemaError for the first way `value` breaks `schema`."""
    kind = schema.get("type")
    if kind is not None and not _is_type(value, kind):
        raise SchemaError(f"{path}: must be {'an' if kind in ('object', 'array', 'integer') else 'a'} {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: must be one of {', '.join(json.dumps(v) for v in schema['enum'])}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{path}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: must be at most {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(f"{path}: must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(f"{path}: must have at most {schema['maxLength']} characters")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise SchemaError(f"{path}: must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{path}: must have at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                validate(item, schema["items"], f"{path}[{index}]")
    if isinstance(value, dict):
        _validate_object(value, schema, path)


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            raise SchemaError(f"{path}: {name} is required")
    for name, item in value.items():
        where = name if path == "arguments" else f"{path}.{name}"
        if name in properties:
            validate(item, properties[name], where)
        elif schema.get("additionalProperties") is False:
            allowed = ", ".join(properties) or "none"
            raise SchemaError(f"{path}: unexpected {json.dumps(name)[:60]} (allowed: {allowed})")


def _is_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "boolean":
        return False  # JSON's true is not the number 1
    if not isinstance(value, _TYPES[kind]):
        return False
    if isinstance(value, float):
        return math.isfinite(value) and (kind != "integer" or value.is_integer())
    return True
