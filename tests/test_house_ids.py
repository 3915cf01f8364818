"""The daemon against the broker: two devices with one name, ids kept across restarts, the house snapshot."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon import Daemon, base_sections, wait_log
from fake_openai import ChatReply, FakeOpenAI
from real_ha import BRIDGE_TOPIC, HomeAssistant
from support import Broker, MqttRecorder

STATE_DIR = "state_dir"

StartDaemon = Callable[..., tuple[Daemon, str]]


def lamp(device: str) -> dict[str, Any]:
    """A zigbee2mqtt-like light named after its device, "Bedroom lamp" like its twin."""
    return {
        "name": None,
        "uniq_id": f"{device}_light_z2m",
        "cmd_t": f"z2m/{device}/set",
        "stat_t": f"z2m/{device}",
        "dev": {"ids": [f"zigbee2mqtt_{device}"], "name": "Bedroom lamp", "mf": "IKEA"},
    }


def wait_subscribed(broker: Broker, topic: str, times: int = 1, timeout: float = 15) -> None:
    """Until the broker has logged `times` subscriptions to `topic` (a daemon learned a config naming it)."""
    pattern = re.compile(rf"\t{re.escape(topic)} \(QoS")
    deadline = time.monotonic() + timeout
    while len(pattern.findall(broker.log())) < times:
        if time.monotonic() > deadline:
            raise AssertionError(f"no subscription to {topic} ({times}) in the broker log")
        time.sleep(0.05)


def wait_forgotten(state_dir: Path, unique_id: str, timeout: float = 15) -> None:
    """Until the daemon has saved that the entity with `unique_id` was removed (its id is free)."""
    path = state_dir / "entity_ids.json"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if f"light {unique_id}" in json.loads(path.read_text()).get("deleted", {}):
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{unique_id} was never saved as removed in {path}")
        time.sleep(0.05)


def ask(mqtt: MqttRecorder, root: str, text: str, request_id: str) -> dict[str, Any]:
    mqtt.publish(f"{root}/ask", json.dumps({"text": text, "id": request_id}))
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == request_id, timeout=15)
    return dict(reply.json())


def turn_on(fake: FakeOpenAI, entity_id: str) -> None:
    fake.script = [ChatReply(tool_calls=[("turn_on", {"entity_id": entity_id})]), ChatReply(text="Done.")]


def system_prompt(fake: FakeOpenAI) -> str:
    body = fake.of("chat/completions")[-2].json
    assert body is not None
    return str(body["messages"][0]["content"])


def test_two_devices_with_one_name_are_told_apart_and_removed_alone(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    prefix = f"ha{site}"
    sections["homeassistant"] |= {"discovery_prefix": prefix, "version": "2025.4.4"}
    sections["agent"] |= {"states_in_prompt": True}  # the prompt's states line shows what the daemon knows
    first, second = f"{site}a", f"{site}b"
    mqtt.publish(f"{prefix}/light/{first}/light/config", json.dumps(lamp(first)), retain=True)
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    wait_subscribed(mqtt_broker, f"z2m/{first}")
    mqtt.publish(f"{prefix}/light/{second}/light/config", json.dumps(lamp(second)), retain=True)
    wait_subscribed(mqtt_broker, f"z2m/{second}")
    wait_log(daemon, r"two discovered entities want the id light\.bedroom_lamp: the later is light\.bedroom_lamp_2")

    turn_on(fake, "light.bedroom_lamp_2")
    reply = ask(mqtt, root, "turn on the second bedroom lamp", "t1")
    assert reply["actions"][0]["ok"] is True, reply
    assert mqtt.wait_for(f"z2m/{second}/set").text == "ON"
    mqtt.assert_no_message(f"z2m/{first}/set", duration=0.3)
    assert "light.bedroom_lamp unknown; light.bedroom_lamp_2 unknown" in system_prompt(fake)  # both known

    # removing the first leaves the second, still under its own id and topic
    mqtt.publish(f"{prefix}/light/{first}/light/config", b"", retain=True)
    wait_forgotten(Path(sections["device"][STATE_DIR]), f"{first}_light_z2m")
    turn_on(fake, "light.bedroom_lamp")
    reply = ask(mqtt, root, "turn on the bedroom lamp", "t2")
    assert reply["actions"][0]["error"] == "no exposed entity 'light.bedroom_lamp'", reply
    turn_on(fake, "light.bedroom_lamp_2")
    assert ask(mqtt, root, "turn on the other bedroom lamp", "t3")["actions"][0]["ok"] is True
    assert len(mqtt.messages(f"z2m/{second}/set")) == 2
    assert mqtt.messages(f"z2m/{first}/set") == []


def test_ids_survive_a_restart_in_which_the_configs_come_in_another_order(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    prefix = f"ha{site}"
    sections["homeassistant"] |= {"discovery_prefix": prefix, "service_topic": f"svc{site}"}
    first, second = f"{site}a", f"{site}b"
    mqtt.publish(f"{prefix}/light/{first}/light/config", json.dumps(lamp(first)), retain=True)
    daemon, _root = start_daemon(sections, OPENAI_API_KEY="test-key")
    wait_subscribed(mqtt_broker, f"z2m/{first}")
    mqtt.publish(f"{prefix}/light/{second}/light/config", json.dumps(lamp(second)), retain=True)
    wait_log(daemon, r"the later is light\.bedroom_lamp_2")
    # no bridge package answers the snapshot request: said once, with the likely causes
    mqtt.wait_for(f"svc{site}/house/get")
    wait_log(daemon, r"no house snapshot on svc\S+/house within 10 s of asking: is the bridge package", timeout=20)
    assert daemon.stop() == 0

    # after the restart the second device's config comes first; it keeps its _2
    mqtt.publish(f"{prefix}/light/{first}/light/config", b"", retain=True)
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    wait_subscribed(mqtt_broker, f"z2m/{second}", times=2)
    mqtt.publish(f"{prefix}/light/{first}/light/config", json.dumps(lamp(first)), retain=True)
    wait_subscribed(mqtt_broker, f"z2m/{first}", times=2)
    turn_on(fake, "light.bedroom_lamp_2")
    assert ask(mqtt, root, "turn on the second bedroom lamp", "r1")["actions"][0]["ok"] is True
    assert mqtt.wait_for(f"z2m/{second}/set").text == "ON"
    mqtt.assert_no_message(f"z2m/{first}/set", duration=0.3)
    assert "no house snapshot" not in daemon.log()  # a new process says it again only after waiting


def test_the_snapshot_makes_entities_known_at_once_and_a_rename_leaves_one(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    prefix, stream, service = f"ha{site}", f"ss{site}", f"svc{site}"
    sections["homeassistant"] |= {
        "discovery_prefix": prefix,
        "statestream_topic": stream,
        "service_topic": service,
        "expose": ["light.*", "switch.*"],
    }
    sections["agent"] |= {"states_in_prompt": True}  # the prompt's states line shows what the daemon knows
    device = f"{site}a"
    mqtt.publish(f"{prefix}/light/{device}/light/config", json.dumps(lamp(device)), retain=True)
    mqtt.publish(f"{stream}/switch/old_name/state", "off", retain=True)  # retained, of an entity renamed since

    def entity(entity_id: str, name: str, devices: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        mqtt_part = None if devices is None else {"device": devices}
        base = {"entity_id": entity_id, "name": name, "area": None, "floor": None, "state": "off", "attributes": {}}
        return base | {"mqtt": mqtt_part} | extra

    house = {
        "format": 1,
        "entities": [
            entity("switch.hall", "Hall", area="Hall", floor="Ground"),  # never changed: statestream never said
            entity("light.bedroom_lamp_2", "Bedroom lamp", [f"zigbee2mqtt_{device}"], area="Bedroom"),
        ],
        "areas": [],
        "floors": [],
    }
    mqtt.publish(f"{service}/house", json.dumps(house), retain=True)
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    assert mqtt.wait_for(f"{service}/house/get") is not None
    wait_log(daemon, r"house snapshot: 2 entities")
    wait_subscribed(mqtt_broker, f"z2m/{device}")

    # the hall switch is usable at once, through the bridge
    turn_on(fake, "switch.hall")
    mqtt.publish(f"{root}/ask", json.dumps({"text": "turn on the hall switch", "id": "s1"}))
    request = mqtt.wait_for(service, timeout=15).json()
    assert (request["entity_id"], request["service"]) == ("switch.hall", "turn_on")
    mqtt.publish(f"{service}/result", json.dumps({"id": request["id"], "ok": True}))
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "s1", timeout=15).json()
    assert reply["actions"][0]["ok"] is True, reply
    system = system_prompt(fake)
    assert "switch.hall" in system and "switch.old_name" not in system
    # the discovered lamp is known by Home Assistant's id, commanded straight on its topic
    turn_on(fake, "light.bedroom_lamp_2")
    assert ask(mqtt, root, "turn on the bedroom lamp", "s2")["actions"][0]["ok"] is True
    assert mqtt.wait_for(f"z2m/{device}/set").text == "ON"
    assert re.findall(r"light\.bedroom_lamp\w*", system_prompt(fake)) == ["light.bedroom_lamp_2"] * 2  # table, states

    # renamed in Home Assistant: the next snapshot has one entity where there was one
    house["entities"] = [entity("switch.hall", "Hall"), entity("light.reading", "Reading", [f"zigbee2mqtt_{device}"])]
    mqtt.publish(f"{service}/house", json.dumps(house), retain=True)
    wait_log(daemon, r"house snapshot: 2 entities", after=daemon.log().index("house snapshot: 2 entities") + 1)
    turn_on(fake, "light.reading")
    assert ask(mqtt, root, "turn on the reading light", "s3")["actions"][0]["ok"] is True
    assert len(mqtt.messages(f"z2m/{device}/set")) == 2
    system = system_prompt(fake)
    assert "light.reading" in system and "light.bedroom_lamp" not in system
    # a state change; a removal
    mqtt.publish(f"{service}/house/state", json.dumps({"entity_id": "switch.hall", "state": "on", "attributes": {}}))
    mqtt.publish(f"{service}/house/state", json.dumps({"entity_id": "light.reading", "state": None}))
    wait_log(daemon, r"light\.reading was removed in Home Assistant")
    turn_on(fake, "light.reading")
    reply = ask(mqtt, root, "turn on the reading light", "s4")
    assert reply["actions"][0]["error"] == "no exposed entity 'light.reading'", reply
    assert "switch.hall on" in system_prompt(fake)
    # Home Assistant restarted: the snapshot is asked for again
    restarted = time.monotonic()
    mqtt.publish(f"{prefix}/status", "online")
    mqtt.wait_for(f"{service}/house/get", since=restarted)


# The package's allowlist as tests/test_house_snapshot.py installs it (the session's Home Assistant is shared).
ALLOWED = r"^(light\..+|switch\..+|cover\..+|climate\..+|fan\..+)$"


def test_with_a_real_home_assistant_the_one_it_calls_2_is_commanded(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
    home_assistant: HomeAssistant,
    tmp_path: Path,
) -> None:
    if f"'{ALLOWED}'" not in (home_assistant.config_dir / "packages/assistant_bridge.yaml").read_text():
        home_assistant.install_bridge(ALLOWED)
    tag = uuid.uuid4().hex[:6]
    keys = [f"0x{tag}{index:010x}" for index in (1, 2)]
    topics = [f"homeassistant/light/{key}/light/config" for key in keys]
    base = f"light.duo_{tag}"
    try:
        for key, topic, entity_id in zip(keys, topics, (base, f"{base}_2"), strict=True):
            config = {
                "name": None,
                "unique_id": f"{key}_light_zigbee2mqtt",
                "schema": "json",
                "command_topic": f"z2m-test/{key}/set",
                "state_topic": f"z2m-test/{key}",
                "device": {"identifiers": [f"zigbee2mqtt_{key}"], "name": f"Duo {tag}", "manufacturer": "IKEA"},
            }
            mqtt.publish(topic, json.dumps(config), retain=True)
            home_assistant.wait_state(entity_id, timeout=30)  # one after the other: the second is _2
        sections = base_sections(mqtt_broker.port, fake.url)
        sections["homeassistant"] |= {"service_topic": BRIDGE_TOPIC, "version": home_assistant.version}
        # this daemon once learned them the other way round: without the snapshot it would command the first
        state_dir = tmp_path / "state-real"
        state_dir.mkdir()
        swapped = {f"light {keys[1]}_light_zigbee2mqtt": base, f"light {keys[0]}_light_zigbee2mqtt": f"{base}_2"}
        (state_dir / "entity_ids.json").write_text(json.dumps({"registered": swapped}))
        sections["device"]["state_dir"] = str(state_dir)
        daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
        wait_subscribed(mqtt_broker, f"z2m-test/{keys[1]}")
        wait_log(daemon, r"house snapshot: \d+ entities")
        turn_on(fake, f"{base}_2")
        reply = ask(mqtt, root, "turn on the second duo lamp", "h1")
        assert reply["actions"][0]["ok"] is True, reply
        assert mqtt.wait_for(f"z2m-test/{keys[1]}/set").json()["state"] == "ON"
        mqtt.assert_no_message(f"z2m-test/{keys[0]}/set", duration=0.3)
        assert f"{base}_2" in system_prompt(fake)
    finally:
        for topic in topics:
            mqtt.publish(topic, b"", retain=True)
        for entity_id in (base, f"{base}_2"):
            home_assistant.wait_state(entity_id, lambda state: state is None, timeout=30)
