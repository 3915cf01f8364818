"""The fast path's spoken confirmations: short phrases per language, or Home Assistant's own.

English and German have phrase tables here ("Turned on the kitchen light.", "3 lights in the
living room"); other languages render the intent's response template from
home-assistant-intents in a sandbox, falling back to English when that fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2

from assistant.fastpath.language import Language
from assistant.fastpath.mapping import Plan
from assistant.home.templating import environment


def _format_number(value: Any, decimal: str = ".") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    text = str(int(number)) if number.is_integer() else f"{number:g}"
    return text.replace(".", decimal)


@dataclass(frozen=True)
class _Phrases:
    """Confirmations in one language: "{t}" is the target, "{v}" the value set."""

    actions: dict[str, str]
    plurals: dict[str, str]  # domain or cover device class -> plural noun
    one: Callable[[str, bool], str]  # (label, is a scene/script) -> the target as spoken
    several: str  # "{n} {noun}"
    in_area: str  # " in the {area}"
    on_floor: Callable[[str], str]  # a floor as said mid-sentence: " upstairs", " on the first floor"
    case: Callable[[str], str]  # a configured name or area as said mid-sentence
    decimal: str = "."
    fallback_noun: str = "devices"

    def render(self, plan: Plan) -> str:
        """The confirmation for `plan`, starting with a capital."""
        target = self._target(plan)
        slot = {
            "brightness": "brightness",
            "color": "color",
            "color_temp": "temperature",
            "position": "position",
            "temperature": "temperature",
            "fan_speed": "percentage",
        }.get(plan.action)
        value = ""
        if slot:
            entity = plan.value(slot)
            if entity is not None:
                value = entity.text.strip() if plan.action == "color" else _format_number(entity.value, self.decimal)
        text = self.actions[plan.action].format(t=target, v=value)
        return text[:1].upper() + text[1:]

    def _target(self, plan: Plan) -> str:
        if len(plan.targets) == 1:
            entity = plan.targets[0]
            return self.one(self.case(plan.label or entity.name), entity.domain in ("scene", "script"))
        device_class = plan.value("device_class")
        noun_key = str(device_class.value) if device_class is not None else plan.targets[0].domain
        text = self.several.format(n=len(plan.targets), noun=self.plurals.get(noun_key, self.fallback_noun))
        if plan.area:
            text += self.in_area.format(area=self.case(plan.area))
        elif plan.floor:
            text += self.on_floor(self.case(plan.floor))
        return text


def _en_case(label: str) -> str:
    """ "Living Room" -> "living room" mid-sentence; "TV" and "iPad" stay as they are."""
    return " ".join(word.lower() if word.istitle() else word for word in label.split())


def _en_floor(floor: str) -> str:
    """ "upstairs", "on the first floor", "in the basement": English floors take different words."""
    last = floor.rsplit(maxsplit=1)[-1].casefold() if floor.strip() else ""
    if last in ("upstairs", "downstairs"):
        return f" {floor}"
    if last in ("floor", "level", "storey", "story", "deck", "mezzanine"):
        return f" on the {floor}"
    return f" in the {floor}"


def _de_floor(floor: str) -> str:
    """ "im Obergeschoss", "im Keller"; other floor names after "im Stockwerk"."""
    if " " not in floor.strip() and floor.casefold().endswith(("geschoss", "keller")):
        return f" im {floor}"
    return f" im Stockwerk {floor}"


_PHRASES: dict[str, _Phrases] = {
    "en": _Phrases(
        actions={
            "turn_on": "Turned on {t}.",
            "turn_off": "Turned off {t}.",
            "open": "Opening {t}.",
            "close": "Closing {t}.",
            "lock": "Locking {t}.",
            "unlock": "Unlocking {t}.",
            "press": "Pressed {t}.",
            "activate": "Activated {t}.",
            "start": "Started {t}.",
            "brightness": "Set {t} to {v}% brightness.",
            "color": "Set {t} to {v}.",
            "color_temp": "Set {t} to {v} kelvin.",
            "position": "Set {t} to {v}%.",
            "temperature": "Set {t} to {v} degrees.",
            "fan_speed": "Set {t} to {v}%.",
        },
        plurals={
            "light": "lights",
            "switch": "switches",
            "fan": "fans",
            "cover": "covers",
            "valve": "valves",
            "climate": "thermostats",
            "water_heater": "water heaters",
            "lock": "locks",
            "media_player": "media players",
            "awning": "awnings",
            "blind": "blinds",
            "curtain": "curtains",
            "door": "doors",
            "garage": "garage doors",
            "gate": "gates",
            "shade": "shades",
            "shutter": "shutters",
            "window": "windows",
        },
        one=lambda label, bare: label if bare else f"the {label}",
        several="{n} {noun}",
        in_area=" in the {area}",
        on_floor=_en_floor,
        case=_en_case,
    ),
    "de": _Phrases(
        actions={
            "turn_on": "{t} eingeschaltet.",
            "turn_off": "{t} ausgeschaltet.",
            "open": "{t} geöffnet.",
            "close": "{t} geschlossen.",
            "lock": "{t} abgeschlossen.",
            "unlock": "{t} aufgeschlossen.",
            "press": "{t} gedrückt.",
            "activate": "{t} aktiviert.",
            "start": "{t} gestartet.",
            "brightness": "{t} auf {v} % Helligkeit gestellt.",
            "color": "{t} auf {v} gestellt.",
            "color_temp": "{t} auf {v} Kelvin gestellt.",
            "position": "{t} auf {v} % gestellt.",
            "temperature": "{t} auf {v} Grad gestellt.",
            "fan_speed": "{t} auf {v} % gestellt.",
        },
        plurals={
            "light": "Lichter",
            "switch": "Schalter",
            "fan": "Ventilatoren",
            "cover": "Abdeckungen",
            "valve": "Ventile",
            "climate": "Thermostate",
            "water_heater": "Warmwasserbereiter",
            "lock": "Schlösser",
            "media_player": "Mediaplayer",
            "awning": "Markisen",
            "blind": "Jalousien",
            "curtain": "Vorhänge",
            "door": "Türen",
            "garage": "Garagentore",
            "gate": "Tore",
            "shade": "Rollos",
            "shutter": "Rollläden",
            "window": "Fenster",
        },
        one=lambda label, bare: label,
        several="{n} {noun}",
        in_area=" im Bereich {area}",
        on_floor=_de_floor,
        case=str,
        decimal=",",
        fallback_noun="Geräte",
    ),
}


@dataclass(frozen=True)
class _StateView:
    """The little of a Home Assistant state object that response templates read."""

    entity_id: str
    domain: str
    name: str
    state: str
    attributes: dict[str, Any]


def speech(plan: Plan, lang: Language) -> str:
    """The confirmation to speak for a recognised command."""
    phrases = _PHRASES.get(lang.code.split("-", 1)[0])
    if phrases is not None:
        return phrases.render(plan)
    return _response(plan, lang) or _PHRASES["en"].render(plan)


def _response(plan: Plan, lang: Language) -> str:
    """Home Assistant's own response for the intent, for languages without phrases here."""
    key = (plan.intent, plan.result.response or "default")
    if key not in lang.templates:
        source = lang.responses.get(plan.intent, {}).get(key[1])
        try:
            lang.templates[key] = environment().from_string(source) if source else None
        except jinja2.TemplateError:
            lang.templates[key] = None
    template = lang.templates[key]
    if template is None:
        return ""
    states = [_StateView(e.entity_id, e.domain, e.name, e.state or "unknown", dict(e.attributes)) for e in plan.targets]
    slots = {name: entity.text or entity.value for name, entity in plan.result.entities.items()}
    if plan.label:
        slots["name"] = plan.label
    slots.pop("area", None)  # may be the unknown-area marker
    if plan.area:
        slots["area"] = plan.area
    if plan.floor:
        slots["floor"] = plan.floor
    try:
        text = template.render(slots=slots, state=states[0], query={"matched": states, "unmatched": []})
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError):
        return ""
    return " ".join(text.split())
