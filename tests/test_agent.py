"""Agent parity with Home Assistant's OpenAI / Azure OpenAI agents and the Azure connectors:
every option reaches the wire, templates see live states, memory, credentials, images."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from daemon import ENTITIES, Daemon, base_sections, daemon_env, run_cli, wait_log, write_config
from fake_openai import ChatReply, FakeOpenAI
from support import Broker, MqttRecorder, PulseAudio, SpeechFactory

from assistant.agent.memory import Memory, estimate_tokens

StartDaemon = Callable[..., tuple[Daemon, str]]


def write(tmp_path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    return write_config(tmp_path / "assistant.toml", sections, ENTITIES.format(ns=sections["device"]["site_id"]))


def chat_body(fake: FakeOpenAI, index: int = 0) -> dict[str, Any]:
    body = fake.of("chat/completions")[index].json
    assert body is not None
    return body


def test_recommended_settings_reach_the_wire(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["agent"] |= {"user": "kitchen-device"}
    result = run_cli(
        ["ask", "--config", str(write(tmp_path, sections)), "hello"], daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    )
    assert result.returncode == 0, result.stderr
    body = chat_body(fake)
    assert body["model"] == "gpt-5.4-mini"
    assert body["max_completion_tokens"] == 3000 and body["reasoning_effort"] == "low"
    assert body["user"] == "kitchen-device"
    assert "temperature" not in body and "top_p" not in body


def test_custom_settings_reach_the_wire(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["agent"] |= {
        "recommended": False,
        "model": "my-local-model",
        "max_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "stop": ["\n\n", "END"],
        "reasoning_effort": "minimal",
        "response_format": "text",
        "user": "u1",
        "safety_identifier": "household-7",
    }
    config = write(tmp_path, sections)
    config.write_text(config.read_text().replace("[agent]", '[agent]\nlogit_bias = { "50256" = -100 }'))
    result = run_cli(["ask", "--config", str(config), "hello"], daemon_env(pulse.env, OPENAI_API_KEY="test-key"))
    assert result.returncode == 0, result.stderr
    body = chat_body(fake)
    assert body["stream_options"] == {"include_usage": True}  # usage for event/reply
    assert {k: v for k, v in body.items() if k not in ("messages", "tools", "stream", "stream_options")} == {
        "model": "my-local-model",
        "max_completion_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "stop": ["\n\n", "END"],
        "logit_bias": {"50256": -100},
        "reasoning_effort": "minimal",
        "response_format": {"type": "text"},
        "user": "u1",
        "safety_identifier": "household-7",
    }


def test_recommended_with_custom_settings_is_a_config_error(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["agent"] |= {"temperature": 0.2, "model": "x"}
    result = run_cli(["run", "--config", str(write(tmp_path, sections))], {"OPENAI_API_KEY": "k"})
    assert result.returncode == 2
    assert result.stderr.strip() == "agent: model, temperature: only used with recommended = false"


def test_without_control_the_agent_has_no_tools(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["agent"] |= {"control_home_assistant": False}
    result = run_cli(
        ["ask", "--config", str(write(tmp_path, sections)), "turn on the light"],
        daemon_env(pulse.env, OPENAI_API_KEY="test-key"),
    )
    assert result.returncode == 0, result.stderr
    body = chat_body(fake)
    assert "tools" not in body
    assert "You cannot control or read devices" in body["messages"][0]["content"]
    assert "light.kitchen" not in body["messages"][0]["content"]


def test_instructions_template_sees_live_states(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    sections["device"]["area"] = "Kitchen"
    sections["agent"] |= {
        "instructions": "You are {{ device.name }} in the {{ device.area }}. "
        "Kitchen light: {{ states('light.kitchen') }}"
        "{% if is_state('light.kitchen', 'on') %} (lit){% endif %}. Door: {{ states('lock.front_door') }}. "
        "Areas: {{ area_entities('Kitchen') | join(',') }}. Year {{ now().year }}. "
        "Count {{ entities | length }}. {{ areas() | join('+') }} {{ has_value('light.kitchen') }}."
    }
    mqtt.publish(f"{site}/kitchen/light/state", "ON", retain=True)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    mqtt.publish(f"{root}/ask", json.dumps({"text": "hi", "id": "t1"}))
    mqtt.wait_for(f"{root}/event/reply", timeout=15)
    system = chat_body(fake)["messages"][0]["content"]
    year = time.localtime().tm_year
    # the lock is declared but not exposed: templates cannot see it either
    expected = "You are Testy in the Kitchen. Kitchen light: on (lit). Door: unknown. Areas: light.kitchen. "
    assert system.startswith(expected + f"Year {year}. Count 1. Kitchen True.")
    mqtt.publish(f"{site}/kitchen/light/state", "OFF", retain=True)
    # the new state is rendered into the next prompt once the daemon has read it: ask until it has
    deadline = time.monotonic() + 15
    for turn in itertools.count(2):
        mqtt.publish(f"{root}/ask", json.dumps({"text": "and now?", "id": f"t{turn}"}))
        mqtt.wait_for(f"{root}/event/reply", predicate=lambda m, t=turn: m.json()["id"] == f"t{t}", timeout=15)
        if "Kitchen light: off." in chat_body(fake, turn - 1)["messages"][0]["content"]:
            break
        assert time.monotonic() < deadline, chat_body(fake, turn - 1)["messages"][0]["content"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Hello {{ device.name", "agent.instructions: template error on line 1"),
        ("Hello {{ stats('light.kitchen') }}", "agent.instructions: 'stats' is undefined"),
    ],
)
def test_broken_template_is_a_config_error_at_start(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, template: str, message: str
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["agent"] |= {"instructions": template}
    result = run_cli(["run", "--config", str(write(tmp_path, sections))], {"OPENAI_API_KEY": "k"})
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert fake.requests == []


def test_follow_up_turns_remember_and_forget(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["agent"] |= {"history_ttl_s": 2}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")

    def ask(text: str, request_id: str, conversation: str | None) -> None:
        mqtt.publish(f"{root}/ask", json.dumps({"text": text, "id": request_id, "conversation_id": conversation}))
        mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == request_id, timeout=15)

    fake.script = [ChatReply(text="Paris."), ChatReply(text="About two million."), ChatReply(text="Which?")]
    ask("What is the capital of France?", "h1", "c1")
    ask("How many people live there?", "h2", "c1")
    ask("How many people live there?", "h3", "c2")  # another conversation: no context
    second, other = chat_body(fake, 1)["messages"], chat_body(fake, 2)["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == "What is the capital of France?" and second[2]["content"] == "Paris."
    assert [m["role"] for m in other] == ["system", "user"]
    time.sleep(2.2)  # history_ttl_s is wall-clock time: letting it pass is the test
    ask("And Italy?", "h4", "c1")  # past history_ttl_s: forgotten
    assert [m["role"] for m in chat_body(fake, 3)["messages"]] == ["system", "user"]


def test_memory_keeps_whole_turns_within_the_budget() -> None:
    now = [0.0]
    memory = Memory(turns=3, ttl_s=60, tokens=500, clock=lambda: now[0])
    tool_turn = [
        {"role": "user", "content": "switch it on"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "turn_on", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"result": "done"}'},
        {"role": "assistant", "content": "Done."},
    ]
    memory.remember("a", tool_turn)
    for index in range(5):
        memory.remember(
            "a", [{"role": "user", "content": f"question {index} " + "x" * 200}, {"role": "assistant", "content": "ok"}]
        )
    history = memory.history("a")
    assert estimate_tokens(history) <= 500
    assert history[0]["role"] == "user"  # never starts inside a turn: a tool result keeps its call
    assert len([m for m in history if m["role"] == "user"]) <= 3
    assert memory.history(None) == [] and memory.history("b") == []
    now[0] = 61
    assert memory.history("a") == []


def test_stt_and_tts_options_reach_the_wire(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio, speech: SpeechFactory
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["stt"] = {
        "model": "whisper-large",
        "language": "de",
        "prompt": "Küche, Wohnzimmer",
        "temperature": 0.2,
        "response_format": "verbose_json",
    }
    sections["tts"] |= {"voice": "coral", "speed": 1.25, "instructions": "Speak warmly."}
    fake.transcript = "mach das Licht an"
    result = run_cli(
        ["listen", "--config", str(write(tmp_path, sections)), "--file", str(speech("hello there"))],
        daemon_env(pulse.env, OPENAI_API_KEY="test-key"),
    )
    assert result.returncode == 0, result.stderr
    assert "heard: mach das Licht an" in result.stdout
    form = fake.of("audio/transcriptions")[0].form
    assert {k: form[k] for k in ("model", "language", "prompt", "temperature", "response_format")} == {
        "model": "whisper-large",
        "language": "de",
        "prompt": "Küche, Wohnzimmer",
        "temperature": "0.2",
        "response_format": "verbose_json",
    }
    speech_body = fake.of("audio/speech")[0].json
    assert speech_body is not None
    assert {k: speech_body[k] for k in ("model", "voice", "speed", "instructions", "response_format")} == {
        "model": "gpt-4o-mini-tts",
        "voice": "coral",
        "speed": 1.25,
        "instructions": "Speak warmly.",
        "response_format": "pcm",
    }


def test_openai_organization_and_project_headers(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["openai"] |= {"organization": "org-home", "project": "proj_voice"}
    result = run_cli(
        ["ask", "--config", str(write(tmp_path, sections)), "hello"], daemon_env(pulse.env, OPENAI_API_KEY="test-key")
    )
    assert result.returncode == 0, result.stderr
    headers = fake.of("chat/completions")[0].headers
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-home", "proj_voice")


def test_azure_bearer_token_for_every_stage(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["openai"] = {"provider": "azure", "azure_endpoint": fake.url, "api_version": "2025-04-01-preview"}
    for stage, deployment in (("stt", "stt-dep"), ("agent", "chat-dep"), ("tts", "tts-dep"), ("images", "img-dep")):
        sections.setdefault(stage, {})["deployment"] = deployment
    sections["images"]["enabled"] = True
    _daemon, root = start_daemon(sections, AZURE_OPENAI_AD_TOKEN="test-ad-token")
    fake.transcript = "hello"
    pulse.play_into_mic(speech("hello there"), wait=False)
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking", timeout=20)
    mqtt.publish(f"{root}/image/generate", json.dumps({"prompt": "a cat", "id": "i1"}))
    mqtt.wait_for(f"{root}/image", timeout=15)
    mqtt.wait_for(
        f"{root}/state", predicate=lambda m: m.text == "idle" and len(fake.of("audio/speech")) > 0, timeout=20
    )
    seen = {r.op: r.deployment for r in fake.requests if r.op != "models"}
    assert seen == {
        "audio/transcriptions": "stt-dep",
        "chat/completions": "chat-dep",
        "audio/speech": "tts-dep",
        "images/generations": "img-dep",
    }
    for request in fake.requests:
        assert request.headers.get("authorization") == "Bearer test-ad-token"
        assert "api-key" not in request.headers
        assert request.api_version == "2025-04-01-preview"


def test_image_generation_end_to_end(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
    make_mqtt: Callable[..., MqttRecorder],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    sections["homeassistant"]["discovery_prefix"] = f"ha{site}"
    sections["images"] = {"enabled": True, "quality": "high", "style": "vivid"}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    mqtt.publish(
        f"{root}/image/generate", json.dumps({"prompt": "a red fox", "size": "1536x1024", "n": 2, "id": "img1"})
    )
    image = mqtt.wait_for(f"{root}/image", timeout=15).json()
    body = fake.of("images/generations")[0].json
    assert body == {
        "prompt": "a red fox",
        "model": "gpt-image-2",
        "size": "1536x1024",
        "n": 2,
        "quality": "high",
        "style": "vivid",
    }
    assert image["id"] == "img1" and image["revised_prompt"] == "A picture of a red fox"
    assert base64.b64decode(image["b64_json"]).startswith(b"\x89PNG")
    assert len(image["images"]) == 2
    late = make_mqtt([f"{root}/image/b64"])
    assert late.wait_for(f"{root}/image/b64").text == image["b64_json"]  # retained for the image entity
    config = mqtt.wait_for(f"ha{site}/device/assistant_{site}/config").json()
    image_entity = config["components"]["image"]
    assert image_entity["platform"] == "image" and image_entity["image_encoding"] == "b64"
    assert image_entity["image_topic"] == f"{root}/image/b64" and image_entity["content_type"] == "image/png"

    # the agent's tool: "show me a picture of ..."
    fake.script = [
        ChatReply(tool_calls=[("generate_image", {"prompt": "a sunny beach"})]),
        ChatReply(text="Here it is."),
    ]
    mqtt.publish(f"{root}/ask", json.dumps({"text": "show me a picture of a sunny beach", "id": "a1"}))
    assert mqtt.wait_for(f"{root}/event/reply", timeout=15).json()["text"] == "Here it is."
    assert mqtt.wait_for(f"{root}/image", predicate=lambda m: m.json()["prompt"] == "a sunny beach").json()["b64_json"]
    tool_result = chat_body(fake, 1)["messages"][-1]
    assert tool_result["role"] == "tool" and "shown on the dashboard" in tool_result["content"]

    # bad requests and disabled images are answered on event/error
    mqtt.publish(f"{root}/image/generate", json.dumps({"prompt": "", "id": "bad"}))
    assert mqtt.wait_for(f"{root}/event/error").json()["id"] == "bad"


def test_a_picture_given_as_a_url_reaches_the_image_entity(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
    make_mqtt: Callable[..., MqttRecorder],
) -> None:
    """DALL-E answers with a link unless asked for base64: the entity must show the picture anyway."""
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["images"] = {"enabled": True, "model": "dall-e-3"}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    mqtt.publish(f"{root}/image/generate", json.dumps({"prompt": "a lighthouse", "id": "u1"}))
    image = mqtt.wait_for(f"{root}/image", timeout=15).json()
    assert "response_format" not in fake.of("images/generations")[0].json and ".png?" in image["url"]
    shown = make_mqtt([f"{root}/image/b64"]).wait_for(f"{root}/image/b64", timeout=15)
    assert base64.b64decode(shown.text).startswith(b"\x89PNG")  # fetched from the link, as the entity needs it
    assert [r.path for r in fake.of("image file")] == [urlsplit(image["url"]).path]
    assert make_mqtt([f"{root}/image/url"]).wait_for(f"{root}/image/url").text == image["url"]

    # an expired link: the picture was made but not shown, and that is what is said
    fake.image_files_missing = True
    mqtt.publish(f"{root}/image/generate", json.dumps({"prompt": "a harbour", "id": "u2"}))
    error = mqtt.wait_for(f"{root}/event/error", predicate=lambda m: m.json()["id"] == "u2", timeout=15).json()
    assert error["code"] == "api_error" and "made but not shown" in error["message"] and "HTTP 404" in error["message"]
    assert "sig=" not in error["message"]
    fake.script = [ChatReply(tool_calls=[("generate_image", {"prompt": "a boat"})]), ChatReply(text="Sorry.")]
    mqtt.publish(f"{root}/ask", json.dumps({"text": "show me a boat", "id": "a2"}))
    assert mqtt.wait_for(f"{root}/event/reply", timeout=15).json()["text"] == "Sorry."
    tool_result = chat_body(fake, 1)["messages"][-1]["content"]
    assert "not shown" in tool_result and "shown on the dashboard" not in tool_result


def test_rate_limit_is_retried_with_retry_after(
    fake: FakeOpenAI, mqtt_broker: Broker, mqtt: MqttRecorder, start_daemon: StartDaemon
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY="test-key")
    fake.fail("chat/completions", 429, times=2, retry_after=0.4)
    started = time.monotonic()
    mqtt.publish(f"{root}/ask", json.dumps({"text": "hi", "id": "r1"}))
    assert mqtt.wait_for(f"{root}/event/reply", timeout=20).json()["text"] == "OK."
    assert time.monotonic() - started >= 0.8  # both Retry-After waits were honoured
    assert len(fake.of("chat/completions")) == 3
    assert mqtt.messages(f"{root}/event/error") == []


def test_rejected_key_stops_the_daemon_before_ready(
    tmp_path: Path, mqtt_broker: Broker, mqtt: MqttRecorder, fake: FakeOpenAI, pulse: PulseAudio
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    daemon = Daemon(write(tmp_path, sections), daemon_env(pulse.env, OPENAI_API_KEY="wrong-key"), tmp_path / "d.log")
    assert daemon.process.wait(timeout=20) == 3
    log = daemon.log()
    assert "stt:" in log and "401" in log and "wrong-key" not in log
    root = f"assistant/{sections['device']['site_id']}"
    assert mqtt.wait_for(f"{root}/event/error").json()["code"] == "credentials"
    assert mqtt.messages(f"{root}/state") == []  # never said ready
    daemon.stop()


def test_unreachable_api_is_retried_until_it_answers(
    tmp_path: Path, mqtt_broker: Broker, mqtt: MqttRecorder, pulse: PulseAudio
) -> None:
    late_api = FakeOpenAI()
    late_api.start()
    url = late_api.url
    late_api.stop()  # nothing listens there for now
    sections = base_sections(mqtt_broker.port, url)
    root = f"assistant/{sections['device']['site_id']}"
    daemon = Daemon(write(tmp_path, sections), daemon_env(pulse.env, OPENAI_API_KEY="test-key"), tmp_path / "d.log")
    try:
        wait_log(daemon, "not reachable", timeout=30)  # however long a loaded machine takes to start it
        mqtt.sync()
        assert mqtt.messages(f"{root}/state") == []  # not ready: nothing announced
        port = int(url.rsplit(":", 1)[1])
        late_api = FakeOpenAI()
        late_api.start(port=port)
        daemon.wait_ready(mqtt, root, timeout=30)
        late_api.stop()
    finally:
        assert daemon.stop() == 0
