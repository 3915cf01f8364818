"""Which id each learned entity is known by: Home Assistant's own when known, else its rules'.

Discovered entities are kept by their discovery identity (topic, plus component id in a
device-based config) and get their entity id from assistant/home/ids.py: the preferred
id, suffixed `_2`, `_3`, ... on a collision, stable per unique_id. Once the bridge
package's house snapshot (assistant/home/snapshot.py) has come, it is the truth:

- every snapshot entity is known at once, under its real id, name, area and floor;
- an MQTT entity of the snapshot tied to a discovered one lends that one its id, name,
  area and floor, while commands still go straight to the discovered MQTT topics;
- the other snapshot entities are reached through the service bridge;
- a discovered entity that is not tied is left out when the snapshot covers its device
  or its id (Home Assistant knows it differently, or not at all), so nothing is there
  twice; its command topics stay claimed, so no other config can take them over;
- statestream no longer adds entities the snapshot does not list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from assistant.home.discovery import Discovered
from assistant.home.entities import Entity
from assistant.home.ids import Identities
from assistant.home.ownership import Conflict
from assistant.home.registry import Registry
from assistant.home.snapshot import Candidate, HouseEntity, StateChange, device_identifiers, tie

SNAPSHOT = "snapshot"  # the source of entities known only from the snapshot (reached through the bridge)
STATESTREAM = "statestream"


@dataclass(slots=True)
class Learned:
    """One discovered entity. `entity` is the one in the registry (or claiming its topics, when left
    out): it carries the preferred id until placed. Kept small: a house may have 100,000 of them.
    """

    identity: str
    unique_key: str | None
    name: str  # the friendly name discovery computed, which ties compare (entity.name may be Home Assistant's)
    entity: Entity
    assigned: str = ""
    shown: bool = False  # known in the registry (else left out, claims only)

    @classmethod
    def from_discovered(cls, source: str, found: Discovered) -> Learned:
        """Keyed by its discovery topic (and component id); its unique key as Home Assistant's registry has it."""
        return cls(
            source + (f"#{found.component}" if found.component is not None else ""),
            None if found.unique_id is None else f"{found.domain} {found.unique_id}",
            found.name,
            Entity(found.entity_id, found.name, [], found.area, dict(found.config), source=source),
        )

    @property
    def devices(self) -> frozenset[str]:
        """Its device's identifiers (read when a snapshot is there to tie to, not kept)."""
        return device_identifiers(self.entity.mqtt)


class Placement:
    """Discovered entities and the house snapshot, placed into the registry under one id each."""

    def __init__(self, registry: Registry, identities: Identities | None = None) -> None:
        self.registry = registry
        self.ids = identities or Identities()
        self.house: dict[str, HouseEntity] | None = None
        self._house_devices: frozenset[str] = frozenset()
        self._learned: dict[str, list[Learned]] = {}  # source -> its entities
        self._ties: dict[str, str] = {}  # identity -> Home Assistant's id
        self._stale = False  # configs came since the last tie: settle() ties again
        self._own: set[str] | None = None  # ids of the snapshot entities known as such (not tied)
        self.ambiguous: list[str] = []  # ties left undone, for the caller to log

    def learn(self, source: str, learned: list[Learned]) -> list[Conflict]:
        """Set what a discovery topic announces now; an empty list removes what it announced."""
        keep = {item.identity for item in learned}
        placed = {}  # identity -> the id it was under, for its claims
        for old in self._learned.get(source, []):
            placed[old.identity] = old.entity.entity_id
            if old.identity not in keep:
                self.ids.release(old.identity)
                self._ties.pop(old.identity, None)
        for item in learned:
            item.assigned = self.ids.assign(item.identity, item.entity.entity_id, item.unique_key)
            item.entity.entity_id = placed.get(item.identity, item.assigned)  # not in the registry yet
        if learned:
            self._learned[source] = learned
        else:
            self._learned.pop(source, None)
        self._stale = self.house is not None
        return self._place([source])

    def apply_snapshot(self, house: dict[str, HouseEntity]) -> list[Conflict]:
        """Make `house` the truth: tie, re-place what moved, add the rest, forget what left."""
        self.house = house
        self.registry.house = set(house)
        self._house_devices = frozenset(d for entity in house.values() for d in entity.devices or ())
        self._own = None  # every snapshot entity afresh
        conflicts = self.settle(force=True)
        self.registry.attach(STATESTREAM, [], self.registry.detach(STATESTREAM))
        return conflicts

    def settle(self, force: bool = False) -> list[Conflict]:
        """Tie again after new configs (once per batch of messages), re-placing what moved."""
        if self.house is None or not (self._stale or force):
            return []
        self._stale = False
        candidates = [
            Candidate(item.identity, item.entity.domain, item.name, devices)
            for items in self._learned.values()
            for item in items
            if (devices := item.devices) & self._house_devices
        ]
        self._ties, self.ambiguous = tie(self.house.values(), candidates)
        moved = [source for source, items in self._learned.items() if any(self._moves(item) for item in items)]
        conflicts = self._place(moved)
        for items in self._learned.values():  # tied and in place: take Home Assistant's names and state
            for item in items:
                tied = self._ties.get(item.identity)
                if tied is not None and item.shown and self.registry.entities.get(tied) is item.entity:
                    _take(item.entity, self.house[tied])
        own = set(self.house) - set(self._ties.values())  # the rest are reached through the bridge
        if own != self._own:
            self._own = own
            entities = [_house_entity(self.house[entity_id]) for entity_id in sorted(own)]
            conflicts += self.registry.attach(SNAPSHOT, entities, self.registry.detach(SNAPSHOT))
        return conflicts

    def apply_state(self, change: StateChange) -> Entity | None:
        """One entity's state changed in Home Assistant (None: it was removed)."""
        if self.house is None or change.entity_id not in self.house:
            return None  # not (yet) in the snapshot: the package sends a new one after registry changes
        if change.state is None:
            house = dict(self.house)
            del house[change.entity_id]
            self.apply_snapshot(house)
            return None
        known = self.house[change.entity_id]
        attributes = {**known.attributes, **change.attributes}
        self.house[change.entity_id] = dataclasses.replace(known, state=change.state, attributes=attributes)
        entity = self.registry.entities.get(change.entity_id)
        if entity is not None:
            entity.set_state(change.state)
            entity.set_attributes(change.attributes)
        return entity

    def _final(self, item: Learned) -> str | None:
        """The id `item` is known by now; None when the snapshot knows it otherwise (left out)."""
        if self.house is None:
            return item.assigned
        tied = self._ties.get(item.identity)
        if tied is not None:
            return tied
        if item.devices & self._house_devices or item.assigned in self.house:
            return None
        return item.assigned

    def _moves(self, item: Learned) -> bool:
        """Whether `item` is to go under another id, or in or out of the registry."""
        final = self._final(item)
        return item.entity.entity_id != (final or item.assigned) or item.shown != (final is not None)

    def _place(self, sources: list[str]) -> list[Conflict]:
        """(Re)build the registry's entities of `sources`: all taken out first, so ids can swap between them."""
        plans = []
        for source in sources:
            shown: list[Entity] = []
            hidden: list[Entity] = []
            renamed: dict[str, str] = {}
            for item in self._learned.get(source, []):
                final = self._final(item)
                target = final or item.assigned
                if item.entity.entity_id != target:  # a new entity object: the registry indexes the old one by id
                    renamed[item.entity.entity_id] = target
                    item.entity = _copy(item.entity, target)
                if final is not None and self.house is not None and final in self.house:
                    _take(item.entity, self.house[final])
                item.shown = final is not None
                (shown if item.shown else hidden).append(item.entity)
            if renamed:
                self.registry.claims.rename(source, renamed)  # a topic's first claimant stays first
            plans.append((source, shown, hidden))
        previous = {source: self.registry.detach(source) for source in sources}
        conflicts = []
        for source, shown, hidden in plans:
            conflicts += self.registry.attach(source, shown, previous[source], tuple(hidden))
        return conflicts


def _copy(entity: Entity, entity_id: str) -> Entity:
    """A fresh entity for the registry from what discovery said, under `entity_id`."""
    return Entity(
        entity_id,
        entity.name,
        list(entity.aliases),
        entity.area,
        entity.mqtt,
        source=entity.source,
        floor=entity.floor,
    )


def _take(entity: Entity, known: HouseEntity) -> None:
    """Home Assistant's name, area, floor, state and attributes for an entity."""
    entity.name, entity.area, entity.floor = known.name, known.area, known.floor
    if known.state is not None:
        entity.set_state(known.state)
    entity.set_attributes(known.attributes)


def _house_entity(known: HouseEntity) -> Entity:
    """A snapshot entity without discovery config of its own: reached through the bridge."""
    entity = Entity(known.entity_id, known.name, [], known.area, {}, source=SNAPSHOT, floor=known.floor)
    _take(entity, known)
    return entity
