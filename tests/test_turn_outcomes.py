"""What a turn reports matches what happened: token usage on every reply, a cut-short answer
said to be cut short, and every tool failure answered to the model and ending in a reply.

The real daemon, the real openai client against tests/fake_openai.py, and mosquitto."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from daemon import Daemon, base_sections
from fake_openai import ChatReply, FakeOpenAI
from support import Broker, MqttRecorder

StartDaemon = Callable[..., tuple[Daemon, str]]
KEY = "test-key"


def ask(mqtt: MqttRecorder, root: str, text: str, request_id: str, speak: bool = False) -> dict[str, Any]:
    mqtt.publish(f"{root}/ask", json.dumps({"text": text, "id": request_id, "speak": speak}))
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == request_id, timeout=20)
    return dict(reply.json())


def errors(mqtt: MqttRecorder, root: str, request_id: str) -> list[dict[str, Any]]:
    return [m.json() for m in mqtt.messages(f"{root}/event/error") if m.json().get("id") == request_id]


def fake_prompt_tokens(body: dict[str, Any] | None) -> int:
    """What the fake server reports as a request's prompt tokens."""
    assert body is not None
    return max(1, len(json.dumps(body["messages"])) // 4)


# --------------------------------------------------------------------------- usage


def test_reply_carries_usage_summed_over_tool_rounds(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    fake.cached_tokens = 7
    fake.script = [
        ChatReply(tool_calls=[("get_state", {"entity_id": "light.kitchen"})]),
        ChatReply(text="The kitchen light is off."),
    ]
    reply = ask(mqtt, root, "is the kitchen light on", "u1")
    first, second = (r.json for r in fake.of("chat/completions"))
    assert first is not None and second is not None
    assert first["stream_options"] == second["stream_options"] == {"include_usage": True}
    assert reply["usage"]["prompt_tokens"] == fake_prompt_tokens(first) + fake_prompt_tokens(second)
    assert reply["usage"]["cached_tokens"] == 14
    assert reply["usage"]["completion_tokens"] > 0
    assert reply["partial"] is False
    # both rounds of a turn share one system prompt: the second is the first plus the tool round
    assert first["messages"][0] == second["messages"][0]


def test_endpoint_refusing_stream_options_still_answers(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    fake.reject_stream_options = True  # Azure before api-version 2024-08-01-preview, some local servers
    first = ask(mqtt, root, "hello", "s1")
    assert (first["text"], first["usage"]) == ("OK.", None)  # null: the API reported nothing
    ask(mqtt, root, "hello again", "s2")
    sent = [r.json is not None and "stream_options" in r.json for r in fake.of("chat/completions")]
    assert sent == [True, False, False]  # asked once, then never again
    assert errors(mqtt, root, "s1") == [] and daemon.log().count("refuses stream_options") == 1


def test_fast_path_reply_reports_zero_usage(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["agent"] = {"local_intents": True}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY=KEY)
    reply = ask(mqtt, root, "turn on the kitchen light", "f1")
    assert reply["intent"] == "HassTurnOn" and fake.of("chat/completions") == []
    assert reply["usage"] == {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0}


def test_a_10_mb_state_message_leaves_the_prompt_small(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    site = root.rsplit("/", 1)[1]
    mqtt.publish(f"{site}/kitchen/light/state", "X" * 10_000_000)
    fake.script = [ChatReply(tool_calls=[("get_state", {"entity_id": "light.kitchen"})]), ChatReply(text="Odd.")]
    ask(mqtt, root, "is the kitchen light on", "big")
    first, second = (r.json for r in fake.of("chat/completions"))
    assert first is not None and second is not None
    assert len(first["messages"][0]["content"]) < 2000  # it was 10 MB
    assert len(second["messages"][-1]["content"]) < 2000  # and so was get_state's answer
    assert mqtt.messages(f"{root}/event/error") == []
    assert daemon.log().count("10000000-character message") == 1


# --------------------------------------------------------------------------- cut-short answers


def test_truncated_answer_says_what_arrived_and_that_it_was_cut(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    fake.script = [ChatReply(text="The kitchen light is on. The temperature in the living", finish_reason="length")]
    reply = ask(mqtt, root, "how is the house", "t1", speak=True)
    expected = ["The kitchen light is on.", "Sorry, my answer was cut short."]
    assert (reply["text"], reply["partial"]) == (" ".join(expected), True)
    assert [e["code"] for e in errors(mqtt, root, "t1")] == ["reply_truncated"]
    spoken = [r.json["input"] for r in fake.wait_for("audio/speech", count=2) if r.json]
    assert spoken == expected  # the unfinished sentence is not spoken


def test_filtered_answer_with_nothing_usable_is_an_apology(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    fake.script = [ChatReply(text="Well", finish_reason="content_filter")]
    reply = ask(mqtt, root, "say something bad", "c1")
    assert (reply["text"], reply["partial"]) == ("Sorry, I can't answer that.", True)
    assert [e["code"] for e in errors(mqtt, root, "c1")] == ["content_filtered"]


def test_stream_ending_without_its_final_chunk_is_not_taken_as_whole(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    fake.script = [ChatReply(text="The hall lamp is now on and the kitchen light", cut_after=4)]
    reply = ask(mqtt, root, "lights?", "x1")
    assert (reply["text"], reply["partial"]) == ("Sorry, my answer was lost on the way. Please try again.", True)
    assert [e["code"] for e in errors(mqtt, root, "x1")] == ["stream_cut"]
    assert reply["usage"] is None  # the usage chunk never came
    assert ask(mqtt, root, "and now?", "x2")["partial"] is False  # the next turn is whole again


def test_tool_call_of_a_truncated_answer_is_not_run(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    site = root.rsplit("/", 1)[1]
    fake.script = [ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})], finish_reason="length")]
    reply = ask(mqtt, root, "turn on the kitchen light", "l1")
    assert reply["partial"] is True and reply["actions"] == []
    assert len(fake.of("chat/completions")) == 1
    mqtt.assert_no_message(f"{site}/kitchen/light/set", duration=0.3)


def test_api_failure_after_an_action_still_reports_the_action(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY=KEY)
    site = root.rsplit("/", 1)[1]

    def model(request: dict[str, Any]) -> ChatReply:
        if len(fake.of("chat/completions")) == 1:
            return ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})])
        raise RuntimeError("the API is down")  # answered 500, retried, then given up

    fake.chat_handler = model
    reply = ask(mqtt, root, "turn on the kitchen light", "a1")
    assert reply["text"].startswith("Sorry, I can't reach my language service")
    assert [(a["entity_id"], a["ok"]) for a in reply["actions"]] == [("light.kitchen", True)]
    assert mqtt.wait_for(f"{site}/kitchen/light/set").text == "ON"
    assert mqtt.wait_for(f"{root}/event/action", predicate=lambda m: m.json()["id"] == "a1").json()["ok"] is True
    assert reply["usage"]["prompt_tokens"] > 0  # the first request's usage, though the turn failed
    assert [e["code"] for e in errors(mqtt, root, "a1")] == ["api_error"]


# --------------------------------------------------------------------------- tool failures

BROKEN = """
[[homeassistant.entities]]
entity_id = "light.scale_text"
name = "Text scale"
command_topic = "{ns}/a/set"
brightness_command_topic = "{ns}/a/bri"
brightness_scale = "abc"

[[homeassistant.entities]]
entity_id = "light.scale_zero"
name = "Zero scale"
command_topic = "{ns}/b/set"
brightness_command_topic = "{ns}/b/bri"
brightness_scale = 0

[[homeassistant.entities]]
entity_id = "light.template"
name = "Template light"
command_topic = "{ns}/c/set"
brightness_command_topic = "{ns}/c/bri"
brightness_command_template = "{{{{ value / 0 }}}}"

[[homeassistant.entities]]
entity_id = "sensor.ratio"
name = "Ratio"
state_topic = "{ns}/ratio"
value_template = "{{{{ (value | float) / 0 }}}}"
"""


def test_every_tool_failure_goes_back_to_the_model_and_the_turn_ends_in_a_reply(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["homeassistant"]["expose"] = ["light.*", "sensor.*"]
    daemon, root = start_daemon(sections, entities=BROKEN, OPENAI_API_KEY=KEY)
    site = root.rsplit("/", 1)[1]
    for value in ("1", "2", "3"):  # a state template that divides by zero, on every message
        mqtt.publish(f"{site}/ratio", value)
    deep = '{"entity_id": ' + "[" * 100_000 + "]" * 100_000 + "}"  # json.loads raises RecursionError
    fake.script = [
        ChatReply(
            tool_calls=[
                ("turn_on", {"entity_id": "light.scale_text", "brightness_pct": 50}),
                ("turn_on", {"entity_id": "light.scale_zero", "brightness_pct": 50}),
                ("turn_on", {"entity_id": "light.template", "brightness_pct": 50}),
                ("turn_on", deep),
                ("turn_on", {"entity_id": "light.template", "brightness_pct": 500, "color": "red"}),
                ("turn_on", "[" * 300 + "]" * 300),  # parses, but is no object (and is not echoed back whole)
            ]
        ),
        ChatReply(text="None of those lights would change."),
    ]
    reply = ask(mqtt, root, "dim the lights", "e1", speak=True)
    assert reply["text"] == "None of those lights would change."
    fake.wait_for("audio/speech")  # spoken too
    errors_seen = [a["error"] for a in reply["actions"]]
    assert [a["ok"] for a in reply["actions"]] == [False] * 6
    assert "invalid brightness_scale 'abc'" in errors_seen[0] and "invalid brightness_scale 0" in errors_seen[1]
    assert "ZeroDivisionError" in errors_seen[2] and errors_seen[3] == "invalid arguments"
    assert errors_seen[4] == "brightness_pct: must be at most 100"  # the advertised schema, checked
    assert errors_seen[5] == "invalid arguments"
    actions = mqtt.messages(f"{root}/event/action", predicate=lambda m: m.json()["id"] == "e1")
    assert [m.json()["ok"] for m in actions] == [False] * 6
    results = [m["content"] for m in fake.of("chat/completions")[1].json["messages"] if m["role"] == "tool"]  # type: ignore[index]
    assert len(results) == 6 and all("error" in json.loads(r) for r in results)
    assert "RecursionError" in results[3] and "got a JSON list" in results[5]
    assert mqtt.messages(f"{root}/event/error") == []  # no internal_error: neither for the turn nor the states
    for topic in ("a/set", "a/bri", "b/set", "b/bri", "c/set", "c/bri"):
        assert mqtt.messages(f"{site}/{topic}") == []  # nothing half-done
    assert daemon.log().count("value_template failed") == 1  # logged once for the entity, not per message
