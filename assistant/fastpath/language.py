"""One language's sentences for the fast path: loaded once per process and shared.

Only the intents listed in SUPPORTED_INTENTS are loaded (recognising over all of a
language's intents is several times slower), and their templates are parsed once per
language, at start-up rather than on the first utterance. The templates with a {floor}
slot are also kept apart, so an utterance that names no floor is not slowed by them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2

if TYPE_CHECKING:
    from hassil import Intents

SUPPORTED_INTENTS = (
    "HassTurnOn",
    "HassTurnOff",
    "HassLightSet",
    "HassSetPosition",
    "HassClimateSetTemperature",
    "HassFanSetSpeed",
)
ARTICLE_RULES = ("the", "artikel_bestimmt")  # expansion rules whose words alone do not make a command
FLOOR_LIST = "floor"  # the slot list Home Assistant fills with floor names


@dataclass
class Language:
    """One language's parsed templates, responses and filler words, shared by every FastPath."""

    code: str
    intents: Intents
    without_floors: Intents  # the same parsed templates less those with a {floor}: for utterances naming none
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


def words(text: str) -> list[str]:
    """The words of `text`, case-folded."""
    return re.findall(r"\w+", text.casefold())


@functools.lru_cache(maxsize=4)
def load_language(code: str) -> Language | None:
    """Parse the supported intents of one language ("en": about 60 ms and 3.5 MB, "de": 230 ms, 5.5 MB)."""
    from hassil import Intents
    from hassil.intents import Intent
    from home_assistant_intents import get_intents

    data = get_intents(code)
    if data is None:
        return None
    intents: dict[str, Any] = {}
    for name in SUPPORTED_INTENTS:
        blocks = data["intents"].get(name, {}).get("data", [])
        if blocks:
            intents[name] = {"data": blocks}
    keep = ("language", "settings", "skip_words", "lists", "expansion_rules")
    parsed = Intents.from_dict({**{key: data[key] for key in keep if key in data}, "intents": intents})
    # Parse every template and its literal-text prefilter now, not on the first utterance.
    list_names: set[str] = set()
    floor_blocks: set[int] = set()
    for intent in parsed.intents.values():
        for block in intent.data:
            rules = {**parsed.expansion_rules, **block.expansion_rules}
            for sentence in block.sentences:
                if hasattr(sentence, "get_required_clauses"):  # recent hassil; cached on the sentence
                    sentence.get_required_clauses(rules)
                names = set(sentence.list_names(rules))
                list_names.update(names)
                if FLOOR_LIST in names:
                    floor_blocks.add(id(block))
    _warm_number_words(parsed, list_names)
    without_floors = dataclasses.replace(
        parsed,
        intents={
            name: Intent(name, [block for block in intent.data if id(block) not in floor_blocks])
            for name, intent in parsed.intents.items()
        },
    )
    filler = {word for phrase in parsed.skip_words for word in words(phrase)}
    for rule in ARTICLE_RULES:
        filler.update(words(str(data.get("expansion_rules", {}).get(rule, ""))))
    all_responses = data.get("responses", {}).get("intents", {})
    responses = {name: dict(all_responses.get(name, {})) for name in SUPPORTED_INTENTS}
    return Language(code, parsed, without_floors, responses, frozenset(filler))


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
