"""`expose` holds on topics: a command topic belongs to its first claimant, and nothing is
published to a topic that an entity outside `expose` claims or reads, whatever the order
in which configs arrive. Pure: the registry and the tools, no broker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from assistant.agent.tools import HomeTools
from assistant.config import EntityConfig, HomeAssistantConfig
from assistant.home.entities import Command, CommandError, Entity
from assistant.home.ownership import Claims
from assistant.home.registry import Registry
from assistant.link.delivery import Delivery

LOCK_TOPIC = "z2m/Front door/set"
LOCK_CONFIG = "homeassistant/lock/front_door/config"
EVIL_CONFIG = "homeassistant/light/evil/config"


PORCH = {"entity_id": "light.porch", "command_topic": "porch/set"}  # so that a turn_on tool always exists


def registry(*entities: dict[str, Any], **settings: Any) -> Registry:
    config = {"expose": ["light.*", "switch.*", "binary_sensor.*"], **settings}
    return Registry(HomeAssistantConfig(**config, entities=[EntityConfig(**e) for e in (PORCH, *entities)]))


def lock(source: str = LOCK_CONFIG) -> Entity:
    return Entity("lock.front_door", "Front door", mqtt={"command_topic": LOCK_TOPIC}, source=source)


def evil(source: str = EVIL_CONFIG, **keys: Any) -> Entity:
    return Entity(
        "light.evil", "Evil", mqtt={"command_topic": LOCK_TOPIC, "payload_on": "UNLOCK", **keys}, source=source
    )


def turn_on(reg: Registry, entity_id: str, **args: Any) -> tuple[dict[str, Any], list[Command]]:
    """Call the turn_on tool as the model would; return its result and what was published."""
    published: list[Command] = []

    async def publish(command: Command) -> Delivery:
        published.append(command)
        return Delivery("delivered")

    tool = {t.name: t for t in HomeTools(reg, publish).tools()}["turn_on"]
    outcome = asyncio.run(tool.call({"entity_id": entity_id, **args}))
    assert all(not a.ok for a in outcome.actions) or published
    return json.loads(outcome.content), published


def test_claims_go_to_the_first_claimant_and_a_removal_frees_them() -> None:
    claims = Claims()
    claims.claim("a", "lock.door", {"t": "command_topic"})
    claims.claim("b", "light.evil", {"t": "command_topic", "u": "brightness_command_topic"})
    (conflict,) = claims.conflicts("b", "light.evil", {"t": "command_topic", "u": "brightness_command_topic"})
    assert (conflict.topic, conflict.claimant, conflict.owner) == ("t", "light.evil", "lock.door")
    assert "light.evil" in conflict.message() and "lock.door" in conflict.message() and "'t'" in conflict.message()
    assert claims.conflicts("a", "lock.door", {"t": "command_topic"}) == []
    assert claims.release("a") == {"t"}
    assert claims.conflicts("b", "light.evil", {"t": "command_topic"}) == []
    assert claims.claimants("t") == [("b", "light.evil")]


def test_one_config_may_share_a_topic_hand_declared_ones_may_not() -> None:
    claims = Claims()
    claims.claim("device", "light.lamp", {"t": "command_topic"})
    claims.claim("device", "switch.relay", {"t": "command_topic"})
    assert claims.conflicts("device", "switch.relay", {"t": "command_topic"}) == []
    claims.claim("config", "light.a", {"c": "command_topic"})
    claims.claim("config", "light.b", {"c": "command_topic"})
    assert [c.owner for c in claims.conflicts("config", "light.b", {"c": "command_topic"})] == ["light.a"]


def test_a_released_claim_that_is_kept_keeps_its_place() -> None:
    claims = Claims()
    claims.claim("a", "light.evil", {"t": "command_topic"})
    claims.claim("b", "lock.door", {"t": "command_topic"})
    assert claims.release("a", keep={("t", "light.evil")}) == set()
    claims.claim("a", "light.evil", {"t": "command_topic"})
    assert claims.claimants("t") == [("a", "light.evil"), ("b", "lock.door")]


def test_learned_light_on_a_hand_declared_locks_topic_is_refused() -> None:
    reg = registry({"entity_id": "lock.front_door", "command_topic": LOCK_TOPIC})
    (conflict,) = reg.replace_source(EVIL_CONFIG, [evil()])
    assert (conflict.claimant, conflict.owner, conflict.topic) == ("light.evil", "lock.front_door", LOCK_TOPIC)
    assert "light.evil" not in reg.entities
    assert [e.entity_id for e in reg.exposed()] == ["light.porch"]
    result, published = turn_on(reg, "light.evil")
    assert result["error"].startswith("no exposed entity 'light.evil'; ")  # and the exposed ids it may mean:
    assert "light.porch" in result["error"] and "lock.front_door" not in result["error"]  # never a hidden one
    assert published == []


@pytest.mark.parametrize("lock_first", [True, False])
def test_whatever_the_order_the_locks_topic_is_never_published_to(lock_first: bool) -> None:
    reg = registry()
    first, second = (lock(), evil()) if lock_first else (evil(), lock())
    assert reg.replace_source(first.source, [first]) == []
    (conflict,) = reg.replace_source(second.source, [second])
    assert {conflict.claimant, conflict.owner} == {"light.evil", "lock.front_door"}
    assert conflict.claimant == second.entity_id, "the first claimant keeps the topic"
    result, published = turn_on(reg, "light.evil")
    assert published == []
    assert "error" in result
    if not lock_first:  # light.evil got in first: only the publish-time check stands in the way
        assert result["error"] == f"refused: {LOCK_TOPIC!r} also belongs to an entity that is not exposed"
        assert "lock.front_door" not in reg.entities
    # the retained configs re-read (Home Assistant restarted): same owner, the same conflict again
    assert reg.replace_source(first.source, [first]) == []
    assert [c.claimant for c in reg.replace_source(second.source, [second])] == [second.entity_id]
    assert turn_on(reg, "light.evil")[1] == []


def test_removing_a_config_frees_its_topic() -> None:
    reg = registry()
    reg.replace_source(EVIL_CONFIG, [evil()])
    reg.replace_source(LOCK_CONFIG, [lock()])
    assert "lock.front_door" not in reg.entities
    assert reg.remove_source(EVIL_CONFIG) == ["light.evil"]
    assert reg.entities["lock.front_door"].source == LOCK_CONFIG, "the held lock is let in once the topic is free"
    reg.remove_source(LOCK_CONFIG)
    assert reg.replace_source(EVIL_CONFIG, [evil()]) == []
    result, published = turn_on(reg, "light.evil")
    assert result["result"] == "done"
    assert published == [Command(LOCK_TOPIC, "UNLOCK")]


def test_a_hand_declared_light_is_not_commanded_once_a_hidden_lock_claims_its_topic() -> None:
    reg = registry({"entity_id": "light.kitchen", "command_topic": "k/set"})
    assert turn_on(reg, "light.kitchen")[1] == [Command("k/set", "ON")]
    lock_on_kitchen = Entity("lock.back", "Back", mqtt={"command_topic": "k/set"}, source=LOCK_CONFIG)
    (conflict,) = reg.replace_source(LOCK_CONFIG, [lock_on_kitchen])
    assert (conflict.claimant, conflict.owner) == ("lock.back", "light.kitchen")
    assert reg.entities["light.kitchen"].source == "config", "hand-declared entities keep their topics"
    result, published = turn_on(reg, "light.kitchen")
    assert published == [] and "not exposed" in result["error"]
    reg.remove_source(LOCK_CONFIG)
    assert turn_on(reg, "light.kitchen")[1] == [Command("k/set", "ON")]


def test_every_topic_of_a_plan_is_checked_before_any_is_sent() -> None:
    reg = registry()
    lamp = Entity(
        "light.lamp", "Lamp", mqtt={"command_topic": "lamp/set", "brightness_command_topic": LOCK_TOPIC}, source="a"
    )
    reg.replace_source("a", [lamp])
    reg.replace_source(LOCK_CONFIG, [lock()])
    assert turn_on(reg, "light.lamp")[1] == [Command("lamp/set", "ON")]
    result, published = turn_on(reg, "light.lamp", brightness_pct=50)
    assert published == [], "not even the ON before the refused brightness"
    assert "not exposed" in result["error"]


def test_components_of_one_device_share_a_topic_only_if_all_are_exposed() -> None:
    reg = registry()
    source = "homeassistant/device/thermostat/config"
    shared = {"command_topic": "dev/set"}
    switch = Entity("switch.heater", "Heater", mqtt=dict(shared), source=source)
    child_lock = Entity("lock.child_lock", "Child lock", mqtt=dict(shared), source=source)
    assert reg.replace_source(source, [switch, child_lock]) == []
    assert {"switch.heater", "lock.child_lock"} <= set(reg.entities)
    result, published = turn_on(reg, "switch.heater")
    assert published == [] and "not exposed" in result["error"]
    reg.expose_patterns.append("lock.*")
    assert turn_on(reg, "switch.heater")[1] == [Command("dev/set", "ON")]


def test_a_hidden_entitys_state_topic_is_not_published_to() -> None:
    reg = registry(expose=["light.*"])
    smoke = Entity("binary_sensor.smoke", "Smoke", mqtt={"state_topic": "smoke/state"}, source="s")
    spoof = Entity("light.spoof", "Spoof", mqtt={"command_topic": "smoke/state"}, source="t")
    reg.replace_source("s", [smoke])
    reg.replace_source("t", [spoof])
    result, published = turn_on(reg, "light.spoof")
    assert published == [] and "not exposed" in result["error"]


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("", "not a topic"),
        ("lights/+/set", "not a topic"),
        ("lights/#", "not a topic"),
        ("assistant/kitchen/ask", "reserved"),
        ("assistant/arbitration", "reserved"),
        ("ha/assistant/service", "reserved"),
        ("ha/assistant/service/result", "reserved"),
        ("homeassistant/light/x/config", "reserved"),
        ("homeassistant/light/node/x/config", "reserved"),
        ("homeassistant/status", "reserved"),
        ("homeassistant/statestream/lock/front_door/state", "reserved"),
        ("$SYS/broker/x", "reserved"),
    ],
)
def test_topics_never_published_to_for_an_entity(topic: str, why: str) -> None:
    reg = registry(service_topic="ha/assistant/service", statestream_topic="homeassistant/statestream")
    reg.reserve("assistant")
    reg.replace_source("s", [Entity("light.odd", "Odd", mqtt={"command_topic": topic or "x"}, source="s")])
    entity = reg.entities["light.odd"]
    entity.mqtt["command_topic"] = topic  # as if the check at learning time had been missed
    with pytest.raises(CommandError, match=why):
        reg.check_command_topic(entity, topic)


def test_only_the_entitys_own_claimed_topics() -> None:
    reg = registry(
        {"entity_id": "light.a", "command_topic": "a/set"}, {"entity_id": "light.b", "command_topic": "b/set"}
    )
    with pytest.raises(CommandError, match=r"not a command topic of light\.a"):
        reg.check_command_topic(reg.entities["light.a"], "b/set")
    reg.check_command_topic(reg.entities["light.a"], "a/set")


def test_statestream_cannot_bring_back_a_refused_entity() -> None:
    reg = registry({"entity_id": "lock.front_door", "command_topic": LOCK_TOPIC}, statestream_topic="ss")
    reg.replace_source(EVIL_CONFIG, [evil()])
    assert reg.update_from_statestream("ss", "ss/light/evil/state", "off") is None
    assert "light.evil" not in reg.entities
    reg.update_from_statestream("ss", "ss/light/other/state", "off")
    assert reg.entities["light.other"].source == "statestream"
    assert reg.entities["light.other"].command_topics() == {}, "statestream entities claim no topics"


def test_a_known_state_survives_a_config_sent_again() -> None:
    reg = registry()
    lamp = Entity("light.lamp", "Lamp", mqtt={"command_topic": "l/set", "state_topic": "l"}, source="a")
    reg.replace_source("a", [lamp])
    reg.update_from_topic("l", "ON")
    again = Entity("light.lamp", "Lamp", mqtt={"command_topic": "l/set", "state_topic": "l"}, source="a")
    reg.replace_source("a", [again])
    assert reg.entities["light.lamp"].state == "on"


def test_hidden_entities_need_their_exact_id_in_expose() -> None:
    """The daemon's own entities: no glob reaches them, only an entry naming one exactly."""
    registry = Registry(HomeAssistantConfig(expose=["switch.*", "sensor.assistant_x_state"]))
    for entity_id in ("switch.assistant_x_mute", "sensor.assistant_x_state", "switch.porch"):
        registry.add(Entity(entity_id, entity_id, source="statestream"))
    registry.hide({"switch.assistant_x_mute", "sensor.assistant_x_state"})
    assert [e.entity_id for e in registry.exposed()] == ["sensor.assistant_x_state", "switch.porch"]
    with pytest.raises(CommandError):
        registry.get_exposed("switch.assistant_x_mute")
