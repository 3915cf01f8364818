"""The house snapshot: every entity as Home Assistant itself knows it, from the bridge package.

The bridge package (config/homeassistant/assistant_bridge.yaml) publishes on
`<service_topic>/house` (retained) the entities its allowlist admits, with their real
ids, names, areas, floors, states and the attributes the tools need, and one entity's
change on `<service_topic>/house/state`. With it the daemon knows every entity at once,
under Home Assistant's own id, however it was named, renamed or suffixed.

An entity of Home Assistant's MQTT integration lists its device's discovery identifiers
(`mqtt.device`); `tie` matches it to the discovery config the daemon learned itself, so
that entity is known by Home Assistant's id while its commands still go straight to its
MQTT topics. Everything read here is bounded as assistant/home/budget.py bounds states.
Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from assistant.home.budget import MAX_TEXT_CHARS, cap_attributes, cap_text

FORMAT = 1
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024  # ~20,000 entities as the package writes them
MAX_ENTITIES = 20_000
MAX_DEVICE_IDS = 16  # identifiers kept per entity's device
MAX_KEYED_STATE_BYTES = 64 * 1024  # a larger state change is read in full on the loop only
MAX_PROBLEMS = 5  # entity problems named in the error log (the rest are counted)
ENTITY_ID = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+")


class SnapshotError(ValueError):
    """A snapshot or state message that cannot be used; the message says why."""


@dataclass(frozen=True)
class HouseEntity:
    """One entity of the snapshot; `devices` is None unless it is an MQTT entity."""

    entity_id: str
    name: str
    area: str | None
    floor: str | None
    state: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    devices: frozenset[str] | None = None

    @property
    def domain(self) -> str:
        """The part of entity_id before the dot."""
        return self.entity_id.split(".", 1)[0]


@dataclass(frozen=True)
class Snapshot:
    """The entities of one snapshot by id, and the entities that were skipped (with why)."""

    entities: dict[str, HouseEntity]
    problems: list[str]
    skipped: int = 0


@dataclass(frozen=True)
class StateChange:
    """One entity's new state; `state` None: the entity was removed."""

    entity_id: str
    state: str | None
    attributes: dict[str, Any]


def _load(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"{what} of {len(payload)} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise SnapshotError(f"{what} is not JSON text: {error}") from None
    if not isinstance(data, dict):
        raise SnapshotError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _text(value: Any, key: str, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise SnapshotError(f"{key} must be text{' or null' if optional else ''}, got {type(value).__name__}")
    return cap_text(value, MAX_TEXT_CHARS)


def _attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SnapshotError(f"attributes must be an object, got {type(value).__name__}")
    capped: dict[str, Any] = {}
    cap_attributes(capped, value)
    return capped


def _entity_id(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS or not ENTITY_ID.fullmatch(value):
        raise SnapshotError(f"entity_id {cap_text(str(value), 80)!r} is not an entity id (domain.object_id)")
    return value


def _devices(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    ids = value.get("device") if isinstance(value, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise SnapshotError('mqtt must be null or {"device": [identifiers as text]}')
    return frozenset(cap_text(i, MAX_TEXT_CHARS) for i in ids[:MAX_DEVICE_IDS])


def _house_entity(raw: Any) -> HouseEntity:
    if not isinstance(raw, dict):
        raise SnapshotError(f"an entity must be an object, got {type(raw).__name__}")
    entity_id = _entity_id(raw.get("entity_id"))
    try:
        return HouseEntity(
            entity_id=entity_id,
            name=_text(raw.get("name"), "name") or entity_id.split(".", 1)[1].replace("_", " ").capitalize(),
            area=_text(raw.get("area"), "area"),
            floor=_text(raw.get("floor"), "floor"),
            state=_text(raw.get("state"), "state"),
            attributes=_attributes(raw.get("attributes")),
            devices=_devices(raw.get("mqtt")),
        )
    except SnapshotError as error:
        raise SnapshotError(f"{entity_id}: {error}") from None


def parse_snapshot(payload: bytes) -> Snapshot:
    """The snapshot on `<service_topic>/house`; a bad entity is skipped and named, a bad whole is an error."""
    data = _load(payload, "the house snapshot")
    if data.get("format") != FORMAT:
        raise SnapshotError(
            f"snapshot format {cap_text(str(data.get('format')), 20)} is not {FORMAT}: "
            "the bridge package and the daemon are of different releases; install the package of this release"
        )
    raw_entities = data.get("entities")
    if not isinstance(raw_entities, list):
        raise SnapshotError("the house snapshot needs 'entities', a list")
    entities: dict[str, HouseEntity] = {}
    problems: list[str] = []
    skipped = 0
    for raw in raw_entities[:MAX_ENTITIES]:
        try:
            entity = _house_entity(raw)
        except SnapshotError as error:
            problem: str | None = str(error)
        else:
            problem = f"{entity.entity_id} is listed twice: the first is kept" if entity.entity_id in entities else None
            entities.setdefault(entity.entity_id, entity)
        if problem is not None:
            skipped += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(problem)
    if len(raw_entities) > MAX_ENTITIES:
        skipped += len(raw_entities) - MAX_ENTITIES
        problems.append(f"over {MAX_ENTITIES} entities: the rest are left out")
    return Snapshot(entities, problems, skipped)


def parse_state_change(payload: bytes) -> StateChange:
    """One message on `<service_topic>/house/state`."""
    data = _load(payload, "a house state message")
    entity_id = _entity_id(data.get("entity_id"))
    try:
        return StateChange(entity_id, _text(data.get("state"), "state"), _attributes(data.get("attributes")))
    except SnapshotError as error:
        raise SnapshotError(f"{entity_id}: {error}") from None


def changed_entity(payload: bytes) -> str | None:
    """The entity a `house/state` message is about; None when it cannot be told cheaply.

    Read on paho's thread, so that a newer change replaces only the same entity's unread one
    (assistant.link.inbox): one topic carries every entity's changes.
    """
    if len(payload) > MAX_KEYED_STATE_BYTES:
        return None
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    entity_id = data.get("entity_id") if isinstance(data, dict) else None
    if not isinstance(entity_id, str) or len(entity_id) > MAX_TEXT_CHARS or not ENTITY_ID.fullmatch(entity_id):
        return None  # never a key that no entity has: those are refused on the loop anyway
    return entity_id


@dataclass(frozen=True)
class Candidate:
    """A discovered entity as tying sees it: its identity, domain, friendly name, device identifiers."""

    identity: str
    domain: str
    name: str
    devices: frozenset[str]


def device_identifiers(config: dict[str, Any]) -> frozenset[str]:
    """`device.identifiers` of an expanded discovery config (text or a list), as text."""
    device = config.get("device")
    ids = device.get("identifiers") if isinstance(device, dict) else None
    listed = [ids] if isinstance(ids, str) else ids if isinstance(ids, list) else []
    return frozenset(str(i) for i in listed[:MAX_DEVICE_IDS])


def tie(house: Iterable[HouseEntity], learned: Iterable[Candidate]) -> tuple[dict[str, str], list[str]]:
    """Discovery identity -> Home Assistant entity id, for the MQTT entities of the snapshot; and ambiguities.

    A snapshot entity is tied to the discovered entity of its domain whose device
    identifiers intersect its own and whose friendly name (as discovery.py computes it)
    is the same, case aside. When none has that name and its device has exactly one
    entity of the domain on each side, those two are tied (renamed in Home Assistant's
    UI). Anything that matches more than one way is left untied and named in the second
    list: a wrong tie would command the wrong device.
    """
    by_device: dict[tuple[str, str], list[Candidate]] = {}
    for candidate in learned:
        for device in candidate.devices:
            by_device.setdefault((candidate.domain, device), []).append(candidate)
    house_by_device: dict[tuple[str, str], set[str]] = {}
    mqtt_entities = [entity for entity in house if entity.devices]
    for entity in mqtt_entities:
        for device in entity.devices or ():
            house_by_device.setdefault((entity.domain, device), set()).add(entity.entity_id)
    proposals: dict[str, list[str]] = {}  # identity -> snapshot ids that chose it
    ambiguous: list[str] = []
    for entity in mqtt_entities:
        keys = [(entity.domain, device) for device in sorted(entity.devices or ())]
        candidates = {c.identity: c for key in keys for c in by_device.get(key, ())}
        named = [c for c in candidates.values() if c.name.casefold() == entity.name.casefold()]
        siblings = set().union(*(house_by_device.get(key, set()) for key in keys))
        if len(named) == 1:
            proposals.setdefault(named[0].identity, []).append(entity.entity_id)
        elif len(named) > 1:
            ambiguous.append(
                f"{entity.entity_id}: {len(named)} discovered entities of its device are named {entity.name!r}"
            )
        elif len(candidates) == 1 and len(siblings) == 1:
            proposals.setdefault(next(iter(candidates)), []).append(entity.entity_id)
    ties: dict[str, str] = {}
    for identity, entity_ids in proposals.items():
        if len(entity_ids) == 1:
            ties[identity] = entity_ids[0]
        else:
            ambiguous.append(f"{' and '.join(sorted(entity_ids))} both match the discovery config {identity}")
    return ties, ambiguous
