"""The registry: every known entity, indexed for a house of any size, and the allowlist.

What the agent may see (`expose`), and what may be published where: every command topic
belongs to the entity that claimed it first (see assistant/home/ownership.py).
"""

from __future__ import annotations

import fnmatch
import logging

from assistant.config import HomeAssistantConfig
from assistant.home.budget import MAX_PAYLOAD_CHARS, cap_text
from assistant.home.entities import CommandError, Entity, parse_json
from assistant.home.ownership import CONFIG, Claims, Conflict

log = logging.getLogger(__name__)


class Registry:
    """Every known entity, and the allowlist that decides what the agent may see and touch.

    The allowlist holds on topics too: every command topic belongs to the entity that
    claimed it first, and nothing is published to a topic that an entity outside `expose`
    claims or reads, whichever entity asks (see assistant/home/ownership.py).
    """

    def __init__(self, config: HomeAssistantConfig) -> None:
        self.config = config
        self.expose_patterns = list(config.expose)
        self.house: set[str] | None = None  # ids in Home Assistant's snapshot, once one came (see placement.py)
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
        self._hidden: set[str] = set()  # the daemon's own entities: out of its agent's reach (see hide)
        self._reserved = [f"{config.service_topic}/"] if config.service_topic else []
        if config.statestream_topic:
            self._reserved.append(config.statestream_topic.rstrip("/") + "/")
        for entity_config in config.entities:
            for conflict in self.add(Entity.from_config(entity_config)):
                log.error("%s", conflict.message())  # config validation refuses these: only if bypassed

    def reserve(self, namespace: str) -> None:
        """Never publish an entity command under `namespace` (e.g. the daemon's own `assistant/`)."""
        self._reserved.append(namespace.rstrip("/") + "/")

    def hide(self, entity_ids: set[str]) -> None:
        """Keep these ids from the agent unless an `expose` entry names one exactly (no glob).

        For the daemon's own entities, which reach it through statestream or the snapshot:
        "mute yourself" would work and could not be undone by voice.
        """
        self._hidden |= entity_ids
        self._exposed -= {eid for eid in entity_ids if not self.is_exposed(eid)}
        self.version += 1

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
        return self.attach(source, entities, self.detach(source))

    def detach(self, source: str) -> dict[str, Entity]:
        """Take the entities of `source` out (their claims stay); `attach` puts what replaces them in."""
        previous = {eid: self.entities.pop(eid) for eid in sorted(self._sources.get(source, ()))}
        for gone in previous.values():
            self._unindex(gone)
        return previous

    def attach(
        self, source: str, entities: list[Entity], previous: dict[str, Entity], hidden: tuple[Entity, ...] = ()
    ) -> list[Conflict]:
        """The second half of replace_source; `hidden` entities keep their claims without being known."""
        kept = {(topic, e.entity_id) for e in (*entities, *hidden) for topic in e.command_topics()}
        released = self.claims.release(source, kept)
        for entity in hidden:
            self.claims.claim(source, entity.entity_id, entity.command_topics())
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
        if entity_id in self._hidden:
            return entity_id in self.expose_patterns
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
        if entity is None and self.house is not None:
            return None  # the snapshot lists every entity there is: this one was renamed or removed
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
