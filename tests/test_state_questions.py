"""State questions end to end: the prompt names the entities but holds no state, the model
reads the state with get_state, and the spoken reply says what the tool returned.

The daemon runs as a process with the real openai client against tests/fake_openai.py,
whose chat handler plays a model: it picks the entity the question names from the
system prompt's table, calls get_state, and answers from the tool's result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from daemon import Daemon, base_sections
from fake_openai import ChatReply, FakeOpenAI
from support import Broker, MqttRecorder

StartDaemon = Callable[..., tuple[Daemon, str]]

ENTITIES = """
[[homeassistant.entities]]
entity_id = "cover.garage_door"
name = "Garage door"
area = "Garage"
command_topic = "{ns}/garage/set"
state_topic = "{ns}/garage/state"

[[homeassistant.entities]]
entity_id = "sensor.kitchen_temperature"
name = "Kitchen temperature"
area = "Kitchen"
state_topic = "{ns}/kitchen/temperature"
unit_of_measurement = "°C"
device_class = "temperature"

[[homeassistant.entities]]
entity_id = "light.kitchen"
name = "Kitchen light"
area = "Kitchen"
command_topic = "{ns}/kitchen/light/set"
state_topic = "{ns}/kitchen/light/state"
"""
# words of a question -> the entity a model would pick from the prompt's table
PICKS = {"garage": "cover.garage_door", "temperature": "sensor.kitchen_temperature"}


class StateModel:
    """A model that reads states through get_state and answers from what it returned."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.results: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> ChatReply:
        messages = request["messages"]
        last = messages[-1]
        if last["role"] == "user":
            system = messages[0]["content"]
            self.prompts.append(system)
            entity_id = next(eid for word, eid in PICKS.items() if word in last["content"])
            if not re.search(rf"\b{re.escape(entity_id)}\b", system):
                return ChatReply(text=f"I don't see {entity_id}.")
            return ChatReply(tool_calls=[("get_state", {"entity_id": entity_id})])
        result = json.loads(last["content"])
        self.results.append(result)
        unit = result.get("attributes", {}).get("unit_of_measurement")
        value = f"{result['state']} {unit}" if unit else result["state"]
        return ChatReply(text=f"The {result['name'].lower()} is {value}.")


def ask(mqtt: MqttRecorder, root: str, text: str, request_id: str) -> dict[str, Any]:
    mqtt.publish(f"{root}/ask", json.dumps({"text": text, "id": request_id}))
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == request_id, timeout=15)
    return dict(reply.json())


def test_state_questions_are_answered_from_get_state(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    sections["homeassistant"] |= {"expose": ["light.*", "cover.*", "sensor.*"]}
    mqtt.publish(f"{site}/garage/state", "open", retain=True)
    mqtt.publish(f"{site}/kitchen/temperature", "21.5", retain=True)
    model = StateModel()
    fake.chat_handler = model
    _daemon, root = start_daemon(sections, entities=ENTITIES, OPENAI_API_KEY="test-key")

    reply = ask(mqtt, root, "is the garage door open?", "q1")
    assert reply["text"] == "The garage door is open.", reply
    assert reply["actions"] == []  # reading a state is no action
    assert "Garage: cover.garage_door" in model.prompts[0]  # named in the prompt ...
    assert "open" not in model.prompts[0].split("Current states are not listed")[0]  # ... without its state
    assert model.results[0]["entity_id"] == "cover.garage_door"

    reply = ask(mqtt, root, "what's the temperature in the kitchen?", "q2")
    assert reply["text"] == "The kitchen temperature is 21.5 °C.", reply
    assert "21.5" not in model.prompts[1]
    assert model.results[1]["attributes"] == {"unit_of_measurement": "°C", "device_class": "temperature"}

    # the answer follows the house, not a prompt from before: the door closes, the next answer says so
    mqtt.publish(f"{site}/garage/state", "closed", retain=True)
    for turn in range(2, 40):
        reply = ask(mqtt, root, "is the garage door open now?", f"q{turn + 1}")
        if reply["text"] == "The garage door is closed.":
            break
        assert reply["text"] == "The garage door is open.", reply  # not read yet: ask again
    else:
        raise AssertionError("the closed door was never reported")
    tools = fake.of("chat/completions")[0].json["tools"]  # type: ignore[index]
    assert "cover.garage_door" not in json.dumps(tools)  # no tool lists the entities
