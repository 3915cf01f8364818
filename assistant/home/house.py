"""Keeping up with the house over MQTT: learn entities and states, announce ourselves.

Reads Home Assistant discovery configs (what exists and how to command it), state
topics and mqtt_statestream (what is on), and service bridge results; announces the
daemon's own device, again whenever Home Assistant comes back online.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from assistant.config import Config
from assistant.home.announce import discovery_payload, discovery_topic, own_entity_ids
from assistant.home.bridge import ServiceBridge
from assistant.home.discovery import DiscoveryError, discovery_topics, parse_discovery
from assistant.home.entities import Entity
from assistant.home.ownership import Conflict
from assistant.home.registry import Registry
from assistant.link.client import Message, MqttLink

log = logging.getLogger(__name__)

REPORT_QUIET_S = 1.0  # a burst of discovery configs is reported once none came for this long
FREEZE_AFTER = 50  # configs in one batch that make it a burst (see flush)


class House:
    """Routes the house's MQTT traffic into the registry and the bridge."""

    def __init__(self, config: Config, link: MqttLink, registry: Registry, bridge: ServiceBridge | None) -> None:
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

    def topics(self) -> list[str]:
        """Everything to subscribe to (state topics grow as entities are learned)."""
        topics = [self.status_topic, *self.registry.state_topics()]
        if self.ha.learn_from_discovery:
            topics += discovery_topics(self.ha.discovery_prefix)
        if self.ha.statestream_topic:
            topics.append(f"{self.ha.statestream_topic.rstrip('/')}/#")
        if self.bridge is not None:
            topics.append(self.bridge.result_topic)
        return topics

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
                if self.ha.learn_from_discovery:
                    self.link.resubscribe(discovery_topics(self.ha.discovery_prefix))
            return True
        if self.bridge is not None and topic == self.bridge.result_topic:
            self.bridge.on_result(message.payload)
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
        if self._learned_topics:
            self.link.subscribe(self._learned_topics)
            self._learned_topics = set()
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
            update = parse_discovery(message.topic, message.payload, self.ha.discovery_prefix)
        except DiscoveryError as error:
            log.warning("ignoring discovery config on %s: %s", message.topic, error)
            return
        if update is None or update.source == discovery_topic(self.config):
            return
        entities = [
            Entity(f.entity_id, f.name, [], f.area, dict(f.config), source=update.source) for f in update.entities
        ]
        self.report(self.registry.replace_source(update.source, entities))
        for entity in entities:
            self._learned_topics.update(entity.state_topics())  # subscribed once per batch, in flush()
        if entities and log.isEnabledFor(logging.DEBUG):
            log.debug("learned %s from %s", [e.entity_id for e in entities], update.source)

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
