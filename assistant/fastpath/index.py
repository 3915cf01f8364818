"""The slot lists hassil fills from the registry: exposed entities' names, aliases, areas and floors.

Floors are the ones exposed entities are on (`Entity.floor`, the floor of the entity's area
as Home Assistant's floor registry names it). The index is rebuilt only when
`Registry.version` changes (see `FastPath`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assistant.home.entities import Entity
from assistant.home.registry import Registry

if TYPE_CHECKING:
    from hassil import SlotList, TextSlotValue


def area_key(area: str | None) -> str | None:
    """An area (or floor) as compared: case-folded, spaces collapsed; None for none."""
    return " ".join(area.casefold().split()) if area else None


floor_key = area_key


def device_class(entity: Entity) -> str | None:
    """The entity's device class, configured or reported, if it has one."""
    value = entity.key("device_class") or entity.attributes.get("device_class")
    return str(value) if value else None


@dataclass
class Index:
    """What recognition needs from one version of the registry."""

    version: int
    slot_lists: dict[str, SlotList]
    exposed: dict[str, Entity]
    areas: dict[str, str]  # area key -> the area as configured
    floors: dict[str, str]  # floor key -> the floor as configured
    area_floors: dict[str, set[str]]  # area key -> the floor keys its exposed entities are on

    def names_a_floor(self, text: str) -> bool:
        """Whether `text` may name one of the floors: the only case where floor templates can match.

        A loose test (the floor's cleaned name anywhere in the cleaned text), so it never
        hides a floor reading that hassil would find.
        """
        if not self.floors:
            return False
        said = _clean(text).casefold()
        return any(_clean(label).casefold() in said for label in self.floors.values())

    def area_is_ambiguous(self, area: str) -> bool:
        """Whether one area name stands for rooms on several floors ("Bathroom" up and down)."""
        return len(self.area_floors.get(area, ())) > 1

    def area_or_floor(self, key: str) -> bool:
        """Whether a name said is both an area and a floor that hold different entities.

        "the basement" is then the Basement room or the whole Basement floor; Home Assistant's
        sentences offer one reading or both depending on the wording, so neither is trusted.
        """
        if key not in self.areas or key not in self.floors:
            return False
        return any(floor_key(e.floor) == key and area_key(e.area) != key for e in self.exposed.values()) or any(
            area_key(e.area) == key and floor_key(e.floor) != key for e in self.exposed.values()
        )


def _clean(text: str) -> str:
    """A name or area as hassil sees the utterance: normalised, punctuation stripped."""
    from hassil.util import normalize_text, remove_punctuation

    return " ".join(remove_punctuation(normalize_text(text)).split())


def build_index(registry: Registry, device_area: str | None) -> Index:
    """The slot lists and lookups for the registry as it is now; `device_area` is the device's room."""
    from hassil import TextSlotList
    from hassil import TextSlotValue as Value
    from hassil.expression import TextChunk

    exposed = {entity.entity_id: entity for entity in registry.exposed()}
    names: list[TextSlotValue] = []
    areas: dict[str, str] = {}
    floors: dict[str, str] = {}
    area_floors: dict[str, set[str]] = {}
    for entity in exposed.values():
        seen: set[str] = set()
        context: dict[str, Any] = {"domain": entity.domain}
        entity_class = device_class(entity)
        if entity_class:
            context["device_class"] = entity_class
        for label in (entity.name, *entity.aliases):
            text = _clean(label)
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                names.append(Value(TextChunk(text), entity.entity_id, context, {"label": label.strip()}))
        key = area_key(entity.area)
        if key and entity.area:
            areas.setdefault(key, entity.area.strip())
        floor = floor_key(entity.floor)
        if floor and entity.floor:
            floors.setdefault(floor, entity.floor.strip())
            if key:
                area_floors.setdefault(key, set()).add(floor)
    key = area_key(device_area)
    if key and device_area:
        areas.setdefault(key, device_area.strip())
    slot_lists: dict[str, SlotList] = {
        "name": TextSlotList(name="name", values=names),
        "area": TextSlotList(name="area", values=_values(areas)),
        "floor": TextSlotList(name="floor", values=_values(floors)),
    }
    return Index(registry.version, slot_lists, exposed, areas, floors, area_floors)


def _values(labels: dict[str, str]) -> list[TextSlotValue]:
    """Slot values for areas or floors: said as configured, valued by their key."""
    from hassil import TextSlotValue as Value
    from hassil.expression import TextChunk

    return [
        Value(TextChunk(_clean(label)), key, None, {"label": label}) for key, label in labels.items() if _clean(label)
    ]
