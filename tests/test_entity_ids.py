"""Entity ids of discovered entities, assigned by Home Assistant's rules: suffixes, memory, removal."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from assistant.config import HomeAssistantConfig, parse_config
from assistant.home.announce import discovery_payload, discovery_topic
from assistant.home.discovery import parse_discovery
from assistant.home.entities import CommandError
from assistant.home.ids import MAX_DELETED, Identities, dump
from assistant.home.placement import Learned, Placement
from assistant.home.registry import Registry


def test_first_comer_keeps_the_id_and_others_are_suffixed_from_2() -> None:
    ids = Identities()
    assert ids.assign("a", "light.lamp", "light ua") == "light.lamp"
    assert ids.assign("b", "light.lamp", "light ub") == "light.lamp_2"
    assert ids.assign("c", "light.lamp", None) == "light.lamp_3"
    assert ids.duplicates == [("light.lamp", "light.lamp_2"), ("light.lamp", "light.lamp_3")]


def test_the_same_config_again_keeps_its_id() -> None:
    ids = Identities()
    ids.assign("a", "light.lamp", "light ua")
    ids.assign("b", "light.lamp", "light ub")
    assert ids.assign("b", "light.lamp", "light ub") == "light.lamp_2"
    assert ids.assign("a", "light.renamed", "light ua") == "light.lamp"  # registered ids do not follow names


def test_ids_survive_a_restart_in_which_configs_come_in_another_order() -> None:
    before = Identities()
    before.assign("a", "light.lamp", "light ua")
    before.assign("b", "light.lamp", "light ub")
    assert before.dirty
    saved = json.loads(json.dumps(before.export()))
    assert not before.dirty
    after = Identities(saved)
    assert after.assign("b", "light.lamp", "light ub") == "light.lamp_2"
    assert after.assign("a", "light.lamp", "light ua") == "light.lamp"
    # a newcomer does not take an id a registered entity holds, even before that one's config is back
    fresh = Identities(saved)
    assert fresh.assign("c", "light.lamp", "light uc") == "light.lamp_3"


def test_removal_frees_only_its_own_id_and_the_other_keeps_its_suffix() -> None:
    ids = Identities()
    ids.assign("a", "light.lamp", "light ua")
    ids.assign("b", "light.lamp", "light ub")
    ids.release("a")
    assert ids.assign("b", "light.lamp", "light ub") == "light.lamp_2"
    assert ids.assign("c", "light.lamp", "light uc") == "light.lamp"  # the freed id goes to a newcomer
    ids.release("c")
    assert ids.assign("a", "light.lamp", "light ua") == "light.lamp"  # back, and its old id is free: restored


def test_a_returning_entity_whose_id_was_taken_meanwhile_gets_a_new_one() -> None:
    ids = Identities()
    ids.assign("a", "light.lamp", "light ua")
    ids.release("a")
    ids.assign("c", "light.lamp", "light uc")
    assert ids.assign("a", "light.lamp", "light ua") == "light.lamp_2"


def test_forgotten_deleted_ids_are_bounded_and_bad_saved_data_is_skipped() -> None:
    ids = Identities({"registered": {"light x": "light.x", "light y": "light.x", "bad": 3}, "deleted": "nonsense"})
    assert ids.registered == {"light x": "light.x"}
    for number in range(MAX_DELETED + 5):
        ids.assign(f"t{number}", f"sensor.s{number}", f"sensor u{number}")
        ids.release(f"t{number}")
    assert len(ids.deleted) == MAX_DELETED and "sensor u0" not in ids.deleted


def test_another_entity_on_the_same_topic_is_a_new_entity() -> None:
    ids = Identities()
    assert ids.assign("t", "light.lamp", "light ua") == "light.lamp"
    assert ids.assign("t", "light.desk", "light ub") == "light.desk"
    assert "light ua" in ids.deleted


# --- the registry side: discovered entities kept by identity -------------------------------


def config_for(device: str, name: str = "Bedroom lamp", **extra: Any) -> dict[str, Any]:
    return {
        "name": None,
        "uniq_id": f"{device}_light",
        "cmd_t": f"z2m/{device}/set",
        "stat_t": f"z2m/{device}",
        "dev": {"ids": [f"z2m_{device}"], "name": name},
        **extra,
    }


def learned(topic: str, config: dict[str, Any] | bytes) -> tuple[str, list[Learned]]:
    payload = config if isinstance(config, bytes) else json.dumps(config).encode()
    update = parse_discovery(topic, payload)
    assert update is not None
    return update.source, [Learned.from_discovered(update.source, found) for found in update.entities]


def learn(placement: Placement, topic: str, config: dict[str, Any] | bytes) -> None:
    assert placement.learn(*learned(topic, config)) == []


@pytest.fixture
def placement() -> Placement:
    return Placement(Registry(HomeAssistantConfig(expose=["*"])))


A = "homeassistant/light/0xa/light/config"
B = "homeassistant/light/0xb/light/config"


def test_two_devices_with_one_name_are_two_entities_with_their_own_topics(placement: Placement) -> None:
    learn(placement, A, config_for("0xa"))
    learn(placement, B, config_for("0xb"))
    entities = placement.registry.entities
    assert entities["light.bedroom_lamp"].mqtt["command_topic"] == "z2m/0xa/set"
    assert entities["light.bedroom_lamp_2"].mqtt["command_topic"] == "z2m/0xb/set"
    registry = placement.registry
    registry.check_command_topic(entities["light.bedroom_lamp_2"], "z2m/0xb/set")  # its own topic: allowed
    with pytest.raises(CommandError, match=r"not a command topic of light\.bedroom_lamp_2"):
        registry.check_command_topic(entities["light.bedroom_lamp_2"], "z2m/0xa/set")


def test_removing_one_leaves_the_other_under_its_id(placement: Placement) -> None:
    learn(placement, A, config_for("0xa"))
    learn(placement, B, config_for("0xb"))
    learn(placement, A, b"")
    assert sorted(placement.registry.entities) == ["light.bedroom_lamp_2"]
    assert placement.registry.claims.claimants("z2m/0xa/set") == []
    learn(placement, B, b"")
    assert placement.registry.entities == {}


def test_device_based_components_are_kept_apart(placement: Placement) -> None:
    device = {
        "dev": {"ids": "strip1", "name": "Strip"},
        "cmps": {
            "left": {"p": "light", "name": "Part", "uniq_id": "s_l", "cmd_t": "strip/l/set"},
            "right": {"p": "light", "name": "Part", "uniq_id": "s_r", "cmd_t": "strip/r/set"},
        },
    }
    learn(placement, "homeassistant/device/strip1/config", device)
    entities = placement.registry.entities
    assert entities["light.strip_part"].mqtt["command_topic"] == "strip/l/set"
    assert entities["light.strip_part_2"].mqtt["command_topic"] == "strip/r/set"


def test_a_duplicate_name_is_reported_for_the_caller(placement: Placement, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    learn(placement, A, config_for("0xa"))
    learn(placement, B, config_for("0xb"))
    assert placement.ids.duplicates == [("light.bedroom_lamp", "light.bedroom_lamp_2")]


def test_restart_with_configs_reordered_keeps_ids(placement: Placement) -> None:
    learn(placement, A, config_for("0xa"))
    learn(placement, B, config_for("0xb"))
    saved = placement.ids.export()
    again = Placement(Registry(HomeAssistantConfig(expose=["*"])), Identities(saved))
    learn(again, B, config_for("0xb"))
    learn(again, A, config_for("0xa"))
    assert again.registry.entities["light.bedroom_lamp_2"].mqtt["command_topic"] == "z2m/0xb/set"
    assert again.registry.entities["light.bedroom_lamp"].mqtt["command_topic"] == "z2m/0xa/set"


@pytest.mark.parametrize("version", [(2024, 11), (2025, 4), (2025, 9), (2025, 10), (2026, 3), (2026, 4), None])
def test_the_daemons_own_entities_get_one_id_on_every_supported_version(version: tuple[int, int] | None) -> None:
    config = parse_config({"device": {"site_id": "kitchen", "name": "Kitchen speaker"}}, {"OPENAI_API_KEY": "k"})
    update = parse_discovery(discovery_topic(config), discovery_payload(config).encode(), version=version)
    assert update is not None
    assert sorted(e.entity_id for e in update.entities) == [
        "button.assistant_kitchen_listen",
        "sensor.assistant_kitchen_reply",
        "sensor.assistant_kitchen_state",
        "sensor.assistant_kitchen_transcript",
        "switch.assistant_kitchen_mute",
        "text.assistant_kitchen_ask",
    ]


def test_saved_ids_are_json_written_in_slices() -> None:
    ids = Identities()
    for number in range(5):
        ids.assign(f"t{number}", "sensor.s", f"sensor u{number}")
    ids.release("t0")
    export = ids.export()
    assert json.loads(dump(export, slice_size=2)) == export
    assert json.loads(dump({"registered": {}, "deleted": {}})) == {"registered": {}, "deleted": {}}
    assert Identities(json.loads(dump(export, slice_size=2))).registered == ids.registered
