"""Home Assistant MQTT discovery parsing, on payloads shaped like the real publishers' ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from assistant.home.discovery import (
    Discovered,
    DiscoveryError,
    DiscoveryUpdate,
    discovery_topics,
    expand,
    parse_discovery,
    slugify,
)

ORIGIN_Z2M = {"name": "Zigbee2MQTT", "sw": "1.40.2", "url": "https://www.zigbee2mqtt.io"}
Z2M_AVAILABILITY = [
    {"t": "zigbee2mqtt/bridge/state", "val_tpl": "{{ value_json.state }}"},
    {"t": "zigbee2mqtt/Kitchen Ceiling/availability", "val_tpl": "{{ value_json.state }}"},
]

# zigbee2mqtt: JSON-schema light, long topics without `~`, main entity of its device (name null).
Z2M_LIGHT_TOPIC = "homeassistant/light/0x00178801099f1b2a/light/config"
Z2M_LIGHT: dict[str, Any] = {
    "avty": Z2M_AVAILABILITY,
    "avty_mode": "all",
    "bri": True,
    "bri_scl": 254,
    "brightness": True,
    "clrm": True,
    "cmd_t": "zigbee2mqtt/Kitchen Ceiling/set",
    "dev": {
        "ids": ["zigbee2mqtt_0x00178801099f1b2a"],
        "name": "Kitchen Ceiling",
        "mf": "Signify Netherlands B.V.",
        "mdl": "Hue White and Color Ambiance GU10 (8719514339125)",
        "sw": "1.104.2",
        "sa": "Kitchen",
        "via_device": "zigbee2mqtt_bridge_0x00124b0022813501",
    },
    "json_attr_t": "zigbee2mqtt/Kitchen Ceiling",
    "max_mirs": 500,
    "min_mirs": 153,
    "name": None,
    "o": ORIGIN_Z2M,
    "schema": "json",
    "stat_t": "zigbee2mqtt/Kitchen Ceiling",
    "sup_clrm": ["xy", "color_temp"],
    "uniq_id": "0x00178801099f1b2a_light_zigbee2mqtt",
}

# zigbee2mqtt: a smart plug, its switch and its power sensor.
Z2M_PLUG_DEVICE = {
    "ids": ["zigbee2mqtt_0x0c4314fffe6b2a44"],
    "name": "Coffee Machine",
    "mf": "IKEA",
    "mdl": "TRETAKT smart plug (E2204)",
    "sa": "Kitchen",
}
Z2M_SWITCH: dict[str, Any] = {
    "avty": Z2M_AVAILABILITY[:1],
    "cmd_t": "zigbee2mqtt/Coffee Machine/set",
    "dev": Z2M_PLUG_DEVICE,
    "name": None,
    "obj_id": "coffee_machine",
    "o": ORIGIN_Z2M,
    "pl_off": "OFF",
    "pl_on": "ON",
    "stat_off": "OFF",
    "stat_on": "ON",
    "stat_t": "zigbee2mqtt/Coffee Machine",
    "uniq_id": "0x0c4314fffe6b2a44_switch_zigbee2mqtt",
    "val_tpl": "{{ value_json.state }}",
}
Z2M_POWER: dict[str, Any] = {
    "avty": Z2M_AVAILABILITY[:1],
    "dev": Z2M_PLUG_DEVICE,
    "dev_cla": "power",
    "ent_cat": "diagnostic",
    "name": "Power",
    "o": ORIGIN_Z2M,
    "stat_cla": "measurement",
    "stat_t": "zigbee2mqtt/Coffee Machine",
    "uniq_id": "0x0c4314fffe6b2a44_power_zigbee2mqtt",
    "unit_of_meas": "W",
    "val_tpl": "{{ value_json.power }}",
}

# Tasmota (SetOption19 discovery): `~` base topic, a device identified but not named.
TASMOTA_TOPIC = "homeassistant/switch/ABC123_RL_1/config"
TASMOTA_RELAY: dict[str, Any] = {
    "name": "Hallway Light",
    "~": "tasmota_ABC/",
    "cmd_t": "~cmnd/POWER",
    "stat_t": "~tele/STATE",
    "val_tpl": "{{value_json.POWER}}",
    "pl_off": "OFF",
    "pl_on": "ON",
    "avty_t": "~tele/LWT",
    "pl_avail": "Online",
    "pl_not_avail": "Offline",
    "uniq_id": "ABC123_RL_1",
    "dev": {"cns": [["mac", "A4:CF:12:AB:C1:23"]]},
}

# ESPHome: node id in the topic, device named after the node.
ESPHOME_TOPIC = "homeassistant/cover/garage-door/garage_door/config"
ESPHOME_COVER: dict[str, Any] = {
    "dev_cla": "garage",
    "name": "Garage Door",
    "stat_t": "garage-door/cover/garage_door/state",
    "cmd_t": "garage-door/cover/garage_door/command",
    "pos_t": "garage-door/cover/garage_door/position/state",
    "set_pos_t": "garage-door/cover/garage_door/position/command",
    "avty_t": "garage-door/status",
    "uniq_id": "ESPcovergarage_door",
    "dev": {
        "ids": "a4cf12b3c4d5",
        "name": "garage-door",
        "sw": "esphome v2024.6.1 Jun 18 2024, 10:00:00",
        "mdl": "nodemcuv2",
        "mf": "espressif",
        "sa": "Garage",
    },
    "o": {"name": "esphome", "sw": "2024.6.1", "url": "https://esphome.io"},
}

# Device-based discovery: shared device, origin, `~`, availability and state topic.
DEVICE_TOPIC = "homeassistant/device/weather01/config"
LAMP = {"p": "light", "name": "Lamp", "cmd_t": "~/lamp/set", "stat_t": "~/lamp/state", "uniq_id": "weather01_lamp"}
TEMPERATURE = {
    "p": "sensor",
    "dev_cla": "temperature",
    "unit_of_meas": "°C",
    "val_tpl": "{{ value_json.temperature }}",
    "uniq_id": "weather01_t",
}


def device_payload(components: dict[str, Any]) -> dict[str, Any]:
    """A device-based payload around `components`, as a bla2mqtt-style bridge sends it."""
    return {
        "dev": {"ids": "weather01", "name": "Balcony", "mf": "Bla electronics", "mdl": "xya", "sa": "Balcony"},
        "o": {"name": "bla2mqtt", "sw": "2.1", "url": "https://bla2mqtt.example.com/support"},
        "~": "bla2mqtt/weather01",
        "avty_t": "~/availability",
        "stat_t": "~/state",
        "qos": 1,
        "cmps": components,
    }


def parse(topic: str, config: dict[str, Any] | list[Any], prefix: str = "homeassistant") -> DiscoveryUpdate:
    update = parse_discovery(topic, json.dumps(config).encode(), prefix)
    assert update is not None
    return update


def only(topic: str, config: dict[str, Any]) -> Discovered:
    update = parse(topic, config)
    assert update.source == topic
    assert len(update.entities) == 1
    return update.entities[0]


def test_discovery_topics_are_the_two_ha_filters() -> None:
    assert discovery_topics("homeassistant") == ["homeassistant/+/+/config", "homeassistant/+/+/+/config"]


def test_zigbee2mqtt_light_is_named_after_its_device() -> None:
    light = only(Z2M_LIGHT_TOPIC, Z2M_LIGHT)
    assert (light.domain, light.entity_id, light.name, light.area) == (
        "light",
        "light.kitchen_ceiling",
        "Kitchen Ceiling",
        "Kitchen",
    )
    assert light.unique_id == "0x00178801099f1b2a_light_zigbee2mqtt"
    config = light.config
    assert config["command_topic"] == "zigbee2mqtt/Kitchen Ceiling/set"
    assert config["state_topic"] == "zigbee2mqtt/Kitchen Ceiling"
    assert config["schema"] == "json"
    assert config["brightness_scale"] == 254
    assert config["color_mode"] is True
    assert config["supported_color_modes"] == ["xy", "color_temp"]
    assert (config["min_mireds"], config["max_mireds"]) == (153, 500)
    assert config["availability_mode"] == "all"
    assert config["availability"][1] == {
        "topic": "zigbee2mqtt/Kitchen Ceiling/availability",
        "value_template": "{{ value_json.state }}",
    }
    assert config["device"] == {
        "identifiers": ["zigbee2mqtt_0x00178801099f1b2a"],
        "name": "Kitchen Ceiling",
        "manufacturer": "Signify Netherlands B.V.",
        "model": "Hue White and Color Ambiance GU10 (8719514339125)",
        "sw_version": "1.104.2",
        "suggested_area": "Kitchen",
        "via_device": "zigbee2mqtt_bridge_0x00124b0022813501",
    }
    assert config["origin"] == {
        "name": "Zigbee2MQTT",
        "sw_version": "1.40.2",
        "support_url": "https://www.zigbee2mqtt.io",
    }
    # `bri` is no HA abbreviation (JSON lights say `brightness`), so it stays as sent.
    assert config["bri"] is True


def test_zigbee2mqtt_plug_switch_and_power_sensor() -> None:
    switch = only("homeassistant/switch/0x0c4314fffe6b2a44/switch/config", Z2M_SWITCH)
    assert (switch.entity_id, switch.name, switch.area) == ("switch.coffee_machine", "Coffee Machine", "Kitchen")
    assert switch.config["payload_on"] == "ON"
    assert switch.config["state_off"] == "OFF"
    assert switch.config["value_template"] == "{{ value_json.state }}"
    assert switch.config["object_id"] == "coffee_machine"
    power = only("homeassistant/sensor/0x0c4314fffe6b2a44/power/config", Z2M_POWER)
    assert (power.entity_id, power.name) == ("sensor.coffee_machine_power", "Coffee Machine Power")
    assert power.config["unit_of_measurement"] == "W"
    assert power.config["entity_category"] == "diagnostic"
    assert power.config["state_class"] == "measurement"


def test_tasmota_relay_resolves_the_base_topic() -> None:
    relay = only(TASMOTA_TOPIC, TASMOTA_RELAY)
    assert (relay.entity_id, relay.name, relay.area) == ("switch.hallway_light", "Hallway Light", None)
    assert relay.config["command_topic"] == "tasmota_ABC/cmnd/POWER"
    assert relay.config["state_topic"] == "tasmota_ABC/tele/STATE"
    assert relay.config["availability_topic"] == "tasmota_ABC/tele/LWT"
    assert relay.config["payload_not_available"] == "Offline"
    assert relay.config["value_template"] == "{{value_json.POWER}}"
    assert relay.config["device"] == {"connections": [["mac", "A4:CF:12:AB:C1:23"]]}
    assert "~" not in relay.config


def test_esphome_cover_keeps_the_device_prefix_ha_adds() -> None:
    cover = only(ESPHOME_TOPIC, ESPHOME_COVER)
    assert (cover.domain, cover.area) == ("cover", "Garage")
    assert (cover.entity_id, cover.name) == ("cover.garage_door_garage_door", "garage-door Garage Door")
    assert cover.config["set_position_topic"] == "garage-door/cover/garage_door/position/command"
    assert cover.config["position_topic"] == "garage-door/cover/garage_door/position/state"
    assert cover.config["device_class"] == "garage"


def test_device_discovery_yields_one_entity_per_component() -> None:
    update = parse(DEVICE_TOPIC, device_payload({"lamp": LAMP, "temp": TEMPERATURE}))
    assert update.source == DEVICE_TOPIC
    lamp, temperature = update.entities
    assert (lamp.domain, lamp.entity_id, lamp.name, lamp.area) == (
        "light",
        "light.balcony_lamp",
        "Balcony Lamp",
        "Balcony",
    )
    assert lamp.config["command_topic"] == "bla2mqtt/weather01/lamp/set"
    assert lamp.config["state_topic"] == "bla2mqtt/weather01/lamp/state", "the component's own option wins"
    assert lamp.config["availability_topic"] == "bla2mqtt/weather01/availability"
    assert lamp.config["qos"] == 1
    assert lamp.config["device"]["suggested_area"] == "Balcony"
    assert lamp.config["origin"]["support_url"] == "https://bla2mqtt.example.com/support"
    assert not {"~", "platform", "components"} & lamp.config.keys()
    assert (temperature.domain, temperature.entity_id) == ("sensor", "sensor.balcony_temperature")
    assert temperature.name == "Balcony Temperature", "unnamed sensors are named by device class"
    assert temperature.config["state_topic"] == "bla2mqtt/weather01/state"
    assert temperature.config["unit_of_measurement"] == "°C"
    assert temperature.unique_id == "weather01_t"


def test_device_discovery_platform_only_component_is_removed() -> None:
    update = parse(DEVICE_TOPIC, device_payload({"lamp": {"p": "light"}, "temp": TEMPERATURE}))
    assert [e.entity_id for e in update.entities] == ["sensor.balcony_temperature"]


def test_device_discovery_device_and_origin_come_from_the_top() -> None:
    own_device = {**LAMP, "dev": {"ids": "other", "name": "Other"}}
    (lamp,) = parse(DEVICE_TOPIC, device_payload({"lamp": own_device})).entities
    assert lamp.config["device"]["name"] == "Balcony"


def test_empty_payload_removes_everything_from_the_topic() -> None:
    for topic in (DEVICE_TOPIC, Z2M_LIGHT_TOPIC, "homeassistant/device/bridge/weather01/config"):
        assert parse_discovery(topic, b"") == DiscoveryUpdate(topic, [])


def test_empty_object_and_migration_request_remove_like_ha() -> None:
    assert parse(TASMOTA_TOPIC, {}).entities == []
    assert parse(TASMOTA_TOPIC, {"migr_discvry": True}).entities == []
    assert parse(DEVICE_TOPIC, {"migrate_discovery": True}).entities == []


@pytest.mark.parametrize(
    ("config", "entity_id", "name"),
    [
        ({"name": "Ceiling", "dev": {"ids": "k1", "name": "Kitchen"}}, "light.kitchen_ceiling", "Kitchen Ceiling"),
        ({"name": None, "dev": {"ids": "k1", "name": "Kitchen"}}, "light.kitchen", "Kitchen"),
        ({"dev": {"ids": "k1", "name": "Kitchen"}}, "light.kitchen_mqtt_lightentity", "Kitchen MQTT LightEntity"),
        ({"schema": "json", "dev": {"ids": "k1", "name": "Kitchen"}}, "light.kitchen_mqtt_json_light", None),
        ({"name": "Ceiling"}, "light.ceiling", "Ceiling"),
        ({"name": "Ceiling", "dev": {"ids": "k1"}}, "light.ceiling", "Ceiling"),
        ({}, "light.mqtt_lightentity", "MQTT LightEntity"),
        ({"name": "Ceiling", "obj_id": "my lamp", "dev": {"ids": "k1", "name": "K"}}, "light.k_ceiling", "K Ceiling"),
        ({"name": "Ceiling", "obj_id": "my_lamp", "def_ent_id": "light.desk"}, "light.desk", "Ceiling"),
        ({"name": "Ceiling", "default_entity_id": "switch.desk"}, "light.desk", "Ceiling"),
        ({"name": "Lámpara Café", "dev": {"ids": "s1", "name": "Salón"}}, "light.salon_lampara_cafe", None),
        ({"name": None}, "light.relay_2", "relay_2"),
        ({"name": "!!!"}, "light.relay_2", "!!!"),
    ],
)
def test_entity_ids_and_names_follow_ha(config: dict[str, Any], entity_id: str, name: str | None) -> None:
    entity = only("homeassistant/light/node1/relay_2/config", {"uniq_id": "u1", "cmd_t": "x/set", **config})
    assert entity.entity_id == entity_id
    if name is not None:
        assert entity.name == name


def test_device_only_counts_for_entities_with_a_unique_id() -> None:
    entity = only(
        "homeassistant/light/ceiling/config",
        {"name": "Ceiling", "dev": {"ids": "k1", "name": "Kitchen", "sa": "Kitchen"}},
    )
    assert (entity.entity_id, entity.name, entity.unique_id) == ("light.ceiling", "Ceiling", None)
    assert entity.area == "Kitchen"


def test_unnamed_sensors_by_device_class_except_enum() -> None:
    device = {"ids": "b1", "name": "Bedroom"}
    motion = only("homeassistant/binary_sensor/b1/motion/config", {"uniq_id": "m", "dev_cla": "motion", "dev": device})
    assert (motion.entity_id, motion.name) == ("binary_sensor.bedroom_motion", "Bedroom Motion")
    mode = only("homeassistant/sensor/b1/mode/config", {"uniq_id": "e", "dev_cla": "enum", "dev": device})
    assert mode.name == "Bedroom MQTT Sensor"
    co2 = only("homeassistant/sensor/b1/co2/config", {"uniq_id": "c", "dev_cla": "carbon_dioxide", "dev": device})
    assert co2.entity_id == "sensor.bedroom_carbon_dioxide"


def test_slugify_like_ha() -> None:
    assert slugify("Kitchen Ceiling") == "kitchen_ceiling"
    assert slugify("  Kid's   Room -- 2 ") == "kid_s_room_2"
    assert slugify("Straße Ærø Crème Brûlée") == "strasse_aero_creme_brulee"
    assert slugify("Living_Room__Lamp") == "living_room_lamp"
    assert slugify("1,000 lm") == "1000_lm"
    assert slugify("") == ""
    assert slugify("日本") == "unknown"


def test_expand_abbreviations_and_keeps_unknown_keys() -> None:
    raw = {
        "cmd_t": "a/set",
        "stat_t": "a/state",
        "uniq_id": "u",
        "avty_t": "a/avail",
        "pl_on": "1",
        "bri_cmd_t": "a/bri",
        "fx_list": ["rainbow"],
        "sup_feat": 3,
        "custom_key": {"cmd_t": "nested stays"},
        "dev": {"ids": "x", "cns": [["mac", "01"]], "mf": "M", "mdl": "X", "mdl_id": "X1", "sw": "1", "hw": "2"},
        "o": {"name": "app", "sw": "3", "url": "https://example.org"},
    }
    config = expand(raw)
    assert config == {
        "command_topic": "a/set",
        "state_topic": "a/state",
        "unique_id": "u",
        "availability_topic": "a/avail",
        "payload_on": "1",
        "brightness_command_topic": "a/bri",
        "effect_list": ["rainbow"],
        "supported_features": 3,
        "custom_key": {"cmd_t": "nested stays"},
        "device": {
            "identifiers": "x",
            "connections": [["mac", "01"]],
            "manufacturer": "M",
            "model": "X",
            "model_id": "X1",
            "sw_version": "1",
            "hw_version": "2",
        },
        "origin": {"name": "app", "sw_version": "3", "support_url": "https://example.org"},
    }
    assert "cmd_t" in raw and raw["dev"]["ids"] == "x", "the input is left alone"


def test_expand_abbreviation_beats_long_key() -> None:
    assert expand({"command_topic": "long", "cmd_t": "short"}) == {"command_topic": "short"}
    assert expand({"cmd_t": "short", "command_topic": "long"}) == {"command_topic": "short"}


def test_expand_base_topic_rules() -> None:
    config = expand({
        "~": "home/lamp",
        "cmd_t": "~/set",
        "stat_t": "state/~",
        "json_attr_t": "~",
        "t": "~/tag",
        "val_tpl": "~/not a topic",
        "name": "~",
        "avty": [{"t": "~/avail"}, {"topic": "other/~"}, "odd"],
        "pos_t": "a/~/b",
    })  # fmt: skip
    assert config == {
        "command_topic": "home/lamp/set",
        "state_topic": "state/home/lamp",
        "json_attributes_topic": "home/lamp",
        "topic": "home/lamp/tag",
        "value_template": "~/not a topic",
        "name": "~",
        "availability": [{"topic": "home/lamp/avail"}, {"topic": "other/home/lamp"}, "odd"],
        "position_topic": "a/~/b",
    }


def test_expand_single_availability_mapping() -> None:
    assert expand({"~": "b", "avty": {"t": "~/x", "pl_avail": "up"}}) == {
        "availability": {"topic": "b/x", "payload_available": "up"}
    }


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        (Z2M_LIGHT_TOPIC, b"\xff\xfe\x00\x01", "UTF-8"),
        (Z2M_LIGHT_TOPIC, b"ON", "JSON"),
        (Z2M_LIGHT_TOPIC, b'[{"name": "x"}]', "object"),
        (Z2M_LIGHT_TOPIC, b'"light"', "object"),
        (DEVICE_TOPIC, json.dumps({"dev": {"ids": "d"}, "cmps": [LAMP]}).encode(), "cmps"),
        (DEVICE_TOPIC, json.dumps({"dev": {"ids": "d"}}).encode(), "cmps"),
        (DEVICE_TOPIC, json.dumps(device_payload({"lamp": {"name": "Lamp"}})).encode(), "platform"),
        (DEVICE_TOPIC, json.dumps(device_payload({"lamp": {"p": "Light!"}})).encode(), "platform"),
        (DEVICE_TOPIC, json.dumps(device_payload({"lamp": "light"})).encode(), "object"),
        ("homeassistant/Light/kitchen/config", b"{}", "domain"),
        ("homeassistant/light/kitchen.ceiling/config", b"{}", "id"),
        ("homeassistant/light/kitchen//config", b"{}", "id"),
    ],
)
def test_bad_payloads_and_topics_raise(topic: str, payload: bytes, why: str) -> None:
    with pytest.raises(DiscoveryError, match=why):
        parse_discovery(topic, payload)


@pytest.mark.parametrize(
    "topic",
    [
        "homeassistant/status",
        "zigbee2mqtt/Kitchen Ceiling",
        "homeassistant/light/kitchen/state",
        "homeassistant/light/config",
        "homeassistant/light/a/b/c/config",
        "other/light/kitchen/config",
        "homeassistantx/light/kitchen/config",
    ],
)
def test_other_topics_are_not_discovery(topic: str) -> None:
    assert parse_discovery(topic, b'{"name": "x"}') is None


def test_custom_prefix() -> None:
    (entity,) = parse("ha/discovery/switch/relay/config", {"name": "Relay"}, "ha/discovery").entities
    assert entity.entity_id == "switch.relay"
    assert parse_discovery(TASMOTA_TOPIC, json.dumps(TASMOTA_RELAY).encode(), "ha/discovery") is None


@pytest.mark.parametrize(
    ("version", "config", "entity_id"),
    [
        # before 2025.10 only object_id counts
        ((2025, 4), {"obj_id": "shed_power", "def_ent_id": "switch.shed_heater"}, "switch.shed_power"),
        ((2024, 11), {"default_entity_id": "switch.shed_heater"}, "switch.shed"),
        # from 2025.10 default_entity_id wins; object_id still counts without it, until 2026.4
        ((2025, 10), {"obj_id": "shed_power", "def_ent_id": "switch.shed_heater"}, "switch.shed_heater"),
        ((2025, 10), {"obj_id": "shed_power"}, "switch.shed_power"),
        ((2026, 3), {"obj_id": "shed_power"}, "switch.shed_power"),
        ((2026, 4), {"obj_id": "shed_power"}, "switch.shed"),
        (None, {"obj_id": "shed_power", "def_ent_id": "switch.shed_heater"}, "switch.shed_heater"),
        (None, {"obj_id": "shed_power"}, "switch.shed"),
    ],
)
def test_entity_id_rules_follow_the_home_assistant_version(
    version: tuple[int, int] | None, config: dict[str, Any], entity_id: str
) -> None:
    payload = json.dumps({"name": "Shed", "uniq_id": "s1", "cmd_t": "shed/set", **config}).encode()
    update = parse_discovery("homeassistant/switch/shed/config", payload, version=version)
    assert update is not None
    assert update.entities[0].entity_id == entity_id


def test_device_components_carry_their_component_id() -> None:
    update = parse(DEVICE_TOPIC, device_payload({"lamp": LAMP}))
    assert [e.component for e in update.entities] == ["lamp"]
    assert only(TASMOTA_TOPIC, TASMOTA_RELAY).component is None
