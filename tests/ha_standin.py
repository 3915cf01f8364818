"""A stand-in for Home Assistant running config/homeassistant/assistant_bridge.yaml.

It reads the package, subscribes to its trigger topic on the real broker and runs the
automation the way Home Assistant 2025.4 does (homeassistant/helpers/script.py,
template.py, service.py), so that the package's own templates are what is tested:

- templates render in a sandboxed Jinja environment with Home Assistant's `match` test,
  `to_json` filter and `states` object, and each result is read back as a native type by
  Home Assistant's rule (`_cached_parse_result`);
- `trigger.payload_json` exists only when the payload is JSON (orjson: no NaN);
- `if`/`then`/`else`, `sequence`, `stop` and `continue_on_error`, which lets a run go on
  after a Home Assistant error but never after invalid service data (`vol.Invalid`), a
  template error or an unknown service;
- a service call splits a comma list of entity ids, merges target keys found in `data`
  (a `device_id` reaches every entity of that device), checks the data against the
  service's schema (the real services' keys, types and ranges, no extra keys), logs and
  skips missing entities, silently skips unavailable ones, and raises the entity's error.

What it would have done is recorded in `performed`, one entry per entity acted on.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as paho
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from paho.mqtt.enums import CallbackAPIVersion

PACKAGE = Path(__file__).resolve().parents[1] / "config/homeassistant/assistant_bridge.yaml"
log = logging.getLogger(__name__)

# homeassistant/core.py and helpers/template.py
_OBJECT_ID = r"(?!_)[\da-z_]+(?<!_)"
VALID_ENTITY_ID = re.compile(r"^(?!.+__)" + _OBJECT_ID + r"\." + _OBJECT_ID + r"$")
_TEMPLATE = re.compile(r"{%|{{|{#")
_IS_NUMERIC = re.compile(r"^[+-]?(?!0\d)\d*(?:\.\d*)?$")
TARGET_KEYS = ("entity_id", "device_id", "area_id", "floor_id", "label_id")


class HomeAssistantError(Exception):
    """homeassistant.exceptions.HomeAssistantError: continue_on_error may go on after it."""


class ServiceNotFound(HomeAssistantError):
    """An unknown action: continue_on_error does not go on after it."""


class TemplateError(HomeAssistantError):
    """A template that failed to render: continue_on_error does not go on after it."""


class Invalid(Exception):
    """vol.Invalid: service data the service's schema refuses; not a HomeAssistantError."""


class _Stop(Exception):
    """The `stop` action (script._StopScript)."""


# --- templates ---------------------------------------------------------------------------


def parse_result(text: str) -> Any:
    """helpers/template.py `_cached_parse_result`: a rendered template read back as a native type."""
    try:
        result = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError):
        return text
    if not isinstance(result, (str, complex)) and (
        not isinstance(result, (int, float)) or isinstance(result, bool) or _IS_NUMERIC.match(text) is not None
    ):
        return result
    return text


def result_as_boolean(value: Any) -> bool:
    """helpers/template.py `result_as_boolean` (cv.boolean, falsy when it is not a boolean)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower().strip() in ("1", "true", "yes", "on", "enable")
    if isinstance(value, (int, float)):
        return value != 0
    return False


@dataclass
class TemplateState:
    """What `states['light.x']` gives a template."""

    entity_id: str
    state: str
    attributes: dict[str, Any]


class AllStates:
    """The `states` template object: `states['light.x']` is the state, or None if there is none.

    Like Home Assistant it raises for a malformed entity id it does not have.
    """

    def __init__(self, entities: Mapping[str, Entity]) -> None:
        self._entities = entities

    def __getitem__(self, entity_id: str) -> TemplateState | None:
        if "." not in entity_id:
            raise TemplateError(f"states.{entity_id}: domain states are not emulated")
        entity = self._entities.get(entity_id)
        if entity is None:
            if not VALID_ENTITY_ID.match(entity_id):
                raise TemplateError(f"Invalid entity ID '{entity_id}'")
            return None
        return TemplateState(entity_id, entity.state, entity.attributes)

    def attribute(self, entity_id: str, name: str) -> Any:
        """The `state_attr(entity_id, name)` function: None when there is no such entity or attribute."""
        entity = self._entities.get(entity_id)
        return None if entity is None else entity.attributes.get(name)

    __getattr__ = __getitem__


def _environment(entities: Mapping[str, Entity]) -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.Undefined)
    env.tests["match"] = lambda value, find="": (
        re.match(find, value if isinstance(value, str) else str(value)) is not None
    )
    env.filters["to_json"] = lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    env.globals["states"] = states = AllStates(entities)
    env.globals["state_attr"] = states.attribute
    return env


# --- services ----------------------------------------------------------------------------


def _number(low: float | None = None, high: float | None = None, cast: type = float) -> Callable[[Any], Any]:
    """vol.All(vol.Coerce(cast), vol.Range(low, high))."""

    def check(value: Any) -> Any:
        try:
            number = cast(value)
        except (TypeError, ValueError):
            raise Invalid(f"expected {cast.__name__}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise Invalid(f"value must be between {low} and {high}")
        return number

    return check


def _rgb(value: Any) -> tuple[int, ...]:
    """vol.All(vol.Coerce(tuple), vol.ExactSequence((cv.byte,) * 3))."""
    try:
        items = tuple(value)
    except TypeError:
        raise Invalid("expected a sequence") from None
    if len(items) != 3:
        raise Invalid("expected three values")
    return tuple(_number(0, 255, int)(item) for item in items)


def _hvac_mode(value: Any) -> str:
    if value not in ("off", "heat", "cool", "heat_cool", "auto", "dry", "fan_only"):
        raise Invalid(f"{value!r} is not a valid HVACMode")
    return str(value)


# (domain, service) -> {data key: validator}, with the keys that must be there; the keys and
# rules of Home Assistant's own service schemas (light, fan, cover, climate components).
SERVICES: dict[tuple[str, str], tuple[dict[str, Callable[[Any], Any]], set[str]]] = {
    ("light", "turn_on"): (
        {
            "brightness_pct": _number(0, 100),
            "color_temp_kelvin": _number(0, None, int),
            "rgb_color": _rgb,
            "transition": _number(0, None),
        },
        set(),
    ),
    ("light", "turn_off"): ({"transition": _number(0, None)}, set()),
    ("switch", "turn_on"): ({}, set()),
    ("switch", "turn_off"): ({}, set()),
    ("lock", "unlock"): ({"code": str}, set()),
    ("fan", "turn_on"): ({"percentage": _number(0, 100, int), "preset_mode": str}, set()),
    ("fan", "turn_off"): ({}, set()),
    ("fan", "set_percentage"): ({"percentage": _number(0, 100, int)}, {"percentage"}),
    ("cover", "open_cover"): ({}, set()),
    ("cover", "close_cover"): ({}, set()),
    ("cover", "stop_cover"): ({}, set()),
    ("cover", "set_cover_position"): ({"position": _number(0, 100, int)}, {"position"}),
    ("climate", "set_temperature"): ({"temperature": _number(), "hvac_mode": _hvac_mode}, {"temperature"}),
    ("climate", "set_hvac_mode"): ({"hvac_mode": _hvac_mode}, {"hvac_mode"}),
    ("media_player", "turn_on"): ({}, set()),
    ("media_player", "turn_off"): ({}, set()),
    ("scene", "turn_on"): ({"transition": _number(0, 300)}, set()),
}


def validate_service_data(domain: str, service: str, data: dict[str, Any]) -> dict[str, Any]:
    """The service's schema (cv.make_entity_service_schema: no extra keys); raises Invalid."""
    fields, required = SERVICES[(domain, service)]
    processed: dict[str, Any] = {}
    for key, value in data.items():
        if key in TARGET_KEYS:
            processed[key] = value
        elif key not in fields:
            raise Invalid(f"extra keys not allowed @ data['{key}']")
        else:
            processed[key] = fields[key](value)
    if missing := required - processed.keys():
        raise Invalid(f"required key not provided @ data['{sorted(missing)[0]}']")
    if domain == "light" and "rgb_color" in processed and "color_temp_kelvin" in processed:
        raise Invalid("two or more values in the same group of exclusion 'Color descriptors'")
    return processed


def comp_entity_ids(value: Any) -> list[str]:
    """cv.comp_entity_ids: a comma separated string or a list, each one a valid entity id."""
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else list(value)
    ids = [str(item).lower() for item in items if item]
    for entity_id in ids:
        if not VALID_ENTITY_ID.match(entity_id):
            raise HomeAssistantError(f"Template rendered invalid entity IDs: {value}")
    return ids


@dataclass
class Entity:
    """One entity of the stand-in's house."""

    state: str = "off"
    attributes: dict[str, Any] = field(default_factory=dict)
    device_id: str | None = None
    fails: str | None = None  # the HomeAssistantError its integration raises when called


@dataclass
class BridgeStandIn:
    """Executes the package's automation against the broker."""

    host: str
    port: int
    entities: dict[str, Entity] = field(default_factory=dict)
    performed: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # runs that ended in an error (HA logs them)
    variables: dict[str, Any] = field(default_factory=dict)  # the installer's edits, e.g. allowed_entities

    def __post_init__(self) -> None:
        self.automation = yaml.safe_load(PACKAGE.read_text())["automation"][0]
        self.automation["variables"].update(self.variables)
        self.topic = self.automation["triggers"][0]["topic"]
        self._env = _environment(self.entities)
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(self.host, self.port)
        self.client.subscribe(self.topic, qos=1)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError(f"the Home Assistant stand-in got no SUBACK for {self.topic}")

    # templates

    def render(self, value: Any, variables: dict[str, Any]) -> Any:
        """helpers/template.py render_complex: every string is a template, read back natively."""
        if isinstance(value, list):
            return [self.render(item, variables) for item in value]
        if isinstance(value, dict):
            return {self.render(k, variables): self.render(v, variables) for k, v in value.items()}
        if isinstance(value, str):
            if not _TEMPLATE.search(value):  # a static string: also read back natively
                return parse_result(value)
            try:
                text = self._env.from_string(value).render(**variables).strip()
            except TemplateError:
                raise
            except Exception as error:  # Jinja's own errors become TemplateError, as in HA
                raise TemplateError(f"{type(error).__name__}: {error}") from error
            return parse_result(text)
        return value

    def variables_for(self, payload: bytes) -> dict[str, Any]:
        """The automation's variables for one trigger payload."""
        trigger: dict[str, Any] = {"platform": "mqtt", "topic": self.topic, "payload": payload.decode(errors="replace")}
        with contextlib.suppress(ValueError):  # mqtt/trigger.py: payload_json only for JSON
            trigger["payload_json"] = json.loads(payload, parse_constant=_no_constant)
        variables: dict[str, Any] = {"trigger": trigger}
        for name, value in self.automation["variables"].items():
            variables[name] = self.render(value, variables)
        return variables

    # the script

    def run(self, payload: bytes) -> None:
        """One automation run, as script.py runs it."""
        try:
            variables = self.variables_for(payload)
            self._sequence(self.automation["actions"], variables)
        except _Stop:
            pass
        except (HomeAssistantError, Invalid) as error:
            with self._lock:
                self.errors.append(f"{type(error).__name__}: {error}")
            log.warning("Assistant: service bridge: the run ended in an error: %s", error)

    def _sequence(self, steps: list[dict[str, Any]], variables: dict[str, Any]) -> None:
        for step in steps:
            try:
                self._step(step, variables)
            except (HomeAssistantError, Invalid) as error:
                # script.py _handle_exception
                if not step.get("continue_on_error") or isinstance(error, (Invalid, TemplateError, ServiceNotFound)):
                    raise
                log.warning("continuing after an error: %s", error)

    def _step(self, step: dict[str, Any], variables: dict[str, Any]) -> None:
        if "if" in step:
            passed = all(self._condition(c, variables) for c in step["if"])
            self._sequence(step.get("then" if passed else "else", []), variables)
        elif "sequence" in step:
            self._sequence(step["sequence"], variables)
        elif "stop" in step:
            raise _Stop(step["stop"])
        elif "action" in step:
            self._action(step, variables)
        else:
            raise NotImplementedError(f"step not emulated: {step}")

    def _condition(self, condition: dict[str, Any], variables: dict[str, Any]) -> bool:
        if condition.get("condition") != "template":
            raise NotImplementedError(f"condition not emulated: {condition}")
        return result_as_boolean(self.render(condition["value_template"], variables))

    def _action(self, step: dict[str, Any], variables: dict[str, Any]) -> None:
        name = str(self.render(step["action"], variables))
        data = self.render(step.get("data", {}), variables)
        if not isinstance(data, dict):
            raise HomeAssistantError("Error rendering data template: Result is not a Dictionary")
        if name == "mqtt.publish":
            self.client.publish(data["topic"], str(data["payload"]), qos=int(data.get("qos", 0)))
            return
        domain, _, service = name.partition(".")
        if (domain, service) not in SERVICES:
            raise ServiceNotFound(f"Action {name} not found")
        target = self.render(step.get("target", {}), variables)
        if "entity_id" in target:
            target["entity_id"] = comp_entity_ids(target["entity_id"])
        data = {**data, **target}  # core.py ServiceRegistry.async_call: service_data.update(target)
        processed = validate_service_data(domain, service, data)
        self._call(name, processed)

    def _call(self, name: str, data: dict[str, Any]) -> None:
        """helpers/service.py entity_service_call, for one service on the referenced entities."""
        referenced = comp_entity_ids(data.get("entity_id", []))
        devices = data.get("device_id", [])
        devices = [devices] if isinstance(devices, str) else list(devices)
        wanted = set(referenced) | {e for e, entity in self.entities.items() if entity.device_id in devices}
        domain = name.partition(".")[0]
        candidates = [e for e in sorted(wanted) if e in self.entities and e.partition(".")[0] == domain]
        if missing := set(referenced) - set(candidates):
            log.warning("Referenced entities %s are missing or not currently available", ", ".join(sorted(missing)))
        payload = {k: v for k, v in data.items() if k not in TARGET_KEYS}
        for entity_id in candidates:
            entity = self.entities[entity_id]
            if entity.state == "unavailable":
                continue  # skipped without a word, as Home Assistant does
            if entity.fails:
                raise HomeAssistantError(entity.fails)
            with self._lock:
                self.performed.append({"action": name, "entity_id": entity_id, "data": payload})

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.run(message.payload)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()  # first: paho's loop then ends at once instead of after its 1 s select
        self.client.loop_stop()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # orjson, which Home Assistant uses, refuses NaN and Infinity
