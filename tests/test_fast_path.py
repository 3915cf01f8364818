"""The local fast path through the daemon: common commands need no chat round trip, and
a pause that already holds a whole command ends the utterance early."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from daemon import Daemon, base_sections, wait_log
from fake_openai import FakeOpenAI
from support import Broker, MqttRecorder, PulseAudio, SpeakerRecorder

StartDaemon = Callable[..., tuple[Daemon, str]]


def fast_sections(broker: Broker, fake: FakeOpenAI) -> dict[str, dict[str, object]]:
    sections = base_sections(broker.port, fake.url)
    sections["agent"] = {"local_intents": True}
    return sections


def test_spoken_command_acts_without_the_chat_model(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: Callable[..., Path],
    start_daemon: StartDaemon,
) -> None:
    sections = fast_sections(mqtt_broker, fake)
    site = sections["device"]["site_id"]
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.transcript = "turn on the kitchen light"
    pulse.play_into_mic(speech("turn on the kitchen light"), wait=False)
    transcript = mqtt.wait_for(f"{root}/event/transcript", timeout=20)
    command = mqtt.wait_for(f"{site}/kitchen/light/set", timeout=5)
    assert command.text == "ON"
    assert command.time - transcript.time < 0.5
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=5).json()
    assert (reply["text"], reply["intent"]) == ("Turned on the kitchen light.", "HassTurnOn")
    assert reply["actions"][0]["ok"] is True
    speaker.wait_for_sound(threshold=1000, timeout=10)
    assert fake.of("chat/completions") == []
    assert [r.json["input"] for r in fake.of("audio/speech") if r.json] == ["Turned on the kitchen light."]


def test_a_paused_complete_command_ends_the_utterance_early(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: Callable[..., Path],
    start_daemon: StartDaemon,
) -> None:
    sections = fast_sections(mqtt_broker, fake)
    sections["vad"] = {"silence_ms": 2000, "early_ms": 250}
    sections["tts"] = {"engine": "none"}
    site = sections["device"]["site_id"]
    daemon, _root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.transcript = "turn off the kitchen light"
    with SpeakerRecorder(pulse, device="micsrc.monitor") as mic:
        pulse.play_into_mic(speech("turn off the kitchen light"))
        command = mqtt.wait_for(f"{site}/kitchen/light/set", timeout=20)
        loud = np.flatnonzero(np.abs(mic.samples().astype(np.int32)) > 300)
        end_of_speech = mic.time_of_sample(int(loud[-1]))
    assert command.text == "OFF"
    assert command.time - end_of_speech < 1.2, "waited out the whole 2 s of silence"
    # matched at the pause (which ended the utterance) and as the request: hassil ran once
    wait_log(daemon, r"fast path: HassTurnOff -> \['turn_off'\] \(done; recognitions so far: 1\)", timeout=10)


def test_other_requests_and_unexposed_entities_go_to_the_agent(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = fast_sections(mqtt_broker, fake)
    site = sections["device"]["site_id"]
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    mqtt.publish(f"{root}/ask", json.dumps({"text": "turn off the kitchen light", "id": "f1"}))
    assert mqtt.wait_for(f"{root}/event/reply", timeout=10).json()["intent"] == "HassTurnOff"
    assert mqtt.wait_for(f"{site}/kitchen/light/set").text == "OFF"
    for index, text in enumerate(["what is the capital of France", "unlock the front door"]):
        mqtt.publish(f"{root}/ask", json.dumps({"text": text, "id": f"a{index}"}))
        reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m, i=index: m.json()["id"] == f"a{i}", timeout=15)
        assert "intent" not in reply.json()
    assert len(fake.of("chat/completions")) == 2
    mqtt.assert_no_message(f"{site}/door/set", duration=0.3)


FLOORS = """
[[homeassistant.entities]]
entity_id = "light.landing"
name = "Landing light"
area = "Landing"
floor = "Upstairs"
command_topic = "{ns}/landing/set"

[[homeassistant.entities]]
entity_id = "light.study"
name = "Study lamp"
area = "Study"
floor = "Upstairs"
command_topic = "{ns}/study/set"

[[homeassistant.entities]]
entity_id = "light.hall"
name = "Hall light"
area = "Hall"
floor = "Ground floor"
command_topic = "{ns}/hall/set"
"""


def test_a_floor_said_acts_on_the_lights_on_it(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = fast_sections(mqtt_broker, fake)
    site = sections["device"]["site_id"]
    _daemon, root = start_daemon(sections, entities=FLOORS, OPENAI_API_KEY="test-key")
    mqtt.publish(f"{root}/ask", json.dumps({"text": "turn off the lights upstairs", "id": "up"}))
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=10).json()
    assert (reply["intent"], reply["text"]) == ("HassTurnOff", "Turned off 2 lights upstairs.")
    assert [action["ok"] for action in reply["actions"]] == [True, True]
    assert mqtt.wait_for(f"{site}/landing/set").text == "OFF"
    assert mqtt.wait_for(f"{site}/study/set").text == "OFF"
    mqtt.publish(f"{root}/ask", json.dumps({"text": "turn off the lights on the third floor", "id": "third"}))
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "third", timeout=15).json()
    assert "intent" not in reply  # no such floor: the chat agent answered
    assert len(fake.of("chat/completions")) == 1
    mqtt.assert_no_message(f"{site}/hall/set", duration=0.3)
