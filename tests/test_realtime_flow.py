"""The Realtime mode as a user meets it: speech into the virtual microphone, `assistant run` as a
subprocess, the real broker, the SDK's realtime client against the local Realtime server, and the
reply heard on the virtual speaker; OpenAI and Azure URL shapes, barge-in, and faults."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon import ENTITIES, Daemon, base_sections, daemon_env, run_cli, write_config
from fake_openai import ChatReply, FakeOpenAI, synth_pcm
from fake_realtime import FakeRealtime, RealtimeReply
from support import (
    Broker,
    MqttRecorder,
    PulseAudio,
    SpeakerRecorder,
    SpeechFactory,
    correlate,
    read_wav,
    speech_wav,
)
from test_flow import assert_spoken
from test_wake import WAKE, wake_then

from assistant.daemon.turns import APOLOGY

StartDaemon = Callable[..., tuple[Daemon, str]]
REQUEST = "turn on the kitchen light"
ANSWER = "The kitchen light is on."
STORY = "Once upon a time there was a small house with a kitchen light that nobody ever switched off. " * 3


@pytest.fixture(scope="module")
def realtime_server() -> Iterator[FakeRealtime]:
    with FakeRealtime() as server:
        yield server


@pytest.fixture
def rt(realtime_server: FakeRealtime) -> FakeRealtime:
    realtime_server.reset()
    return realtime_server


def kitchen(items: list[dict[str, Any]]) -> RealtimeReply:
    """A scripted speech-to-speech model: switches the kitchen light on when asked, then says so."""
    if items[-1]["type"] == "function_call_output":
        return RealtimeReply(text=ANSWER)
    if items[-1].get("content", [{}])[0].get("heard") == REQUEST:
        return RealtimeReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})])
    return RealtimeReply(text=STORY)


def openai_sections(broker: Broker, fake: FakeOpenAI, rt: FakeRealtime) -> dict[str, dict[str, Any]]:
    sections = base_sections(broker.port, fake.url)
    sections["realtime"] = {"enabled": True, "base_url": rt.openai_url}
    return sections


def azure_sections(broker: Broker, fake: FakeOpenAI, rt: FakeRealtime) -> dict[str, dict[str, Any]]:
    sections = base_sections(broker.port, fake.url)
    sections["openai"] = {"provider": "azure", "azure_endpoint": fake.url, "api_version": "2024-10-21"}
    sections["stt"] = {"deployment": "whisper-eu"}
    sections["agent"] |= {"deployment": "chat-eu"}
    sections["tts"] |= {"deployment": "voice-eu"}
    sections["realtime"] = {
        "enabled": True,
        "azure_endpoint": rt.azure_url,
        "deployment": "realtime-eu",
        "api_version": "2025-08-28",
    }
    return sections


def spoken_kitchen_turn(
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    root: str,
    ns: str,
) -> None:
    """Say the request; the light goes on, the answer is published and heard, nothing else went upstream."""
    wav = speech(REQUEST)
    rt.transcript = REQUEST
    rt.responder = kitchen
    pulse.play_into_mic(wav, wait=False)
    assert mqtt.wait_for(f"{ns}/kitchen/light/set", timeout=30).text == "ON"
    transcript = mqtt.wait_for(f"{root}/event/transcript", timeout=10).json()
    assert transcript["text"] == REQUEST
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=10).json()
    assert (reply["text"], reply["request"], reply["id"]) == (ANSWER, REQUEST, transcript["id"])
    usage = reply["usage"]  # the tokens both responses (tool call, then answer) reported
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0 and usage["cached_tokens"] == 0
    done = rt.server_events("response.done")
    assert usage["prompt_tokens"] == sum(e["response"]["usage"]["input_tokens"] for e in done)
    assert [(a["tool"], a["entity_id"], a["status"]) for a in reply["actions"]] == [
        ("turn_on", "light.kitchen", "done")
    ]
    action = mqtt.wait_for(f"{root}/event/action", timeout=5).json()
    assert action["ok"] is True and action["id"] == reply["id"]
    assert_spoken(speaker, ANSWER)

    # upstream: one session, set up like the chat agent, that heard the request and only it
    update = rt.of("session.update")[0].event["session"]
    assert update["type"] == "realtime" and "Kitchen: light.kitchen" in update["instructions"]
    assert [t["name"] for t in update["tools"]] == ["turn_on", "turn_off", "get_state", "find_entities"]
    assert update["audio"]["input"]["turn_detection"] is None
    assert update["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    appended = sum(len(base64.b64decode(e.event["audio"])) for e in rt.of("input_audio_buffer.append")) / 48000
    clears = rt.of("input_audio_buffer.clear")
    since_clear = [e for e in rt.of("input_audio_buffer.append") if e.t > clears[-1].t] if clears else []
    heard_s = sum(len(base64.b64decode(e.event["audio"])) for e in since_clear) / 48000 if clears else appended
    spoken_s = len(read_wav(wav)[0]) / 16000 - 2.5  # the WAV is padded with 1.0 s + 1.5 s of silence
    assert spoken_s <= heard_s <= spoken_s + 1.5, (spoken_s, heard_s)
    assert len(rt.of("input_audio_buffer.commit")) == 1 and len(rt.of("response.create")) == 2
    outputs = [e.event["item"] for e in rt.of("conversation.item.create")]
    assert outputs[-1]["type"] == "function_call_output" and json.loads(outputs[-1]["output"])["result"] == "done"
    # the classic pipeline was not used for it
    assert fake.of("audio/transcriptions") == [] and fake.of("chat/completions") == []
    assert fake.of("audio/speech") == []
    states = [m.text for m in mqtt.messages(f"{root}/state")]
    for state in ("listening", "transcribing", "thinking", "speaking", "idle"):
        assert state in states, states


def test_spoken_request_in_realtime_mode_openai(
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    spoken_kitchen_turn(rt, fake, mqtt, pulse, speaker, speech, root, sections["device"]["site_id"])
    session = rt.of("session.update")[0]
    assert session.path == "/v1/realtime" and session.query == {"model": "gpt-realtime-2.1-mini"}
    assert session.headers["authorization"] == "Bearer test-key"


def test_spoken_request_in_realtime_mode_azure(
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = azure_sections(mqtt_broker, fake, rt)
    _daemon, root = start_daemon(sections, AZURE_OPENAI_API_KEY="test-key")
    spoken_kitchen_turn(rt, fake, mqtt, pulse, speaker, speech, root, sections["device"]["site_id"])
    session = rt.of("session.update")[0]
    assert session.path == "/openai/realtime"
    assert session.query == {"api-version": "2025-08-28", "deployment": "realtime-eu"}
    assert session.headers["api-key"] == "test-key" and "authorization" not in session.headers


def test_wake_word_during_the_reply_cancels_and_truncates(
    tmp_path: Path,
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    start_daemon: StartDaemon,
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    sections["wake"] = {"mode": "wakeword", "model": "hey_mycroft"}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    rt.responder = kitchen
    rt.audio_chunk_delay_s = 0.1  # the story streams at about the pace it is spoken, as upstream
    rt.transcript = "tell me a story"
    pulse.play_into_mic(wake_then(tmp_path, "tell me a story"), wait=False)
    speaking = mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking", timeout=30)
    speaker.wait_for_sound(threshold=1000, timeout=10)
    rt.transcript = REQUEST
    pulse.play_into_mic(wake_then(tmp_path, REQUEST), wait=False)
    wake = mqtt.wait_for(f"{root}/event/wake", predicate=lambda m: m.time > speaking.time, timeout=20)
    quiet_at = speaker.wait_for_silence(threshold=1000, silence=0.3, timeout=5, since=wake.time)
    assert quiet_at - 0.3 - wake.time < 0.5, f"still speaking {quiet_at - 0.3 - wake.time:.2f} s after the wake word"
    # the story's response was cancelled and cut where it stopped being heard
    cancel = rt.wait_for("response.cancel")[0]
    truncate = rt.wait_for("conversation.item.truncate")[0]
    assert truncate.connection == cancel.connection
    story_s = len(read_wav(speech_wav(STORY, tmp_path / "story.wav", pad_before=0, pad_after=0))[0]) / 16000
    assert 0 < truncate.event["audio_end_ms"] < story_s * 1000
    # and the new request is answered by a new session
    assert mqtt.wait_for(f"{sections['device']['site_id']}/kitchen/light/set", timeout=30).text == "ON"
    reply = mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["text"] == ANSWER, timeout=10)
    assert reply.json()["id"] == wake.json()["id"]
    assert rt.of("session.update")[-1].connection != cancel.connection
    # the new session was given the story as far as it was heard, not the whole of it
    second = rt.of("session.update")[-1].connection
    created = [e.event for e in rt.of("conversation.item.create") if e.connection == second]
    assert created[0]["previous_item_id"] == "root"  # remembered turns go first, before the request
    history = [{k: v for k, v in e["item"].items() if k != "id"} for e in created]
    assert history[0] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "tell me a story"}],
    }
    told = history[1]["content"][0]["text"]
    assert history[1]["role"] == "assistant" and STORY.startswith(told) and 0 < len(told) < len(STORY.strip())
    phrase, _voice, _wpm = WAKE
    assert phrase not in " ".join(m.json()["request"] for m in mqtt.messages(f"{root}/event/reply"))


@pytest.mark.parametrize("fault", ["dropped", "refused_429", "rate_limited", "expired", "stalled"])
def test_a_failed_session_apologises_and_the_next_turn_works(
    fault: str,
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    sections["realtime"]["timeout_s"] = 3
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    rt.transcript = REQUEST
    rt.responder = kitchen
    if fault == "dropped":
        rt.drop_at("response.output_audio.delta")
    elif fault == "refused_429":
        rt.refuse_status = 429
    elif fault in ("expired", "stalled"):
        rt.drop_at("response.created", how={"expired": "expire", "stalled": "stall"}[fault])
    else:
        rt.fail_next_response()
    pulse.play_into_mic(speech(REQUEST), wait=False)
    error = mqtt.wait_for(f"{root}/event/error", timeout=30).json()
    assert error["code"] == "api_error" and error["message"].startswith("realtime: ")
    expected = {
        "dropped": "dropped",
        "refused_429": "HTTP 429",
        "rate_limited": "rate_limit_exceeded",
        "expired": "session_expired",
        "stalled": "no word from the Realtime service for 3 s",
    }[fault]
    assert expected in error["message"]
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=10).json()
    assert reply["id"] == error["id"] and reply["text"].endswith(APOLOGY)
    assert_spoken(speaker, APOLOGY)  # in the [tts] voice: the session is what failed
    assert " ".join(r.json["input"] for r in fake.of("audio/speech") if r.json) == APOLOGY  # sentence by sentence
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > error_time(mqtt, root), timeout=10)

    rt.refuse_status = None
    mqtt.clear()
    since = time.monotonic()
    pulse.play_into_mic(speech(REQUEST), wait=False)
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=30).json()
    assert reply["text"] == ANSWER and reply["request"] == REQUEST
    speaker.wait_for_sound(threshold=1000, timeout=20, since=since)
    speaker.wait_for_silence(silence=0.5, timeout=20, since=since)
    reference = np.frombuffer(synth_pcm(ANSWER, rate=16000), dtype=np.int16)
    score, _lag = correlate(speaker.samples()[speaker.sample_index_at(since) :], reference)
    assert score > 0.5, f"the next turn's answer was not heard (correlation {score:.2f})"


def error_time(mqtt: MqttRecorder, root: str) -> float:
    last = mqtt.last(f"{root}/event/error")
    assert last is not None
    return last.time


def test_server_turn_detection_ends_the_request(
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    sections["vad"] = {"silence_ms": 2500, "min_utterance_ms": 200}  # our own segmenter would wait long
    sections["realtime"] |= {"turn_detection": "server", "server_silence_ms": 400}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    rt.transcript = REQUEST
    rt.responder = kitchen
    pulse.play_into_mic(speech(REQUEST), wait=False)
    assert mqtt.wait_for(f"{sections['device']['site_id']}/kitchen/light/set", timeout=30).text == "ON"
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=10).json()
    assert (reply["text"], reply["request"]) == (ANSWER, REQUEST)
    assert_spoken(speaker, ANSWER)
    detection = rt.of("session.update")[0].event["session"]["audio"]["input"]["turn_detection"]
    assert detection == {
        "type": "server_vad",
        "silence_duration_ms": 400,
        "create_response": True,
        "interrupt_response": False,
    }
    # the server ended the request and answered by itself: we only asked for the tool round's answer
    assert rt.of("input_audio_buffer.commit") == [] and len(rt.of("response.create")) == 1
    committed = rt.sent_at("input_audio_buffer.committed")[0]
    transcribing = mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "transcribing").time
    assert transcribing - committed < 1.0, "the listener did not end the utterance when the server did"


def test_typed_ask_and_say_keep_the_chat_agent_and_the_tts_voice(
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    speaker: SpeakerRecorder,
    start_daemon: StartDaemon,
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.script.append(ChatReply(text="Hello from the chat agent."))
    mqtt.publish(f"{root}/ask", json.dumps({"text": "hello", "id": "a1", "speak": True}))
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=15).json()
    assert (reply["id"], reply["text"]) == ("a1", "Hello from the chat agent.")
    assert_spoken(speaker, "Hello from the chat agent.")
    asked = time.monotonic()
    mqtt.publish(f"{root}/say", json.dumps({"text": "Dinner is ready.", "id": "s1"}))
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking" and m.time > asked, timeout=15)
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > asked, timeout=15)
    assert [r.json["input"] for r in fake.of("audio/speech") if r.json][-1] == "Dinner is ready."
    assert len(fake.of("chat/completions")) == 1
    assert [path for path, _headers in rt.handshakes if "/realtime" in path] == []  # no session for either


def test_a_session_lost_while_the_request_is_spoken_is_replaced_without_losing_it(
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    rt.transcript = REQUEST
    rt.responder = kitchen
    rt.drop_at("input_audio_buffer.cleared")  # the socket goes as speech starts
    wav = speech(REQUEST)
    pulse.play_into_mic(wav, wait=False)
    assert mqtt.wait_for(f"{sections['device']['site_id']}/kitchen/light/set", timeout=30).text == "ON"
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=10).json()
    assert (reply["text"], reply["request"]) == (ANSWER, REQUEST)
    assert_spoken(speaker, ANSWER)
    assert mqtt.messages(f"{root}/event/error") == []
    first, second = (e.connection for e in rt.of("session.update"))
    assert first != second
    replayed = [e for e in rt.of("input_audio_buffer.append") if e.connection == second]
    heard_s = sum(len(base64.b64decode(e.event["audio"])) for e in replayed) / 48000
    spoken_s = len(read_wav(wav)[0]) / 16000 - 2.5
    assert spoken_s <= heard_s <= spoken_s + 1.5, (spoken_s, heard_s)  # the whole request, not its tail


def test_check_verifies_the_realtime_endpoint(
    tmp_path: Path, rt: FakeRealtime, fake: FakeOpenAI, mqtt_broker: Broker, pulse: PulseAudio
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    config = write_config(tmp_path / "rt.toml", sections, ENTITIES.format(ns=sections["device"]["site_id"]))
    result = run_cli(["check", "--config", str(config)], daemon_env(pulse.env, OPENAI_API_KEY="test-key"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"realtime: ok (openai {rt.openai_url}; credentials accepted)" in result.stdout
    rt.api_key = "another-key"
    try:
        result = run_cli(["check", "--config", str(config)], daemon_env(pulse.env, OPENAI_API_KEY="test-key"))
    finally:
        rt.api_key = "test-key"
    assert result.returncode == 1 and "realtime: FAILED" in result.stdout and "401" in result.stdout


def test_a_question_back_opens_a_follow_up_that_remembers_the_turn(
    tmp_path: Path,
    rt: FakeRealtime,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = openai_sections(mqtt_broker, fake, rt)
    sections["wake"] = {"mode": "wakeword", "model": "hey_mycroft", "followup_s": 6}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    rt.script = [RealtimeReply(text="For what time?"), RealtimeReply(text="Reminder set for five.")]
    rt.transcript = "set a reminder"
    pulse.play_into_mic(wake_then(tmp_path, "set a reminder"), wait=False)
    first = mqtt.wait_for(f"{root}/event/reply", timeout=30).json()
    assert (first["text"], first["request"]) == ("For what time?", "set a reminder")
    followup = mqtt.wait_for(f"{root}/event/wake", predicate=lambda m: m.json()["reason"] == "followup", timeout=10)
    assert followup.json()["id"] == first["id"]
    rt.transcript = "at five o'clock"
    pulse.play_into_mic(speech("at five o'clock"), wait=False)
    second = mqtt.wait_for(
        f"{root}/event/reply", predicate=lambda m: m.json()["request"] != "set a reminder", timeout=30
    )
    assert (second.json()["text"], second.json()["request"]) == ("Reminder set for five.", "at five o'clock")
    # the second session was told the first turn, first in its conversation
    connection = rt.of("session.update")[-1].connection
    told = [e.event for e in rt.of("conversation.item.create") if e.connection == connection]
    assert [(e["item"]["role"], e["item"]["content"][0]["text"]) for e in told] == [
        ("user", "set a reminder"),
        ("assistant", "For what time?"),
    ]
    assert told[0]["previous_item_id"] == "root" and told[1]["previous_item_id"] == told[0]["item"]["id"]
