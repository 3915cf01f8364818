"""Entity payloads follow Home Assistant's MQTT platforms; the allowlist is enforced."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from assistant.config import EntityConfig, HomeAssistantConfig
from assistant.homeassistant import Command, CommandError, Entity, Registry, parse_state, turn_off, turn_on
from assistant.tools import HomeTools


def entity(entity_id: str, **keys: Any) -> Entity:
    return Entity.from_config(EntityConfig(entity_id=entity_id, **keys))


def test_switch_default_and_custom_payloads() -> None:
    plain = entity("switch.fan", command_topic="t")
    assert turn_on(plain) == [Command("t", "ON")]
    assert turn_off(plain) == [Command("t", "OFF")]
    custom = entity("switch.heater", command_topic="t", payload_on="1", payload_off="0", retain=True)
    assert turn_on(custom) == [Command("t", "1", retain=True)]
    assert turn_off(custom) == [Command("t", "0", retain=True)]


def test_light_default_schema_brightness() -> None:
    light = entity("light.kitchen", command_topic="c", brightness_command_topic="b")
    assert turn_on(light, 50) == [Command("c", "ON"), Command("b", "128")]
    scaled = entity("light.desk", command_topic="c", brightness_command_topic="b", brightness_scale=100)
    assert turn_on(scaled, 30) == [Command("c", "ON"), Command("b", "30")]
    with pytest.raises(CommandError, match="does not support brightness"):
        turn_on(entity("light.plain", command_topic="c"), 40)


def test_light_json_schema() -> None:
    light = entity("light.hall", schema="json", command_topic="z2m/hall/set")
    assert turn_on(light, 100) == [Command("z2m/hall/set", json.dumps({"state": "ON", "brightness": 255}))]
    assert turn_off(light) == [Command("z2m/hall/set", json.dumps({"state": "OFF"}))]
    assert parse_state(light, '{"state":"ON","brightness":77}') == ("on", {"brightness": 77})


def test_states() -> None:
    assert parse_state(entity("switch.a", command_topic="t"), "ON") == ("on", {})
    assert parse_state(entity("switch.b", command_topic="t", state_off="off"), "off") == ("off", {})
    assert parse_state(entity("sensor.t", state_topic="s", unit_of_measurement="°C"), "21.5") == (
        "21.5",
        {"unit_of_measurement": "°C"},
    )


def test_sensor_cannot_be_switched() -> None:
    with pytest.raises(CommandError):
        turn_on(entity("sensor.t", state_topic="s"))


def registry() -> Registry:
    return Registry(
        HomeAssistantConfig(
            expose=["light.*"],
            entities=[
                EntityConfig(entity_id="light.kitchen", command_topic="k/set"),
                EntityConfig(entity_id="lock.front_door", command_topic="door/set"),
            ],
        )
    )


def test_registry_exposes_only_allowlisted() -> None:
    reg = registry()
    assert [e.entity_id for e in reg.exposed()] == ["light.kitchen"]
    with pytest.raises(CommandError, match="no exposed entity"):
        reg.get_exposed("lock.front_door")


def test_tools_refuse_unexposed_entity_whatever_the_model_asks() -> None:
    published: list[Command] = []

    async def publish(command: Command) -> bool:
        published.append(command)
        return True

    tools = {t.name: t for t in HomeTools(registry(), publish).tools()}
    assert tools["turn_on"].parameters["properties"]["entity_id"]["enum"] == ["light.kitchen"]
    outcome = asyncio.run(tools["turn_on"].call({"entity_id": "lock.front_door"}))
    assert "error" in json.loads(outcome.content)
    assert outcome.actions[0].ok is False
    assert published == []
    outcome = asyncio.run(tools["turn_on"].call({"entity_id": "light.kitchen"}))
    assert json.loads(outcome.content)["result"] == "done"
    assert published == [Command("k/set", "ON")]
    outcome = asyncio.run(tools["turn_on"].call({"entity_id": ["light.kitchen"]}))
    assert outcome.actions[0].ok is False
