"""In `mqtt` mode the microphone is read only while a listen window is open: between
windows nothing wakes the daemon, and a window hears speech from its first word.

Real parts: the daemon, mosquitto, PulseAudio's virtual microphone and the local API."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from daemon import Daemon, base_sections, wait_log
from fake_openai import FakeOpenAI
from storm import microphone_figures
from support import Broker, MqttRecorder, PulseAudio, SpeechFactory, correlate, read_wav, speech_wav
from test_flow import ANSWER, REQUEST, kitchen_model

PAUSED = r"microphone: \d+ frames .*; paused"
StartDaemon = Any  # conftest's start_daemon fixture: (sections, **env) -> (Daemon, root)


def mqtt_sections(broker: Broker, fake: FakeOpenAI) -> dict[str, dict[str, Any]]:
    sections = base_sections(broker.port, fake.url)
    sections["wake"] = {"mode": "mqtt", "listen_timeout_s": 6}
    sections["tts"] = {"engine": "none"}
    return sections


def corked(pulse: PulseAudio, daemon: Daemon) -> bool:
    """Whether PulseAudio holds the daemon's recording stream corked (sending it nothing)."""
    for block in re.split(r"^Source Output #", pulse.pactl("list", "source-outputs"), flags=re.MULTILINE)[1:]:
        if f'application.process.id = "{daemon.process.pid}"' in block:
            return re.search(r"Corked: yes", block) is not None
    raise AssertionError(f"the daemon has no recording stream: {pulse.pactl('list', 'source-outputs')}")


def wait_corked(pulse: PulseAudio, daemon: Daemon, timeout: float = 5.0) -> None:
    """Wait until the daemon's stream is corked (its stop is queued on the audio thread after the log line)."""
    deadline = time.monotonic() + timeout
    while not corked(pulse, daemon):
        assert time.monotonic() < deadline, "the daemon's recording stream is still running"
        time.sleep(0.05)


def test_no_audio_is_read_between_listen_windows(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    daemon: Daemon
    daemon, root = start_daemon(mqtt_sections(mqtt_broker, fake), OPENAI_API_KEY="test-key")
    wait_log(daemon, PAUSED)  # the device works (a first frame came), then it is stopped
    at_pause = microphone_figures(daemon.log())
    wait_corked(pulse, daemon)  # kept open, ready to start
    pulse.play_into_mic(speech(REQUEST))  # four seconds of talk nobody asked for
    mqtt.assert_no_message(f"{root}/event/transcript", duration=0.5)
    assert fake.of("audio/transcriptions") == []
    assert "microphone resumed" not in daemon.log()
    assert daemon.stop() == 0
    at_stop = microphone_figures(daemon.log())
    assert at_stop.frames == at_pause.frames < 20, (at_pause, at_stop)


def test_a_listen_window_hears_the_first_word(
    tmp_path: Path,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    daemon, root = start_daemon(mqtt_sections(mqtt_broker, fake), OPENAI_API_KEY="test-key")
    wait_log(daemon, PAUSED)
    fake.transcript = REQUEST
    fake.chat_handler = kitchen_model
    mark = len(daemon.log())
    mqtt.publish(f"{root}/listen", json.dumps({"id": "first-word"}))
    pulse.play_into_mic(speech(REQUEST, pad_before=0.0, pad_after=1.0), wait=False)  # no pause before it
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=20).json()
    assert (reply["id"], reply["text"]) == ("first-word", ANSWER)
    started = wait_log(daemon, r"microphone resumed \(started in (\d+) ms\)", after=mark)
    print(f"the stream started {started.group(1)} ms after the listen request")

    # What was sent for transcription begins with the request's first word ("turn", 0.3 s).
    upload = fake.of("audio/transcriptions")[0].files["file"][1]
    (tmp_path / "upload.wav").write_bytes(upload)
    heard, _rate = read_wav(tmp_path / "upload.wav")
    said, _rate = read_wav(speech_wav(REQUEST, tmp_path / "said.wav", pad_before=0.0, pad_after=0.0))
    voiced = np.flatnonzero(np.abs(said.astype(np.int32)) > 500)
    first_word = said[voiced[0] : voiced[0] + 16000 * 3 // 10]
    score, lag = correlate(heard, first_word)
    assert score > 0.5 and lag >= 0, (score, lag)
    wait_log(daemon, PAUSED, after=mark)  # the window is over: stopped again
    wait_corked(pulse, daemon)


def test_muted_reads_no_audio_and_unmuting_hears_again(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = base_sections(mqtt_broker.port, fake.url)
    sections["tts"] = {"engine": "none"}  # wake.mode "vad": any speech is a request
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    mqtt.publish(f"{root}/mute/set", "ON")
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "muted")
    wait_log(daemon, PAUSED)
    mark = len(daemon.log())
    fake.transcript = "hello"
    mqtt.publish(f"{root}/mute/set", "OFF")
    wait_log(daemon, r"microphone resumed", after=mark)
    pulse.play_into_mic(speech("hello there"), wait=False)
    assert mqtt.wait_for(f"{root}/event/transcript", timeout=15).json()["text"] == "hello"


def test_a_microphone_that_died_while_stopped_is_reopened_when_a_window_opens(
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speech: SpeechFactory,
    start_daemon: StartDaemon,
) -> None:
    sections = mqtt_sections(mqtt_broker, fake)
    sections["wake"]["listen_timeout_s"] = 30
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    wait_log(daemon, PAUSED)
    mark = len(daemon.log())
    pulse.pactl("suspend-source", PulseAudio.MIC_SOURCE, "1")  # it will deliver nothing once started
    try:
        mqtt.publish(f"{root}/listen", json.dumps({"id": "after-stall"}))
        wait_log(daemon, r"microphone resumed", after=mark)
        wait_log(daemon, r"microphone delivered nothing for [\d.]+ s; reopening", after=mark, timeout=10)
    finally:
        pulse.pactl("suspend-source", PulseAudio.MIC_SOURCE, "0")
    wait_log(daemon, r"INFO \S+: microphone open", after=mark, timeout=15)
    fake.transcript = REQUEST
    pulse.play_into_mic(speech(REQUEST), wait=False)
    transcript = mqtt.wait_for(f"{root}/event/transcript", timeout=20).json()
    assert (transcript["id"], transcript["text"]) == ("after-stall", REQUEST)
