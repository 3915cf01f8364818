"""The house snapshot of config/homeassistant/assistant_bridge.yaml, in a real Home Assistant.

Each test runs once per supported Home Assistant version (the session `home_assistant` fixture,
tests/real_ha.py) with the repository's package installed under the allowlist below. The house
here is made the way people get theirs: zigbee2mqtt-like MQTT discovery (two devices with the
same name), renames and areas made through Home Assistant's own registry commands. Every test
removes what it discovered and created, as the Home Assistant is shared with other test files.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from real_ha import BRIDGE_PACKAGE, BRIDGE_TOPIC, VERSIONS, HomeAssistant
from support import MqttRecorder

HOUSE, STATE, GET, RESULT = (f"{BRIDGE_TOPIC}/{t}" for t in ("house", "house/state", "house/get", "result"))
# lights, switches, covers, climates and fans; not sensors (the lamps' power sensors) nor locks
ALLOWED = r"^(light\..+|switch\..+|cover\..+|climate\..+|fan\..+)$"
# the attributes a snapshot may carry: the ones the daemon's tools read
ATTRIBUTES = {"brightness", "color_mode", "supported_color_modes", "color_temp_kelvin", "min_color_temp_kelvin"}
ATTRIBUTES |= {"max_color_temp_kelvin", "rgb_color", "hvac_modes", "hvac_action", "current_temperature"}
ATTRIBUTES |= {"temperature", "target_temp_high", "target_temp_low", "min_temp", "max_temp", "current_position"}
ATTRIBUTES |= {"percentage", "unit_of_measurement", "device_class"}
ENTITY_KEYS = {"entity_id", "name", "area", "floor", "state", "attributes", "mqtt"}
WAIT = 30.0  # generous: two loaded cores; every wait ends on the event it waits for


@pytest.fixture(scope="module")
def ha(home_assistant: HomeAssistant) -> Iterator[HomeAssistant]:
    """The session's Home Assistant with the package installed under ALLOWED, as it came afterwards."""
    home_assistant.install_bridge(ALLOWED)
    yield home_assistant
    home_assistant.install_bridge()


@pytest.fixture
def recorder(make_mqtt: Callable[..., MqttRecorder]) -> MqttRecorder:
    return make_mqtt((HOUSE, STATE, RESULT))


@dataclass
class Lamp:
    """One zigbee2mqtt-like device: a JSON light and a power sensor, found by MQTT discovery."""

    key: str  # its IEEE address, as zigbee2mqtt names the device
    light: str  # the light's entity id in Home Assistant
    sensor: str

    @property
    def identifier(self) -> str:
        return f"zigbee2mqtt_{self.key}"

    @property
    def state_topic(self) -> str:
        return f"z2m-test/{self.key}"


@pytest.fixture
def lamps(ha: HomeAssistant, recorder: MqttRecorder) -> Iterator[Callable[[str], list[Lamp]]]:
    """make(name): two devices both called `name` (Home Assistant makes light.<name> and _2);
    their discovery configs are deleted at teardown, which removes the entities.

    Like zigbee2mqtt with `retain: true`, the tests publish the lamps' states retained: Home
    Assistant has the entity a moment before its subscription to the state topic is in place."""
    topics: list[str] = []
    made: list[Lamp] = []

    def make(name: str) -> list[Lamp]:
        slug = re.sub(r"\W+", "_", name.lower())
        result = []
        for index in (1, 2):  # one after the other, so the second is the one suffixed _2
            key = f"0x{uuid.uuid4().hex[:16]}"
            device = {"identifiers": [f"zigbee2mqtt_{key}"], "name": name, "manufacturer": "IKEA", "model": "LED1836G9"}
            light = {
                "name": None,
                "unique_id": f"{key}_light_zigbee2mqtt",
                "schema": "json",
                "command_topic": f"z2m-test/{key}/set",
                "state_topic": f"z2m-test/{key}",
                "brightness": True,
                "supported_color_modes": ["color_temp"],
                "device": device,
            }
            power = {
                "name": "Power",
                "unique_id": f"{key}_power_zigbee2mqtt",
                "state_topic": f"z2m-test/{key}",
                "value_template": "{{ value_json.power }}",
                "unit_of_measurement": "W",
                "device_class": "power",
                "device": device,
            }
            for component, config in (("light", light), ("sensor", power)):
                topic = f"homeassistant/{component}/{key}/{component}/config"
                topics.append(topic)
                recorder.publish(topic, config, retain=True)
            topics.append(f"z2m-test/{key}")
            suffix = "" if index == 1 else "_2"
            lamp = Lamp(key, f"light.{slug}{suffix}", f"sensor.{slug}_power{suffix}")
            ha.wait_state(lamp.sensor, timeout=WAIT)
            # settled: the package has told the daemon about the new light
            recorder.wait_for(STATE, lambda m, light=lamp.light: m.json()["entity_id"] == light, timeout=WAIT)
            result.append(lamp)
        made.extend(result)
        return result

    yield make
    for topic in topics:
        recorder.publish(topic, b"", retain=True)
    for lamp in made:
        ha.wait_state(lamp.light, lambda state: state is None, timeout=WAIT)


def snapshot_after(recorder: MqttRecorder, since: float, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first snapshot published after `since` for which `predicate` holds."""
    message = recorder.wait_for(HOUSE, lambda m: predicate(m.json()), timeout=WAIT, since=since)
    return dict(message.json())


def entities(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entity["entity_id"]: entity for entity in snapshot["entities"]}


def ask(recorder: MqttRecorder, predicate: Callable[[dict[str, Any]], bool] = lambda s: True) -> dict[str, Any]:
    """Ask for the snapshot on T/house/get, as the daemon does on connecting."""
    since = time.monotonic()
    recorder.publish(GET, b"")
    return snapshot_after(recorder, since, predicate)


def test_same_named_devices_are_both_listed_with_their_own_device(
    ha: HomeAssistant, recorder: MqttRecorder, lamps: Callable[[str], list[Lamp]]
) -> None:
    first, second = lamps("Twin lamp")
    assert (first.light, second.light) == ("light.twin_lamp", "light.twin_lamp_2")

    snapshot = ask(recorder, lambda s: second.light in entities(s))

    assert snapshot["format"] == 1
    listed = entities(snapshot)
    for lamp in (first, second):
        entity = listed[lamp.light]
        assert set(entity) == ENTITY_KEYS
        assert entity["name"] == "Twin lamp"
        assert entity["mqtt"] == {"device": [lamp.identifier]}
        assert entity["attributes"]["supported_color_modes"] == ["color_temp"]
    for entity in listed.values():  # only the attributes the daemon reads leave Home Assistant
        assert set(entity["attributes"]) <= ATTRIBUTES, entity
    # nothing the allowlist does not admit, and everything it admits that Home Assistant has
    assert first.sensor not in listed
    admitted = {s["entity_id"] for s in ha.states() if re.match(ALLOWED, s["entity_id"])}
    assert set(listed) == admitted


def test_a_renamed_entity_is_listed_under_its_new_id_only(
    ha: HomeAssistant, recorder: MqttRecorder, lamps: Callable[[str], list[Lamp]]
) -> None:
    first, second = lamps("Rename lamp")
    since = time.monotonic()

    ha.ws(
        {
            "type": "config/entity_registry/update",
            "entity_id": second.light,
            "new_entity_id": "light.rename_reading",
            "name": "Reading lamp",
        }
    )

    listed = entities(snapshot_after(recorder, since, lambda s: "light.rename_reading" in entities(s)))
    assert second.light not in listed
    assert listed["light.rename_reading"]["name"] == "Reading lamp"
    assert listed["light.rename_reading"]["mqtt"] == {"device": [second.identifier]}
    assert listed[first.light]["name"] == "Rename lamp"
    # the daemon also hears that the old id is gone
    gone = recorder.wait_for(STATE, lambda m: m.json()["state"] is None, timeout=WAIT, since=since)
    assert gone.json() == {"entity_id": second.light, "state": None, "attributes": {}}
    second.light = "light.rename_reading"  # for the teardown


def test_floors_and_areas_are_named(
    ha: HomeAssistant, recorder: MqttRecorder, lamps: Callable[[str], list[Lamp]]
) -> None:
    first, second = lamps("Attic lamp")
    floor = ha.ws({"type": "config/floor_registry/create", "name": "Top floor", "level": 3})["floor_id"]
    area = ha.ws({"type": "config/area_registry/create", "name": "Attic room", "floor_id": floor})["area_id"]
    bare = ha.ws({"type": "config/area_registry/create", "name": "Shed room"})["area_id"]
    try:
        since = time.monotonic()
        device = next(
            e["device_id"] for e in ha.ws({"type": "config/entity_registry/list"}) if e["entity_id"] == second.light
        )
        ha.ws({"type": "config/device_registry/update", "device_id": device, "area_id": area})
        ha.ws({"type": "config/entity_registry/update", "entity_id": first.light, "area_id": bare})

        snapshot = snapshot_after(
            recorder,
            since,
            lambda s: (
                entities(s)[second.light]["area"] == "Attic room" and entities(s)[first.light]["area"] == "Shed room"
            ),
        )
        listed = entities(snapshot)
        assert (listed[second.light]["area"], listed[second.light]["floor"]) == ("Attic room", "Top floor")
        assert (listed[first.light]["area"], listed[first.light]["floor"]) == ("Shed room", None)
        assert {"name": "Attic room", "floor": "Top floor"} in snapshot["areas"]
        assert {"name": "Shed room", "floor": None} in snapshot["areas"]
        # a floor's level is not readable in templates: the package always sends null
        assert {"name": "Top floor", "level": None} in snapshot["floors"]
    finally:
        ha.ws({"type": "config/area_registry/delete", "area_id": area})
        ha.ws({"type": "config/area_registry/delete", "area_id": bare})
        ha.ws({"type": "config/floor_registry/delete", "floor_id": floor})
    snapshot = snapshot_after(
        recorder,
        time.monotonic() - 0.1,
        lambda s: not any(a["name"] in ("Attic room", "Shed room") for a in s["areas"]),
    )
    assert entities(snapshot)[second.light]["area"] is None


def test_an_admitted_change_gives_one_state_message_and_an_unadmitted_one_none(
    ha: HomeAssistant, recorder: MqttRecorder, lamps: Callable[[str], list[Lamp]]
) -> None:
    lamp, _ = lamps("State lamp")
    since = time.monotonic()

    # the lamp reports: its light turns on, its power sensor (not admitted) changes
    on = {"state": "ON", "brightness": 200, "color_mode": "color_temp", "color_temp": 300}
    recorder.publish(lamp.state_topic, {**on, "power": 4.5}, retain=True)
    ha.wait_state(lamp.sensor, lambda s: s is not None and s["state"] == "4.5", timeout=WAIT)
    turned_on = (lamp.light, "on")
    recorder.wait_for(
        STATE, lambda m: (m.json()["entity_id"], m.json()["state"]) == turned_on, timeout=WAIT, since=since
    )
    triggered = ha.state("automation.assistant_house_state")["attributes"]["last_triggered"]  # type: ignore[index]
    # the power alone changes: turned away by the automation's condition, no run, no message
    recorder.publish(lamp.state_topic, {**on, "power": 7.0}, retain=True)
    ha.wait_state(lamp.sensor, lambda s: s is not None and s["state"] == "7.0", timeout=WAIT)
    assert ha.state("automation.assistant_house_state")["attributes"]["last_triggered"] == triggered  # type: ignore[index]
    # then the light turns off
    recorder.publish(lamp.state_topic, {"state": "OFF", "power": 0.3}, retain=True)
    recorder.wait_for(STATE, lambda m: m.json()["state"] == "off", timeout=WAIT, since=since)

    # queued in order: everything the changes before caused is recorded before the "off"
    messages = [m.json() for m in recorder.messages(STATE) if m.time >= since]
    assert not [m for m in messages if m["entity_id"] == lamp.sensor]
    on_messages = [m for m in messages if (m["entity_id"], m["state"]) == turned_on]
    assert len(on_messages) == 1
    assert on_messages[0]["attributes"]["brightness"] == 200
    assert on_messages[0]["attributes"]["color_temp_kelvin"] == 3333
    assert set(on_messages[0]) == {"entity_id", "state", "attributes"}


def test_get_publishes_the_snapshot_retained(
    ha: HomeAssistant,
    recorder: MqttRecorder,
    lamps: Callable[[str], list[Lamp]],
    make_mqtt: Callable[..., MqttRecorder],
) -> None:
    lamp, _ = lamps("Asked lamp")
    ask(recorder, lambda s: lamp.light in entities(s))

    late = make_mqtt((HOUSE,))  # a daemon that connects later gets it from the broker
    kept = late.wait_for(HOUSE, timeout=WAIT)
    assert kept.retain
    assert lamp.light in entities(kept.json())
    recorder.sync()  # it is a snapshot the package published: the last one before `late` subscribed
    assert kept.payload in [m.payload for m in recorder.messages(HOUSE)]


def test_a_restart_republishes_the_snapshot(
    ha: HomeAssistant, recorder: MqttRecorder, lamps: Callable[[str], list[Lamp]]
) -> None:
    lamp, _ = lamps("Restart lamp")
    since = time.monotonic()

    ha.restart()

    # at start, then once the discovered entities are back (not waiting for any T/house/get)
    back = snapshot_after(recorder, since, lambda s: entities(s).get(lamp.light, {}).get("state") == "unknown")
    assert entities(back)[lamp.light]["mqtt"] == {"device": [lamp.identifier]}


def test_the_bridge_answers_every_request_while_snapshots_go_out(
    ha: HomeAssistant, recorder: MqttRecorder, lamps: Callable[[str], list[Lamp]]
) -> None:
    lamp, _ = lamps("Busy lamp")
    since = time.monotonic()
    ids = []
    for n in range(20):
        request_id = f"busy-{n}"
        ids.append(request_id)
        recorder.publish(GET, b"")
        recorder.publish(lamp.state_topic, {"state": "ON" if n % 2 else "OFF", "power": n}, retain=True)
        request = {
            "id": request_id,
            "domain": "light",
            "service": "turn_on",
            "entity_id": lamp.light,
            "data": {"brightness_pct": 5 * n},
        }
        recorder.publish(BRIDGE_TOPIC, request)

    for request_id in ids:
        answer = recorder.wait_for(RESULT, lambda m, i=request_id: m.json().get("id") == i, timeout=WAIT)
        assert answer.json() == {"id": request_id, "ok": True}
    assert recorder.messages(HOUSE, lambda m: m.time >= since)


def version_notification(ha: HomeAssistant) -> dict[str, Any] | None:
    """The version check's persistent notification, if it has one up."""
    notes = ha.ws({"type": "persistent_notification/get"})
    return next((dict(n) for n in notes if n["notification_id"] == "assistant_bridge_version"), None)


def test_the_version_check_reports_automations_that_did_not_load(ha: HomeAssistant) -> None:
    # As on a Home Assistant before 2024.10: the snapshot's automations are refused.
    text = (ha.config_dir / "packages/assistant_bridge.yaml").read_text()
    refused = text.replace("    mode: restart\n", "    mode: restart\n    not_known_before_2024_10: true\n", 1)
    assert refused != text
    log_from = len(ha.log_text())
    try:
        ha.write_package("assistant_bridge", refused)
        ha.reload_automations()

        line = ha.wait_log(r"needs Home Assistant 2024\.11 or newer", timeout=WAIT, since=log_from)
        assert "ERROR" in line and "assistant_house_changes" in line
        note = version_notification(ha)
        assert note is not None
        assert "did not load: assistant_house_changes." in note["message"]
    finally:
        ha.write_package("assistant_bridge", text)
        ha.reload_automations()
    # reloaded whole, the check takes its notification back
    deadline = time.monotonic() + WAIT
    while version_notification(ha) is not None:
        assert time.monotonic() < deadline, "the version check kept its notification"
        time.sleep(0.1)  # the next look at Home Assistant's notifications


def test_the_package_states_the_versions_it_is_tested_with() -> None:
    header = BRIDGE_PACKAGE.read_text().split("\nautomation:")[0]
    assert "Needs Home Assistant 2024.11 or newer" in header
    assert f"Tested with {' and '.join(VERSIONS)}." in header


def test_a_house_of_300_entities(ha: HomeAssistant, recorder: MqttRecorder) -> None:
    """Every entity listed, the bridge answering throughout; prints the snapshot's size and timing."""
    run = uuid.uuid4().hex[:6]
    configs: dict[str, dict[str, Any]] = {}
    for n in range(100):
        device = {
            "identifiers": [f"scale_{run}_{n}"],
            "name": f"Scale {n:03d}",
            "suggested_area": f"Scale room {n % 10}",
        }
        for component in ("light", "switch", "cover"):
            config: dict[str, Any] = {
                "name": component.capitalize(),
                "unique_id": f"scale_{run}_{n}_{component}",
                "command_topic": f"scale-test/{run}/{n}/{component}/set",
                "device": device,
            }
            if component == "light":  # like the lamps above: brightness and colour temperature
                config.update(schema="json", brightness=True, supported_color_modes=["color_temp"])
            configs[f"homeassistant/{component}/scale_{run}_{n}/{component}/config"] = config
    ours = {f"{c}.scale_{n:03d}_{c}" for n in range(100) for c in ("light", "switch", "cover")}
    try:
        for topic, config in configs.items():
            recorder.publish(topic, config, retain=True)
        # the snapshot after the registry changes, without asking
        message = recorder.wait_for(HOUSE, lambda m: ours <= set(entities(m.json())), timeout=WAIT)

        took = []
        for _ in range(5):
            began = time.monotonic()
            ask(recorder, lambda s: ours <= set(entities(s)))
            took.append(time.monotonic() - began)
        for n in range(20):  # requests while snapshots of this size are being made
            recorder.publish(GET, b"")
            request = {"id": f"scale-{n}", "domain": "switch", "service": "turn_on"}
            recorder.publish(BRIDGE_TOPIC, {**request, "entity_id": f"switch.scale_{n:03d}_switch"})
        for n in range(20):
            answer = recorder.wait_for(RESULT, lambda m, i=f"scale-{n}": m.json().get("id") == i, timeout=WAIT)
            assert answer.json() == {"id": f"scale-{n}", "ok": True}

        listed = entities(message.json())
        assert listed["light.scale_007_light"]["area"] == "Scale room 7"
        assert listed["light.scale_007_light"]["attributes"]["supported_color_modes"] == ["color_temp"]
        assert listed["cover.scale_042_cover"]["mqtt"] == {"device": [f"scale_{run}_42"]}
        print(
            f"\nHome Assistant {ha.version}: {len(listed)} entities, {len(message.payload)} bytes; "
            f"T/house/get answered in {min(took) * 1000:.0f}-{max(took) * 1000:.0f} ms"
        )
    finally:
        for topic in configs:
            recorder.publish(topic, b"", retain=True)
        snapshot_after(recorder, time.monotonic(), lambda s: not ours & set(entities(s)))
        for area in ha.ws({"type": "config/area_registry/list"}):
            if area["name"].startswith("Scale room"):
                ha.ws({"type": "config/area_registry/delete", "area_id": area["area_id"]})
