"""What reaches the model is bounded: capped values, a listing within its token budget, the
static part of the prompt first, names resolved in large houses, arguments checked against
the advertised schema, and every tool failure turned into a result."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from datetime import datetime
from typing import Any

import openai
import pytest

from assistant.agent.catalog import Finder, listing, states_line
from assistant.agent.conversation import CONTROLLABLE, Agent
from assistant.agent.schema import SchemaError, check_schema, validate
from assistant.agent.tools import HomeTools, Tool, ToolOutcome
from assistant.config import AgentConfig, DeviceConfig, EntityConfig, HomeAssistantConfig
from assistant.home.budget import (
    MAX_ATTRIBUTES,
    MAX_SUMMARY_CHARS,
    MAX_TEXT_CHARS,
    cap_value,
    estimate_tokens,
)
from assistant.home.entities import Command, Entity
from assistant.home.registry import Registry
from assistant.link.delivery import Delivery

# --------------------------------------------------------------------------- caps


def test_cap_value_bounds_strings_lists_dicts_depth_and_numbers() -> None:
    assert cap_value("x" * 10_000_000) == "x" * (MAX_TEXT_CHARS - 1) + "…"
    long_list = cap_value(list(range(100_000)))
    assert long_list[:16] == list(range(16)) and long_list[-1] == "… 99984 more"
    deep: Any = "bottom"
    for _ in range(50):
        deep = [deep]
    assert cap_value(deep) == [[["…"]]]
    assert cap_value({str(i): "v" * 300 for i in range(1000)}).keys() <= {str(i) for i in range(16)} | {"…"}
    assert cap_value(math.nan) == "nan" and cap_value(math.inf) == "inf"  # not JSON: the API would refuse it
    assert cap_value(10**300) != 10**300
    for value in (list(range(100_000)), {str(i): ["y" * 500] * 50 for i in range(100)}, deep, "z" * 99999):
        assert len(json.dumps(cap_value(value), ensure_ascii=False)) <= 1400
    assert cap_value({"a": [1, 2.5, None, True, "s"]}) == {"a": [1, 2.5, None, True, "s"]}  # small values unchanged


def entity(entity_id: str, **keys: Any) -> Entity:
    return Entity.from_config(EntityConfig(entity_id=entity_id, **keys))


def test_state_messages_are_capped_where_they_are_stored() -> None:
    light = entity("light.x", schema="json", state_topic="s", json_attributes_topic="a", command_topic="c")
    light.apply("state_topic", "A" * 10_000_000)  # 10 MB on the state topic
    assert light.state is not None and len(light.state) <= MAX_TEXT_CHARS
    light.apply("state_topic", json.dumps({"state": "ON", "effect_list": [f"effect {i}" for i in range(2000)]}))
    light.apply("json_attributes_topic", json.dumps({f"attr{i}": "v" * 100 for i in range(500)}))  # 56 kB: parsed
    assert light.state == "on"
    assert len(light.attributes) <= MAX_ATTRIBUTES
    assert len(light.attributes["effect_list"]) == 17  # 16 kept, one saying how many more
    light.apply("json_attributes_topic", "[" * 100_000 + "]" * 100_000)  # too deep for json.loads: ignored
    assert len(json.dumps(light.summary())) <= MAX_SUMMARY_CHARS + 500

    registry = Registry(HomeAssistantConfig(expose=["*"]))
    registry.update_from_statestream("ss", "ss/sensor/big/state", "9" * 10_000_000)
    registry.update_from_statestream("ss", "ss/sensor/big/forecast", json.dumps([{"t": i} for i in range(100_000)]))
    registry.update_from_statestream("ss", "ss/sensor/big/friendly_name", json.dumps("N" * 100_000))
    big = registry.entities["sensor.big"]
    assert len(big.state or "") <= MAX_TEXT_CHARS and len(big.name) <= 100
    assert len(json.dumps(big.attributes)) < 2000


def test_a_failing_state_template_is_logged_once_and_leaves_the_state(caplog: pytest.LogCaptureFixture) -> None:
    sensor = entity("sensor.ratio", state_topic="s", value_template="{{ (value | float) / 0 }}")
    sensor.set_state("1.0")
    caplog.set_level(logging.DEBUG, logger="assistant.home.entities")
    for payload in ("4", "5", "6"):
        sensor.apply("state_topic", payload)  # raises nothing
    assert sensor.state == "1.0"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "ZeroDivisionError" in warnings[0].getMessage()


# --------------------------------------------------------------------------- schema


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entity_id": {"type": "string", "maxLength": 10},
        "level": {"type": "number", "minimum": 0, "maximum": 100},
        "count": {"type": "integer"},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "rgb": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 255},
            "minItems": 3,
            "maxItems": 3,
        },
    },
    "required": ["entity_id"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([1, 2], "arguments: must be an object"),
        ({}, "arguments: entity_id is required"),
        ({"entity_id": 5}, "entity_id: must be a string"),
        ({"entity_id": "x" * 11}, "entity_id: must have at most 10 characters"),
        ({"entity_id": "a", "level": 101}, "level: must be at most 100"),
        ({"entity_id": "a", "level": -1}, "level: must be at least 0"),
        ({"entity_id": "a", "level": True}, "level: must be a number"),
        ({"entity_id": "a", "level": "50"}, "level: must be a number"),
        ({"entity_id": "a", "count": 1.5}, "count: must be an integer"),
        ({"entity_id": "a", "mode": "c"}, 'mode: must be one of "a", "b"'),
        ({"entity_id": "a", "rgb": [1, 2]}, "rgb: must have at least 3 items"),
        ({"entity_id": "a", "rgb": [1, 2, 3, 4]}, "rgb: must have at most 3 items"),
        ({"entity_id": "a", "rgb": [1, 2, 300]}, "rgb[2]: must be at most 255"),
        (
            {"entity_id": "a", "colour": 1},
            'arguments: unexpected "colour" (allowed: entity_id, level, count, mode, rgb)',
        ),
    ],
)
def test_validator_says_where_and_why(args: Any, message: str) -> None:
    with pytest.raises(SchemaError) as error:
        validate(args, SCHEMA)
    assert str(error.value) == message


def test_validator_accepts_what_the_schema_allows() -> None:
    validate({"entity_id": "a", "level": 50, "count": 2.0, "mode": "b", "rgb": [0, 128, 255]}, SCHEMA)
    with pytest.raises(ValueError, match="not supported"):
        check_schema({"type": "string", "pattern": "^x$"})  # a keyword it would silently ignore
    registry = Registry(
        HomeAssistantConfig(
            expose=["*"], entities=[EntityConfig(entity_id=f"{d}.x", command_topic=f"t/{d}") for d in CONTROLLABLE]
        )
    )
    for tool in HomeTools(registry, publish_nothing).tools():  # every advertised schema is one it can check
        check_schema(tool.parameters)


async def publish_nothing(command: Command) -> Delivery:
    raise AssertionError(f"nothing may be published: {command}")


def test_tool_run_turns_every_failure_into_a_result(caplog: pytest.LogCaptureFixture) -> None:
    async def explode(args: dict[str, Any]) -> ToolOutcome:
        raise ZeroDivisionError("division by zero")

    tool = Tool("t", "a tool", {"type": "object", "properties": {"entity_id": {"type": "string"}}}, explode)
    outcome = asyncio.run(tool.run({"entity_id": "light.x"}))
    assert json.loads(outcome.content) == {"error": "t failed: ZeroDivisionError: division by zero"}
    assert [(a.entity_id, a.ok) for a in outcome.actions] == [("light.x", False)]
    assert sum(r.exc_info is not None for r in caplog.records) == 1  # logged once, with its stack

    registry = Registry(
        HomeAssistantConfig(
            expose=["light.*"],
            entities=[
                EntityConfig(
                    entity_id="light.abc", command_topic="c1", brightness_command_topic="b1", brightness_scale="abc"
                ),
                EntityConfig(
                    entity_id="light.zero", command_topic="c2", brightness_command_topic="b2", brightness_scale=0
                ),
                EntityConfig(
                    entity_id="light.tpl",
                    command_topic="c",
                    brightness_command_topic="b",
                    brightness_command_template="{{ 1/0 }}",
                ),
            ],
        )
    )
    turn_on = {t.name: t for t in HomeTools(registry, publish_nothing).tools()}["turn_on"]
    for entity_id, expected in (
        ("light.abc", "invalid brightness_scale 'abc'"),
        ("light.zero", "invalid brightness_scale 0"),
        ("light.tpl", "ZeroDivisionError"),
    ):
        outcome = asyncio.run(turn_on.run({"entity_id": entity_id, "brightness_pct": 50}))
        assert expected in json.loads(outcome.content)["error"], outcome.content
        assert outcome.actions[-1].ok is False and outcome.actions[-1].entity_id == entity_id


def test_unexposed_and_unknown_ids_are_refused_at_call_time() -> None:
    registry = Registry(
        HomeAssistantConfig(
            expose=["light.*"],
            entities=[
                EntityConfig(entity_id="light.a", command_topic="a"),
                EntityConfig(entity_id="lock.door", command_topic="d"),
            ],
        )
    )
    turn_on = {t.name: t for t in HomeTools(registry, publish_nothing).tools()}["turn_on"]
    for entity_id in ("lock.door", "light.nope", "light.a\n"):
        outcome = asyncio.run(turn_on.run({"entity_id": entity_id}))
        assert "no exposed entity" in json.loads(outcome.content)["error"]


# --------------------------------------------------------------------------- listing


AREAS = ["Kitchen", "Living room", "Bedroom", "Office", "Hall", "Garage", "Bathroom", "Garden"]
DEVICES = {
    "light": ["Ceiling light", "Floor lamp", "Desk lamp", "Spotlights", "LED strip"],
    "switch": ["Coffee maker", "Heater plug", "TV socket"],
    "sensor": ["Temperature", "Humidity", "Illuminance", "Power", "Battery"],
    "binary_sensor": ["Motion", "Window", "Door"],
    "cover": ["Blind", "Shutter"],
    "climate": ["Thermostat"],
}


def house(size: int, seed: int = 1) -> Registry:
    """`size` entities with realistic names, areas and attributes."""
    rng = random.Random(seed)
    registry = Registry(HomeAssistantConfig(expose=["*"]))
    count = 0
    while count < size:
        domain = rng.choice(list(DEVICES))
        area = rng.choice(AREAS) + ("" if count < 100 else f" {count // 100}")  # 8 x 19 names an area group
        name = f"{area} {rng.choice(DEVICES[domain])}"
        object_id = "_".join(name.lower().split())
        if f"{domain}.{object_id}" in registry.entities:
            continue
        item = Entity(
            f"{domain}.{object_id}",
            name,
            [],
            area,
            {"command_topic": f"x/{domain}/{object_id}"} if domain in CONTROLLABLE else {},
        )
        item.set_state(str(rng.choice(["on", "off", "21.5", "open"])))
        item.set_attributes({"friendly_name": name, "unit_of_measurement": "°C", "device_class": "temperature"})
        registry.add(item)
        count += 1
    return registry


@pytest.mark.parametrize("size", [10, 100, 1000, 5000])
def test_listing_stays_within_its_budget(size: int) -> None:
    entities = house(size).exposed()
    result = listing(entities, 2000, CONTROLLABLE)
    assert estimate_tokens(result.text) <= 2000
    if size <= 100:
        assert result.complete and all(e.entity_id in result.text for e in entities)
    if size >= 1000:  # whole domains left out, controllable ones listed first
        assert not result.complete and "Find them with find_entities" in result.text
        listed = {e.domain for e in entities if e.entity_id in result.text}
        # the smallest controllable domain (76 thermostats) fits whole at 1000; none fits at 5000
        assert listed == ({"climate"} if size == 1000 else set()), listed
    assert states_line(entities[:2]) == f"Current states: {entities[0].entity_id} {entities[0].state} °C; " + (
        f"{entities[1].entity_id} {entities[1].state} °C"
    )
    # the whole system prompt: the instructions, the table within listing_tokens, one line on reading
    # states, the time; no state of any entity, whatever the house (with or without states_in_prompt)
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    for states in (False, True):
        config = AgentConfig(instructions="Be brief.", listing_tokens=2000, states_in_prompt=states)
        system = Agent(config, DeviceConfig(), client, house(size), list).instructions()
        assert estimate_tokens(system) <= 2000 + 100, (size, states, estimate_tokens(system))
        assert ("Current states:" in system) == (states and size <= 10), size


def test_names_are_found_among_thousands() -> None:
    entities = house(5000).exposed()
    finder = Finder(entities)
    rng = random.Random(7)
    found = 0
    sample = rng.sample(entities, 50)
    for target in sample:
        query = target.name.lower()
        if rng.random() < 0.3:  # "the ceiling light in the kitchen 3"
            area = (target.area or "").lower()
            query = f"the {query.removeprefix(area).strip()}s in the {area}"
        matches, _more = finder.find(query)
        found += bool(matches) and matches[0].entity_id == target.entity_id
    assert found >= 48, found
    lights, _more = finder.find("", domain="lights", area="kitchen")  # the area named exactly, not "Kitchen 12"
    expected = [e for e in entities if e.domain == "light" and e.area == "Kitchen"]
    assert sorted(lights, key=lambda e: e.entity_id) == expected
    sensors, more = finder.find("", domain="sensor", limit=3)
    assert len(sensors) == 3 and more == sum(e.domain == "sensor" for e in entities) - 3
    ceiling = next(e for e in entities if e.name.endswith("Ceiling light"))
    assert finder.find("ceilng lihgt", area=ceiling.area)[0][0] == ceiling  # typos
    assert finder.find("xylophone") == ([], 0)


def test_static_part_first_and_stable_across_turns() -> None:
    registry = house(20)
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    config = AgentConfig(instructions="You are {{ device.name }}.")
    agent = Agent(config, DeviceConfig(name="Testy"), client, registry, list)
    first = agent.instructions()
    for item in registry.exposed():
        item.set_state("changed")
    second = agent.instructions()
    time_line = f"The current time is {datetime.now().astimezone():%A}"
    static = first[: first.index(time_line)]
    assert first.startswith("You are Testy.\n" + "Entities by area")
    assert second.startswith(static) and "changed" not in second  # states are read with get_state
    assert "call get_state" in static

    with_states = Agent(config.model_copy(update={"states_in_prompt": True}), DeviceConfig(), client, registry, list)
    third = with_states.instructions()
    table = static[: static.index("Current states are not listed")].replace("Testy", "Assistant")
    assert third.startswith(table) and "use the current states at the end" in third  # the same table, then ...
    assert "Current states:" in third[len(static) :] and "changed" in third[third.index(time_line) :]
