"""Home Assistant entities known to the daemon: identity, MQTT keys, live state.

Entities come from three places: hand-declared tables in the config, Home Assistant's
MQTT discovery messages, and mqtt_statestream. Each is described with Home Assistant's
own MQTT keys, so whatever a user already has in YAML or discovery works unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from assistant.config import EntityConfig
from assistant.home.budget import (
    MAX_PAYLOAD_CHARS,
    MAX_TEXT_CHARS,
    bounded_attributes,
    cap_attributes,
    cap_text,
)
from assistant.home.discovery import is_command_key
from assistant.home.ownership import CONFIG
from assistant.home.templating import environment

log = logging.getLogger(__name__)


def render_template(source: str, variables: dict[str, Any]) -> str:
    """Render a Home Assistant style value/command template (a sandboxed Jinja2 subset).

    Any failure, a syntax error as much as a division by zero or a recursion, is a
    CommandError: a template comes from a config or discovery message, not from us.
    """
    try:
        return environment().from_string(source).render(**variables).strip()
    except Exception as error:
        raise CommandError(f"template {cap_text(source, 120)!r} failed: {type(error).__name__}: {error}") from None


def parse_json(payload: str) -> Any:
    """The JSON in a message, or None: not JSON, too deep for the parser, or too long to parse."""
    if len(payload) > MAX_PAYLOAD_CHARS:
        return None
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None


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
    source: str = CONFIG
    floor: str | None = None  # the floor its area is on, as Home Assistant's floor registry names it
    _warned: set[str] = field(default_factory=set, repr=False, compare=False)  # problems logged once each

    @property
    def domain(self) -> str:
        """The platform: the part of entity_id before the dot."""
        return self.entity_id.split(".", 1)[0]

    @classmethod
    def from_config(cls, config: EntityConfig) -> Entity:
        """Build from a hand-declared [[homeassistant.entities]] table."""
        default_name = config.entity_id.split(".", 1)[1].replace("_", " ").capitalize()
        name = config.name or default_name
        return cls(config.entity_id, name, list(config.aliases), config.area, config.mqtt, floor=config.floor)

    def key(self, name: str, default: Any = None) -> Any:
        """A Home Assistant MQTT key of this entity, or Home Assistant's default."""
        value = self.mqtt.get(name)
        return default if value is None else value

    @property
    def mqtt_native(self) -> bool:
        """Whether commands go straight to the device over MQTT (else through the bridge)."""
        return any(is_command_key(key) for key in self.mqtt)

    def command_topics(self) -> dict[str, str]:
        """Topic -> key, for the topics this entity's commands go to (the first key naming one)."""
        topics: dict[str, str] = {}
        for key, topic in self.mqtt.items():
            if is_command_key(key) and isinstance(topic, str) and topic:
                topics.setdefault(topic, key)
        return topics

    def summary(self) -> dict[str, Any]:
        """What the model is told about the entity: bounded (see assistant.home.budget)."""
        info: dict[str, Any] = {
            "entity_id": self.entity_id,
            "name": cap_text(self.name, 100),
            "state": self.state or "unknown",
        }
        if self.aliases:
            info["aliases"] = [cap_text(alias, 100) for alias in self.aliases[:10]]
        if self.area:
            info["area"] = cap_text(self.area, 100)
        if self.floor:
            info["floor"] = cap_text(self.floor, 100)
        if self.attributes:
            info["attributes"], omitted = bounded_attributes(self.attributes)
            if omitted:
                info["attributes_omitted"] = omitted
        return info

    def warn_once(self, problem: str, message: str) -> None:
        """Log a problem with this entity's messages once (later ones at debug level)."""
        level = logging.DEBUG if problem in self._warned else logging.WARNING
        self._warned.add(problem)
        log.log(level, "%s: %s", self.entity_id, message)

    def set_state(self, value: str) -> None:
        """Store a state, capped."""
        self.state = cap_text(value, MAX_TEXT_CHARS)

    def set_attributes(self, updates: dict[str, Any]) -> None:
        """Store attributes, capped (values, and how many attributes an entity keeps)."""
        cap_attributes(self.attributes, updates)

    def apply(self, topic_key: str, payload: str) -> None:
        """Update state or attributes from a message on one of this entity's state topics.

        An oversized message is neither parsed nor templated, only capped; a failing
        template leaves the state as it was. Either is logged once for the entity.
        """
        attribute, template_key = STATE_TOPICS[topic_key]
        template = self.key(template_key) or (self.key("state_value_template") if topic_key == "state_topic" else None)
        if len(payload) > MAX_PAYLOAD_CHARS:
            self.warn_once("payload", f"a {len(payload)}-character message on its {topic_key} was cut to a state")
            template = None
            payload = payload[:MAX_TEXT_CHARS]
        value: Any = payload
        value_json = parse_json(payload)
        if template:
            try:
                value = render_template(template, {"value": payload, "value_json": value_json})
            except CommandError as error:
                self.warn_once(f"template:{template_key}", f"{template_key} failed, state left as it was: {error}")
                return
        if attribute == "*":
            if isinstance(value_json, dict) and not template:
                self.set_attributes(value_json)
            return
        if attribute == "state":
            self._apply_state(str(value), value_json)
        else:
            self.set_attributes({attribute: value})

    def _apply_state(self, value: str, value_json: Any) -> None:
        if self.domain == "light" and self.key("schema") == "json" and isinstance(value_json, dict):
            self.set_attributes({k: v for k, v in value_json.items() if k != "state"})
            value = str(value_json.get("state", ""))
            self.state = {"ON": "on", "OFF": "off"}.get(value.upper(), "unknown")
            return
        if self.domain in ON_OFF_DOMAINS:
            on = str(self.key("state_on", self.key("payload_on", "ON")))
            off = str(self.key("state_off", self.key("payload_off", "OFF")))
            self.set_state("on" if value == on else "off" if value == off else value)
        elif self.domain == "lock":
            states = {"LOCKED": "locked", "UNLOCKED": "unlocked", "LOCKING": "locking", "UNLOCKING": "unlocking"}
            self.set_state(states.get(value, value.lower()))
        elif self.domain == "cover":
            states = {"open": "open", "closed": "closed", "opening": "opening", "closing": "closing"}
            self.set_state(states.get(value.lower(), value))
        else:
            self.set_state(value)
            unit = self.key("unit_of_measurement")
            if unit:
                self.set_attributes({"unit_of_measurement": unit})

    def state_topics(self) -> dict[str, str]:
        """Topic -> state topic key, for the topics this entity reads."""
        return {str(self.mqtt[key]): key for key in STATE_TOPICS if self.mqtt.get(key)}
