"""A request over a fan's steady noise, through the virtual microphone and `assistant run`:
acted on while the noise goes on, and the upload holds the command, not the room."""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
from daemon import Daemon
from fake_openai import FakeOpenAI
from room_noise import RATE, in_room, noise, speech
from support import Broker, MqttRecorder, PulseAudio, write_wav
from test_wake import REQUEST, kitchen_model, wake_sections

LEAD_S, GAP_S, TAIL_S = 2.0, 0.8, 10.0  # the noise goes on for 10 s after the command


def test_request_over_pink_noise_ends_with_the_command_and_uploads_only_it(
    tmp_path: Path,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    start_daemon: Callable[..., tuple[Daemon, str]],
) -> None:
    wake = speech("hey mycroft", tmp_path, "en-gb-x-rp", 150)
    command = speech(REQUEST, tmp_path)
    said = np.concatenate([wake, np.zeros(round(GAP_S * RATE)), command])
    room = noise("pink", LEAD_S + len(said) / RATE + TAIL_S + 0.1, tmp_path)
    wav = write_wav(tmp_path / "noisy.wav", np.frombuffer(in_room(said, room, -30, LEAD_S, TAIL_S), dtype="<i2"))
    sections = wake_sections(mqtt_broker, fake)
    sections["tts"] = {"engine": "none"}
    _daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    fake.transcript = REQUEST
    fake.chat_handler = kitchen_model
    player = pulse.play_into_mic(wav, wait=False)
    assert player is not None
    started = time.monotonic()
    assert mqtt.wait_for(f"{root}/event/wake", timeout=20).json()["reason"] == "wakeword"
    assert mqtt.wait_for(f"{sections['device']['site_id']}/kitchen/light/set", timeout=20).text == "ON"
    # acted on while the room still hums: the end of speech was found in the noise
    command_ends = LEAD_S + len(said) / RATE
    assert player.poll() is None, "the noise had ended before the request was acted on"
    assert time.monotonic() - started < command_ends + TAIL_S / 2
    # the request's audio (and the early transcription's, taken at a pause, if one was made)
    uploads = [wav_seconds(u.files["file"][1]) for u in fake.of("audio/transcriptions")]
    vad = sections["vad"]
    limit = len(command) / RATE + 0.3 + int(vad["silence_ms"]) / 1000 + 0.1  # pre-roll, silence wait, 30 ms frames
    assert uploads and max(uploads) <= limit, f"uploaded {uploads} s for a {len(command) / RATE:.2f} s command"
    assert max(uploads) > len(command) / RATE


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnframes() / wav.getframerate()
