"""Entity ids for discovered entities, assigned the way Home Assistant assigns them.

Home Assistant takes an entity's preferred id (from `default_entity_id`, `object_id` or
the friendly name, depending on its version) and, when another entity already has it,
adds `_2`, `_3`, ... An id once given to an entity with a unique_id stays with it (the
entity registry), whatever order configs arrive in after a restart, and an entity whose
config is removed gets its old id back if it returns while the id is free. The daemon
keeps the same books, so it can tell two devices with one name apart. Pure: no I/O; the
caller persists `export()` in the state directory.

Without Home Assistant's own registry the daemon cannot know which of two same-named
entities Home Assistant saw first; the house snapshot (assistant/home/snapshot.py) can.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

Version = tuple[int, int]
NEWEST: Version = (9999, 12)  # no [homeassistant] version: follow the newest rules known
DEFAULT_ENTITY_ID_FROM: Version = (2025, 10)  # `default_entity_id` honoured from this release on
OBJECT_ID_UNTIL: Version = (2026, 4)  # `object_id` (deprecated in 2025.10) ignored from this release on
MAX_REMEMBERED = 200_000  # unique ids whose entity id is kept (Home Assistant's registry has no cap; a file has)
MAX_DELETED = 10_000  # removed entities whose id is kept to give back if they return


def id_candidates(config: dict[str, Any], version: Version | None) -> list[Any]:
    """The config's own choices of object id, in Home Assistant's order, for `version`.

    2025.10 added `default_entity_id` ("light.desk"; only the part after the dot counts,
    the domain is the platform's) and deprecated `object_id`, which Home Assistant still
    uses when no `default_entity_id` is given until 2026.4 announced its removal. Before
    2025.10 only `object_id` counts.
    """
    version = version or NEWEST
    default = config.get("default_entity_id") if version >= DEFAULT_ENTITY_ID_FROM else None
    if isinstance(default, str):
        _, dot, rest = default.partition(".")
        return [rest if dot else default]
    return [config.get("object_id")] if version < OBJECT_ID_UNTIL else []


def dump(saved: dict[str, dict[str, str]], slice_size: int = 2000) -> str:
    """The JSON of an `export()`, encoded a slice at a time: a thread doing it lets the event loop run
    between slices (one json.dumps of 100,000 ids would hold the interpreter for its whole 0.1 s).
    """
    parts = []
    for name, entries in saved.items():
        items = list(entries.items())
        pieces = [json.dumps(dict(items[i : i + slice_size]))[1:-1] for i in range(0, len(items), slice_size)]
        parts.append(f"{json.dumps(name)}: {{{', '.join(pieces)}}}")
    return "{" + ", ".join(parts) + "}"


class Identities:
    """Discovery identity -> entity id, with Home Assistant's collision suffixes and memory.

    An identity is what a discovered entity is known by in its own right: its discovery
    topic, plus the component id in a device-based config. A unique key is
    "<domain> <unique_id>", what Home Assistant's entity registry remembers an id by.
    """

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        self.live: dict[str, str] = {}  # identity -> entity id
        self._owner: dict[str, str] = {}  # entity id -> identity
        self._unique_of: dict[str, str | None] = {}  # identity -> its unique key
        self.registered: dict[str, str] = {}  # unique key -> entity id (reserved even while its config is away)
        self._reserved: dict[str, str] = {}  # entity id -> unique key
        self.deleted: dict[str, str] = {}  # unique key -> the id it had when its config was removed
        self.dirty = False  # changed since export()
        self.duplicates: list[tuple[str, str]] = []  # (preferred id, id given instead), for the caller to report
        self._load(saved or {})

    def _load(self, saved: dict[str, Any]) -> None:
        """Take a saved `export()`; anything malformed in it is skipped."""
        for name, target in (("registered", self.registered), ("deleted", self.deleted)):
            entries = saved.get(name)
            if isinstance(entries, dict):
                target.update({k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, str)})
        for key, entity_id in list(self.registered.items()):
            if entity_id in self._reserved:  # two unique ids on one id: the file was edited
                del self.registered[key]
            else:
                self._reserved[entity_id] = key

    def export(self) -> dict[str, Any]:
        """What to save so that a restart keeps every id."""
        self.dirty = False
        return {"registered": dict(self.registered), "deleted": dict(self.deleted)}

    def assign(self, identity: str, preferred: str, unique_key: str | None) -> str:
        """The entity id of `identity`: the one it has, remembered, or `preferred` made free."""
        current = self.live.get(identity)
        if current is not None:
            if self._unique_of.get(identity) == unique_key:
                return current  # the same config again (e.g. Home Assistant restarted): ids do not move
            self.release(identity)  # another entity is announced on this topic now
        wanted = self.registered.get(unique_key) if unique_key is not None else None
        if wanted is not None and wanted in self._owner:
            wanted = None  # two configs with one unique_id: Home Assistant refuses the second; it gets an id of its own
        if wanted is None and unique_key is not None:
            restored = self.deleted.get(unique_key)
            if restored is not None and not self._taken(restored, unique_key):
                wanted = restored
        if wanted is None:
            wanted = self._free(preferred, unique_key)
            if wanted != preferred:
                self.duplicates.append((preferred, wanted))
        self.live[identity] = wanted
        self._owner[wanted] = identity
        self._unique_of[identity] = unique_key
        if unique_key is not None and self.registered.get(unique_key) != wanted:
            self._register(unique_key, wanted)
        return wanted

    def _register(self, unique_key: str, entity_id: str) -> None:
        if unique_key not in self.registered and len(self.registered) >= MAX_REMEMBERED:
            log.warning("more than %d unique ids: %s is not remembered across restarts", MAX_REMEMBERED, entity_id)
            return
        old = self.registered.get(unique_key)
        if old is not None:
            self._reserved.pop(old, None)
        self.registered[unique_key] = entity_id
        self._reserved[entity_id] = unique_key
        self.deleted.pop(unique_key, None)
        self.dirty = True

    def release(self, identity: str) -> None:
        """`identity`'s config was removed: its id is free (given back to it if it returns while still free)."""
        entity_id = self.live.pop(identity, None)
        unique_key = self._unique_of.pop(identity, None)
        if entity_id is None:
            return
        self._owner.pop(entity_id, None)
        if unique_key is not None and self.registered.get(unique_key) == entity_id:
            del self.registered[unique_key]
            self._reserved.pop(entity_id, None)
            self.deleted.pop(unique_key, None)
            self.deleted[unique_key] = entity_id  # newest last, so the oldest goes first
            while len(self.deleted) > MAX_DELETED:
                del self.deleted[next(iter(self.deleted))]
            self.dirty = True

    def _taken(self, entity_id: str, unique_key: str | None) -> bool:
        """In use by a live entity, or reserved by another unique id's registry entry."""
        return entity_id in self._owner or self._reserved.get(entity_id, unique_key) != unique_key

    def _free(self, preferred: str, unique_key: str | None) -> str:
        """`preferred`, or the first of `preferred_2`, `preferred_3`, ... that is free (Home Assistant's rule)."""
        candidate, number = preferred, 2
        while self._taken(candidate, unique_key):
            candidate, number = f"{preferred}_{number}", number + 1
        return candidate
