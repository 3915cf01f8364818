"""The fixtures the daemon's tests stand on do what those tests take for granted.

Only what would otherwise make a daemon test fail for a confusing reason: the MQTT recorder
(and the retained-message wipe between tests), its reconnect after a broker restart, and the
PulseAudio virtual microphone and speaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from support import (
    Broker,
    MqttRecorder,
    PulseAudio,
    SpeakerRecorder,
    SpeechFactory,
    correlate,
    first_sample_above,
    read_wav,
    wipe_retained,
)

PHRASE = "turn on the kitchen light"


def test_recorder_waits_for_messages_and_the_wipe_clears_retained(
    mqtt_broker: Broker, mqtt: MqttRecorder, make_mqtt: Callable[..., MqttRecorder]
) -> None:
    other = make_mqtt([])
    start = time.monotonic()
    other.publish("infra/test/state", "ON")
    other.publish("infra/test/json", {"brightness": 128}, retain=True)
    msg = mqtt.wait_for("infra/test/state", timeout=5)
    assert (msg.payload, msg.retain) == (b"ON", False) and msg.time >= start
    assert mqtt.wait_for("infra/+/json", lambda m: m.json()["brightness"] == 128).json() == {"brightness": 128}
    assert [m.topic for m in mqtt.messages("infra/#")] == ["infra/test/state", "infra/test/json"]
    with pytest.raises(AssertionError, match=r"(?s)no MQTT message on 'infra/missing'.*infra/test/state"):
        mqtt.wait_for("infra/missing", timeout=0.2)
    mqtt.assert_no_message("infra/test/state", duration=0.1)  # only new messages count
    threading.Timer(0.05, other.publish, ("infra/test/state", "OFF")).start()
    with pytest.raises(AssertionError, match="unexpected MQTT message"):
        mqtt.assert_no_message("infra/test/state", duration=10)  # returns as soon as one comes

    late = make_mqtt(["infra/#"])
    late.sync()
    assert [(m.topic, m.retain) for m in late.messages()] == [("infra/test/json", True)]
    assert wipe_retained(mqtt_broker.host, mqtt_broker.port, "infra/#") == ["infra/test/json"]
    fresh = make_mqtt(["infra/#"])
    fresh.sync()
    assert fresh.messages() == []


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


def test_virtual_microphone_records_what_is_played_bit_exactly(pulse: PulseAudio, speech: SpeechFactory) -> None:
    """Bit-exact from 0.1 s before the speech on: only the stream's start-up can be lost (in the padding)."""
    import sounddevice as sd

    wav = speech(PHRASE, pad_after=0.3)
    reference, rate = read_wav(wav)
    onset = first_sample_above(reference, 1000)
    assert onset is not None and 0.95 < onset / rate < 1.3  # the factory's leading silence
    recording = sd.rec(len(reference) + rate // 2, samplerate=rate, channels=1, dtype="int16")
    pulse.play_into_mic(wav)
    sd.wait()
    _, lag = correlate(recording[:, 0], reference)
    start = onset - rate // 10
    assert lag + start >= 0, f"the recording started after the speech did (lag {lag})"
    heard = recording[lag + start : lag + len(reference), 0]
    assert np.array_equal(heard, reference[start:]), f"{np.count_nonzero(heard != reference[start:])} samples differ"

    player = pulse.play_into_mic(wav, wait=False)  # what the autouse fixture stops after each test
    assert player is not None and player.poll() is None
    pulse.stop_players()
    assert player.poll() is not None


def test_speaker_recorder_hears_playback_in_time(pulse: PulseAudio, speech: SpeechFactory) -> None:
    import sounddevice as sd

    reference, rate = read_wav(speech(PHRASE, pad_after=0.3))
    onset = first_sample_above(reference, 1000)
    assert onset is not None
    with SpeakerRecorder(pulse) as speaker:
        started = time.monotonic()
        sd.play(reference, rate)
        heard = speaker.wait_for_sound(1000, timeout=5, since=started)
        sd.wait()
        speaker.wait_for_silence(1000, silence=0.2, timeout=5)
    ncc, lag = correlate(speaker.samples(), reference)
    assert ncc > 0.8, f"ncc={ncc:.3f} lag={lag}"
    latency = heard - started - onset / rate
    assert 0 <= latency < 1.0, f"speech heard {latency:.3f}s after it was due"
