"""Tools the chat model may call: each has a name, a JSON schema and one async call.

Every call is checked against the `expose` allowlist before anything is published,
whatever the model asks; refusals and errors go back to the model as the tool's
result and are reported as failed actions. Entity ids are plain strings in the
schemas (no list of every entity: that grew with the house), checked when called (see
assistant.agent.lookup); `find_entities` resolves names, `get_state` reads states.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from assistant.agent.catalog import LIST_LIMIT, Finder, live_state
from assistant.agent.lookup import exposed_entity, for_model
from assistant.agent.schema import SchemaError, check_schema, validate
from assistant.home.bridge import BridgeOutcome, ServiceBridge
from assistant.home.budget import cap_text
from assistant.home.commands import ACTIONS, mqtt_commands, service_call
from assistant.home.entities import Command, CommandError, Entity
from assistant.home.registry import Registry
from assistant.link.delivery import Delivery, Settlement

log = logging.getLogger(__name__)

Publish = Callable[[Command], Awaitable[Delivery]]
UNCONFIRMED_NOTE = (
    "The command was sent but its delivery was not confirmed in time: it may or may not have happened. "
    "Tell the user you could not confirm it; do not say it is done."
)
Plan = list[tuple[str, dict[str, Any]]]  # (action, parameters) to carry out in order


@dataclass(frozen=True)
class Action:
    """What a tool call did, published on event/action and listed in event/reply.

    `status`: done (confirmed), failed (did not and will not happen), refused (not
    allowed or not possible), unconfirmed (may or may not happen; `settled` then
    resolves to the same action with its final status: done, failed or unknown).
    `ok` is True for done, False for failed and refused, None while not known.
    """

    tool: str
    entity_id: str | None
    topic: str | None
    payload: str | None
    ok: bool | None
    error: str | None = None
    status: str = ""
    settled: asyncio.Future[Action] | None = field(default=None, compare=False, repr=False)

    @property
    def outcome(self) -> str:
        """The status, derived from `ok` where not given."""
        return self.status or {True: "done", False: "failed", None: "unconfirmed"}[self.ok]

    def as_dict(self) -> dict[str, Any]:
        """JSON form for MQTT events."""
        data = {
            "tool": self.tool,
            "entity_id": self.entity_id,
            "topic": self.topic,
            "payload": self.payload,
            "ok": self.ok,
            "status": self.outcome,
        }
        if self.error:
            data["error"] = self.error
        return data


_OK = {"done": True, "failed": False, "refused": False}  # any other status: not known (None)
_SETTLED = {"delivered": ("done", None), "not_sent": ("failed", "not sent: the connection ended first")}
_UNKNOWN = ("unknown", "the connection ended after it was sent: it may or may not have happened")


def _as(action: Action, status: str, error: str | None) -> Action:
    """The action with a (final) status, and the `ok` that status means."""
    return replace(action, ok=_OK.get(status), status=status, error=error)


def action_from_delivery(tool: str, entity_id: str, command: Command, delivery: Delivery) -> Action:
    """The action for one MQTT command, from what the broker confirmed (see assistant/link/delivery.py)."""
    action = Action(tool, entity_id, command.topic, command.payload, delivery.ok, delivery.reason)
    if delivery.status == "delivered":
        return _as(action, "done", delivery.reason)
    if delivery.status == "not_sent":
        return _as(action, "failed", f"not sent: {delivery.reason}")
    settled: asyncio.Future[Action] | None = None
    if delivery.settled is not None:
        settled = asyncio.get_running_loop().create_future()

        def settle(fate: asyncio.Future[Settlement]) -> None:
            if settled is not None and not settled.done() and not fate.cancelled():
                settled.set_result(_as(action, *_SETTLED.get(fate.result(), _UNKNOWN)))

        delivery.settled.add_done_callback(settle)
    return replace(_as(action, "unconfirmed", f"unconfirmed: {delivery.reason}"), settled=settled)


def action_from_bridge(tool: str, entity_id: str, topic: str, outcome: BridgeOutcome) -> Action:
    """The action for one service bridge call, from Home Assistant's answer (or its absence)."""
    action = _as(Action(tool, entity_id, topic, outcome.payload, None), outcome.status, outcome.error)
    if outcome.late is None:
        return action
    settled: asyncio.Future[Action] = asyncio.get_running_loop().create_future()

    def settle(late: asyncio.Future[tuple[str, str | None]]) -> None:
        if not settled.done() and not late.cancelled():
            settled.set_result(_as(action, *late.result()))

    outcome.late.add_done_callback(settle)
    return replace(action, settled=settled)


@dataclass(frozen=True)
class ToolOutcome:
    """The text returned to the model and the actions taken."""

    content: str
    actions: list[Action]


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str
    parameters: dict[str, Any]
    call: Callable[[dict[str, Any]], Awaitable[ToolOutcome]]

    def __post_init__(self) -> None:
        check_schema(self.parameters)

    def spec(self) -> dict[str, Any]:
        """The chat completions `tools` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    async def run(self, args: Any) -> ToolOutcome:
        """Check `args` against the advertised schema, then call; every failure is an outcome.

        Whatever goes wrong (bad arguments, a broken template in an entity's config, a
        bug) becomes an error result for the model and a failed action, so the turn
        goes on and ends in a reply.
        """
        entity_id = args.get("entity_id") if isinstance(args, dict) else None
        entity_id = cap_text(entity_id, 255) if isinstance(entity_id, str) else None
        try:
            validate(args, self.parameters)
        except SchemaError as error:
            log.info("%s: refused arguments: %s", self.name, error)
            return failed(self.name, entity_id, str(error))
        try:
            return await self.call(args)
        except Exception as error:
            log.exception("tool %s failed", self.name)
            return failed(
                self.name, entity_id, f"{self.name} failed: {type(error).__name__}: {cap_text(str(error), 200)}"
            )


def failed(tool: str, entity_id: str | None, message: str, done: list[Action] | None = None) -> ToolOutcome:
    """An error result for the model, with the failed action (after any `done` before it)."""
    return ToolOutcome(
        json.dumps({"error": message}), [*(done or []), Action(tool, entity_id, None, None, False, message)]
    )


def _number(args: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = args.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"{key} must be a number") from None
    if not low <= number <= high:
        raise CommandError(f"{key} must be between {low:g} and {high:g}")
    return number


def _plan_turn_on(args: dict[str, Any]) -> Plan:
    params: dict[str, Any] = {
        "brightness_pct": _number(args, "brightness_pct", 0, 100),
        "color_temp_kelvin": _number(args, "color_temp_kelvin", 1000, 12000),
    }
    rgb = args.get("rgb_color")
    if rgb is not None:
        if not (isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)):
            raise CommandError("rgb_color must be three integers 0-255")
        params["rgb_color"] = rgb
    return [("turn_on", params)]


def _plan_cover(args: dict[str, Any]) -> Plan:
    action = args.get("action")
    if action == "set_position":
        position = _number(args, "position", 0, 100)
        if position is None:
            raise CommandError("position is required for set_position")
        return [("set_position", {"value": position})]
    if action not in ("open", "close", "stop"):
        raise CommandError("action must be open, close, stop or set_position")
    return [(action, {})]


def _plan_climate(args: dict[str, Any]) -> Plan:
    plan: Plan = []
    mode = args.get("hvac_mode")
    if mode is not None:
        plan.append(("set_hvac_mode", {"value": str(mode)}))
    temperature = _number(args, "temperature", 5, 35)
    if temperature is not None:
        plan.append(("set_temperature", {"value": temperature}))
    if not plan:
        raise CommandError("give a temperature, an hvac_mode, or both")
    return plan


def _plan_fan(args: dict[str, Any]) -> Plan:
    percentage = _number(args, "percentage", 0, 100)
    if percentage is None:
        raise CommandError("percentage is required")
    return [("set_percentage", {"value": percentage})]


def _plan_lock(args: dict[str, Any]) -> Plan:
    action = args.get("action")
    if action not in ("lock", "unlock"):
        raise CommandError("action must be lock or unlock")
    return [(action, {})]


_NUMBER = {"type": "number"}
ENTITY_ID = {"type": "string", "maxLength": 255, "description": "as listed, or found by find_entities"}
_REQUIRED = {"set_cover": ["action"], "set_fan_speed": ["percentage"], "lock": ["action"]}  # besides entity_id
_TOOLS: list[tuple[str, str, set[str], dict[str, Any], Callable[[dict[str, Any]], Plan]]] = [
    (
        "turn_on",
        "Turn on a light, switch, fan or other device, or activate a scene. A light may take "
        "brightness_pct (0-100), color_temp_kelvin or rgb_color.",
        ACTIONS["turn_on"],
        {
            "brightness_pct": {**_NUMBER, "minimum": 0, "maximum": 100},
            "color_temp_kelvin": {**_NUMBER, "minimum": 1000, "maximum": 12000},
            "rgb_color": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 255},
                "minItems": 3,
                "maxItems": 3,
            },
        },
        _plan_turn_on,
    ),
    (
        "turn_off",
        "Turn off a light, switch, fan or other device.",
        ACTIONS["turn_off"],
        {},
        lambda a: [("turn_off", {})],
    ),
    (
        "set_cover",
        "Open, close or stop a cover or valve (blind, shutter, garage door), or move it to a position "
        "from 0 (closed) to 100 (open).",
        ACTIONS["open"],
        {
            "action": {"type": "string", "enum": ["open", "close", "stop", "set_position"]},
            "position": {**_NUMBER, "minimum": 0, "maximum": 100},
        },
        _plan_cover,
    ),
    (
        "set_climate",
        "Set a thermostat's target temperature and/or its HVAC mode (heat, cool, auto, off, ...).",
        ACTIONS["set_temperature"],
        {"temperature": {**_NUMBER, "minimum": 5, "maximum": 35}, "hvac_mode": {"type": "string", "maxLength": 40}},
        _plan_climate,
    ),
    (
        "set_fan_speed",
        "Set a fan's speed in percent.",
        ACTIONS["set_percentage"],
        {"percentage": {**_NUMBER, "minimum": 0, "maximum": 100}},
        _plan_fan,
    ),
    (
        "lock",
        "Lock or unlock a lock.",
        ACTIONS["lock"],
        {"action": {"type": "string", "enum": ["lock", "unlock"]}},
        _plan_lock,
    ),
    ("press_button", "Press a button entity.", ACTIONS["press"], {}, lambda a: [("press", {})]),
]
_DOMAINS = {name: domains for name, _about, domains, _properties, _plan in _TOOLS}  # what each tool acts on


class HomeTools:
    """The tools over the registry; MQTT-native entities get MQTT, the rest the bridge."""

    def __init__(self, registry: Registry, publish: Publish, bridge: ServiceBridge | None = None) -> None:
        self.registry = registry
        self.publish = publish
        self.bridge = bridge

    def _reachable(self, entity: Entity) -> bool:
        return entity.mqtt_native or self.bridge is not None

    def tools(self) -> list[Tool]:
        """The tools that have something exposed to act on; the same list while the house is the same."""
        exposed = self.registry.exposed()
        domains_present = {e.domain for e in exposed if self._reachable(e)}
        tools = []
        for name, description, domains, properties, plan in _TOOLS:
            if domains & domains_present:
                parameters = _arguments(properties, _REQUIRED.get(name, []))
                tools.append(Tool(name, description, parameters, self._caller(name, plan)))
        if exposed:
            about = "Read an entity's current state and attributes: for any question about how something is now."
            tools.append(Tool("get_state", about, _arguments({}), self._get_state))
            find = {
                "query": {"type": "string", "maxLength": 200, "description": "the name as the user said it"},
                "area": {"type": "string", "maxLength": 100},
                "domain": {"type": "string", "maxLength": 50, "description": "e.g. light, sensor, cover"},
            }
            tools.append(
                Tool(
                    "find_entities",
                    "Find entities by name, area and/or domain: the best matches with entity_id and current state.",
                    {"type": "object", "properties": find, "additionalProperties": False},
                    self._find,
                )
            )
        return tools

    def _caller(
        self, name: str, plan: Callable[[dict[str, Any]], Plan]
    ) -> Callable[[dict[str, Any]], Awaitable[ToolOutcome]]:
        async def call(args: dict[str, Any]) -> ToolOutcome:
            return await self._run(name, args, plan)

        return call

    async def _run(self, tool: str, args: dict[str, Any], plan: Callable[[dict[str, Any]], Plan]) -> ToolOutcome:
        entity_id = args.get("entity_id")
        actions: list[Action] = []
        if not isinstance(entity_id, str):
            actions.append(Action(tool, None, None, None, False, "entity_id must be a string"))
            return ToolOutcome(json.dumps({"error": "entity_id must be a string"}), actions)
        try:
            entity = exposed_entity(self.registry, entity_id, _DOMAINS[tool])
            for action, params in plan(args):
                actions += await self._perform(tool, entity, action, params)
        except CommandError as error:
            log.info("refused %s(%s): %s", tool, entity_id, error)
            actions.append(Action(tool, entity_id, None, None, False, str(error), "refused"))
            return ToolOutcome(json.dumps({"error": for_model(error)}), actions)
        except Exception as error:  # a broken value in the entity's config: the model hears of it, the turn goes on
            log.exception("%s(%s) failed", tool, entity_id)
            return failed(tool, entity_id, f"failed: {type(error).__name__}: {cap_text(str(error), 200)}", actions)
        if all(a.ok for a in actions):
            return ToolOutcome(json.dumps({"result": "done", "entity_id": entity_id}), actions)
        if any(a.ok is False for a in actions):
            errors = "; ".join(a.error or "failed" for a in actions if a.ok is not True)
            return ToolOutcome(json.dumps({"error": errors}), actions)
        unconfirmed = {"result": "unconfirmed", "entity_id": entity_id, "note": UNCONFIRMED_NOTE}
        return ToolOutcome(json.dumps(unconfirmed), actions)

    async def _perform(self, tool: str, entity: Entity, action: str, params: dict[str, Any]) -> list[Action]:
        if entity.mqtt_native:
            commands = mqtt_commands(entity, action, params)
            for command in commands:  # every topic is checked before anything is sent
                self.registry.check_command_topic(entity, command.topic)
            done = []
            for command in commands:
                done.append(action_from_delivery(tool, entity.entity_id, command, await self.publish(command)))
                if done[-1].ok is not True:
                    break  # the rest of the action waits for a confirmed first step
            return done
        if self.bridge is None:
            raise CommandError(f"{entity.entity_id} has no command topic and no service bridge is configured")
        outcome = await self.bridge.call(service_call(entity, action, params))
        return [action_from_bridge(tool, entity.entity_id, self.bridge.topic, outcome)]

    async def _get_state(self, args: dict[str, Any]) -> ToolOutcome:
        entity_id = args.get("entity_id")
        try:
            entity = exposed_entity(self.registry, str(entity_id))
        except CommandError as error:
            refused = Action("get_state", str(entity_id), None, None, False, str(error), "refused")
            return ToolOutcome(json.dumps({"error": for_model(error)}), [refused])
        return ToolOutcome(json.dumps(live_state(entity), ensure_ascii=False), [])

    async def _find(self, args: dict[str, Any]) -> ToolOutcome:
        query, area, domain = (str(args.get(key) or "") for key in ("query", "area", "domain"))
        limit = 8 if query.strip() else LIST_LIMIT
        matches, more = Finder(self.registry.exposed()).find(query, domain or None, area or None, limit)
        result: dict[str, Any] = {"matches": [Finder.describe(e) for e in matches]}
        if more:
            result["more"] = more
        if not matches:
            result["hint"] = "nothing matches; try fewer or other words, or only an area or a domain"
        return ToolOutcome(json.dumps(result, ensure_ascii=False), [])


def _arguments(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An entity tool's parameters: `entity_id` plus its own, nothing else accepted."""
    return {
        "type": "object",
        "properties": {"entity_id": ENTITY_ID, **properties},
        "required": ["entity_id", *(required or [])],
        "additionalProperties": False,
    }
