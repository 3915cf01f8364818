"""The slot lists hassil fills from the registry: exposed entities' names, aliases and areas.

The index is rebuilt only when `Registry.version` changes (see `FastPath`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assistant.home.entities import Entity
from assistant.home.registry import Registry

if TYPE_CHECKING:
    from hassil import SlotList


def area_key(area: str | None) -> str | None:
    """An area as compared: case-folded, spaces collapsed; None for no area."""
    return " ".join(area.casefold().split()) if area else None


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


def _clean(text: str) -> str:
    """A name or area as hassil sees the utterance: normalised, punctuation stripped."""
    from hassil.util import normalize_text, remove_punctuation

    return " ".join(remove_punctuation(normalize_text(text)).split())


def build_index(registry: Registry, device_area: str | None) -> Index:
    """The slot lists and lookups for the registry as it is now; `device_area` is the device's room."""
    from hassil import TextSlotList, TextSlotValue
    from hassil.expression import TextChunk

    exposed = {entity.entity_id: entity for entity in registry.exposed()}
    names: list[TextSlotValue] = []
    areas: dict[str, str] = {}
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
                names.append(TextSlotValue(TextChunk(text), entity.entity_id, context, {"label": label.strip()}))
        key = area_key(entity.area)
        if key and entity.area:
            areas.setdefault(key, entity.area.strip())
    key = area_key(device_area)
    if key and device_area:
        areas.setdefault(key, device_area.strip())
    area_values = [
        TextSlotValue(TextChunk(_clean(label)), key, None, {"label": label})
        for key, label in areas.items()
        if _clean(label)
    ]
    slot_lists: dict[str, SlotList] = {
        "name": TextSlotList(name="name", values=names),
        "area": TextSlotList(name="area", values=area_values),
        "floor": TextSlotList(name="floor", values=[]),  # templates left over must not raise MissingListError
    }
    return Index(registry.version, slot_lists, exposed, areas)
