"""The test infrastructure itself works against real services."""

from __future__ import annotations

import os
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support import (
    SAMPLE_RATE,
    Broker,
    MqttRecorder,
    PulseAudio,
    SpeakerRecorder,
    SpeechFactory,
    correlate,
    first_sample_above,
    free_port,
    read_wav,
    wipe_retained,
)

PHRASE = "turn on the kitchen light"


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_broker_round_trip(mqtt: MqttRecorder, make_mqtt: Callable[..., MqttRecorder]) -> None:
    other = make_mqtt(["nothing/here"])
    start = time.monotonic()
    other.publish("infra/test/state", "ON")
    other.publish("infra/test/json", {"brightness": 128})
    msg = mqtt.wait_for("infra/test/state", timeout=5)
    assert msg.payload == b"ON" and msg.text == "ON" and not msg.retain
    assert msg.time >= start
    assert mqtt.wait_for("infra/+/json", lambda m: m.json()["brightness"] == 128).json() == {"brightness": 128}
    assert [m.topic for m in mqtt.messages("infra/#")] == ["infra/test/state", "infra/test/json"]
    assert mqtt.last("infra/test/state") == msg

    with pytest.raises(AssertionError, match=r"(?s)no MQTT message on 'infra/missing'.*infra/test/state"):
        mqtt.wait_for("infra/missing", timeout=0.2)
    mqtt.assert_no_message("infra/test/state", duration=0.1)

    mqtt.clear()
    assert mqtt.messages() == []


def test_retained_messages_and_wipe(mqtt_broker: Broker, make_mqtt: Callable[..., MqttRecorder]) -> None:
    publisher = make_mqtt([])
    publisher.publish("infra/retained/a", "1", retain=True)
    late = make_mqtt(["infra/retained/#"])
    late.sync()
    got = late.wait_for("infra/retained/a", timeout=2)
    assert got.retain and got.payload == b"1"
    assert wipe_retained(mqtt_broker.host, mqtt_broker.port, "infra/retained/#") == ["infra/retained/a"]
    fresh = make_mqtt(["infra/retained/#"])
    fresh.sync()
    assert fresh.messages() == []


def test_broker_with_password_file(make_broker: Callable[..., Broker], tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "alice", "s3cret"], check=True)
    broker = make_broker([f"password_file {passwd}"], allow_anonymous=False)
    with MqttRecorder(broker.host, broker.port, ["a/#"], username="alice", password="s3cret") as rec:
        rec.publish("a/b", "hello")
        assert rec.wait_for("a/b").text == "hello"
    with pytest.raises(AssertionError, match="refused"):
        MqttRecorder(broker.host, broker.port, username="alice", password="wrong", timeout=5)


def test_recorder_reconnects_after_broker_restart(
    make_broker: Callable[..., Broker], make_mqtt: Callable[..., MqttRecorder]
) -> None:
    broker = make_broker()
    recorder = make_mqtt(["restart/#"], broker=broker)
    broker.stop()
    restarted = make_broker(port=broker.port)
    recorder.wait_connected(2, timeout=5)
    recorder.sync()
    make_mqtt([], broker=restarted).publish("restart/x", "back")
    assert recorder.wait_for("restart/x", timeout=5).text == "back"


def test_speech_wav(speech: SpeechFactory) -> None:
    path = speech(PHRASE, pad_after=0.3)
    assert speech(PHRASE, pad_after=0.3) == path  # cached
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (SAMPLE_RATE, 1, 2)
    samples, _ = read_wav(path)
    onset = first_sample_above(samples, 1000)
    assert onset is not None and 0.95 < onset / SAMPLE_RATE < 1.3
    assert 2.0 < len(samples) / SAMPLE_RATE < 4.0


def test_pulse_environment(pulse: PulseAudio) -> None:
    assert os.environ["PULSE_SERVER"] == pulse.env["PULSE_SERVER"]
    assert len(pulse.env["PULSE_SERVER"]) < 100  # sun_path limit
    info = pulse.pactl("info")
    assert "Default Sink: spk" in info and "Default Source: vmic" in info


def test_sounddevice_lists_devices(pulse: PulseAudio) -> None:
    import sounddevice as sd

    devices = sd.query_devices()
    names = [d["name"] for d in devices]
    assert "default" in names and "pulse" in names, names
    default_in = sd.query_devices(kind="input")
    default_out = sd.query_devices(kind="output")
    assert default_in["max_input_channels"] >= 1 and default_out["max_output_channels"] >= 1


def test_sounddevice_records_virtual_mic(pulse: PulseAudio, speech: SpeechFactory) -> None:
    import sounddevice as sd

    wav = speech(PHRASE, pad_after=0.3)
    reference, rate = read_wav(wav)
    recording = sd.rec(len(reference) + rate // 2, samplerate=rate, channels=1, dtype="int16")
    pulse.play_into_mic(wav)
    sd.wait()
    ncc, lag = correlate(recording[:, 0], reference)
    onset = first_sample_above(reference, 1000)
    assert onset is not None
    assert lag + onset >= 0, f"speech started before the recording did (lag {lag})"
    assert ncc > 0.9, f"ncc={ncc:.3f} lag={lag}"


def test_sounddevice_playback_reaches_speaker(pulse: PulseAudio, speech: SpeechFactory) -> None:
    import sounddevice as sd

    wav = speech(PHRASE, pad_after=0.3)
    reference, rate = read_wav(wav)
    onset = first_sample_above(reference, 1000)
    assert onset is not None
    with SpeakerRecorder(pulse) as speaker:
        before = speaker.samples()
        assert before.size > 0 and int(np.abs(before.astype(np.int32)).max(initial=0)) < 1000
        started = time.monotonic()
        sd.play(reference, rate)
        heard = speaker.wait_for_sound(1000, timeout=5, since=started)
        sd.wait()
        speaker.wait_for_silence(1000, silence=0.2, timeout=5)
    ncc, lag = correlate(speaker.samples(), reference)
    assert ncc > 0.8, f"ncc={ncc:.3f} lag={lag}"
    latency = heard - started - onset / rate
    assert 0 <= latency < 1.0, f"speech heard {latency:.3f}s after it was due"
    assert speaker.first_sound_time(1000, since=started) == heard


def test_play_into_mic_background(pulse: PulseAudio, speech: SpeechFactory) -> None:
    wav = speech(PHRASE, pad_after=0.3)
    with SpeakerRecorder(pulse, device=f"{PulseAudio.MIC_SOURCE}") as mic:
        player = pulse.play_into_mic(wav, wait=False)
        assert player is not None and player.poll() is None
        mic.wait_for_sound(1000, timeout=5)
    pulse.stop_players()
    assert player.poll() is not None


def test_broker_log_available(mqtt_broker: Broker) -> None:
    assert mqtt_broker.is_running()
    assert "mosquitto version" in mqtt_broker.log_path.read_text()  # log() is only the tail
