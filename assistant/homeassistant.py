"""Home Assistant entities known to the daemon: identity, MQTT keys, live state.

Entities come from three places: hand-declared tables in the config, Home Assistant's
MQTT discovery messages, and mqtt_statestream. Each is described with Home Assistant's
own MQTT keys, so whatever a user already has in YAML or discovery works unchanged.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from assistant.config import EntityConfig, HomeAssistantConfig

log = logging.getLogger(__name__)

_templates = ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)
_templates.filters["float"] = lambda value, default=0.0: _number(value, default, float)
_templates.filters["int"] = lambda value, default=0: _number(value, default, int)
_templates.globals["is_defined"] = lambda value: not isinstance(value, jinja2.Undefined)


def _number(value: Any, default: Any, kind: type) -> Any:
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        return default


def render_template(source: str, variables: dict[str, Any]) -> str:
    """Render a Home Assistant style value/command template (a sandboxed Jinja2 subset)."""
    try:
        return _templates.from_string(source).render(**variables).strip()
    except jinja2.TemplateError as error:
        raise CommandError(f"template {source!r} failed: {error}") from None


class CommandError(Exception):
    """The entity cannot do what was asked (unknown, not exposed, no such feature)."""


@dataclass(frozen=True)
class Command:
    """One MQTT publish that carries out (part of) an action."""

    topic: str
    payload: str
    retain: bool = False


# state-carrying topic key -> (attribute it feeds, or "state"; template key that reads it)
STATE_TOPICS: dict[str, tuple[str, str]] = {
    "state_topic": ("state", "value_template"),
    "brightness_state_topic": ("brightness", "brightness_value_template"),
    "color_temp_state_topic": ("color_temp", "color_temp_value_template"),
    "rgb_state_topic": ("rgb_color", "rgb_value_template"),
    "position_topic": ("current_position", "position_template"),
    "percentage_state_topic": ("percentage", "percentage_value_template"),
    "current_temperature_topic": ("current_temperature", "current_temperature_template"),
    "temperature_state_topic": ("temperature", "temperature_state_template"),
    "mode_state_topic": ("state", "mode_state_template"),  # a climate entity's state is its hvac mode
    "json_attributes_topic": ("*", "json_attributes_template"),
}
ON_OFF_DOMAINS = {"switch", "light", "fan", "binary_sensor", "input_boolean", "siren", "humidifier"}


@dataclass
class Entity:
    """An entity: identity, its Home Assistant MQTT keys, and its last known state."""

    entity_id: str
    name: str
    aliases: list[str] = field(default_factory=list)
    area: str | None = None
    mqtt: dict[str, Any] = field(default_factory=dict)
    state: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = "config"

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
        """A Home Assistant MQTT key of this entity, or Home Assistant's default."""
        value = self.mqtt.get(name)
        return default if value is None else value

    @property
    def mqtt_native(self) -> bool:
        """Whether commands go straight to the device over MQTT (else through the bridge)."""
        return any(key.endswith("command_topic") or key == "set_position_topic" for key in self.mqtt)

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

    def apply(self, topic_key: str, payload: str) -> None:
        """Update state or attributes from a message on one of this entity's state topics."""
        attribute, template_key = STATE_TOPICS[topic_key]
        template = self.key(template_key) or (self.key("state_value_template") if topic_key == "state_topic" else None)
        value: Any = payload
        try:
            value_json = json.loads(payload)
        except ValueError:
            value_json = None
        if template:
            try:
                value = render_template(template, {"value": payload, "value_json": value_json})
            except CommandError as error:
                log.debug("%s: %s", self.entity_id, error)
                return
        if attribute == "*":
            if isinstance(value_json, dict) and not template:
                self.attributes.update(value_json)
            return
        if attribute == "state":
            self._apply_state(str(value), value_json)
        else:
            self.attributes[attribute] = value

    def _apply_state(self, value: str, value_json: Any) -> None:
        if self.domain == "light" and self.key("schema") == "json" and isinstance(value_json, dict):
            self.attributes.update({k: v for k, v in value_json.items() if k != "state"})
            value = str(value_json.get("state", ""))
            self.state = {"ON": "on", "OFF": "off"}.get(value.upper(), "unknown")
            return
        if self.domain in ON_OFF_DOMAINS:
            on = str(self.key("state_on", self.key("payload_on", "ON")))
            off = str(self.key("state_off", self.key("payload_off", "OFF")))
            self.state = "on" if value == on else "off" if value == off else value
        elif self.domain == "lock":
            states = {"LOCKED": "locked", "UNLOCKED": "unlocked", "LOCKING": "locking", "UNLOCKING": "unlocking"}
            self.state = states.get(value, value.lower())
        elif self.domain == "cover":
            states = {"open": "open", "closed": "closed", "opening": "opening", "closing": "closing"}
            self.state = states.get(value.lower(), value)
        else:
            self.state = value
            unit = self.key("unit_of_measurement")
            if unit:
                self.attributes["unit_of_measurement"] = unit

    def state_topics(self) -> dict[str, str]:
        """Topic -> state topic key, for the topics this entity reads."""
        return {str(self.mqtt[key]): key for key in STATE_TOPICS if self.mqtt.get(key)}


class Registry:
    """Every known entity, and the allowlist that decides what the agent may see."""

    def __init__(self, config: HomeAssistantConfig) -> None:
        self.config = config
        self.expose_patterns = list(config.expose)
        self.entities: dict[str, Entity] = {}
        self.version = 0  # bumped whenever entities come or go, for caches built from the registry
        # Indexes kept up to date entry by entry: a discovery storm of 100,000 configs must not
        # rescan every entity per message.
        self._by_topic: dict[str, list[tuple[Entity, str]]] | None = None
        self._by_source: dict[str, set[str]] = {}
        self._exposed: set[str] = set()  # ids admitted by expose_patterns, as of _exposed_for
        self._exposed_for: tuple[str, ...] = tuple(self.expose_patterns)
        for entity_config in config.entities:
            self.add(Entity.from_config(entity_config))

    def add(self, entity: Entity) -> None:
        """Add or replace an entity; hand-declared entities win over learned ones."""
        existing = self.entities.get(entity.entity_id)
        if existing is not None and existing.source == "config" and entity.source != "config":
            return
        if existing is not None:  # keep what we already know of its state
            entity.state = entity.state or existing.state
            entity.attributes = {**existing.attributes, **entity.attributes}
            self._unindex(existing)
        self.entities[entity.entity_id] = entity
        self._by_source.setdefault(entity.source, set()).add(entity.entity_id)
        if self.is_exposed(entity.entity_id):
            self._exposed.add(entity.entity_id)
        if self._by_topic is not None:
            for topic, key in entity.state_topics().items():
                self._by_topic.setdefault(topic, []).append((entity, key))
        self.version += 1

    def remove_source(self, source: str) -> list[str]:
        """Forget every entity learned from `source` (a discovery topic); return their ids."""
        gone = sorted(self._by_source.get(source, ()))
        for entity_id in gone:
            self._unindex(self.entities.pop(entity_id))
        if gone:
            self.version += 1
        return gone

    def _unindex(self, entity: Entity) -> None:
        """Take an entity that is leaving (or being replaced) out of the indexes."""
        self._exposed.discard(entity.entity_id)
        ids = self._by_source.get(entity.source)
        if ids is not None:
            ids.discard(entity.entity_id)
            if not ids:
                del self._by_source[entity.source]
        if self._by_topic is None:
            return
        for topic in entity.state_topics():
            pairs = [pair for pair in self._by_topic.get(topic, ()) if pair[0] is not entity]
            if pairs:
                self._by_topic[topic] = pairs
            else:
                self._by_topic.pop(topic, None)

    def is_exposed(self, entity_id: str) -> bool:
        """Whether the allowlist (`expose` globs) admits this entity id."""
        return any(fnmatch.fnmatchcase(entity_id, pattern) for pattern in self.expose_patterns)

    def exposed(self) -> list[Entity]:
        """The entities the agent may see, sorted by id.

        Read from a set kept as entities come and go: a house of 100,000 unexposed sensors
        must not cost a scan of all of them on every turn.
        """
        if tuple(self.expose_patterns) != self._exposed_for:  # the allowlist was changed in place
            self._exposed_for = tuple(self.expose_patterns)
            self._exposed = {entity_id for entity_id in self.entities if self.is_exposed(entity_id)}
        return [self.entities[entity_id] for entity_id in sorted(self._exposed)]

    def get_exposed(self, entity_id: str) -> Entity:
        """Look up an entity the agent asked for; unknown and unexposed look the same."""
        entity = self.entities.get(entity_id)
        if entity is None or not self.is_exposed(entity_id):
            raise CommandError(f"no exposed entity {entity_id!r}")
        return entity

    def topics(self) -> dict[str, list[tuple[Entity, str]]]:
        """State topic -> (entity, topic key) pairs that read it."""
        if self._by_topic is None:
            by_topic: dict[str, list[tuple[Entity, str]]] = {}
            for entity in self.entities.values():
                for topic, key in entity.state_topics().items():
                    by_topic.setdefault(topic, []).append((entity, key))
            self._by_topic = by_topic
        return self._by_topic

    def state_topics(self) -> list[str]:
        """Every topic that carries a state, for subscription."""
        return sorted(self.topics())

    def update_from_topic(self, topic: str, payload: str) -> list[Entity]:
        """Record a state message; return the entities it updated."""
        pairs = self.topics().get(topic, [])
        for entity, key in pairs:
            entity.apply(key, payload)
        return [entity for entity, _key in pairs]

    def update_from_statestream(self, base: str, topic: str, payload: str) -> Entity | None:
        """mqtt_statestream: `<base>/<domain>/<object_id>/state` and `/<attribute>` (JSON)."""
        parts = topic.removeprefix(base.rstrip("/") + "/").split("/")
        if len(parts) != 3:
            return None
        domain, object_id, leaf = parts
        entity_id = f"{domain}.{object_id}"
        entity = self.entities.get(entity_id)
        if entity is None:
            entity = Entity(entity_id, object_id.replace("_", " ").capitalize(), source="statestream")
            self.add(entity)
        if leaf == "state":
            entity.state = payload
            return entity
        try:
            value = json.loads(payload)
        except ValueError:
            value = payload
        if leaf == "friendly_name" and isinstance(value, str) and entity.source == "statestream":
            entity.name = value
        else:
            entity.attributes[leaf] = value
        return entity
