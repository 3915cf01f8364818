"""Recognition and ranking: an utterance to at most one confident command, or None.

hassil may read an utterance several ways (a name, an area or a floor, one entity or a domain);
each reading is resolved against the registry, the best-ranked ones are kept, and
anything ambiguous goes to the chat agent instead.

A spoken command is matched twice: at a pause (is it already whole? see `Turns.complete_command`)
and again as the request. Recognition is the costly part (1-7 ms of hassil on the event loop), so
its outcome is kept per text for as long as the slot lists it was made with (`Registry.version`):
the second match, and a command said again, cost no recognition.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.fastpath.index import Index, area_key, build_index, device_class, floor_key
from assistant.fastpath.language import Language, load_language, resolve_language, words
from assistant.fastpath.mapping import INTENT_DOMAINS, Call, Plan, Step, step
from assistant.fastpath.phrases import speech
from assistant.home.entities import Entity
from assistant.home.registry import Registry

if TYPE_CHECKING:
    from hassil import RecognizeResult
    from hassil.models import MatchEntity

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200  # longer than any command; not worth matching
MAX_RESULTS = 64  # recognition results looked at per utterance
UNKNOWN_AREA = "\x00unknown-area"  # the "here" of "turn off the lights" when the device has no area
SINGLE_TARGET = {"HassClimateSetTemperature"}  # intents Home Assistant carries out on one entity only
CACHE_SIZE = 64  # texts whose recognition is kept (a household says few different commands)


@dataclass(frozen=True)
class FastMatch:
    """A recognised command: the tool calls to run in order and what to say."""

    intent: str
    calls: list[Call]
    speech: str


class FastPath:
    """Recognise common commands locally; `match` gives tool calls or None (ask the agent)."""

    def __init__(self, registry: Registry, language: str = "en", *, area: str | None = None) -> None:
        """`area` is the device's own room: the "here" of "turn off the lights"."""
        self.registry = registry
        self.area = area.strip() if area and area.strip() else None
        self.requested = language
        self.language: str | None = None  # as home-assistant-intents names it, if it has the language
        self._lang: Language | None = None
        self._loaded = False
        try:
            self.language = resolve_language(language)
        except Exception:  # the fast path is optional: never stop the daemon over it
            log.exception("cannot load the local command sentences for %r", language)
            self._loaded = True
        self._loading = threading.Lock()
        self._index: Index | None = None
        self._index_for: tuple[int, tuple[str, ...]] | None = (
            None  # the registry version and allowlist it was built for
        )
        self._plans: OrderedDict[str, Plan | None] = OrderedDict()  # text -> its plan, for `_index`
        self.recognitions = 0  # hassil recognitions run so far (a text already matched runs none)

    def load(self) -> None:
        """Parse the language's sentences (about 0.1 s of CPU), once; the first `match` does it
        if nobody did before (the daemon does it in a thread once it is ready)."""
        with self._loading:
            if self._loaded:
                return
            try:
                self._lang = load_language(self.language) if self.language else None
            except Exception:  # the fast path is optional: never stop the daemon over it
                log.exception("cannot load the local command sentences for %r", self.requested)
            if self._lang is None:
                log.warning("no local command sentences for language %r: the fast path is off", self.requested)
            self._loaded = True

    @property
    def enabled(self) -> bool:
        """Whether a language was loaded (otherwise `match` always gives None)."""
        self.load()
        return self._lang is not None

    def match(self, text: str) -> FastMatch | None:
        """The command in `text`, if it is confidently one supported command on exposed entities.

        Recognised once per text and registry version; the calls and the confirmation are made
        afresh on every match (the confirmation names entities as they are now).
        """
        self.load()
        lang = self._lang
        text = text.strip()
        if lang is None or not text or len(text) > MAX_TEXT_CHARS:
            return None
        index = self._current_index()
        if not index.exposed:
            return None
        if text in self._plans:
            self._plans.move_to_end(text)
            plan = self._plans[text]
        else:
            try:
                plan = self._recognize(text, index, lang)
            except Exception:  # a bug here must only cost the shortcut, not the answer
                log.exception("fast path failed on %r", text)
                return None
            self._plans[text] = plan
            if len(self._plans) > CACHE_SIZE:
                self._plans.popitem(last=False)
        if plan is None:
            return None
        if not all(self.registry.is_exposed(args["entity_id"]) for _tool, args in plan.calls):
            return None  # cannot happen: the slot lists hold exposed entities only
        match = FastMatch(plan.intent, copy.deepcopy(plan.calls), speech(plan, lang))
        log.debug("fast path: %r -> %s %s", text, match.intent, match.calls)
        return match

    def _recognize(self, text: str, index: Index, lang: Language) -> Plan | None:
        """hassil's readings of `text`, resolved and ranked: the one plan to carry out, or None."""
        from hassil import recognize_all

        self.recognitions += 1
        here = area_key(self.area) or UNKNOWN_AREA
        context = {"area": {"value": here, "text": self.area or ""}}
        best: list[Plan] = []
        intents = lang.intents if index.names_a_floor(text) else lang.without_floors
        results = recognize_all(text, intents, slot_lists=index.slot_lists, intent_context=context)
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
        if not best:
            return None
        if len({plan.signature for plan in best}) > 1:
            log.debug("fast path: %r is ambiguous: %s", text, [plan.calls for plan in best])
            return None
        return best[0]

    def _current_index(self) -> Index:
        """The slot lists for the registry as it is; rebuilt (and what was recognised forgotten) when
        entities came or went, or the allowlist was changed in place."""
        wanted = (self.registry.version, tuple(self.registry.expose_patterns))
        if self._index is None or self._index_for != wanted:
            self._index = build_index(self.registry, self.area)
            self._index_for = wanted
            self._plans.clear()
        return self._index

    def _plan(self, text: str, result: RecognizeResult, index: Index, lang: Language) -> Plan | None:
        """Resolve one recognition result to tool calls, or None if it does not fit the home.

        As Home Assistant's intent matching does: a floor keeps the entities whose area is on
        it, an area the entities in it; a name must also be in the area and on the floor said.
        """
        if not _says_more_than_names(text, result, lang.filler):
            return None  # a bare "kitchen light" is a mention, not a command
        intent = result.intent.name
        slots = result.entities
        name = slots.get("name")
        area_slot = slots.get("area")
        floor_slot = slots.get("floor")
        wanted_area: str | None = None
        if area_slot is not None and area_slot.value != UNKNOWN_AREA:
            wanted_area = str(area_slot.value)
        wanted_floor = str(floor_slot.value) if floor_slot is not None else None
        for said in (wanted_floor, wanted_area if _spoken_place(area_slot) else None):
            if said is not None and index.area_or_floor(said):
                return None  # "the basement": the room or the whole floor?
        if name is not None:
            entity = index.exposed.get(str(name.value))
            if entity is None or (wanted_area is not None and area_key(entity.area) != wanted_area):
                return None
            if wanted_floor is not None and floor_key(entity.floor) != wanted_floor:
                return None
            candidates = [entity]
            label = str((name.metadata or {}).get("label") or entity.name)
        else:
            domain = slots.get("domain")
            domains = {str(domain.value)} if domain is not None else INTENT_DOMAINS.get(intent, set())
            candidates = [e for e in index.exposed.values() if e.domain in domains]
            class_slot = slots.get("device_class")
            if class_slot is not None:
                candidates = [e for e in candidates if device_class(e) == class_slot.value]
            if wanted_floor is not None:
                candidates = [e for e in candidates if floor_key(e.floor) == wanted_floor]
            if wanted_area is not None:
                if index.area_is_ambiguous(wanted_area):
                    return None  # "the bathroom" when there is one on each floor
                candidates = [e for e in candidates if area_key(e.area) == wanted_area]
            elif area_slot is not None and len(candidates) != 1:
                return None  # "here" with no known area: only when the home has just one such device
            label = None
        steps = [(entity, found) for entity in candidates if (found := step(intent, entity, slots)) is not None]
        if not steps or (name is not None and len(steps) != len(candidates)):
            return None
        if intent in SINGLE_TARGET and len(steps) > 1:
            steps = self._preferred(steps, index)
            if len(steps) != 1:
                return None  # Home Assistant sets one thermostat per command; the agent can ask which
        area = index.areas.get(wanted_area) if wanted_area else None
        spoken_name = len(name.text) if name is not None else 0
        return Plan(
            result=result,
            targets=[entity for entity, _step in steps],
            calls=[call for _entity, (call, _action) in steps],
            action=steps[0][1][1],
            label=label,
            area=area,
            floor=index.floors.get(wanted_floor) if wanted_floor else None,
            # entity names beat areas and floors; longer names win, then longer area/floor names
            rank=(int(name is not None), spoken_name, _spoken_place(area_slot, floor_slot)),
        )

    def _preferred(self, steps: list[tuple[Entity, Step]], index: Index) -> list[tuple[Entity, Step]]:
        """Of several targets, the ones on the device's floor, then in its area (Home Assistant's preferences)."""
        here = area_key(self.area)
        floors = index.area_floors.get(here, set()) if here else set()
        if len(floors) == 1:
            steps = [item for item in steps if floor_key(item[0].floor) in floors]
            if len(steps) < 2:
                return steps
        return [item for item in steps if area_key(item[0].area) == here] if here else steps


def _spoken_place(*slots: MatchEntity | None) -> int:
    """How much of the utterance named the area or floor ("ground floor" beats "ground").

    A "here" filled in from the device's own area was not said, and counts nothing.
    """
    spans = [getattr(slot, "text_span", None) for slot in slots if slot is not None]
    return max((end - start for start, end in filter(None, spans)), default=0)


def _says_more_than_names(text: str, result: RecognizeResult, filler: Iterable[str]) -> bool:
    """Whether the utterance has a word besides the entity/area names, articles and politeness."""
    for slot in ("name", "area", "floor"):
        entity = result.entities.get(slot)
        if entity is None or not entity.text:
            continue
        span = getattr(entity, "text_span", None)  # hassil >= 3.12: where in `text` it was said
        if span is not None:
            start, end = span
            text = text[:start] + " " * (end - start) + text[end:]
        else:
            text = re.sub(re.escape(entity.text.strip()), " ", text, count=1, flags=re.IGNORECASE)
    return bool(set(words(text)) - set(filler))
