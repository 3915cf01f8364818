"""One Jinja environment with Home Assistant's template semantics, for every template rendered.

MQTT value and command templates, the agent's instructions and the fast path's spoken
responses are all Home Assistant templates, so they share one sandboxed environment:
the same `float` and `int` (as filters and functions; a value that is not a number is an
error unless a default is given, as in Home Assistant since 2021.12), and `is_defined`.
Undefined names render empty, as in Home Assistant; `strict_environment` (the same
environment, overlaid) makes them errors, to check the instructions when the daemon starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

_NO_DEFAULT: Any = object()


def _to_float(value: Any, default: Any = _NO_DEFAULT) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return _fallback("float", value, default)


def _to_int(value: Any, default: Any = _NO_DEFAULT, base: int = 10) -> Any:
    try:
        return int(value, base) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        pass
    try:
        return int(float(value))  # "3.7" -> 3, as Jinja's own int filter does
    except (TypeError, ValueError, OverflowError):
        return _fallback("int", value, default)


def _fallback(name: str, value: Any, default: Any) -> Any:
    if default is _NO_DEFAULT:
        raise jinja2.TemplateRuntimeError(f"{name} got invalid input {str(value)[:60]!r} and no default was given")
    return default


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    """The environment: sandboxed (templates come from other devices' configs), no autoescape."""
    env = ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)
    numbers: dict[str, Callable[..., Any]] = {"float": _to_float, "int": _to_int}
    env.filters.update(numbers)
    env.globals.update(numbers)
    env.globals["is_defined"] = lambda value: not isinstance(value, jinja2.Undefined)
    return env


@functools.cache
def strict_environment() -> jinja2.Environment:
    """The same environment, where an undefined name is an error (a misspelt helper shows at start)."""
    return environment().overlay(undefined=jinja2.StrictUndefined)
