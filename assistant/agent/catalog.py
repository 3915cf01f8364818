"""The house as the model sees it: a compact entity table within a token budget, and a
name search for houses too large to list.

Like Home Assistant's own LLM helper, the prompt holds a static overview (which
entities exist, their names and areas: it changes only when entities do, so the
providers' prompt cache keeps it) and leaves live states to tools (`get_state`, and
`find_entities` for an area or a domain), so an added light costs its id and area
words, not its state and attributes on every request. Diagnostic and configuration
entities (Home Assistant's `entity_category`: signal strength, firmware, power-on
behaviour...) are not listed, as Home Assistant does not expose them by default; they
stay readable through the tools. When the table would exceed the budget, whole
domains are left out (read-only ones such as sensors first), the prompt says what is
missing, and `find_entities` resolves "the X" among thousands of entities.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from assistant.home.budget import CHARS_PER_TOKEN, MAX_SUMMARY_CHARS, bounded_attributes, cap_text, estimate_tokens
from assistant.home.entities import Entity

MAX_ENTITY_ID = 255  # Home Assistant's own limit; longer ids are not real entities
STATE_CHARS = 40  # a state as listed with the whole house (get_state gives more)
MINOR_CATEGORIES = {"diagnostic", "config"}  # Home Assistant's entity categories it does not expose by default
# Attributes that answer questions about a state (Home Assistant's GetLiveContext keeps
# about these); the others (supported_features, effect_list, min_mireds...) describe the
# device, not its state, and only cost tokens.
LIVE_ATTRIBUTES = (
    "unit_of_measurement",
    "device_class",
    "brightness",
    "color_temp_kelvin",
    "rgb_color",
    "effect",
    "current_position",
    "current_tilt_position",
    "percentage",
    "preset_mode",
    "oscillating",
    "direction",
    "temperature",
    "target_temp_low",
    "target_temp_high",
    "current_temperature",
    "temperature_unit",
    "hvac_action",
    "hvac_modes",
    "min_temp",
    "max_temp",
    "fan_mode",
    "humidity",
    "current_humidity",
    "battery_level",
    "volume_level",
    "is_volume_muted",
    "media_title",
    "media_artist",
    "media_album_name",
    "source",
)
FIND_LIMIT = 8  # matches for a name query
LIST_LIMIT = 25  # entities listed for an area / domain query without a name

HEADER = 'Entities by area (entity_id, then "name" if it differs from the id, then aliases):'
_WORD = re.compile(r"[^\W_]+")
_STOP_WORDS = {"the", "a", "an", "in", "at", "on", "of", "my", "our", "all", "please", "to", "and", "for", "with"}
# words people use for a domain, so "the study lamp" finds light.study_desk
_DOMAIN_WORDS = {
    "light": {"light", "lamp"},
    "cover": {"cover", "blind", "shade", "shutter", "curtain"},
    "climate": {"climate", "thermostat", "heating"},
    "media_player": {"tv", "speaker", "player"},
    "binary_sensor": {"sensor"},
}


def words(text: str) -> list[str]:
    """Lower-case words of `text`, plurals folded ("lights" -> "light")."""
    return [_stem(w) for w in _WORD.findall(text.lower())]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _one_line(text: str, limit: int) -> str:
    return cap_text(" ".join(text.split()), limit)


def _item(entity: Entity) -> str:
    """`light.kitchen_ceiling "Ceiling lamp" ~"big light"`: the name only if the id does not say it."""
    text = entity.entity_id
    name = _one_line(entity.name, 80)
    if words(name) != words(entity.entity_id.split(".", 1)[1]):
        text += " " + json.dumps(name, ensure_ascii=False)
    for alias in entity.aliases[:5]:
        text += " ~" + json.dumps(_one_line(alias, 60), ensure_ascii=False)
    return text


def _area(entity: Entity) -> str:
    return _one_line(entity.area, 60) if entity.area else "No area"


def _state(entity: Entity) -> str:
    state = _one_line(entity.state or "unknown", STATE_CHARS)
    unit = entity.attributes.get("unit_of_measurement")
    return f"{state} {_one_line(str(unit), 10)}" if unit else state


def _table(entities: list[Entity], items: dict[str, str]) -> str:
    areas = {e.entity_id: _area(e) for e in entities}
    by_area: dict[str, list[str]] = {}
    for entity in sorted(entities, key=lambda e: (areas[e.entity_id] == "No area", areas[e.entity_id].lower())):
        by_area.setdefault(areas[entity.entity_id], []).append(items[entity.entity_id])
    return "\n".join(f"{area}: {'; '.join(sorted(found))}" for area, found in by_area.items())


@dataclass(frozen=True)
class Listing:
    """The house for the static part of the prompt."""

    text: str
    complete: bool  # every exposed entity is in it (else find_entities finds the rest)


def listing(entities: list[Entity], budget_tokens: int, controllable: set[str]) -> Listing:
    """The entity table within `budget_tokens` (estimated), or as much of it as fits.

    Whole domains are kept or left out: controllable domains before read-only ones,
    small domains before large ones, so the model never sees half of a domain and
    takes it for all of it. Depends on ids, names, areas and aliases only, never on
    states, so it can be cached until one of those changes.
    """
    entities = [e for e in entities if len(e.entity_id) <= MAX_ENTITY_ID]
    if not entities:
        return Listing("There are no entities to control or read.", True)
    minor = [e for e in entities if is_minor(e)]
    shown = [e for e in entities if not is_minor(e)]
    items = {e.entity_id: _item(e) for e in shown}
    whole = "\n".join([HEADER, _table(shown, items)] if shown else [])
    if minor:
        whole = "\n".join(part for part in (whole, _overview(entities, minor, budget_tokens)) if part)
    if estimate_tokens(whole) <= budget_tokens:
        return Listing(whole, not minor)
    by_domain: dict[str, list[Entity]] = {}
    for entity in shown:
        by_domain.setdefault(entity.domain, []).append(entity)
    order = sorted(by_domain, key=lambda d: (d not in controllable, len(by_domain[d]), d))
    room = budget_tokens - estimate_tokens(HEADER) - estimate_tokens(_overview(entities, entities, budget_tokens))
    kept: list[str] = []
    for domain in order:
        cost = estimate_tokens(_table(by_domain[domain], items))  # area names counted as if its own
        if cost <= room:
            kept.append(domain)
            room -= cost
    while True:
        left_out = minor + [e for d in order if d not in kept for e in by_domain[d]]
        listed = [HEADER, _table([e for d in kept for e in by_domain[d]], items)] if kept else []
        text = "\n".join([*listed, _overview(entities, left_out, budget_tokens)])
        if not kept or estimate_tokens(text) <= budget_tokens:
            return Listing(text, False)
        kept.pop()  # area headers cost more than the estimate allowed for: give up the last domain taken


def is_minor(entity: Entity) -> bool:
    """A diagnostic or configuration entity: readable through the tools, not listed."""
    return entity.mqtt.get("entity_category") in MINOR_CATEGORIES


def states_line(entities: list[Entity]) -> str:
    """Every entity's state in one line, for the volatile end of the prompt (`states_in_prompt`)."""
    return "Current states: " + "; ".join(f"{e.entity_id} {_state(e)}" for e in entities)


def live_state(entity: Entity) -> dict[str, Any]:
    """One entity's state for `get_state`: the state and the attributes that say how it is now.

    Brightness is also given in percent, the unit `turn_on` takes. Values were capped
    where they were stored; the whole is bounded by MAX_SUMMARY_CHARS.
    """
    found: dict[str, Any] = {
        "entity_id": entity.entity_id,
        "name": _one_line(entity.name, 80),
        "state": entity.state or "unknown",
    }
    if entity.area:
        found["area"] = _area(entity)
    attributes = {key: entity.attributes[key] for key in LIVE_ATTRIBUTES if entity.attributes.get(key) is not None}
    for key in ("unit_of_measurement", "device_class"):  # as Home Assistant reports them, from the MQTT config
        configured = entity.mqtt.get(key)
        if key not in attributes and isinstance(configured, str) and configured:
            attributes[key] = _one_line(configured, 40)
    brightness = attributes.get("brightness")
    if isinstance(brightness, int | float) and not isinstance(brightness, bool) and 0 <= brightness <= 255:
        attributes["brightness_pct"] = round(brightness * 100 / 255)
    if attributes:
        found["attributes"], omitted = bounded_attributes(attributes, MAX_SUMMARY_CHARS - 300)
        if omitted:
            found["attributes_omitted"] = omitted
    return found


def _overview(entities: list[Entity], left_out: list[Entity], budget_tokens: int) -> str:
    """What is not in the table, and the area names (for find_entities' `area`)."""
    counts = Counter(e.domain for e in left_out)
    lines = []
    if left_out:
        missing = ", ".join(f"{count} {domain}" for domain, count in sorted(counts.items(), key=lambda kv: -kv[1]))
        listed = "More entities" if len(left_out) < len(entities) else "Entities"
        lines.append(
            f"{listed} not listed here: {missing}. Find them with find_entities "
            "(a name, an area and/or a domain); read states with get_state."
        )
    areas = sorted({_area(e) for e in entities if e.area}, key=str.lower)
    shown: list[str] = []
    room = max(budget_tokens // 5, 50) * CHARS_PER_TOKEN  # the area list takes at most a fifth of the budget
    for area in areas:
        room -= len(area) + 2
        if room < 0:
            break
        shown.append(area)
    if areas:
        more = f" and {len(areas) - len(shown)} more" if len(shown) < len(areas) else ""
        lines.append(f"Areas: {', '.join(shown)}{more}.")
    return "\n".join(lines)


class Finder:
    """Resolves a spoken name ("the study lamp") to entities, forgiving plurals and typos."""

    def __init__(self, entities: list[Entity]) -> None:
        self.entities = [e for e in entities if len(e.entity_id) <= MAX_ENTITY_ID]
        self._words: dict[str, set[str]] = {}
        for entity in self.entities:
            found = set(words(entity.name)) | set(words(entity.entity_id.split(".", 1)[1]))
            found |= set(words(entity.area or "")) | set(words(entity.domain))
            found |= _DOMAIN_WORDS.get(entity.domain, set())
            for alias in entity.aliases:
                found |= set(words(alias))
            self._words[entity.entity_id] = found
        self._vocabulary = sorted(set().union(*self._words.values())) if self._words else []

    def _targets(self, word: str) -> dict[str, float]:
        """Words of the house that `word` may stand for, with how sure that is."""
        targets = dict.fromkeys(difflib.get_close_matches(word, self._vocabulary, n=5, cutoff=0.8), 0.8)
        if len(word) >= 3:
            targets.update({w: 0.7 for w in self._vocabulary if w.startswith(word) and w != word})
        targets[word] = 1.0
        return targets

    def find(
        self, query: str = "", domain: str | None = None, area: str | None = None, limit: int = FIND_LIMIT
    ) -> tuple[list[Entity], int]:
        """The best matches (best first) and how many more there were."""
        candidates = self.entities
        if domain:
            wanted = "_".join(words(domain))
            candidates = [e for e in candidates if _stem(e.domain) == wanted]
        if area:  # the area named exactly, else every area whose name holds those words
            wanted_words = words(area)
            exact = [e for e in candidates if words(e.area or "") == wanted_words]
            candidates = exact or [e for e in candidates if set(wanted_words) <= set(words(e.area or ""))]
        query_words = [w for w in words(query) if w not in _STOP_WORDS]
        if not query_words:
            ordered = sorted(candidates, key=lambda e: (_area(e).lower(), e.entity_id))
            return ordered[:limit], max(0, len(ordered) - limit)
        targets = [self._targets(w) for w in query_words]
        phrase = " ".join(query_words)
        scored: list[tuple[float, Entity]] = []
        for entity in candidates:
            have = self._words[entity.entity_id]
            hits = [max((weight for w, weight in t.items() if w in have), default=0.0) for t in targets]
            score = sum(hits) / len(hits)
            if score < 0.5:
                continue
            name_words = set(words(entity.name))
            covered = {w for w in name_words if any(w in t for t in targets)}
            score += 0.2 * len(covered) / max(1, len(name_words))
            if phrase in (" ".join(words(n)) for n in [entity.name, *entity.aliases]):
                score += 0.5
            scored.append((score, entity))
        scored.sort(key=lambda pair: (-pair[0], pair[1].entity_id))
        return [entity for _, entity in scored[:limit]], max(0, len(scored) - limit)

    @staticmethod
    def describe(entity: Entity) -> dict[str, str]:
        """One match as the model reads it."""
        match = {"entity_id": entity.entity_id, "name": _one_line(entity.name, 80), "state": _state(entity)}
        if entity.area:
            match["area"] = _area(entity)
        return match
