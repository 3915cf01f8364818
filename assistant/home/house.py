"""Keeping up with the house over MQTT: learn entities and states, announce ourselves.

Reads Home Assistant discovery configs (what exists and how to command it), state
topics and mqtt_statestream (what is on), the bridge package's house snapshot (every
entity under Home Assistant's own id) and service bridge results; announces the
daemon's own device, again whenever Home Assistant comes back online.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from assistant.config import Config
from assistant.home.announce import discovery_payload, discovery_topic, own_entity_ids
from assistant.home.bridge import ServiceBridge
from assistant.home.discovery import DiscoveryError, discovery_topics, parse_discovery
from assistant.home.ids import Identities, dump
from assistant.home.ownership import Conflict
from assistant.home.placement import Learned, Placement
from assistant.home.registry import Registry
from assistant.home.snapshot import SnapshotError, changed_entity, parse_snapshot, parse_state_change
from assistant.link.client import Message, MqttLink

log = logging.getLogger(__name__)

REPORT_QUIET_S = 1.0  # a burst of discovery configs is reported once none came for this long
FREEZE_AFTER = 50  # configs in one batch that make it a burst (see flush)
SNAPSHOT_WAIT_S = 10.0  # no house snapshot this long after asking: the package is probably missing
SAVE_QUIET_S = 1.0  # learned ids are saved once no new one came for this long


class House:
    """Routes the house's MQTT traffic into the registry and the bridge."""

    def __init__(
        self,
        config: Config,
        link: MqttLink,
        registry: Registry,
        bridge: ServiceBridge | None,
        saved_ids: dict[str, Any] | None = None,
        save_ids: Callable[[str], bool] | None = None,
    ) -> None:
        """`saved_ids` / `save_ids` (JSON text): the learned entity ids kept in the state directory (see ids.py)."""
        self.config = config
        self.ha = config.homeassistant
        self.link = link
        self.registry = registry
        self.bridge = bridge
        self.status_topic = f"{self.ha.discovery_prefix}/status"
        self.registry.reserve(config.mqtt.topic_prefix)  # no entity command may reach our own inputs
        self.registry.hide(own_entity_ids(config))  # nor may the agent mute the very device it speaks through
        self._reported: set[tuple[str, str]] = set()  # (topic, claimant) conflicts already published
        self._learned_topics: set[str] = set()  # state topics of entities learned since the last flush()
        self._learned = 0  # configs read since the last flush()
        self._burst_configs = 0  # discovery configs read since the last report
        self._burst_started = self._burst_last = 0.0
        self._burst_report: asyncio.TimerHandle | None = None
        self.placement = Placement(registry, Identities(saved_ids))
        self._save_ids = save_ids
        self._save_timer: asyncio.TimerHandle | None = None
        self._saving: asyncio.Future[bool] | None = None  # a save under way in a worker thread
        self._last_id = 0.0  # when an id was last assigned or freed
        self._duplicates_told: set[str] = set()
        self.house_topic = f"{self.ha.service_topic}/house" if self.ha.service_topic else None
        if self.house_topic:
            link.messages.key_of = self.coalescing_key
        self._asked_at: float | None = None  # when the snapshot was last asked for and not yet received
        self._snapshot_warned = False

    def topics(self) -> list[str]:
        """Everything to subscribe to (state topics grow as entities are learned)."""
        topics = [self.status_topic, *self.registry.state_topics()]
        if self.ha.learn_from_discovery:
            topics += discovery_topics(self.ha.discovery_prefix)
        if self.ha.statestream_topic:
            topics.append(f"{self.ha.statestream_topic.rstrip('/')}/#")
        if self.bridge is not None:
            topics.append(self.bridge.result_topic)
        if self.house_topic:
            topics += [self.house_topic, f"{self.house_topic}/state"]
        return topics

    def coalescing_key(self, topic: str, payload: bytes) -> str:
        """What a newer house message replaces unread (paho's thread): the same topic's, but on
        the bridge's state topic, which carries every entity's changes, the same entity's."""
        if topic != f"{self.house_topic}/state":
            return topic
        entity_id = changed_entity(payload)
        return topic if entity_id is None else f"{topic} {entity_id}"

    def announce(self) -> None:
        """Publish our own discovery config (retained)."""
        if self.ha.announce:
            self.link.publish(discovery_topic(self.config), discovery_payload(self.config), retain=True)

    def handle(self, message: Message) -> bool:
        """Take a message if it is the house's; False if it is not ours to handle."""
        topic = message.topic
        text = message.payload.decode("utf-8", "replace")
        if topic == self.status_topic:
            if text == "online":  # Home Assistant (re)started: it forgot us, and we re-read it
                log.info("Home Assistant is online: announcing and re-reading discovery")
                self.announce()
                self.request_snapshot()
                if self.ha.learn_from_discovery:
                    self.link.resubscribe(discovery_topics(self.ha.discovery_prefix))
            return True
        if self.bridge is not None and topic == self.bridge.result_topic:
            self.bridge.on_result(message.payload)
            return True
        if self.house_topic and topic in (self.house_topic, f"{self.house_topic}/state"):
            self._read_house(topic, message.payload)
            return True
        handled = False
        if self.registry.topics().get(topic):
            self.registry.update_from_topic(topic, text)
            handled = True
        if self.ha.statestream_topic and topic.startswith(self.ha.statestream_topic.rstrip("/") + "/"):
            self.registry.update_from_statestream(self.ha.statestream_topic, topic, text)
            return True
        if self.ha.learn_from_discovery and topic.startswith(self.ha.discovery_prefix + "/"):
            self._learn(message)
            return True
        return handled

    def flush(self) -> None:
        """After a batch of messages: subscribe to the state topics it taught us, in one go.

        Once per batch rather than per config: with 100,000 configs, subscribing per message
        (and recomputing the whole topic list each time) took hours.

        A batch of many configs also moves everything alive into Python's permanent GC
        generation (gc.freeze). Learned entities live long and hold no reference cycles; left
        in the collected generations, every full collection walks all of them, and while
        100,000 configs come in those collections stall the loop up to 0.7 s each (measured),
        delaying microphone frames and playback. Cyclic garbage is collected first (paho
        makes some for every message), and what is not frozen yet is small, so that costs
        little; only cycles still alive at that moment and dropped later are never collected,
        and only bursts freeze.
        """
        self.report(self.placement.settle())
        self._tell_ambiguous()
        if self._learned_topics:
            self.link.subscribe(self._learned_topics)
            self._learned_topics = set()
        if self.placement.ids.dirty and self._save_ids is not None and self._save_timer is None:
            self._save_timer = asyncio.get_running_loop().call_later(SAVE_QUIET_S, self._save)
        if self._learned >= FREEZE_AFTER:
            gc.collect()
            gc.freeze()
        self._learned = 0
        if self._burst_configs and self._burst_report is None:
            self._burst_report = asyncio.get_running_loop().call_later(REPORT_QUIET_S, self._report_burst)

    def _report_burst(self) -> None:
        """Log a burst of discovery configs once it is over (how many, how long, entities known)."""
        quiet = time.monotonic() - self._burst_last
        if quiet < REPORT_QUIET_S:
            self._burst_report = asyncio.get_running_loop().call_later(REPORT_QUIET_S - quiet, self._report_burst)
            return
        self._burst_report = None
        log.info(
            "discovery: read %d configs in %.1f s; %d entities known",
            self._burst_configs,
            self._burst_last - self._burst_started,
            len(self.registry.entities),
        )
        self._burst_configs = 0

    def _learn(self, message: Message) -> None:
        now = time.monotonic()
        if not self._burst_configs:
            self._burst_started = now
        self._burst_configs += 1
        self._learned += 1
        self._burst_last = now
        try:
            update = parse_discovery(message.topic, message.payload, self.ha.discovery_prefix, self.ha.ha_version)
        except DiscoveryError as error:
            log.warning("ignoring discovery config on %s: %s", message.topic, error)
            return
        if update is None or update.source == discovery_topic(self.config):
            return
        learned = [Learned.from_discovered(update.source, found) for found in update.entities]
        self.report(self.placement.learn(update.source, learned))
        self._last_id = now
        self._tell_duplicates()
        for item in learned:
            self._learned_topics.update(item.entity.state_topics())  # subscribed once per batch, in flush()
        if learned and log.isEnabledFor(logging.DEBUG):
            log.debug("learned %s from %s", [item.assigned for item in learned], update.source)

    def request_snapshot(self) -> None:
        """Ask the bridge package for the house snapshot (on every connect and when Home Assistant comes online)."""
        if not self.house_topic:
            return
        self.link.publish(f"{self.house_topic}/get", "{}")
        self._asked_at = time.monotonic()
        asyncio.get_running_loop().call_later(SNAPSHOT_WAIT_S, self._check_snapshot)

    def _check_snapshot(self) -> None:
        """Warn once when a request for the snapshot went unanswered."""
        asked = self._asked_at
        if asked is None or self._snapshot_warned or time.monotonic() - asked < SNAPSHOT_WAIT_S - 0.1:
            return
        self._snapshot_warned = True
        log.warning(
            "no house snapshot on %s within %g s of asking: is the bridge package "
            "(config/homeassistant/assistant_bridge.yaml) installed, and Home Assistant 2024.11 or newer? "
            "Until one comes, entity ids are derived from discovery and statestream",
            self.house_topic,
            SNAPSHOT_WAIT_S,
        )

    def _read_house(self, topic: str, payload: bytes) -> None:
        """The snapshot (whole house) or one entity's state change."""
        try:
            if topic == self.house_topic:
                snapshot = parse_snapshot(payload)
                self._asked_at = None
                self.report(self.placement.apply_snapshot(snapshot.entities))
                self._tell_ambiguous()
                log.info("house snapshot: %d entities", len(snapshot.entities))
                if snapshot.skipped:
                    log.warning(
                        "house snapshot: %d entities left out: %s", snapshot.skipped, "; ".join(snapshot.problems)
                    )
            else:
                change = parse_state_change(payload)
                if change.state is None and self.placement.house and change.entity_id in self.placement.house:
                    log.info("house: %s was removed in Home Assistant", change.entity_id)
                self.placement.apply_state(change)
        except SnapshotError as error:
            log.warning("ignoring the message on %s: %s", topic, error)

    def _tell_duplicates(self) -> None:
        """Log once per name that two discovered entities want one id, and what that means."""
        for preferred, given in self.placement.ids.duplicates:
            if preferred in self._duplicates_told:
                continue
            self._duplicates_told.add(preferred)
            log.log(
                logging.INFO if self.placement.house is not None else logging.WARNING,
                "two discovered entities want the id %s: the later is %s here, but which one Home Assistant "
                "suffixed depends on the order it first saw them. Install the bridge package for Home "
                "Assistant's exact ids, or give the devices distinct names",
                preferred,
                given,
            )
        self.placement.ids.duplicates.clear()

    def _tell_ambiguous(self) -> None:
        """Log each tie left undone once (settle() finds it again after every batch of configs)."""
        for problem in self.placement.ambiguous:
            if problem not in self._duplicates_told:
                self._duplicates_told.add(problem)
                log.warning("house snapshot: not tied to a discovery config: %s", problem)
        self.placement.ambiguous = []

    def _save(self) -> None:
        """Save the learned ids once the configs have stopped coming (a burst of 100,000 is saved once).

        Encoding and writing 100,000 ids takes 0.1 to 0.5 s: it runs in a worker thread, in
        slices (see ids.dump), so microphone frames are not held up meanwhile.
        """
        loop = asyncio.get_running_loop()
        quiet = time.monotonic() - self._last_id
        if quiet < SAVE_QUIET_S or self._saving is not None:
            self._save_timer = loop.call_later(max(0.1, SAVE_QUIET_S - quiet), self._save)
            return
        self._save_timer = None
        if self._save_ids is None or not self.placement.ids.dirty:
            return
        save, data = self._save_ids, self.placement.ids.export()
        self._saving = loop.run_in_executor(None, lambda: save(dump(data)))
        self._saving.add_done_callback(self._saved)

    def _saved(self, saving: asyncio.Future[bool]) -> None:
        self._saving = None
        if saving.exception() is not None or not saving.result():
            self.placement.ids.dirty = True  # try again with the next change (the store logged why)

    def save(self) -> None:
        """Save the learned ids now if any changed (when the daemon stops or reloads)."""
        if self._save_ids is not None and self.placement.ids.dirty:
            self._save_ids(dump(self.placement.ids.export()))

    def report(self, conflicts: list[Conflict]) -> None:
        """Log and publish event/error for each refused claim, once (retained configs are re-read often)."""
        for conflict in conflicts:
            if (conflict.topic, conflict.claimant) in self._reported:
                continue
            self._reported.add((conflict.topic, conflict.claimant))
            message = conflict.message()
            if not (self.registry.is_exposed(conflict.owner) and self.registry.is_exposed(conflict.claimant)):
                message += "; nothing is published to that topic while an entity that is not exposed uses it"
            log.warning("topic_conflict: %s", message)
            self.link.event("error", {"id": None, "code": "topic_conflict", "message": message})
