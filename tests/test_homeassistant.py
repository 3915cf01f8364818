"""Entity payloads follow Home Assistant's MQTT platforms; states are read back; the allowlist holds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from assistant.agent.tools import HomeTools
from assistant.config import EntityConfig, HomeAssistantConfig
from assistant.home.bridge import ServiceBridge
from assistant.home.commands import ServiceCall, mqtt_commands, service_call
from assistant.home.entities import Command, CommandError, Entity
from assistant.home.registry import Registry
from assistant.link.delivery import Delivery


def entity(entity_id: str, **keys: Any) -> Entity:
    return Entity.from_config(EntityConfig(entity_id=entity_id, **keys))


def cmds(e: Entity, action: str, **params: Any) -> list[tuple[str, str]]:
    return [(c.topic, c.payload) for c in mqtt_commands(e, action, params)]


def test_switch_default_and_custom_payloads() -> None:
    plain = entity("switch.fan", command_topic="t")
    assert cmds(plain, "turn_on") == [("t", "ON")]
    assert cmds(plain, "turn_off") == [("t", "OFF")]
    custom = entity("switch.heater", command_topic="t", payload_on="1", payload_off="0", retain=True)
    assert mqtt_commands(custom, "turn_on", {}) == [Command("t", "1", retain=True)]
    assert cmds(custom, "turn_off") == [("t", "0")]
    templated = entity("switch.t", command_topic="t", command_template='{"POWER": "{{ value }}"}')
    assert cmds(templated, "turn_on") == [("t", '{"POWER": "ON"}')]


def test_light_default_schema() -> None:
    light = entity(
        "light.kitchen",
        command_topic="c",
        brightness_command_topic="b",
        color_temp_command_topic="ct",
        rgb_command_topic="rgb",
    )
    assert cmds(light, "turn_on", brightness_pct=50) == [("c", "ON"), ("b", "128")]
    assert cmds(light, "turn_on", color_temp_kelvin=2500) == [("c", "ON"), ("ct", "400")]  # mireds by default
    assert cmds(light, "turn_on", rgb_color=[255, 0, 10]) == [("c", "ON"), ("rgb", "255,0,10")]
    scaled = entity("light.desk", command_topic="c", brightness_command_topic="b", brightness_scale=100)
    assert cmds(scaled, "turn_on", brightness_pct=30) == [("c", "ON"), ("b", "30")]
    only_brightness = entity("light.x", command_topic="c", brightness_command_topic="b", on_command_type="brightness")
    assert cmds(only_brightness, "turn_on", brightness_pct=100) == [("b", "255")]
    kelvin = entity("light.k", command_topic="c", color_temp_command_topic="ct", color_temp_kelvin=True)
    assert cmds(kelvin, "turn_on", color_temp_kelvin=2700) == [("c", "ON"), ("ct", "2700")]
    with pytest.raises(CommandError, match="brightness_command_topic"):
        mqtt_commands(entity("light.plain", command_topic="c"), "turn_on", {"brightness_pct": 40})


def test_light_json_schema() -> None:
    light = entity("light.hall", schema="json", command_topic="z2m/hall/set")
    assert cmds(light, "turn_on", brightness_pct=100, color_temp_kelvin=4000, rgb_color=[1, 2, 3]) == [
        (
            "z2m/hall/set",
            json.dumps({"state": "ON", "brightness": 255, "color_temp": 250, "color": {"r": 1, "g": 2, "b": 3}}),
        )
    ]
    assert cmds(light, "turn_off") == [("z2m/hall/set", '{"state": "OFF"}')]


def test_cover() -> None:
    cover = entity("cover.blind", command_topic="c", set_position_topic="p")
    assert cmds(cover, "open") == [("c", "OPEN")]
    assert cmds(cover, "close") == [("c", "CLOSE")]
    assert cmds(cover, "stop") == [("c", "STOP")]
    assert cmds(cover, "set_position", value=40) == [("p", "40")]
    inverted = entity("cover.x", command_topic="c", set_position_topic="p", position_open=0, position_closed=255)
    assert cmds(inverted, "set_position", value=100) == [("p", "0")]
    custom = entity(
        "cover.g", command_topic="c", payload_open="up", set_position_topic="p", set_position_template="{{ value * 2 }}"
    )
    assert cmds(custom, "open") == [("c", "up")]
    assert cmds(custom, "set_position", value=10) == [("p", "20")]


def test_climate_fan_lock_scene_button() -> None:
    climate = entity("climate.living", temperature_command_topic="t", mode_command_topic="m", modes=["off", "heat"])
    assert cmds(climate, "set_temperature", value=21.5) == [("t", "21.5")]
    assert cmds(climate, "set_hvac_mode", value="heat") == [("m", "heat")]
    with pytest.raises(CommandError, match="no mode 'cool'"):
        mqtt_commands(climate, "set_hvac_mode", {"value": "cool"})
    fan = entity("fan.ceiling", command_topic="c", percentage_command_topic="p", speed_range_max=3)
    assert cmds(fan, "turn_on") == [("c", "ON")]
    assert cmds(fan, "set_percentage", value=100) == [("p", "3")]
    assert cmds(fan, "set_percentage", value=0) == [("p", "0")]
    lock = entity("lock.front", command_topic="l")
    assert cmds(lock, "lock") == [("l", "LOCK")]
    assert cmds(lock, "unlock") == [("l", "UNLOCK")]
    assert cmds(entity("scene.movie", command_topic="s"), "turn_on") == [("s", "ON")]
    assert cmds(entity("button.doorbell", command_topic="b"), "press") == [("b", "PRESS")]
    with pytest.raises(CommandError, match="does not support lock"):
        mqtt_commands(entity("switch.s", command_topic="c"), "lock", {})


def test_service_calls_for_the_bridge() -> None:
    assert service_call(entity("light.lamp"), "turn_on", {"brightness_pct": 20}) == ServiceCall(
        "light", "turn_on", "light.lamp", {"brightness_pct": 20}
    )
    assert service_call(entity("cover.g"), "set_position", {"value": 30}) == ServiceCall(
        "cover", "set_cover_position", "cover.g", {"position": 30}
    )
    assert service_call(entity("climate.c"), "set_hvac_mode", {"value": "heat"}).service == "set_hvac_mode"
    assert service_call(entity("lock.l"), "unlock", {}).service == "unlock"


def test_states_are_read_like_home_assistant() -> None:
    switch = entity("switch.a", command_topic="t", state_topic="s")
    switch.apply("state_topic", "ON")
    assert switch.state == "on"
    sensor = entity(
        "sensor.t", state_topic="s", unit_of_measurement="°C", value_template="{{ value_json.temperature }}"
    )
    sensor.apply("state_topic", '{"temperature": 21.5, "humidity": 40}')
    assert (sensor.state, sensor.attributes) == ("21.5", {"unit_of_measurement": "°C"})
    light = entity("light.j", schema="json", command_topic="c", state_topic="s")
    light.apply("state_topic", '{"state":"ON","brightness":77}')
    assert (light.state, light.attributes["brightness"]) == ("on", 77)
    climate = entity("climate.c", mode_state_topic="m", current_temperature_topic="t")
    climate.apply("mode_state_topic", "heat")
    climate.apply("current_temperature_topic", "19.5")
    assert (climate.state, climate.attributes["current_temperature"]) == ("heat", "19.5")
    lock = entity("lock.l", state_topic="s")
    lock.apply("state_topic", "LOCKED")
    assert lock.state == "locked"
    tasmota = entity("switch.r", command_topic="c", state_topic="s", value_template="{{ value_json.POWER }}")
    tasmota.apply("state_topic", '{"POWER": "OFF"}')
    assert tasmota.state == "off"


def test_registry_statestream_and_sources() -> None:
    reg = Registry(HomeAssistantConfig(expose=["*"]))
    reg.update_from_statestream("ha", "ha/media_player/tv/state", "playing")
    reg.update_from_statestream("ha", "ha/media_player/tv/friendly_name", '"Living room TV"')
    reg.update_from_statestream("ha", "ha/media_player/tv/volume_level", "0.4")
    tv = reg.entities["media_player.tv"]
    assert (tv.name, tv.state, tv.attributes["volume_level"], tv.mqtt_native) == (
        "Living room TV",
        "playing",
        0.4,
        False,
    )
    reg.add(
        Entity("light.a", "A", mqtt={"command_topic": "x", "state_topic": "y"}, source="homeassistant/light/a/config")
    )
    assert reg.state_topics() == ["y"]
    assert reg.remove_source("homeassistant/light/a/config") == ["light.a"]
    assert reg.state_topics() == []


def registry() -> Registry:
    return Registry(
        HomeAssistantConfig(
            expose=["light.*", "cover.*", "media_player.*"],
            entities=[
                EntityConfig(entity_id="light.kitchen", command_topic="k/set"),
                EntityConfig(entity_id="lock.front_door", command_topic="door/set"),
                EntityConfig(entity_id="cover.garage", command_topic="g/set"),
            ],
        )
    )


def test_tools_refuse_unexposed_entity_whatever_the_model_asks() -> None:
    published: list[Command] = []

    async def publish(command: Command) -> Delivery:
        published.append(command)
        return Delivery("delivered")

    tools = {t.name: t for t in HomeTools(registry(), publish).tools()}
    # no lock tool: the lock is not exposed; ids are checked when called, never listed in an enum
    assert set(tools) == {"turn_on", "turn_off", "set_cover", "get_state", "find_entities"}
    assert "enum" not in tools["turn_on"].parameters["properties"]["entity_id"]
    for name, args in [
        ("turn_on", {"entity_id": "lock.front_door"}),
        ("set_cover", {"entity_id": "lock.front_door", "action": "open"}),
    ]:
        outcome = asyncio.run(tools[name].call(args))
        assert "error" in json.loads(outcome.content)
        assert outcome.actions[0].ok is False
    assert published == []
    outcome = asyncio.run(tools["turn_on"].call({"entity_id": "light.kitchen"}))
    assert json.loads(outcome.content)["result"] == "done"
    assert published == [Command("k/set", "ON")]
    for bad in ({"entity_id": ["light.kitchen"]}, {"entity_id": "light.kitchen", "brightness_pct": 300}):
        assert asyncio.run(tools["turn_on"].call(bad)).actions[0].ok is False
        assert asyncio.run(tools["turn_on"].run(bad)).actions[0].ok is False
    assert (
        asyncio.run(tools["set_cover"].call({"entity_id": "cover.garage", "action": "explode"})).actions[0].ok is False
    )
    assert len(published) == 1


def test_bridge_is_used_for_entities_without_command_topics() -> None:
    reg = registry()
    reg.update_from_statestream("ha", "ha/media_player/tv/state", "off")
    sent: list[tuple[str, str]] = []

    async def scenario() -> tuple[str, list[Any]]:
        loop = asyncio.get_running_loop()

        async def publish(topic: str, payload: str) -> Delivery:  # Home Assistant answers a moment later
            sent.append((topic, payload))
            answer = json.dumps({"id": json.loads(payload)["id"], "ok": True}).encode()
            loop.call_later(0.05, bridge.on_result, answer)
            return Delivery("delivered")

        bridge = ServiceBridge("ha/assistant/service", publish, timeout_s=1)
        tools = {t.name: t for t in HomeTools(reg, lambda c: asyncio.sleep(0, Delivery("delivered")), bridge).tools()}
        assert "turn_on" in tools  # the bridge reaches the media player
        outcome = await tools["turn_on"].call({"entity_id": "media_player.tv"})
        return outcome.content, outcome.actions

    content, actions = asyncio.run(scenario())
    assert json.loads(content)["result"] == "done"
    request = json.loads(sent[0][1])
    assert {k: request[k] for k in ("domain", "service", "entity_id", "data")} == {
        "domain": "media_player",
        "service": "turn_on",
        "entity_id": "media_player.tv",
        "data": {},
    }
    assert actions[0].ok and actions[0].topic == "ha/assistant/service"


def test_a_bridge_call_answered_late_is_unconfirmed_then_settled() -> None:
    """No answer within bridge_timeout_s: unconfirmed (Home Assistant may still act); its late
    answer settles the action, which is what the daemon then publishes with the same id."""
    reg = registry()
    reg.update_from_statestream("ha", "ha/media_player/tv/state", "off")

    async def scenario() -> tuple[Any, Any, Any]:
        sent: list[str] = []

        async def send(topic: str, payload: str) -> Delivery:
            sent.append(payload)
            return Delivery("delivered")

        bridge = ServiceBridge("ha/assistant/service", send, timeout_s=0.05)
        tools = {t.name: t for t in HomeTools(reg, lambda c: asyncio.sleep(0, Delivery("delivered")), bridge).tools()}
        outcome = await tools["turn_off"].call({"entity_id": "media_player.tv"})
        action = outcome.actions[0]
        assert action.settled is not None
        bridge.on_result(json.dumps({"id": json.loads(sent[0])["id"], "ok": False, "error": "no such"}).encode())
        return json.loads(outcome.content), action, await action.settled

    content, action, final = asyncio.run(scenario())
    assert content["result"] == "unconfirmed"
    assert (action.outcome, action.ok) == ("unconfirmed", None)
    assert (final.outcome, final.ok, final.error) == ("failed", False, "no such")


def test_a_bridge_request_that_was_never_sent_is_failed_at_once() -> None:
    reg = registry()
    reg.update_from_statestream("ha", "ha/media_player/tv/state", "off")

    async def scenario() -> Any:
        async def send(topic: str, payload: str) -> Delivery:
            return Delivery("not_sent", "not connected to the broker")

        bridge = ServiceBridge("ha/assistant/service", send, timeout_s=5)
        tools = {t.name: t for t in HomeTools(reg, lambda c: asyncio.sleep(0, Delivery("delivered")), bridge).tools()}
        return (await tools["turn_off"].call({"entity_id": "media_player.tv"})).actions[0]

    action = asyncio.run(scenario())
    assert (action.outcome, action.ok, action.settled) == ("failed", False, None)
    assert "not connected" in action.error


def test_registry_indexes_agree_with_a_full_scan() -> None:
    """The topic and source indexes are kept up to date entry by entry (a discovery storm must
    not rebuild them per message); after any mix of adds, replacements and removals they say
    what a scan of every entity says."""
    import random

    rng = random.Random(3)
    reg = Registry(
        HomeAssistantConfig(
            expose=["light.e1*", "light.e2?", "light.kept"],
            entities=[EntityConfig(entity_id="light.kept", state_topic="t1")],
        )
    )
    reg.topics()  # built once; from here on only updated
    for step in range(3000):
        source = f"homeassistant/light/s{rng.randrange(40)}/config"
        if rng.random() < 0.3:
            before = sorted(eid for eid, e in reg.entities.items() if e.source == source)
            assert sorted(reg.remove_source(source)) == before, step
        else:
            keys = {k: f"t{rng.randrange(30)}" for k in ("state_topic", "brightness_state_topic") if rng.random() < 0.6}
            reg.add(Entity(f"light.e{rng.randrange(60)}", "E", mqtt=keys, source=source))
        if step % 50 == 0:
            scan: dict[str, list[tuple[str, str]]] = {}
            for e in reg.entities.values():
                for topic, key in e.state_topics().items():
                    scan.setdefault(topic, []).append((e.entity_id, key))
            indexed = {t: sorted((e.entity_id, k) for e, k in pairs) for t, pairs in reg.topics().items()}
            assert indexed == {t: sorted(pairs) for t, pairs in scan.items()}, step
            assert reg.state_topics() == sorted(scan)
            assert [e.entity_id for e in reg.exposed()] == sorted(e for e in reg.entities if reg.is_exposed(e))
    assert "light.kept" in reg.entities  # hand-declared entities are never replaced by learned ones
    reg.expose_patterns[:] = ["light.e1*"]  # the allowlist changed in place: exposed() follows
    assert [e.entity_id for e in reg.exposed()] == sorted(e for e in reg.entities if e.startswith("light.e1"))
