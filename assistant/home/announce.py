"""The daemon's own MQTT discovery: one Home Assistant device per site.

It shows the state and the last transcript and reply, a mute switch, a listen button
and a text box to type a request; everything goes unavailable with `<root>/status`.
"""

from __future__ import annotations

import json
from typing import Any

from assistant import __version__
from assistant.config import Config
from assistant.home.discovery import slugify


def node_id(config: Config) -> str:
    """The discovery node / device identifier, unique per site."""
    return f"assistant_{config.device.site_id}"


def discovery_topic(config: Config) -> str:
    """Device-based discovery topic of this daemon."""
    return f"{config.homeassistant.discovery_prefix}/device/{node_id(config)}/config"


def discovery_payload(config: Config) -> str:
    """The device-based discovery config (retained), with one component per control."""
    root, node = config.topic_root, node_id(config)
    components: dict[str, dict[str, Any]] = {
        "state": {
            "platform": "sensor",
            "name": "State",
            "state_topic": f"{root}/state",
            "icon": "mdi:account-voice",
        },
        "transcript": {
            "platform": "sensor",
            "name": "Last request",
            "state_topic": f"{root}/event/reply",  # spoken and typed requests alike
            "value_template": "{{ value_json.request[:255] }}",
            "icon": "mdi:text-to-speech",
        },
        "reply": {
            "platform": "sensor",
            "name": "Last reply",
            "state_topic": f"{root}/event/reply",
            "value_template": "{{ value_json.text[:255] }}",
            "json_attributes_topic": f"{root}/event/reply",
            "icon": "mdi:message-reply-text",
        },
        "mute": {
            "platform": "switch",
            "name": "Mute",
            "command_topic": f"{root}/mute/set",
            "state_topic": f"{root}/mute",
            "icon": "mdi:microphone-off",
        },
        "listen": {
            "platform": "button",
            "name": "Listen",
            "command_topic": f"{root}/listen",
            "payload_press": "{}",  # no id, so each press gets its own (the default PRESS was every press's id)
            "icon": "mdi:microphone",
        },
        "ask": {
            "platform": "text",
            "name": "Ask",
            "command_topic": f"{root}/ask",
            "max": 255,
            "icon": "mdi:chat-question",
        },
    }
    if config.images.enabled:
        # always the picture itself: one the model gave as a URL is fetched first (assistant/agent/images.py)
        image: dict[str, Any] = {"platform": "image", "name": "Image", "icon": "mdi:image"}
        image |= {"image_topic": f"{root}/image/b64", "image_encoding": "b64"}
        image["content_type"] = f"image/{config.images.output_format or 'png'}"
        components["image"] = image
    for key, component in components.items():
        # One id on every Home Assistant from 2024.11 (device-based discovery) on: object_id
        # counts until 2026.4, default_entity_id from 2025.10 (and wins when both are given).
        component["unique_id"] = f"{node}_{key}"
        component["object_id"] = f"{node}_{key}"
        component["default_entity_id"] = f"{component['platform']}.{node}_{key}"
    payload = {
        "device": {
            "identifiers": [node],
            "name": config.device.name,
            "manufacturer": "assistant",
            "model": "Voice assistant daemon",
            "sw_version": __version__,
            **({"suggested_area": config.device.area} if config.device.area else {}),
        },
        "origin": {"name": "assistant", "sw_version": __version__},
        "availability_topic": f"{root}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": config.mqtt.qos,
        "components": components,
    }
    return json.dumps(payload)


def own_entity_ids(config: Config) -> set[str]:
    """The ids Home Assistant may give this daemon's own entities, under any supported version.

    They are kept from the daemon's own agent: "mute yourself" could not be undone by voice.
    Both forms: the announced id, and the one Home Assistant derives from the names.
    """
    payload = json.loads(discovery_payload(config))
    device = payload["device"]["name"]
    ids = set()
    for key, component in payload["components"].items():
        platform = component["platform"]
        ids.add(f"{platform}.{node_id(config)}_{key}")
        ids.add(f"{platform}.{slugify(device + ' ' + component['name'])}")
    return ids
