"""The local fast path: common home commands recognised offline, without the chat model.

hassil matches an utterance against Home Assistant's own sentence templates for the
device's language (the home-assistant-intents package), with the ``{name}`` and
``{area}`` slots filled from the registry's exposed entities, their aliases and areas.
A recognised intent becomes the tool calls the chat agent would have made (see
`assistant.tools`), plus a short spoken confirmation. Anything that is not clearly one
supported command on exposed entities gives None, and the daemon asks the chat agent.

Only the intents listed in SUPPORTED_INTENTS are loaded (recognising over all of a
language's intents is several times slower), their templates are parsed once per
language, and the slot lists are rebuilt only when `Registry.version` changes.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from assistant.commands import ACTIONS
from assistant.homeassistant import Entity, Registry

if TYPE_CHECKING:
    from hassil import Intents, RecognizeResult, SlotList
    from hassil.models import MatchEntity

log = logging.getLogger(__name__)

SUPPORTED_INTENTS = (
    "HassTurnOn",
    "HassTurnOff",
    "HassLightSet",
    "HassSetPosition",
    "HassClimateSetTemperature",
    "HassFanSetSpeed",
)
MAX_TEXT_CHARS = 200  # longer than any command; not worth matching
MAX_RESULTS = 64  # recognition results looked at per utterance
UNKNOWN_AREA = "\x00unknown-area"  # the "here" of "turn off the lights" when the device has no area
ARTICLE_RULES = ("the", "artikel_bestimmt")  # expansion rules whose words alone do not make a command

Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class FastMatch:
    """A recognised command: the tool calls to run in order and what to say."""

    intent: str
    calls: list[Call]
    speech: str


# --------------------------------------------------------------------------- language data


@dataclass
class _Language:
    """One language's parsed templates, responses and filler words, shared by every FastPath."""

    code: str
    intents: Intents
    responses: dict[str, dict[str, str]]
    filler: frozenset[str]
    templates: dict[tuple[str, str], jinja2.Template | None] = field(default_factory=dict)


def resolve_language(language: str) -> str | None:
    """The home-assistant-intents language for a tag: "de-CH" as is, "en-GB" and "en_US" as "en"."""
    from home_assistant_intents import get_languages

    available = {code.casefold(): code for code in get_languages()}
    wanted = language.strip().replace("_", "-").casefold()
    for candidate in (wanted, wanted.split("-", 1)[0]):
        if candidate in available:
            return available[candidate]
    return None


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _is_floor_block(block: dict[str, Any]) -> bool:
    combination = str((block.get("metadata") or {}).get("slot_combination", ""))
    return "floor" in combination


@functools.lru_cache(maxsize=4)
def _load_language(code: str) -> _Language | None:
    """Parse the supported intents of one language ("en": about 60 ms and 3.5 MB, "de": 230 ms, 5.5 MB)."""
    from hassil import Intents
    from home_assistant_intents import get_intents

    data = get_intents(code)
    if data is None:
        return None
    intents: dict[str, Any] = {}
    for name in SUPPORTED_INTENTS:
        # The daemon knows no floors; their templates could never match.
        blocks = [block for block in data["intents"].get(name, {}).get("data", []) if not _is_floor_block(block)]
        if blocks:
            intents[name] = {"data": blocks}
    keep = ("language", "settings", "skip_words", "lists", "expansion_rules")
    parsed = Intents.from_dict({**{key: data[key] for key in keep if key in data}, "intents": intents})
    # Parse every template and its literal-text prefilter now, not on the first utterance.
    list_names: set[str] = set()
    for intent in parsed.intents.values():
        for block in intent.data:
            rules = {**parsed.expansion_rules, **block.expansion_rules}
            for sentence in block.sentences:
                if hasattr(sentence, "get_required_clauses"):  # recent hassil; cached on the sentence
                    sentence.get_required_clauses(rules)
                list_names.update(sentence.list_names(rules))
    _warm_number_words(parsed, list_names)
    filler = {word for phrase in parsed.skip_words for word in _words(phrase)}
    for rule in ARTICLE_RULES:
        filler.update(_words(str(data.get("expansion_rules", {}).get(rule, ""))))
    all_responses = data.get("responses", {}).get("intents", {})
    responses = {name: dict(all_responses.get(name, {})) for name in SUPPORTED_INTENTS}
    return _Language(code, parsed, responses, frozenset(filler))


def _warm_number_words(intents: Intents, list_names: Iterable[str]) -> None:
    """Have hassil build its number-word tables ("forty", "einundzwanzig") now.

    hassil builds one per numeric range the first time a number is spoken as words,
    which costs 20-80 ms on that utterance; matching a non-number builds it here.
    """
    from hassil import RangeSlotList, is_match, parse_sentence

    probe = parse_sentence("{number}")
    for name in sorted(set(list_names)):
        slot_list = intents.slot_lists.get(name)
        if isinstance(slot_list, RangeSlotList) and slot_list.words:
            try:
                is_match("x", probe, slot_lists={"number": slot_list}, language=intents.language)
            except ValueError:  # no number words for this language
                return


# --------------------------------------------------------------------------- registry index


def _area_key(area: str | None) -> str | None:
    return " ".join(area.casefold().split()) if area else None


def _device_class(entity: Entity) -> str | None:
    value = entity.key("device_class") or entity.attributes.get("device_class")
    return str(value) if value else None


@dataclass
class _Index:
    """What recognition needs from one version of the registry."""

    version: int
    slot_lists: dict[str, SlotList]
    exposed: dict[str, Entity]
    areas: dict[str, str]  # area key -> the area as configured


def _clean(text: str) -> str:
    """A name or area as hassil sees the utterance: normalised, punctuation stripped."""
    from hassil.util import normalize_text, remove_punctuation

    return " ".join(remove_punctuation(normalize_text(text)).split())


def _build_index(registry: Registry, device_area: str | None) -> _Index:
    from hassil import TextSlotList, TextSlotValue
    from hassil.expression import TextChunk

    exposed = {entity.entity_id: entity for entity in registry.exposed()}
    names: list[TextSlotValue] = []
    areas: dict[str, str] = {}
    for entity in exposed.values():
        seen: set[str] = set()
        context: dict[str, Any] = {"domain": entity.domain}
        device_class = _device_class(entity)
        if device_class:
            context["device_class"] = device_class
        for label in (entity.name, *entity.aliases):
            text = _clean(label)
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                names.append(TextSlotValue(TextChunk(text), entity.entity_id, context, {"label": label.strip()}))
        key = _area_key(entity.area)
        if key and entity.area:
            areas.setdefault(key, entity.area.strip())
    key = _area_key(device_area)
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
    return _Index(registry.version, slot_lists, exposed, areas)


# --------------------------------------------------------------------------- intents -> tool calls

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
_INTENT_DOMAINS: dict[str, set[str]] = {
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


def _step(intent: str, entity: Entity, slots: dict[str, MatchEntity]) -> Step | None:
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
class _Plan:
    """One recognition result resolved against the registry."""

    result: RecognizeResult
    targets: list[Entity]
    calls: list[Call]
    action: str
    label: str | None  # the name or alias the user said, as configured
    area: str | None  # the area as configured, when the command named one or meant "here"
    rank: tuple[int, int]

    @property
    def intent(self) -> str:
        return self.result.intent.name

    @property
    def signature(self) -> str:
        return json.dumps([self.intent, self.calls], sort_keys=True)

    def value(self, slot: str) -> MatchEntity | None:
        return self.result.entities.get(slot)


# --------------------------------------------------------------------------- spoken confirmations


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
    case: Callable[[str], str]  # a configured name or area as said mid-sentence
    decimal: str = "."
    fallback_noun: str = "devices"

    def render(self, plan: _Plan) -> str:
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

    def _target(self, plan: _Plan) -> str:
        if len(plan.targets) == 1:
            entity = plan.targets[0]
            return self.one(self.case(plan.label or entity.name), entity.domain in ("scene", "script"))
        device_class = plan.value("device_class")
        noun_key = str(device_class.value) if device_class is not None else plan.targets[0].domain
        text = self.several.format(n=len(plan.targets), noun=self.plurals.get(noun_key, self.fallback_noun))
        if plan.area:
            text += self.in_area.format(area=self.case(plan.area))
        return text


def _en_case(label: str) -> str:
    """ "Living Room" -> "living room" mid-sentence; "TV" and "iPad" stay as they are."""
    return " ".join(word.lower() if word.istitle() else word for word in label.split())


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


_templates = ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)
_templates.filters["float"] = lambda value, default=0.0: _to_number(value, default, float)
_templates.filters["int"] = lambda value, default=0: _to_number(value, default, int)


def _to_number(value: Any, default: Any, kind: Callable[[float], Any]) -> Any:
    try:
        return kind(float(value))
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------- the fast path


class FastPath:
    """Recognise common commands locally; `match` gives tool calls or None (ask the agent)."""

    def __init__(self, registry: Registry, language: str = "en", *, area: str | None = None) -> None:
        """`area` is the device's own room: the "here" of "turn off the lights"."""
        self.registry = registry
        self.area = area.strip() if area and area.strip() else None
        self.language: str | None = None  # as home-assistant-intents names it, if it has the language
        self._lang: _Language | None = None
        try:
            self.language = resolve_language(language)
            self._lang = _load_language(self.language) if self.language else None
        except Exception:  # the fast path is optional: never stop the daemon over it
            log.exception("cannot load the local command sentences for %r", language)
        if self._lang is None:
            log.warning("no local command sentences for language %r: the fast path is off", language)
        self._index: _Index | None = None

    @property
    def enabled(self) -> bool:
        """Whether a language was loaded (otherwise `match` always gives None)."""
        return self._lang is not None

    def match(self, text: str) -> FastMatch | None:
        """The command in `text`, if it is confidently one supported command on exposed entities."""
        lang = self._lang
        text = text.strip()
        if lang is None or not text or len(text) > MAX_TEXT_CHARS:
            return None
        index = self._current_index()
        if not index.exposed:
            return None
        from hassil import recognize_all

        here = _area_key(self.area) or UNKNOWN_AREA
        context = {"area": {"value": here, "text": self.area or ""}}
        best: list[_Plan] = []
        try:
            results = recognize_all(text, lang.intents, slot_lists=index.slot_lists, intent_context=context)
            for count, result in enumerate(results):
                if count >= MAX_RESULTS:
                    break
                plan = self._plan(text, result, index, lang)
                if plan is None:
                    continue
                if not best or plan.rank > best[0].rank:
                    best = [plan]
                elif plan.rank == best[0].rank:
                    best.append(plan)
        except Exception:  # a bug here must only cost the shortcut, not the answer
            log.exception("fast path failed on %r", text)
            return None
        if not best:
            return None
        if len({plan.signature for plan in best}) > 1:
            log.debug("fast path: %r is ambiguous: %s", text, [plan.calls for plan in best])
            return None
        plan = best[0]
        if not all(self.registry.is_exposed(args["entity_id"]) for _tool, args in plan.calls):
            return None  # cannot happen: the slot lists hold exposed entities only
        match = FastMatch(plan.intent, plan.calls, self._speech(plan, lang))
        log.debug("fast path: %r -> %s %s", text, match.intent, match.calls)
        return match

    def _current_index(self) -> _Index:
        if self._index is None or self._index.version != self.registry.version:
            self._index = _build_index(self.registry, self.area)
        return self._index

    def _plan(self, text: str, result: RecognizeResult, index: _Index, lang: _Language) -> _Plan | None:
        """Resolve one recognition result to tool calls, or None if it does not fit the home."""
        if not _says_more_than_names(text, result, lang.filler):
            return None  # a bare "kitchen light" is a mention, not a command
        intent = result.intent.name
        slots = result.entities
        name = slots.get("name")
        area_slot = slots.get("area")
        area_key: str | None = None
        if area_slot is not None and area_slot.value != UNKNOWN_AREA:
            area_key = str(area_slot.value)
        if name is not None:
            entity = index.exposed.get(str(name.value))
            if entity is None or (area_key is not None and _area_key(entity.area) != area_key):
                return None
            candidates = [entity]
            label = str((name.metadata or {}).get("label") or entity.name)
        else:
            domain = slots.get("domain")
            domains = {str(domain.value)} if domain is not None else _INTENT_DOMAINS.get(intent, set())
            candidates = [e for e in index.exposed.values() if e.domain in domains]
            device_class = slots.get("device_class")
            if device_class is not None:
                candidates = [e for e in candidates if _device_class(e) == device_class.value]
            if area_key is not None:
                candidates = [e for e in candidates if _area_key(e.area) == area_key]
            elif area_slot is not None and len(candidates) != 1:
                return None  # "here" with no known area: only when the home has just one such device
            label = None
        steps = [(entity, step) for entity in candidates if (step := _step(intent, entity, slots)) is not None]
        if not steps or (name is not None and len(steps) != len(candidates)):
            return None
        area = index.areas.get(area_key) if area_key else None
        spoken_name = len(name.text) if name is not None else 0
        return _Plan(
            result=result,
            targets=[entity for entity, _step in steps],
            calls=[call for _entity, (call, _action) in steps],
            action=steps[0][1][1],
            label=label,
            area=area,
            rank=(int(name is not None), spoken_name),  # entity names beat areas; longer names win
        )

    def _speech(self, plan: _Plan, lang: _Language) -> str:
        phrases = _PHRASES.get(lang.code.split("-", 1)[0])
        if phrases is not None:
            return phrases.render(plan)
        return self._response(plan, lang) or _PHRASES["en"].render(plan)

    def _response(self, plan: _Plan, lang: _Language) -> str:
        """Home Assistant's own response for the intent, for languages without phrases here."""
        key = (plan.intent, plan.result.response or "default")
        if key not in lang.templates:
            source = lang.responses.get(plan.intent, {}).get(key[1])
            try:
                lang.templates[key] = _templates.from_string(source) if source else None
            except jinja2.TemplateError:
                lang.templates[key] = None
        template = lang.templates[key]
        if template is None:
            return ""
        states = [
            _StateView(e.entity_id, e.domain, e.name, e.state or "unknown", dict(e.attributes)) for e in plan.targets
        ]
        slots = {name: entity.text or entity.value for name, entity in plan.result.entities.items()}
        if plan.label:
            slots["name"] = plan.label
        slots.pop("area", None)  # may be the unknown-area marker
        if plan.area:
            slots["area"] = plan.area
        try:
            text = template.render(slots=slots, state=states[0], query={"matched": states, "unmatched": []})
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError):
            return ""
        return " ".join(text.split())


def _says_more_than_names(text: str, result: RecognizeResult, filler: Iterable[str]) -> bool:
    """Whether the utterance has a word besides the entity/area names, articles and politeness."""
    for slot in ("name", "area"):
        entity = result.entities.get(slot)
        if entity is None or not entity.text:
            continue
        span = getattr(entity, "text_span", None)  # hassil >= 3.12: where in `text` it was said
        if span is not None:
            start, end = span
            text = text[:start] + " " * (end - start) + text[end:]
        else:
            text = re.sub(re.escape(entity.text.strip()), " ", text, count=1, flags=re.IGNORECASE)
    return bool(set(_words(text)) - set(filler))
