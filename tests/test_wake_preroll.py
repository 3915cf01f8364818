"""A command said right after the wake word, with no pause: its first syllable reaches the
upload, and the wake word does not. The daemon's real listening logic (Listener, the bundled
wake word model, webrtcvad and the noise floor) fed frame by frame, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from listener_host import StreamHost, offline_listener
from room_noise import RATE, in_room, noise, speech

FRAME_BYTES = 960
WAKE_VOICES = [("en-gb-x-rp", 150), ("en-029", 175)]  # "hey mycroft" fires on these
COMMAND = "turn on the kitchen light"


def listen(pcm: bytes) -> StreamHost:
    host = StreamHost("wakeword")
    clock = [0.0]
    listener = offline_listener(host, clock=lambda: clock[0])
    for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        clock[0] += FRAME_BYTES / 2 / RATE
        host.at = start + FRAME_BYTES  # bytes fed
        listener.feed(pcm[start : start + FRAME_BYTES])
    return host


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wake-preroll")


@pytest.mark.parametrize("level", [-120, -35])
@pytest.mark.parametrize(("voice", "wpm"), WAKE_VOICES)
def test_command_right_after_the_wake_word_keeps_its_first_syllable(
    sounds: Path, level: int, voice: str, wpm: int
) -> None:
    # The detector fires anywhere from 20 ms before the phrase's last sound fades to 80 ms
    # after it (measured over these voices): without the detector's batch as pre-roll, up to
    # 79 ms of the command were cut; with it, at most 19 ms (a consonant's burst), and the
    # upload may begin with up to 76 ms of the phrase's last sound.
    wake = speech("hey mycroft", sounds, voice, wpm)
    command = speech(COMMAND, sounds)
    said = np.concatenate([wake, command])  # no pause at all
    lead, tail = 1.5, 2.0
    room = noise("pink", lead + len(said) / RATE + tail + 0.1, sounds)
    pcm = in_room(said, room, level, lead, tail)  # pink noise, -120 dBFS: a quiet room
    host = listen(pcm)
    assert len(host.wakes) == 1, "the wake word did not fire"
    assert len(host.uploads) == 1
    (utterance, _), handed_at = host.uploads[0], host.handed_at[0]
    upload_from = (handed_at - len(utterance.audio)) // 2  # the stream sample the upload starts at
    wake_ends = round(lead * RATE) + len(wake)
    cut_ms = (upload_from - wake_ends) / RATE * 1000
    assert cut_ms <= 20, f"the command's first {cut_ms:.0f} ms are cut"
    assert cut_ms >= -80, f"the upload holds {-cut_ms:.0f} ms of the wake word"


@pytest.mark.parametrize("kind", ["pink", "fan"])
def test_noise_switched_on_before_the_wake_word_is_known_when_the_request_starts(sounds: Path, kind: str) -> None:
    # A quiet room; the fan goes on 2 s before the wake word; a pause; the command. The floor
    # has learnt the fan by then (it held steady for a second), although the quiet before it
    # is still in its 5 s window: the request holds the command and not the pause before it.
    wake = speech("hey mycroft", sounds, "en-gb-x-rp", 150)
    command = speech(COMMAND, sounds)
    said = np.concatenate([wake, np.zeros(round(0.8 * RATE)), command])
    scene = in_room(said, noise(kind, 2.0 + len(said) / RATE + 10.1, sounds), -30, 2.0, 10.0)
    host = listen(bytes(3 * RATE * 2) + scene)
    assert len(host.wakes) == 1 and len(host.uploads) == 1
    (utterance, _), handed_at = host.uploads[0], host.handed_at[0]
    command_starts = 3.0 + 2.0 + (len(said) - len(command)) / RATE
    upload_from = (handed_at - len(utterance.audio)) / 2 / RATE
    assert command_starts - 0.35 <= upload_from <= command_starts  # the pre-roll, not the pause
    assert utterance.duration_s <= len(command) / RATE + 0.3 + 0.6 + 0.06


@pytest.mark.parametrize("pause_s", [0.8, 1.0])
def test_the_wake_word_said_again_right_after_a_request_is_heard(sounds: Path, pause_s: float) -> None:
    # The detector hears nothing while a request is endpointed. Were it fed again from where it
    # stopped, its context would be the first wake word, and it would stay disarmed for about a
    # second of what it hears next: a wake word said in that second (to stop the reply) was lost.
    wake = speech("hey mycroft", sounds, "en-gb-x-rp", 150)
    command = speech(COMMAND, sounds)
    gap = np.zeros(round(0.3 * RATE))
    said = np.concatenate([wake, gap, command, np.zeros(round(pause_s * RATE)), wake])
    scene = in_room(said, noise("pink", 1.5 + len(said) / RATE + 2.1, sounds), -120, 1.5, 2.0)
    host = listen(scene)
    assert len(host.uploads) == 1, "the request was not endpointed"
    assert host.barge_ins == 1, "the second wake word was not heard"
    assert len(host.wakes) == 2
