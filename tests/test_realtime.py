"""The Realtime mode's pure parts: the session settings, remembered turns as items, what was heard."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.agent.realtime import flat_tool, heard, history_items, session_settings
from assistant.agent.tools import Tool, ToolOutcome
from assistant.config import REALTIME_MODEL, ConfigError, RealtimeConfig, parse_config


async def _nothing(args: dict[str, Any]) -> ToolOutcome:
    return ToolOutcome("{}", [])


TOOL = Tool(
    "turn_on", "Turn a device on.", {"type": "object", "properties": {"entity_id": {"type": "string"}}}, _nothing
)


def test_defaults_are_the_model_that_is_not_deprecated() -> None:
    config = RealtimeConfig()
    assert (config.enabled, config.model, config.turn_detection) == (False, REALTIME_MODEL, "local")
    assert REALTIME_MODEL == "gpt-realtime-2.1-mini"


def test_local_turn_detection_commits_itself() -> None:
    settings = session_settings(RealtimeConfig(), "Be brief.", [TOOL])
    assert settings["type"] == "realtime" and settings["instructions"] == "Be brief."
    audio = settings["audio"]
    assert audio["input"]["turn_detection"] is None  # null: the server's VAD is off, we commit
    assert audio["input"]["format"] == audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert audio["output"]["voice"] == "marin"
    assert settings["tools"] == [
        {"type": "function", "name": "turn_on", "description": "Turn a device on.", "parameters": TOOL.parameters}
    ]
    assert "voice" not in settings and "turn_detection" not in settings  # the beta shape is refused by GA


def test_server_turn_detection_and_options() -> None:
    config = RealtimeConfig(
        turn_detection="server",
        server_silence_ms=300,
        transcription_model=None,
        noise_reduction="far_field",
        max_output_tokens=200,
    )
    settings = session_settings(config, "x", [])
    detection = settings["audio"]["input"]["turn_detection"]
    assert detection["type"] == "server_vad" and detection["silence_duration_ms"] == 300
    assert detection["create_response"] is True and detection["interrupt_response"] is False
    assert "transcription" not in settings["audio"]["input"]
    assert settings["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    assert settings["max_output_tokens"] == 200 and "tools" not in settings


def test_config_section_is_checked() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"realtime": {"enabled": True, "turn_detection": "semantic"}}, {"OPENAI_API_KEY": "k"})
    assert any(line.startswith("realtime.turn_detection") for line in error.value.problems)
    with pytest.raises(ConfigError) as error:
        parse_config({"realtime": {"enabled": True, "provider": "azure"}}, {"OPENAI_API_KEY": "k"})
    assert "openai.azure_endpoint: required by realtime (provider 'azure')" in error.value.problems


def test_remembered_turns_become_items() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "turn_on", "arguments": '{"entity_id": "a"}'}}
    messages = [
        {"role": "user", "content": "light on"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"result": "done"})},
        {"role": "assistant", "content": "It is on."},
    ]
    assert history_items(messages) == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "light on"}]},
        {"type": "function_call", "call_id": "call_1", "name": "turn_on", "arguments": '{"entity_id": "a"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"result": "done"}'},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is on."}]},
    ]
    assert flat_tool(TOOL)["name"] == "turn_on"


def test_heard_is_the_share_that_was_played() -> None:
    text = "one two three four five six seven eight nine ten"
    assert heard(text, 0.0, 5.0) == ""
    assert heard(text, 2.5, 5.0) == "one two three four five"
    assert heard(text, 5.0, 5.0) == text
    assert heard(text, 9.0, 0.0) == text  # no audio: nothing to cut by


@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=5), max_size=20), st.floats(0, 10), st.floats(0.1, 10))
def test_heard_is_a_prefix_of_whole_words(words: list[str], played: float, total: float) -> None:
    text = " ".join(words)
    part = heard(text, played, total)
    assert text.startswith(part) and (part in ("", text) or text[len(part)] == " ")


def test_the_realtime_modules_cost_nothing_when_the_mode_is_off() -> None:
    code = (
        "import sys, assistant.cli, assistant.daemon.service, assistant.daemon.turns, assistant.daemon.listening; "
        "print(sorted(m for m in sys.modules if m.startswith(('websockets', 'assistant.daemon.realtime', "
        "'assistant.agent.realtime'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
