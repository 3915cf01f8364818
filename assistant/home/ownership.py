"""Who may publish to each command topic: the first entity that claimed it.

Entities name the topics their device listens on (`command_topic`, `set_position_topic`,
...). Two entities that name the same one are one device seen twice, so commanding one
commands the other: a new light whose `command_topic` is the front door lock's would turn
"turn on" into "unlock". Claims are kept in arrival order, hand-declared ones first; a
later claimant from another source is refused while an earlier one holds the topic, and
every claimant is remembered (refused or not) so that a topic is known to belong to a
lock whichever config arrived first. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG = "config"
"""The source of hand-declared entities."""

Claimant = tuple[str, str]  # (source, entity_id)


@dataclass(frozen=True)
class Conflict:
    """`claimant` (from `source`) names `topic` under `key`, which `owner` claimed first."""

    topic: str
    key: str
    claimant: str
    source: str
    owner: str

    def message(self) -> str:
        """One line for the log and event/error, naming both entities and the topic."""
        return (
            f"{self.claimant} (from {self.source}) uses command topic {self.topic!r} ({self.key}), "
            f"already used by {self.owner}: {self.claimant} is refused"
        )


class Claims:
    """Command topic -> its claimants in arrival order, with the key each claims it under."""

    def __init__(self) -> None:
        self._by_topic: dict[str, dict[Claimant, str]] = {}
        self._by_source: dict[str, set[str]] = {}  # source -> the topics it claims, so release is cheap

    def claim(self, source: str, entity_id: str, topics: dict[str, str]) -> None:
        """Record `topics` ({topic: key}); a claim already held keeps its place in the queue."""
        for topic, key in topics.items():
            self._by_topic.setdefault(topic, {}).setdefault((source, entity_id), key)
        if topics:
            self._by_source.setdefault(source, set()).update(topics)

    def release(self, source: str, keep: set[tuple[str, str]] | None = None) -> set[str]:
        """Drop the claims of `source`, except the (topic, entity_id) pairs in `keep`; return the topics let go."""
        keep = keep or set()
        released = set()
        for topic in self._by_source.pop(source, set()):
            claims = self._by_topic[topic]
            for claimant in [c for c in claims if c[0] == source]:
                if (topic, claimant[1]) in keep:
                    self._by_source.setdefault(source, set()).add(topic)
                else:
                    del claims[claimant]
                    released.add(topic)
            if not claims:
                del self._by_topic[topic]
        return released

    def rename(self, source: str, renamed: dict[str, str]) -> None:
        """Give the claims of `source`'s entities their new ids ({old: new}, all at once), keeping their places."""
        for topic in self._by_source.get(source, ()):
            claims = self._by_topic[topic]
            if any(src == source and eid in renamed for src, eid in claims):
                self._by_topic[topic] = {
                    (src, renamed.get(eid, eid) if src == source else eid): key for (src, eid), key in claims.items()
                }

    def conflicts(self, source: str, entity_id: str, topics: dict[str, str]) -> list[Conflict]:
        """The topics of `entity_id` that another entity claimed before it.

        Entities of one discovery config may share a topic (device-based discovery shares
        `command_topic` between its components by design); hand-declared ones may not.
        """
        found = []
        for topic, key in topics.items():
            for other_source, other_id in self._by_topic.get(topic, {}):
                if (other_source, other_id) == (source, entity_id):
                    break
                same_config = other_source == source and source != CONFIG
                if other_id != entity_id and not same_config:
                    found.append(Conflict(topic, key, entity_id, source, other_id))
                    break
        return found

    def claimants(self, topic: str) -> list[Claimant]:
        """Everyone who claims `topic`, first claim first."""
        return list(self._by_topic.get(topic, {}))
