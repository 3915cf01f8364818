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

from assistant.config import EntityConfig, HomeAssistantConfig
from assistant.home.budget import (
    MAX_PAYLOAD_CHARS,
    MAX_TEXT_CHARS,
    bounded_attributes,
    cap_attributes,
    cap_text,
)
from assistant.home.discovery import is_command_key
from assistant.home.ownership import CONFIG, Claims, Conflict
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
    _warned: set[str] = field(default_factory=set, repr=False, compare=False)  # problems logged once each

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


class Registry:
    """Every known entity, and the allowlist that decides what the agent may see and touch.

    The allowlist holds on topics too: every command topic belongs to the entity that
    claimed it first, and nothing is published to a topic that an entity outside `expose`
    claims or reads, whichever entity asks (see assistant/home/ownership.py).
    """

    def __init__(self, config: HomeAssistantConfig) -> None:
        self.config = config
        self.expose_patterns = list(config.expose)
        self.entities: dict[str, Entity] = {}
        self.version = 0  # bumped whenever entities come or go, for caches built from the registry
        # Indexes kept up to date entry by entry: a discovery storm of 100,000 configs must not
        # rescan every entity per message.
        self._by_topic: dict[str, list[tuple[Entity, str]]] | None = None
        self._sources: dict[str, set[str]] = {}  # source -> ids of the entities admitted from it
        self._exposed: set[str] = set()  # ids admitted by expose_patterns, as of _exposed_for
        self._exposed_for: tuple[str, ...] = tuple(self.expose_patterns)
        self.claims = Claims()
        self._held: dict[tuple[str, str], Entity] = {}  # refused for a topic conflict, until the topic is freed
        self._reserved = [f"{config.service_topic}/"] if config.service_topic else []
        if config.statestream_topic:
            self._reserved.append(config.statestream_topic.rstrip("/") + "/")
        for entity_config in config.entities:
            for conflict in self.add(Entity.from_config(entity_config)):
                log.error("%s", conflict.message())  # config validation refuses these: only if bypassed

    def reserve(self, namespace: str) -> None:
        """Never publish an entity command under `namespace` (e.g. the daemon's own `assistant/`)."""
        self._reserved.append(namespace.rstrip("/") + "/")

    def add(self, entity: Entity) -> list[Conflict]:
        """Add or replace an entity; return the conflicts that kept it out (then it is held back).

        Hand-declared entities win over learned ones with the same id; a learned one that
        is ignored for that still claims its topics, so they are known to be taken.
        """
        self.claims.claim(entity.source, entity.entity_id, entity.command_topics())
        existing = self.entities.get(entity.entity_id)
        if existing is not None and existing.source == CONFIG and entity.source != CONFIG:
            return []
        conflicts = self.claims.conflicts(entity.source, entity.entity_id, entity.command_topics())
        if conflicts:
            self._held[(entity.source, entity.entity_id)] = entity
            return conflicts
        self._admit(entity)
        return []

    def _admit(self, entity: Entity) -> None:
        existing = self.entities.get(entity.entity_id)
        if existing is not None and existing.source == CONFIG and entity.source != CONFIG:
            return
        if existing is not None:  # keep what we already know of its state
            entity.state = entity.state or existing.state
            learned, entity.attributes = entity.attributes, dict(existing.attributes)
            entity.set_attributes(learned)
            self._unindex(existing)
        self.entities[entity.entity_id] = entity
        self._sources.setdefault(entity.source, set()).add(entity.entity_id)
        if self.is_exposed(entity.entity_id):
            self._exposed.add(entity.entity_id)
        if self._by_topic is not None:
            for topic, key in entity.state_topics().items():
                self._by_topic.setdefault(topic, []).append((entity, key))
        self.version += 1

    def _unindex(self, entity: Entity) -> None:
        """Take an entity that is leaving (or being replaced) out of the indexes."""
        self._exposed.discard(entity.entity_id)
        ids = self._sources.get(entity.source)
        if ids is not None:
            ids.discard(entity.entity_id)
            if not ids:
                del self._sources[entity.source]
        if self._by_topic is None:
            return
        for topic in entity.state_topics():
            pairs = [pair for pair in self._by_topic.get(topic, ()) if pair[0] is not entity]
            if pairs:
                self._by_topic[topic] = pairs
            else:
                self._by_topic.pop(topic, None)

    def replace_source(self, source: str, entities: list[Entity]) -> list[Conflict]:
        """Set what `source` (a discovery topic) announces now; return the conflicts found.

        Claims that stay keep their place, so a config that is only sent again (Home
        Assistant restarted) changes no topic's owner; topics it no longer claims are
        freed, and entities held back for them are let in.
        """
        kept = {(topic, e.entity_id) for e in entities for topic in e.command_topics()}
        released = self.claims.release(source, kept)
        previous = {eid: self.entities.pop(eid) for eid in sorted(self._sources.get(source, ()))}
        for gone in previous.values():
            self._unindex(gone)
        for entity_id in [eid for src, eid in self._held if src == source]:
            del self._held[(source, entity_id)]
        conflicts = []
        for entity in entities:
            if entity.entity_id in previous:  # what we knew of its state carries over
                known = previous[entity.entity_id]
                entity.state = entity.state or known.state
                entity.attributes = {**known.attributes, **entity.attributes}
            conflicts += self.add(entity)
        for key, held in list(self._held.items()) if released else []:
            freed = released & held.command_topics().keys()
            if freed and not self.claims.conflicts(held.source, held.entity_id, held.command_topics()):
                log.info("%s: its command topics are free now", held.entity_id)
                del self._held[key]
                self._admit(held)
        self.version += 1
        return conflicts

    def remove_source(self, source: str) -> list[str]:
        """Forget every entity learned from `source` (a discovery topic); return their ids."""
        gone = sorted(self._sources.get(source, ()))
        self.replace_source(source, [])  # also releases its claims (an entity shadowed by a declared one has some)
        return gone

    def held(self) -> set[str]:
        """Ids of entities refused for claiming another entity's command topic."""
        return {entity_id for _source, entity_id in self._held}

    def is_exposed(self, entity_id: str) -> bool:
        """Whether the allowlist (`expose` globs) admits this entity id."""
        return any(fnmatch.fnmatchcase(entity_id, pattern) for pattern in self.expose_patterns)

    def exposed(self) -> list[Entity]:
        """The entities the agent may see, sorted by id (none whose id a refused config claims).

        Read from a set kept as entities come and go: a house of 100,000 unexposed sensors
        must not cost a scan of all of them on every turn.
        """
        if tuple(self.expose_patterns) != self._exposed_for:  # the allowlist was changed in place
            self._exposed_for = tuple(self.expose_patterns)
            self._exposed = {entity_id for entity_id in self.entities if self.is_exposed(entity_id)}
        held = self.held()
        return [self.entities[eid] for eid in sorted(self._exposed) if eid not in held]

    def get_exposed(self, entity_id: str) -> Entity:
        """Look up an entity the agent asked for; unknown and unexposed look the same."""
        entity = self.entities.get(entity_id)
        if entity is None or not self.is_exposed(entity_id) or entity_id in self.held():
            raise CommandError(f"no exposed entity {entity_id!r}")
        return entity

    def check_command_topic(self, entity: Entity, topic: str) -> None:
        """Raise CommandError unless `entity` may publish a command to `topic` now.

        The last check before anything is sent: the topic must be a plain topic outside
        the daemon's, the bridge's and discovery's own, one of this exposed entity's
        command topics, and neither claimed nor read by any entity that is not exposed.
        """
        if not topic or any(c in topic for c in "+#\0"):
            raise CommandError(f"refused: {topic!r} is not a topic to publish to")
        if self._is_reserved(topic):
            raise CommandError(f"refused: {topic!r} is reserved (the assistant's, the bridge's or discovery's)")
        if not self.is_exposed(entity.entity_id) or entity.entity_id in self.held():
            raise CommandError(f"no exposed entity {entity.entity_id!r}")
        claimants = self.claims.claimants(topic)
        if (entity.source, entity.entity_id) not in claimants:
            raise CommandError(f"refused: {topic!r} is not a command topic of {entity.entity_id}")
        readers = [e.entity_id for e, _key in self.topics().get(topic, [])]
        readers += [e.entity_id for e in self._held.values() if topic in e.state_topics()]
        hidden = [eid for eid in [eid for _src, eid in claimants] + readers if not self.is_exposed(eid)]
        if hidden:
            log.warning("refused to publish to %s for %s: %s also uses it", topic, entity.entity_id, hidden[0])
            raise CommandError(f"refused: {topic!r} also belongs to an entity that is not exposed")

    def _is_reserved(self, topic: str) -> bool:
        if topic.startswith("$") or any(topic.startswith(ns) or topic == ns[:-1] for ns in self._reserved):
            return True
        prefix = self.config.discovery_prefix.rstrip("/") + "/"
        return topic == prefix + "status" or (topic.startswith(prefix) and topic.endswith("/config"))

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
        if entity is None and entity_id in self.held():
            return None  # refused for its topics: not to be reached through the bridge either
        if entity is None:
            entity = Entity(entity_id, object_id.replace("_", " ").capitalize(), source="statestream")
            self.add(entity)
        if leaf == "state":
            entity.set_state(payload)
            return entity
        value = parse_json(payload)
        if value is None and payload.strip() != "null":
            value = payload[:MAX_PAYLOAD_CHARS]  # not JSON (or too long to parse): kept as capped text
        if leaf == "friendly_name" and isinstance(value, str) and entity.source == "statestream":
            entity.name = cap_text(value, 100)
        else:
            entity.set_attributes({leaf: value})
        return entity
