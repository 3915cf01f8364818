"""Recognised intents as tool calls: what the chat agent would have called (see `assistant.agent.tools`).

Each intent maps to one call per entity, carried out as Home Assistant does for that
domain; an intent that does not apply to an entity, or a value out of range, gives None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assistant.home.commands import ACTIONS
from assistant.home.entities import Entity

if TYPE_CHECKING:
    from hassil import RecognizeResult
    from hassil.models import MatchEntity

Call = tuple[str, dict[str, Any]]
Step = tuple[Call, str]  # a tool call, and what it does for the spoken confirmation ("turn_on", "open", ...)

_COLORS: dict[str, list[int]] = {  # home-assistant-intents' color list, as Home Assistant maps it to RGB
    "white": [255, 255, 255],
    "red": [255, 0, 0],
    "orange": [255, 165, 0],
    "yellow": [255, 255, 0],
    "green": [0, 128, 0],
    "blue": [0, 0, 255],
    "purple": [128, 0, 128],
    "brown": [165, 42, 42],
    "pink": [255, 192, 203],
    "turquoise": [64, 224, 208],
}

# Domains an intent acts on when the utterance names no entity ("set the temperature to 21").
INTENT_DOMAINS: dict[str, set[str]] = {
    "HassLightSet": {"light"},
    "HassSetPosition": ACTIONS["set_position"],
    "HassClimateSetTemperature": ACTIONS["set_temperature"],
    "HassFanSetSpeed": ACTIONS["set_percentage"],
}


def _number(entity: MatchEntity | None) -> int | float | None:
    if entity is None:
        return None
    try:
        number = float(entity.value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else number


def _on_off(intent: str, entity: Entity) -> Step | None:
    """HassTurnOn/HassTurnOff as Home Assistant carries them out for each domain."""
    on = intent == "HassTurnOn"
    target = {"entity_id": entity.entity_id}
    domain = entity.domain
    if domain in ACTIONS["open"]:  # cover, valve: open / close
        action = "open" if on else "close"
        return ("set_cover", {**target, "action": action}), action
    if domain in ACTIONS["lock"]:  # on locks, off unlocks (Home Assistant's lock.lock / lock.unlock)
        action = "lock" if on else "unlock"
        return ("lock", {**target, "action": action}), action
    if domain in ACTIONS["press"]:
        return (("press_button", target), "press") if on else None
    if domain in ACTIONS["set_hvac_mode"]:  # climate: off is a mode; "on" has no mode to go back to
        return None if on else (("set_climate", {**target, "hvac_mode": "off"}), "turn_off")
    if on and domain in ACTIONS["turn_on"]:
        return ("turn_on", target), {"scene": "activate", "script": "start"}.get(domain, "turn_on")
    if not on and domain in ACTIONS["turn_off"]:
        return ("turn_off", target), "turn_off"
    return None


def _light_set(entity: Entity, slots: dict[str, MatchEntity]) -> Step | None:
    if entity.domain != "light":
        return None
    target = {"entity_id": entity.entity_id}
    brightness = _number(slots.get("brightness"))
    if brightness is not None:
        return ("turn_on", {**target, "brightness_pct": brightness}), "brightness"
    color = slots.get("color")
    if color is not None:
        rgb = _COLORS.get(str(color.value).casefold())
        return (("turn_on", {**target, "rgb_color": list(rgb)}), "color") if rgb else None
    kelvin = _number(slots.get("temperature"))
    if kelvin is not None and 1000 <= kelvin <= 12000:
        return ("turn_on", {**target, "color_temp_kelvin": kelvin}), "color_temp"
    return None


def step(intent: str, entity: Entity, slots: dict[str, MatchEntity]) -> Step | None:
    """The tool call for one entity, or None if the intent does not apply to it."""
    target = {"entity_id": entity.entity_id}
    if intent in ("HassTurnOn", "HassTurnOff"):
        return _on_off(intent, entity)
    if intent == "HassLightSet":
        return _light_set(entity, slots)
    if intent == "HassSetPosition" and entity.domain in ACTIONS["set_position"]:
        position = _number(slots.get("position"))
        if position is not None and 0 <= position <= 100:
            return ("set_cover", {**target, "action": "set_position", "position": position}), "position"
    if intent == "HassClimateSetTemperature" and entity.domain in ACTIONS["set_temperature"]:
        temperature = _number(slots.get("temperature"))
        if temperature is not None and 5 <= temperature <= 35:  # set_climate's range (Celsius)
            return ("set_climate", {**target, "temperature": temperature}), "temperature"
    if intent == "HassFanSetSpeed" and entity.domain in ACTIONS["set_percentage"]:
        percentage = _number(slots.get("percentage"))
        if percentage is not None and 0 <= percentage <= 100:
            return ("set_fan_speed", {**target, "percentage": percentage}), "fan_speed"
    return None


@dataclass
class Plan:
    """One recognition result resolved against the registry."""

    result: RecognizeResult
    targets: list[Entity]
    calls: list[Call]
    action: str
    label: str | None  # the name or alias the user said, as configured
    area: str | None  # the area as configured, when the command named one or meant "here"
    rank: tuple[int, int, int]
    floor: str | None = None  # the floor as configured, when the command named one

    @property
    def intent(self) -> str:
        """The recognised intent's name ("HassTurnOn", ...)."""
        return self.result.intent.name

    @property
    def signature(self) -> str:
        """The intent and its calls as one string: equal plans do the same thing."""
        return json.dumps([self.intent, self.calls], sort_keys=True)

    def value(self, slot: str) -> MatchEntity | None:
        """What the utterance filled `slot` with, if anything."""
        return self.result.entities.get(slot)
