"""Home Assistant entities reached over MQTT: the registry, their states, their payloads.

Entities are described with the very keys of Home Assistant's MQTT configuration
(command_topic, payload_on, brightness_command_topic, schema, ...), so what a user
already has in YAML or discovery works here unchanged.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from assistant.config import EntityConfig, HomeAssistantConfig

CONTROLLABLE = {"switch", "light", "fan", "input_boolean"}
READABLE = CONTROLLABLE | {"sensor", "binary_sensor"}


class CommandError(Exception):
    """The entity cannot do what was asked (unknown, not exposed, no such feature)."""


@dataclass(frozen=True)
class Command:
    """One MQTT publish that carries out (part of) an action."""

    topic: str
    payload: str
    retain: bool = False


@dataclass
class Entity:
    """An entity the daemon knows: identity, MQTT keys, and its last known state."""

    entity_id: str
    name: str
    aliases: list[str] = field(default_factory=list)
    area: str | None = None
    mqtt: dict[str, Any] = field(default_factory=dict)
    state: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        """The platform: the part of entity_id before the dot."""
        return self.entity_id.split(".", 1)[0]

    @classmethod
    def from_config(cls, config: EntityConfig) -> Entity:
        """Build from a hand-declared [[homeassistant.entities]] table."""
        default_name = config.entity_id.split(".", 1)[1].replace("_", " ").capitalize()
        return cls(config.entity_id, config.name or default_name, list(config.aliases), config.area, config.mqtt)

    def key(self, name: str, default: Any = None) -> Any:
        """A Home Assistant MQTT key of this entity, with Home Assistant's default."""
        return self.mqtt.get(name, default)

    @property
    def is_json_light(self) -> bool:
        """Lights with `schema: json` take one JSON command instead of several topics."""
        return self.domain == "light" and self.key("schema", "default") == "json"

    def summary(self) -> dict[str, Any]:
        """What the model is told about the entity."""
        info: dict[str, Any] = {"entity_id": self.entity_id, "name": self.name, "state": self.state or "unknown"}
        if self.aliases:
            info["aliases"] = self.aliases
        if self.area:
            info["area"] = self.area
        if self.attributes:
            info["attributes"] = self.attributes
        return info


def _payload_on(entity: Entity) -> str:
    return str(entity.key("payload_on", "ON"))


def _payload_off(entity: Entity) -> str:
    return str(entity.key("payload_off", "OFF"))


def _scaled_brightness(entity: Entity, percent: float) -> int:
    scale = int(entity.key("brightness_scale", 255))
    return max(0, min(scale, round(percent / 100 * scale)))


def _command_topic(entity: Entity) -> str:
    topic = entity.key("command_topic")
    if not topic:
        raise CommandError(f"{entity.entity_id} has no command_topic")
    return str(topic)


def turn_on(entity: Entity, brightness_pct: float | None = None) -> list[Command]:
    """The publishes that turn an entity on (optionally at a brightness)."""
    if entity.domain not in CONTROLLABLE:
        raise CommandError(f"{entity.entity_id} cannot be turned on")
    retain = bool(entity.key("retain", False))
    if brightness_pct is not None and entity.domain != "light":
        raise CommandError(f"{entity.entity_id} has no brightness")
    if entity.is_json_light:
        body: dict[str, Any] = {"state": "ON"}
        if brightness_pct is not None:
            if not entity.key("brightness", True):
                raise CommandError(f"{entity.entity_id} does not support brightness")
            body["brightness"] = _scaled_brightness(entity, brightness_pct)
        return [Command(_command_topic(entity), json.dumps(body), retain)]
    commands = [Command(_command_topic(entity), _payload_on(entity), retain)]
    if brightness_pct is not None:
        topic = entity.key("brightness_command_topic")
        if not topic:
            raise CommandError(f"{entity.entity_id} does not support brightness")
        commands.append(Command(str(topic), str(_scaled_brightness(entity, brightness_pct)), retain))
    return commands


def turn_off(entity: Entity) -> list[Command]:
    """The publish that turns an entity off."""
    if entity.domain not in CONTROLLABLE:
        raise CommandError(f"{entity.entity_id} cannot be turned off")
    retain = bool(entity.key("retain", False))
    if entity.is_json_light:
        return [Command(_command_topic(entity), json.dumps({"state": "OFF"}), retain)]
    return [Command(_command_topic(entity), _payload_off(entity), retain)]


def parse_state(entity: Entity, payload: str) -> tuple[str, dict[str, Any]]:
    """Home Assistant's state string (and attributes) from a state-topic payload."""
    if entity.is_json_light:
        try:
            data = json.loads(payload)
        except ValueError:
            return payload, {}
        if not isinstance(data, dict):
            return payload, {}
        state = str(data.get("state", "")).upper()
        attributes = {k: v for k, v in data.items() if k != "state"}
        return ("on" if state == "ON" else "off" if state == "OFF" else "unknown"), attributes
    if entity.domain in {"switch", "light", "fan", "binary_sensor", "input_boolean"}:
        state_on = str(entity.key("state_on", _payload_on(entity)))
        state_off = str(entity.key("state_off", _payload_off(entity)))
        if payload == state_on:
            return "on", {}
        if payload == state_off:
            return "off", {}
        return payload, {}
    unit = entity.key("unit_of_measurement")
    return payload, ({"unit_of_measurement": unit} if unit else {})


class Registry:
    """Every known entity, and the allowlist that decides what the agent may see."""

    def __init__(self, config: HomeAssistantConfig) -> None:
        self.expose_patterns = list(config.expose)
        self.entities: dict[str, Entity] = {}
        for entity_config in config.entities:
            self.add(Entity.from_config(entity_config))

    def add(self, entity: Entity) -> None:
        """Add or replace an entity."""
        self.entities[entity.entity_id] = entity

    def is_exposed(self, entity_id: str) -> bool:
        """Whether the allowlist (`expose` globs) admits this entity id."""
        return any(fnmatch.fnmatchcase(entity_id, pattern) for pattern in self.expose_patterns)

    def exposed(self) -> list[Entity]:
        """The entities the agent may see, sorted by id."""
        return [e for _, e in sorted(self.entities.items()) if self.is_exposed(e.entity_id)]

    def get_exposed(self, entity_id: str) -> Entity:
        """Look up an entity the agent asked for; unknown and unexposed look the same."""
        entity = self.entities.get(entity_id)
        if entity is None or not self.is_exposed(entity_id):
            raise CommandError(f"no exposed entity {entity_id!r}")
        return entity

    def state_topics(self) -> dict[str, list[Entity]]:
        """State topic -> entities reading it, for subscription."""
        topics: dict[str, list[Entity]] = {}
        for entity in self.entities.values():
            topic = entity.key("state_topic")
            if topic:
                topics.setdefault(str(topic), []).append(entity)
        return topics

    def update_from_topic(self, topic: str, payload: str) -> list[Entity]:
        """Record a state message; return the entities it updated."""
        updated = self.state_topics().get(topic, [])
        for entity in updated:
            entity.state, attributes = parse_state(entity, payload)
            entity.attributes.update(attributes)
        return updated
