"""The house snapshot: parsing and its bounds, tying to discovery, and the registry that prefers it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_entity_ids import A, B, config_for, learn

from assistant.config import HomeAssistantConfig
from assistant.home.budget import MAX_ATTRIBUTES, MAX_TEXT_CHARS
from assistant.home.placement import Placement
from assistant.home.registry import Registry
from assistant.home.snapshot import (
    MAX_ENTITIES,
    MAX_SNAPSHOT_BYTES,
    Candidate,
    HouseEntity,
    SnapshotError,
    parse_snapshot,
    parse_state_change,
    tie,
)


def house_entity(entity_id: str, name: str, devices: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "entity_id": entity_id,
        "name": name,
        "area": extra.pop("area", None),
        "floor": extra.pop("floor", None),
        "state": extra.pop("state", "off"),
        "attributes": extra.pop("attributes", {}),
        "mqtt": None if devices is None else {"device": devices},
    }


def snapshot(*entities: dict[str, Any]) -> bytes:
    return json.dumps({"format": 1, "entities": list(entities), "areas": [], "floors": []}).encode()


def test_the_contract_example_parses() -> None:
    parsed = parse_snapshot(
        snapshot(
            house_entity(
                "light.bedroom_lamp_2",
                "Bedroom lamp",
                ["zigbee2mqtt_0x00124b0001"],
                area="Bedroom",
                floor="Upstairs",
                state="on",
                attributes={"brightness": 128, "supported_color_modes": ["brightness"]},
            ),
            house_entity("switch.hall", "Hall"),
        )
    )
    lamp = parsed.entities["light.bedroom_lamp_2"]
    assert (lamp.name, lamp.area, lamp.floor, lamp.state) == ("Bedroom lamp", "Bedroom", "Upstairs", "on")
    assert lamp.attributes["brightness"] == 128 and lamp.devices == frozenset({"zigbee2mqtt_0x00124b0001"})
    assert parsed.entities["switch.hall"].devices is None
    assert parsed.problems == [] and parsed.skipped == 0


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\xff", "not JSON text"),
        (b"[1]", "must be a JSON object"),
        (b'{"format": 2, "entities": []}', "format 2 is not 1"),
        (b'{"format": 1}', "needs 'entities'"),
        (b"{" * 100_000, "not JSON text"),
        (b" " * (MAX_SNAPSHOT_BYTES + 1), "over the"),
    ],
)
def test_a_bad_snapshot_is_an_error_that_says_why(payload: bytes, why: str) -> None:
    with pytest.raises(SnapshotError, match=why):
        parse_snapshot(payload)


def test_bad_entities_are_skipped_and_named_the_rest_kept() -> None:
    parsed = parse_snapshot(
        snapshot(
            house_entity("switch.ok", "Ok"),
            house_entity("Not An Id", "x"),
            {**house_entity("switch.bad_area", "x"), "area": 3},
            {**house_entity("light.bad_mqtt", "x"), "mqtt": {"device": "z2m_1"}},
            house_entity("switch.ok", "Again"),
            "nonsense",  # type: ignore[arg-type]
        )
    )
    assert list(parsed.entities) == ["switch.ok"] and parsed.entities["switch.ok"].name == "Ok"
    assert parsed.skipped == 5
    assert any("'Not An Id' is not an entity id" in p for p in parsed.problems)
    assert any(p.startswith("switch.bad_area: area must be text") for p in parsed.problems)


def test_values_are_capped_like_every_state() -> None:
    huge = {f"a{i}": "x" * 10_000 for i in range(100)}
    parsed = parse_snapshot(snapshot(house_entity("sensor.big", "n" * 1000, state="s" * 1000, attributes=huge)))
    big = parsed.entities["sensor.big"]
    assert len(big.name) <= MAX_TEXT_CHARS and len(big.state or "") <= MAX_TEXT_CHARS
    assert len(big.attributes) == MAX_ATTRIBUTES and all(len(v) <= MAX_TEXT_CHARS for v in big.attributes.values())


def test_too_many_entities_are_cut_and_counted() -> None:
    entities = [house_entity(f"sensor.s{i}", "S") for i in range(MAX_ENTITIES + 3)]
    parsed = parse_snapshot(snapshot(*entities))
    assert len(parsed.entities) == MAX_ENTITIES and parsed.skipped == 3


def test_state_changes() -> None:
    change = parse_state_change(b'{"entity_id": "light.x", "state": "on", "attributes": {"brightness": 3}}')
    assert (change.entity_id, change.state, change.attributes) == ("light.x", "on", {"brightness": 3})
    assert parse_state_change(b'{"entity_id": "light.x", "state": null}').state is None
    with pytest.raises(SnapshotError, match="not an entity id"):
        parse_state_change(b'{"state": "on"}')


# --- tying ------------------------------------------------------------------------------


def he(entity_id: str, name: str, devices: set[str] | None) -> HouseEntity:
    return HouseEntity(entity_id, name, None, None, "off", {}, None if devices is None else frozenset(devices))


def cand(identity: str, domain: str, name: str, devices: set[str]) -> Candidate:
    return Candidate(identity, domain, name, frozenset(devices))


def test_tie_by_domain_name_and_device() -> None:
    house = [he("light.bedroom_lamp", "Bedroom lamp", {"d2"}), he("light.bedroom_lamp_2", "Bedroom lamp", {"d1"})]
    learned = [cand("a", "light", "Bedroom lamp", {"d1"}), cand("b", "light", "Bedroom lamp", {"d2"})]
    assert tie(house, learned) == ({"a": "light.bedroom_lamp_2", "b": "light.bedroom_lamp"}, [])


def test_no_tie_across_domains_devices_or_for_non_mqtt_entities() -> None:
    house = [he("switch.lamp", "Lamp", {"d1"}), he("light.lamp", "Lamp", {"d9"}), he("light.hue", "Lamp", None)]
    assert tie(house, [cand("a", "light", "Lamp", {"d1"})]) == ({}, [])


def test_renamed_in_the_ui_still_ties_when_its_device_has_one_entity_of_the_domain() -> None:
    house = [he("light.reading", "Reading light", {"d1"}), he("sensor.reading_power", "Reading power", {"d1"})]
    learned = [cand("a", "light", "Bedroom lamp", {"d1"}), cand("p", "sensor", "Bedroom lamp power", {"d1"})]
    assert tie(house, learned)[0] == {"a": "light.reading", "p": "sensor.reading_power"}


def test_ambiguity_ties_nothing_and_says_so() -> None:
    house = [he("light.strip", "Strip", {"d1"})]
    learned = [cand("a", "light", "Strip", {"d1"}), cand("b", "light", "Strip", {"d1"})]
    ties, ambiguous = tie(house, learned)
    assert ties == {} and "2 discovered entities" in ambiguous[0]
    house = [he("light.one", "Strip", {"d1"}), he("light.two", "Strip", {"d1", "d2"})]
    ties, ambiguous = tie(house, [cand("a", "light", "Strip", {"d1", "d2"})])
    assert ties == {} and "light.one and light.two both match" in ambiguous[0]


# --- the registry with a snapshot ---------------------------------------------------------


@pytest.fixture
def placement() -> Placement:
    return Placement(Registry(HomeAssistantConfig(expose=["*"], statestream_topic="ss")))


def apply(placement: Placement, *entities: dict[str, Any]) -> None:
    placement.apply_snapshot(parse_snapshot(snapshot(*entities)).entities)


def test_snapshot_ids_win_over_the_discovery_order(placement: Placement) -> None:
    learn(placement, A, config_for("0xa"))
    learn(placement, B, config_for("0xb"))  # the daemon saw 0xa first; Home Assistant saw 0xb first
    apply(
        placement,
        house_entity("light.bedroom_lamp", "Bedroom lamp", ["z2m_0xb"], area="Bedroom", floor="Upstairs", state="on"),
        house_entity("light.bedroom_lamp_2", "Bedroom lamp", ["z2m_0xa"]),
    )
    entities = placement.registry.entities
    assert sorted(entities) == ["light.bedroom_lamp", "light.bedroom_lamp_2"]
    first = entities["light.bedroom_lamp"]
    assert first.mqtt["command_topic"] == "z2m/0xb/set"  # still straight to its MQTT topic
    assert (first.area, first.floor, first.state) == ("Bedroom", "Upstairs", "on")
    assert entities["light.bedroom_lamp_2"].mqtt["command_topic"] == "z2m/0xa/set"
    claims = placement.registry.claims
    assert claims.claimants("z2m/0xb/set") == [(B, "light.bedroom_lamp")]  # the claims followed
    placement.registry.check_command_topic(first, "z2m/0xb/set")


def test_snapshot_entities_are_known_at_once_and_reached_through_the_bridge(placement: Placement) -> None:
    assert placement.registry.update_from_statestream("ss", "ss/switch/gone/state", "on") is not None
    apply(placement, house_entity("switch.hall", "Hall", area="Hall", state="off"))
    hall = placement.registry.entities["switch.hall"]
    assert (hall.name, hall.area, hall.state, hall.mqtt_native) == ("Hall", "Hall", "off", False)
    assert "switch.gone" not in placement.registry.entities  # statestream's leftovers are forgotten
    # statestream still updates what the snapshot lists, and no longer adds what it does not
    placement.registry.update_from_statestream("ss", "ss/switch/hall/state", "on")
    assert hall.state == "on"
    assert placement.registry.update_from_statestream("ss", "ss/switch/gone/state", "on") is None


def test_a_rename_leaves_one_entity(placement: Placement) -> None:
    learn(placement, A, config_for("0xa"))
    apply(placement, house_entity("light.bedroom_lamp", "Bedroom lamp", ["z2m_0xa"]), house_entity("switch.x", "X"))
    apply(placement, house_entity("light.reading", "Reading", ["z2m_0xa"]), house_entity("switch.y", "X"))
    assert sorted(placement.registry.entities) == ["light.reading", "switch.y"]
    assert placement.registry.entities["light.reading"].mqtt["command_topic"] == "z2m/0xa/set"


def test_untied_discovery_entities_of_a_listed_device_are_left_out_but_keep_their_topics(
    placement: Placement,
) -> None:
    learn(placement, A, config_for("0xa", cmd_t="shared/set"))
    apply(placement, house_entity("light.bedroom_lamp", "Bedroom lamp", ["z2m_0xa"]))
    learn(placement, A, b"")
    placement.settle()  # after the batch of messages
    assert sorted(placement.registry.entities) == ["light.bedroom_lamp"]  # Home Assistant's, through the bridge
    assert not placement.registry.entities["light.bedroom_lamp"].mqtt_native
    lock = {"name": "Door", "uniq_id": "l1", "cmd_t": "door/set", "dev": {"ids": ["lockdev"], "name": "Front"}}
    learn(placement, "homeassistant/lock/l1/config", lock)
    apply(
        placement,
        house_entity("lock.front_door_lock", "Renamed", ["lockdev"]),
        house_entity("lock.other", "X", ["lockdev"]),
    )
    assert "lock.front_door" not in placement.registry.entities  # ambiguous: left out, never commanded
    assert placement.registry.claims.claimants("door/set") == [("homeassistant/lock/l1/config", "lock.front_door")]


def test_discovery_entities_the_snapshot_does_not_cover_stay(placement: Placement) -> None:
    apply(placement, house_entity("switch.hall", "Hall"))
    learn(placement, A, config_for("0xa"))
    placement.settle()
    assert sorted(placement.registry.entities) == ["light.bedroom_lamp", "switch.hall"]


def test_state_changes_and_removals(placement: Placement) -> None:
    learn(placement, A, config_for("0xa"))
    apply(
        placement, house_entity("light.bedroom_lamp", "Bedroom lamp", ["z2m_0xa"]), house_entity("switch.hall", "Hall")
    )
    placement.apply_state(parse_state_change(b'{"entity_id": "switch.hall", "state": "on", "attributes": {}}'))
    assert placement.registry.entities["switch.hall"].state == "on"
    placement.apply_state(parse_state_change(b'{"entity_id": "switch.hall", "state": null}'))
    assert "switch.hall" not in placement.registry.entities
    placement.apply_state(parse_state_change(b'{"entity_id": "switch.unknown", "state": "on"}'))
    assert "switch.unknown" not in placement.registry.entities


def test_expose_still_applies(placement: Placement) -> None:
    placement.registry.expose_patterns[:] = ["light.*"]
    apply(placement, house_entity("switch.hall", "Hall"), house_entity("light.desk", "Desk"))
    assert [e.entity_id for e in placement.registry.exposed()] == ["light.desk"]
