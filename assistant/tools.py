"""Tools the chat model may call: each has a name, a JSON schema and one async call.

Every call is checked against the `expose` allowlist before anything is published,
whatever the model asks; errors go back to the model as the tool's result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from assistant.homeassistant import Command, CommandError, Entity, Registry, turn_off, turn_on

log = logging.getLogger(__name__)

Publish = Callable[[Command], Awaitable[bool]]


@dataclass(frozen=True)
class Action:
    """What a tool call did, published on event/action and listed in event/reply."""

    tool: str
    entity_id: str | None
    topic: str | None
    payload: str | None
    ok: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for MQTT events."""
        data = {
            "tool": self.tool,
            "entity_id": self.entity_id,
            "topic": self.topic,
            "payload": self.payload,
            "ok": self.ok,
        }
        if self.error:
            data["error"] = self.error
        return data


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

    def spec(self) -> dict[str, Any]:
        """The chat completions `tools` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class HomeTools:
    """turn_on / turn_off / get_state over the registry, publishing through `publish`."""

    def __init__(self, registry: Registry, publish: Publish) -> None:
        self.registry = registry
        self.publish = publish

    def tools(self) -> list[Tool]:
        """The tools, with the exposed entity ids as the only allowed values."""
        exposed = self.registry.exposed()
        controllable = [e.entity_id for e in exposed if e.key("command_topic")]
        readable = [e.entity_id for e in exposed]
        tools = []
        if controllable:
            on_params: dict[str, Any] = {
                "type": "object",
                "properties": {
                    "entity_id": {"type": "string", "enum": controllable},
                    "brightness_pct": {"type": "number", "minimum": 0, "maximum": 100, "description": "lights only"},
                },
                "required": ["entity_id"],
            }
            off_params = {
                "type": "object",
                "properties": {"entity_id": {"type": "string", "enum": controllable}},
                "required": ["entity_id"],
            }
            tools.append(
                Tool("turn_on", "Turn on an entity (a light may take a brightness).", on_params, self._turn_on)
            )
            tools.append(Tool("turn_off", "Turn off an entity.", off_params, self._turn_off))
        if readable:
            state_params = {
                "type": "object",
                "properties": {"entity_id": {"type": "string", "enum": readable}},
                "required": ["entity_id"],
            }
            tools.append(Tool("get_state", "Read the current state of an entity.", state_params, self._get_state))
        return tools

    async def _act(self, tool: str, entity_id: Any, build: Callable[[Entity], list[Command]]) -> ToolOutcome:
        if not isinstance(entity_id, str):
            return ToolOutcome(
                json.dumps({"error": "entity_id must be a string"}),
                [Action(tool, None, None, None, False, "bad arguments")],
            )
        try:
            entity = self.registry.get_exposed(entity_id)
            commands = build(entity)
        except CommandError as error:
            log.info("refused %s(%s): %s", tool, entity_id, error)
            return ToolOutcome(
                json.dumps({"error": str(error)}), [Action(tool, entity_id, None, None, False, str(error))]
            )
        actions = []
        for command in commands:
            ok = await self.publish(command)
            actions.append(
                Action(
                    tool, entity_id, command.topic, command.payload, ok, None if ok else "not delivered to the broker"
                )
            )
        if all(a.ok for a in actions):
            return ToolOutcome(json.dumps({"result": "done", "entity_id": entity_id}), actions)
        return ToolOutcome(json.dumps({"error": "the command could not be delivered"}), actions)

    async def _turn_on(self, args: dict[str, Any]) -> ToolOutcome:
        brightness = args.get("brightness_pct")
        if brightness is not None and not isinstance(brightness, int | float):
            return ToolOutcome(json.dumps({"error": "brightness_pct must be a number"}), [])
        return await self._act("turn_on", args.get("entity_id"), lambda e: turn_on(e, brightness))

    async def _turn_off(self, args: dict[str, Any]) -> ToolOutcome:
        return await self._act("turn_off", args.get("entity_id"), turn_off)

    async def _get_state(self, args: dict[str, Any]) -> ToolOutcome:
        entity_id = args.get("entity_id")
        try:
            entity = self.registry.get_exposed(str(entity_id))
        except CommandError as error:
            return ToolOutcome(
                json.dumps({"error": str(error)}), [Action("get_state", str(entity_id), None, None, False, str(error))]
            )
        return ToolOutcome(json.dumps(entity.summary()), [])
