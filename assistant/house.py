"""Keeping up with the house over MQTT: learn entities and states, announce ourselves.

Reads Home Assistant discovery configs (what exists and how to command it), state
topics and mqtt_statestream (what is on), and service bridge results; announces the
daemon's own device, again whenever Home Assistant comes back online.
"""

from __future__ import annotations

import logging

from assistant.announce import discovery_payload, discovery_topic
from assistant.bridge import ServiceBridge
from assistant.config import Config
from assistant.discovery import DiscoveryError, discovery_topics, parse_discovery
from assistant.homeassistant import Entity, Registry
from assistant.mqtt import Message, MqttLink
from assistant.ownership import Conflict

log = logging.getLogger(__name__)


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
        self._reported: set[tuple[str, str]] = set()  # (topic, claimant) conflicts already published

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

    def _learn(self, message: Message) -> None:
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
        if update.entities:
            log.debug("learned %s from %s", [f.entity_id for f in update.entities], update.source)
        self.link.subscribe(self.registry.state_topics())

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
