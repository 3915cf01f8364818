"""What one more entity costs in every request, and how the model reads states instead.

The prompt lists ids, names and areas (as Home Assistant's "Static Context" does), never
states or attributes; no tool lists the entities; `get_state` returns a state with the
attributes that say how the entity is now. Tokens are the daemon's own estimate
(characters / 3, which errs high: bench/prompt_tokens.py compares with tiktoken).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai

from assistant.agent.catalog import listing
from assistant.agent.conversation import CONTROLLABLE, Agent
from assistant.agent.tools import HomeTools
from assistant.config import AgentConfig, DeviceConfig, HomeAssistantConfig
from assistant.home.budget import estimate_tokens
from assistant.home.entities import Command, Entity
from assistant.home.registry import Registry
from assistant.link.delivery import Delivery

AREAS = ["Kitchen", "Living room", "Dining room", "Hall", "Bedroom", "Office", "Garage", "Bathroom", "Kids room"]
LIGHTS = ["Ceiling light", "Floor lamp", "Desk lamp", "Spotlights", "LED strip", "Pendant", "Wall light", "Chandelier"]
SWITCHES = ["Coffee maker", "Heater plug", "TV socket", "Kettle"]
PER_ENTITY_BOUND = 15  # Home Assistant's own growth per added light or switch, about 15 tokens


def z2m_light(index: int, registry: Registry, with_diagnostics: bool = False) -> None:
    """A zigbee2mqtt-like light or plug as discovery gives it: state, the attributes Home
    Assistant reports, and (optionally) its diagnostic link-quality sensor."""
    area = AREAS[index % len(AREAS)]
    is_light = index % 3 != 2
    device = (LIGHTS if is_light else SWITCHES)[index // len(AREAS) % (len(LIGHTS) if is_light else len(SWITCHES))]
    name = f"{area} {device}" + (f" {index // 40 + 1}" if index >= 40 else "")
    object_id = "_".join(name.lower().split())
    domain = "light" if is_light else "switch"
    entity = Entity(f"{domain}.{object_id}", name, [], area, {"command_topic": f"zigbee2mqtt/{name}/set"})
    entity.set_state("on" if index % 2 else "off")
    attributes: dict[str, Any] = {"friendly_name": name, "supported_features": 40}
    if is_light:
        attributes |= {
            "brightness": 200 + index % 50,
            "color_mode": "color_temp",
            "color_temp_kelvin": 2700,
            "min_color_temp_kelvin": 2202,
            "max_color_temp_kelvin": 4000,
            "supported_color_modes": ["color_temp"],
            "effect_list": ["blink", "breathe", "okay", "channel_change", "finish_effect", "stop_effect"],
        }
    entity.set_attributes(attributes)
    registry.add(entity)
    if with_diagnostics:
        quality = Entity(
            f"sensor.{object_id}_linkquality",
            f"{name} Linkquality",
            [],
            area,
            {"state_topic": f"zigbee2mqtt/{name}", "entity_category": "diagnostic", "unit_of_measurement": "lqi"},
        )
        quality.set_state(str(100 + index))
        registry.add(quality)


def house(count: int, with_diagnostics: bool = False) -> Registry:
    registry = Registry(HomeAssistantConfig())  # the default `expose`
    for index in range(count):
        z2m_light(index, registry, with_diagnostics)
    return registry


async def publish_nothing(command: Command) -> Delivery:
    raise AssertionError(f"nothing may be published: {command}")


def request(registry: Registry, config: AgentConfig | None = None) -> tuple[str, str]:
    """The system prompt and the tools (as JSON) of one chat request."""
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    tools = HomeTools(registry, publish_nothing)
    agent = Agent(config or AgentConfig(), DeviceConfig(name="Home"), client, registry, tools.tools)
    return agent.instructions(), json.dumps([t.spec() for t in tools.tools()])


def tokens(registry: Registry, config: AgentConfig | None = None) -> int:
    system, tools = request(registry, config)
    return estimate_tokens(system) + estimate_tokens(tools)


def test_an_added_light_or_switch_costs_at_most_15_tokens() -> None:
    base = tokens(house(72))
    grown = tokens(house(96))
    per_entity = (grown - base) / 24
    assert per_entity <= PER_ENTITY_BOUND, per_entity
    assert base <= 2000, base  # Home Assistant's request for the same house is about 2.0k (real tokens)
    # a diagnostic sensor per device (zigbee2mqtt's link quality) is not listed: no extra cost per entity
    assert (tokens(house(96, True)) - tokens(house(72, True))) / 24 <= PER_ENTITY_BOUND


def test_the_prompt_holds_no_state_nor_attribute_and_no_tool_lists_ids() -> None:
    registry = house(72)
    system, tools = request(registry)
    for entity in registry.exposed():
        assert entity.entity_id in system and entity.entity_id not in tools
    assert "color_temp" not in system and "effect_list" not in system and "brightness" not in system
    assert " on;" not in system and " off;" not in system and "Current states:" not in system
    assert "enum" not in tools.replace('"enum": ["open", "close", "stop", "set_position"]', "")


def test_states_in_prompt_brings_the_states_back_within_the_budget() -> None:
    registry = house(12)
    with_states = AgentConfig(states_in_prompt=True)
    system, _tools = request(registry, with_states)
    assert "Current states: " in system and all(f"{e.entity_id} {e.state}" in system for e in registry.exposed())
    system, _tools = request(house(400), with_states)  # too many to fit in listing_tokens: states left out
    assert "Current states:" not in system and estimate_tokens(system) <= with_states.listing_tokens + 200


def test_diagnostic_entities_are_not_listed_but_stay_readable() -> None:
    registry = house(9, with_diagnostics=True)
    result = listing(registry.exposed(), 2500, CONTROLLABLE)
    assert "linkquality" not in result.text and not result.complete
    assert "More entities not listed here: 9 sensor" in result.text
    tools = {t.name: t for t in HomeTools(registry, publish_nothing).tools()}
    found = json.loads(asyncio.run(tools["find_entities"].run({"query": "kitchen ceiling light linkquality"})).content)
    assert found["matches"][0]["entity_id"] == "sensor.kitchen_ceiling_light_linkquality"
    state = json.loads(asyncio.run(tools["get_state"].run({"entity_id": found["matches"][0]["entity_id"]})).content)
    assert state["state"] == "100"


def test_get_state_gives_the_state_and_the_attributes_that_matter() -> None:
    registry = house(3)
    tools = {t.name: t for t in HomeTools(registry, publish_nothing).tools()}
    light = json.loads(asyncio.run(tools["get_state"].run({"entity_id": "light.kitchen_ceiling_light"})).content)
    assert light == {
        "entity_id": "light.kitchen_ceiling_light",
        "name": "Kitchen Ceiling light",
        "state": "off",
        "area": "Kitchen",
        "attributes": {"brightness": 200, "color_temp_kelvin": 2700, "brightness_pct": 78},
    }
    sensor = Entity("sensor.garden_temperature", "Garden temperature", [], "Garden", {"state_topic": "t"})
    sensor.set_state("21.5")
    sensor.set_attributes({"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement"})
    registry.add(sensor)
    outcome = asyncio.run(tools["get_state"].run({"entity_id": "sensor.garden_temperature"}))
    assert json.loads(outcome.content)["attributes"] == {"unit_of_measurement": "°C", "device_class": "temperature"}
    assert outcome.actions == []


def test_an_unknown_id_is_refused_with_the_exposed_ids_it_may_mean() -> None:
    registry = house(20)
    hidden = Entity("lock.kitchen_door", "Kitchen door", [], "Kitchen", {"command_topic": "door/set"})
    registry.add(hidden)  # not exposed by default: never named to the model
    tools = {t.name: t for t in HomeTools(registry, publish_nothing).tools()}
    outcome = asyncio.run(tools["turn_on"].run({"entity_id": "light.kitchen_ceiling"}))
    error = json.loads(outcome.content)["error"]
    assert error.startswith(
        "no exposed entity 'light.kitchen_ceiling'; the closest exposed: light.kitchen_ceiling_light"
    )
    assert outcome.actions[0].status == "refused"
    assert outcome.actions[0].error == "no exposed entity 'light.kitchen_ceiling'"  # event/action: the short message
    error = json.loads(asyncio.run(tools["get_state"].run({"entity_id": "lock.kitchen_door"})).content)["error"]
    assert "lock.kitchen_door" not in error.split(";", 1)[1] and "light.kitchen" in error
    error = json.loads(asyncio.run(tools["turn_off"].run({"entity_id": "fan.nothing_like_it"})).content)["error"]
    assert "exposed ones include light." in error and "and 15 more" in error  # no close match: some valid ids
