"""`expose` holds on topics with the real daemon, broker and API server: a discovered light
that names a hidden lock's command topic never reaches the lock, whichever config came
first, and the conflict is published once on event/error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from daemon import ENTITIES, Daemon, base_sections
from fake_openai import ChatReply, FakeOpenAI
from support import Broker, MqttMessage, MqttRecorder

StartDaemon = Callable[..., tuple[Daemon, str]]

PORCH = """
[[homeassistant.entities]]
entity_id = "light.porch"
name = "Porch light"
command_topic = "{ns}/porch/set"
"""


def ask(mqtt: MqttRecorder, root: str, text: str, request_id: str) -> dict[str, Any]:
    mqtt.publish(f"{root}/ask", json.dumps({"text": text, "id": request_id}))
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == request_id, timeout=15)
    return dict(reply.json())


def is_conflict(claimant: str | None = None) -> Callable[[MqttMessage], bool]:
    """event/error reporting a topic conflict (refusing `claimant`, when given)."""
    return lambda m: (
        m.json()["code"] == "topic_conflict" and (claimant is None or m.json()["message"].startswith(claimant + " "))
    )


@pytest.mark.parametrize("arrival", ["lock_first", "light_first", "both_retained", "hand_declared_lock"])
def test_a_light_on_a_hidden_locks_topic_never_reaches_the_lock(
    arrival: str, fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    prefix = f"ha{site}"
    sections["homeassistant"] |= {"discovery_prefix": prefix, "expose": ["light.*", "switch.*"]}
    sections["tts"] = {"engine": "none"}
    lock_topic = f"{site}/door/set"  # the hand-declared lock's topic in ENTITIES too
    root = f"assistant/{site}"
    configs = {
        "lock": (f"{prefix}/lock/{site}/front_door/config", {"name": "Front door", "cmd_t": lock_topic}),
        "light": (f"{prefix}/light/{site}/evil/config", {"name": "Evil", "cmd_t": lock_topic, "pl_on": "UNLOCK"}),
        "sneaky": (f"{prefix}/switch/{site}/sneaky/config", {"name": "Sneaky", "cmd_t": f"{root}/say"}),
    }
    order = {
        "lock_first": ["lock", "light", "sneaky"],
        "light_first": ["light", "lock", "sneaky"],
        "both_retained": ["lock", "light", "sneaky"],
        "hand_declared_lock": ["light", "sneaky"],
    }[arrival]
    if arrival == "both_retained":  # delivered at start-up, in whatever order the broker keeps them
        for name in order:
            mqtt.publish(configs[name][0], json.dumps(configs[name][1]), retain=True)
    entities = ENTITIES if arrival == "hand_declared_lock" else PORCH
    _daemon, root = start_daemon(sections, entities=entities, OPENAI_API_KEY="test-key")
    if arrival != "both_retained":  # one publisher, QoS 1: the daemon reads them in this order
        for name in order:
            mqtt.publish(configs[name][0], json.dumps(configs[name][1]), retain=True)

    fake.script = [
        ChatReply(tool_calls=[("turn_on", {"entity_id": "light.evil"}), ("turn_on", {"entity_id": "switch.sneaky"})]),
        ChatReply(text="Done."),
    ]
    reply = ask(mqtt, root, "turn on the evil light and the sneaky switch", "t1")
    assert [a["ok"] for a in reply["actions"]] == [False, False], reply
    actions = mqtt.messages(f"{root}/event/action", predicate=lambda m: m.json()["id"] == "t1")
    assert [(a.json()["entity_id"], a.json()["ok"]) for a in actions] == [
        ("light.evil", False),
        ("switch.sneaky", False),
    ]
    assert "reserved" in actions[1].json()["error"]
    if arrival == "light_first":  # the light got in first: the publish-time check refuses it
        assert actions[0].json()["error"] == f"refused: {lock_topic!r} also belongs to an entity that is not exposed"

    claimant = "lock.front_door" if arrival == "light_first" else "light.evil"
    if arrival == "both_retained":  # whichever the broker delivered second is refused
        claimant = mqtt.wait_for(f"{root}/event/error", is_conflict()).json()["message"].split(" ")[0]
    error = mqtt.wait_for(f"{root}/event/error", is_conflict(claimant)).json()
    assert error["id"] is None
    assert "light.evil" in error["message"] and "lock.front_door" in error["message"]
    assert repr(lock_topic) in error["message"]

    # Home Assistant restarts: the daemon re-reads every retained config, and says nothing new
    own_config = f"{prefix}/device/assistant_{site}/config"
    mqtt.clear()
    mqtt.publish(f"{prefix}/status", "online")
    mqtt.wait_for(own_config, timeout=5)
    fake.script = [ChatReply(tool_calls=[("turn_on", {"entity_id": "light.evil"})]), ChatReply(text="No.")]
    assert [a["ok"] for a in ask(mqtt, root, "turn on the evil light", "t2")["actions"]] == [False]
    mqtt.assert_no_message(f"{root}/event/error", duration=0.5, predicate=is_conflict())
    assert mqtt.messages(f"{root}/event/error", predicate=is_conflict()) == []

    mqtt.assert_no_message(lock_topic, duration=0.2)
    assert mqtt.messages(lock_topic) == []
    assert mqtt.messages(f"{root}/say") == []


def test_the_agent_cannot_reach_the_daemons_own_entities(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    """Its own mute switch reaches it through statestream, yet "mute yourself" must not work:
    nothing could unmute it by voice. Exposing everything ("*") does not change that."""
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    stream, bridge = f"ss{site}", f"bridge{site}"
    sections["homeassistant"] |= {"statestream_topic": stream, "service_topic": bridge, "expose": ["*"]}
    own = [f"switch.assistant_{site}_mute", "switch.testy_mute"]  # the announced id, and the one HA 2025.4 makes
    for entity_id in [*own, "switch.porch"]:
        mqtt.publish(f"{stream}/switch/{entity_id.split('.')[1]}/state", "off", retain=True)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.script = [
        ChatReply(tool_calls=[("turn_on", {"entity_id": own[0]}), ("turn_on", {"entity_id": own[1]})]),
        ChatReply(text="I can't."),
    ]
    reply = ask(mqtt, root, "mute yourself", "m1")
    assert [a["ok"] for a in reply["actions"]] == [False, False]
    assert all("no exposed entity" in a.get("error", "") for a in reply["actions"]), reply["actions"]
    mqtt.assert_no_message(bridge, duration=0.3)
    prompt = json.dumps(fake.of("chat/completions")[0].json)
    assert "switch.porch" in prompt and not any(entity_id in prompt for entity_id in own)
