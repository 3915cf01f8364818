"""The whole flow a user sees, with real parts: speech played into the virtual microphone,
`assistant run` as a subprocess, the real broker, the openai client against the local
server, and the reply audio captured from the virtual speaker."""

from __future__ import annotations

import contextlib
import json
import socket
import wave
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from daemon import Daemon, base_sections
from fake_openai import ChatReply, FakeOpenAI, synth_pcm
from support import Broker, MqttRecorder, PulseAudio, SpeakerRecorder, SpeechFactory, correlate

REQUEST = "turn on the kitchen light"
ANSWER = "The kitchen light is on."


def kitchen_model(body: dict[str, Any]) -> ChatReply:
    """A scripted model: switches the kitchen light on when asked, then says so."""
    messages = body["messages"]
    if messages[-1]["role"] == "tool":
        return ChatReply(text=ANSWER)
    if "kitchen light" in messages[-1]["content"]:
        return ChatReply(tool_calls=[("turn_on", {"entity_id": "light.kitchen"})])
    return ChatReply(text="I heard you.")


def wav_seconds(data: bytes) -> float:
    with wave.open(BytesIO(data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return wav.getnframes() / wav.getframerate()


def assert_spoken(speaker: SpeakerRecorder, text: str) -> None:
    """The virtual speaker played the fake TTS rendering of `text`."""
    speaker.wait_for_sound(threshold=1000, timeout=20)
    speaker.wait_for_silence(silence=0.5, timeout=20)
    reference = np.frombuffer(synth_pcm(text, rate=16000), dtype=np.int16)
    score, _lag = correlate(speaker.samples(), reference)
    assert score > 0.5, f"speaker audio does not match the spoken reply (correlation {score:.2f})"


def run_kitchen_turn(
    fake: FakeOpenAI,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    root: str,
    ns: str,
) -> None:
    wav = speech(REQUEST)
    fake.transcript = REQUEST
    fake.chat_handler = kitchen_model
    pulse.play_into_mic(wav, wait=False)

    command = mqtt.wait_for(f"{ns}/kitchen/light/set", timeout=30)
    assert command.text == "ON"
    transcript = mqtt.wait_for(f"{root}/event/transcript", timeout=5).json()
    assert transcript["text"] == REQUEST
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=10).json()
    assert reply["text"] == ANSWER and reply["request"] == REQUEST
    assert reply["id"] == transcript["id"]
    assert reply["actions"] == [
        {
            "tool": "turn_on",
            "entity_id": "light.kitchen",
            "topic": f"{ns}/kitchen/light/set",
            "payload": "ON",
            "ok": True,
            "status": "done",
        }
    ]
    action = mqtt.wait_for(f"{root}/event/action", timeout=5).json()
    assert action["ok"] is True and action["id"] == reply["id"]
    assert_spoken(speaker, ANSWER)

    # what reached the API: one utterance holding the whole request, then a tool round trip
    upload = fake.of("audio/transcriptions")[0]
    spoken_s = wav_seconds(wav.read_bytes()) - 2.5  # the WAV is padded with 1.0 s + 1.5 s of silence
    assert spoken_s <= wav_seconds(upload.files["file"][1]) <= spoken_s + 1.5
    chats = fake.of("chat/completions")
    assert len(chats) == 2
    assert chats[0].json is not None and chats[0].json["stream"] is True
    tool_names = [t["function"]["name"] for t in chats[0].json["tools"]]
    assert tool_names == ["turn_on", "turn_off", "get_state", "find_entities"]
    assert "Kitchen: light.kitchen" in chats[0].json["messages"][0]["content"]
    speech_request = fake.of("audio/speech")[0]
    assert speech_request.json is not None
    assert speech_request.json["input"] == ANSWER and speech_request.json["response_format"] == "pcm"
    states = [m.text for m in mqtt.messages(f"{root}/state")]
    for state in ("listening", "transcribing", "thinking", "speaking", "idle"):
        assert state in states, states


def test_spoken_request_switches_light_and_reply_is_heard(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    assert mqtt.wait_for(f"{root}/status").text == "online"
    run_kitchen_turn(fake, mqtt, pulse, speaker, speech, root, sections["device"]["site_id"])
    for request in fake.requests:
        assert request.headers["authorization"] == "Bearer test-key"
        assert request.path.startswith("/v1/")


def test_same_flow_through_azure_paths(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["openai"] = {"provider": "azure", "azure_endpoint": fake.url, "api_version": "2024-10-21"}
    sections["stt"] = {"deployment": "whisper-eu"}
    sections["agent"] |= {"deployment": "chat-eu"}
    sections["tts"] |= {"deployment": "voice-eu"}
    _daemon, root = start_daemon(sections, AZURE_OPENAI_API_KEY="test-key")
    run_kitchen_turn(fake, mqtt, pulse, speaker, speech, root, sections["device"]["site_id"])
    assert len(fake.of("models")) == 3  # each stage's key was checked before the daemon said ready
    deployments = {r.op: r.deployment for r in fake.requests if r.op != "models"}
    assert deployments == {
        "audio/transcriptions": "whisper-eu",
        "chat/completions": "chat-eu",
        "audio/speech": "voice-eu",
    }
    for request in fake.requests:
        assert request.api_version == "2024-10-21"
        assert request.headers["api-key"] == "test-key"
        assert "authorization" not in request.headers


def test_systemd_notify_status_and_clean_stop(
    tmp_path: Path,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: Callable[..., tuple[Daemon, str]],
    make_mqtt: Callable[..., MqttRecorder],
) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(10)
        daemon, root = start_daemon(
            base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY="test-key", NOTIFY_SOCKET=str(notify_path)
        )
        late = make_mqtt([f"{root}/#"])
        assert late.wait_for(f"{root}/state").text == "idle"  # retained for late subscribers
        assert daemon.stop() == 0
        assert mqtt.wait_for(f"{root}/status", predicate=lambda m: m.text == "offline", timeout=5)
        received = []
        with contextlib.suppress(TimeoutError):
            while "STOPPING=1" not in received:
                received.append(notify.recv(4096).decode())
    assert received.index("STATUS=idle") < received.index("READY=1") < received.index("STOPPING=1")


def test_mqtt_ask_acts_and_replies_without_speaking(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    speaker: SpeakerRecorder,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.chat_handler = kitchen_model
    mqtt.publish(f"{root}/ask", json.dumps({"text": REQUEST, "id": "req-1", "conversation_id": "c1"}))
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=15).json()
    assert (reply["id"], reply["text"], reply["conversation_id"]) == ("req-1", ANSWER, "c1")
    assert mqtt.wait_for(f"{sections['device']['site_id']}/kitchen/light/set").text == "ON"
    assert fake.of("audio/speech") == []
    # plain text works too, and "speak": true speaks
    mqtt.publish(f"{root}/ask", json.dumps({"text": "hello", "id": "req-2", "speak": True}))
    assert mqtt.wait_for(f"{root}/event/reply", predicate=lambda m: m.json()["id"] == "req-2", timeout=15)
    assert_spoken(speaker, "I heard you.")


def test_bad_payloads_are_answered_and_daemon_keeps_working(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY="test-key")
    for payload in (b"{not json", b'{"text": 42, "id": "bad-1"}', b"\xff\xfe", b"", b"x" * 20000):
        mqtt.publish(f"{root}/ask", payload)
    errors = [
        mqtt.wait_for(f"{root}/event/error", predicate=lambda m, i=i: len(mqtt.messages(f"{root}/event/error")) > i)
        for i in range(5)
    ]
    codes = {e.json()["code"] for e in errors}
    assert codes == {"bad_request"}
    assert any(e.json()["id"] == "bad-1" for e in mqtt.messages(f"{root}/event/error"))
    mqtt.publish(f"{root}/ask", "what time is it")
    assert mqtt.wait_for(f"{root}/event/reply", timeout=15).json()["text"] == "OK."


def test_api_failure_gives_a_published_and_spoken_apology(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    speaker: SpeakerRecorder,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["openai"]["max_retries"] = 1
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.fail("chat/completions", 500, times=2)
    mqtt.publish(f"{root}/ask", json.dumps({"text": "hi", "id": "r9", "speak": True}))
    error = mqtt.wait_for(f"{root}/event/error", timeout=20).json()
    assert (error["id"], error["code"]) == ("r9", "api_error")
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=5).json()
    assert reply["text"].startswith("Sorry")
    assert len(fake.of("chat/completions")) == 2  # first try and one retry
    speaker.wait_for_sound(threshold=1000, timeout=20)
    # the next turn works
    mqtt.clear()
    mqtt.publish(f"{root}/ask", json.dumps({"text": "hi again", "id": "r10"}))
    assert mqtt.wait_for(f"{root}/event/reply", timeout=15).json()["text"] == "OK."


def test_microphone_is_not_heard_while_the_device_speaks(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: SpeechFactory,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY="test-key")
    long_text = "This is a long announcement. " * 6
    mqtt.publish(f"{root}/say", json.dumps({"text": long_text, "id": "s1"}))
    speaking = mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking", timeout=10)
    pulse.play_into_mic(speech(REQUEST, pad_before=0.2, pad_after=0.2))  # while it speaks
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > speaking.time, timeout=30)
    mqtt.assert_no_message(f"{root}/event/transcript", duration=1.5)
    assert fake.of("audio/transcriptions") == []
    # and once it is quiet again, it hears
    fake.transcript = "hello"
    pulse.play_into_mic(speech("hello there"))
    assert mqtt.wait_for(f"{root}/event/transcript", timeout=15).json()["text"] == "hello"


def test_mqtt_wake_mode_listens_only_when_asked(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["wake"] = {"mode": "mqtt", "listen_timeout_s": 6}
    sections["tts"] = {"engine": "none"}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.transcript = REQUEST
    fake.chat_handler = kitchen_model
    pulse.play_into_mic(speech(REQUEST))  # not asked to listen: nothing is sent
    mqtt.assert_no_message(f"{root}/event/transcript", duration=1.0)
    assert fake.of("audio/transcriptions") == []
    mqtt.publish(f"{root}/listen", json.dumps({"id": "w1"}))
    wake = mqtt.wait_for(f"{root}/event/wake").json()
    assert (wake["id"], wake["reason"]) == ("w1", "mqtt")
    pulse.play_into_mic(speech(REQUEST), wait=False)
    assert mqtt.wait_for(f"{root}/event/reply", timeout=20).json()["text"] == ANSWER
    assert len(fake.of("audio/transcriptions")) == 1


def test_last_will_says_offline_when_the_daemon_dies(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    make_mqtt: Callable[..., MqttRecorder],
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["mqtt"]["keepalive"] = 5
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    daemon.process.kill()
    daemon.process.wait()
    mqtt.wait_for(f"{root}/status", predicate=lambda m: m.text == "offline", timeout=15)
    late = make_mqtt([f"{root}/status"])  # Home Assistant (re)starting later must see it too: retained
    late.sync()
    status = late.last(f"{root}/status")
    assert status is not None and (status.text, status.retain) == ("offline", True), status
    daemon.process.returncode = 0  # killed on purpose: the fixture's clean-exit check does not apply


def test_speech_starts_before_the_model_has_finished_writing(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    speaker: SpeakerRecorder,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    _daemon, root = start_daemon(base_sections(mqtt_broker.port, fake.url), OPENAI_API_KEY="test-key")
    first = "The first sentence is short."
    second = "Then a much longer second sentence follows, with many words that the model writes slowly, one by one."
    fake.token_delay_s = 0.1
    fake.script = [ChatReply(text=f"{first} {second}")]
    mqtt.publish(f"{root}/ask", json.dumps({"text": "tell me something", "id": "s1", "speak": True}))
    first_sound = speaker.wait_for_sound(threshold=1000, timeout=20)
    chat = fake.of("chat/completions")[0]
    written_at = chat.t + len(f"{first} {second}".split()) * fake.token_delay_s  # when the last word is sent
    assert first_sound < written_at - 1.0, "speech waited for the whole reply"
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > first_sound, timeout=30)
    spoken = [r.json["input"] for r in fake.of("audio/speech") if r.json]
    assert spoken == [first, second]
    assert fake.of("audio/speech")[0].t < written_at - 1.0
