"""The room's voices as the listener learns them: from the room at rest only, not from the
wake word just said, nor from before a reply or a paused microphone.

Real webrtcvad, the bundled wake word model and espeak-ng voices, through `Listener` frame by
frame (faster than real time), on the stream's own clock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from listener_host import StreamHost, offline_listener
from room_noise import RATE, in_room, noise, speech, talker

from assistant.audio.listener import Listener
from assistant.audio.noise import SILENT_DBFS
from assistant.daemon.state import Event

FRAME_BYTES = 960
COMMAND = ("turn on the kitchen light", "en-us")
PREROLL_S, SILENCE_S, SLACK_S = 0.3, 0.6, 0.06


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voices")


def make_listener() -> tuple[Listener, StreamHost]:
    host = StreamHost("wakeword")
    return offline_listener(host), host


def play(listener: Listener, host: StreamHost, pcm: bytes) -> None:
    """Feed `pcm` from the stream time `host.at` on."""
    for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        host.at += FRAME_BYTES / 2 / RATE
        listener.feed(pcm[start : start + FRAME_BYTES])


def split(pcm: bytes, at_s: float) -> tuple[bytes, bytes]:
    """`pcm` before and after `at_s`, on the 30 ms frame grid."""
    cut = round(at_s * RATE / (FRAME_BYTES // 2)) * FRAME_BYTES
    return pcm[:cut], pcm[cut:]


def check_upload(host: StreamHost, command_from: float, command_to: float, first: int = 0) -> None:
    """One request (after the `first` ones), handed on the silence wait after the command,
    holding all of it and little more."""
    assert len(host.uploads) == first + 1, [(round(u.start_s, 2), round(u.end_s, 2)) for u, _ in host.uploads]
    utterance, _ = host.uploads[first]
    handed_at = host.handed_at[first]
    assert command_to <= handed_at <= command_to + SILENCE_S + 0.3, (handed_at, command_to)
    assert handed_at - utterance.duration_s <= command_from, (handed_at - utterance.duration_s, command_from)
    limit = command_to - command_from + PREROLL_S + SILENCE_S + 0.3 + SLACK_S
    assert utterance.duration_s <= limit, (utterance.duration_s, limit)


@pytest.mark.parametrize("fires_after_s", [0.3, -0.1])
def test_the_wake_word_just_said_is_not_taken_for_the_room_s_voices(sounds: Path, fires_after_s: float) -> None:
    # Another voice at -30 dBFS (9 dB under) talks all along; "hey mycroft" at the
    # speaker's level ends 5 s in, the window opens when the detector fires (after the
    # phrase, or just before its last sound), then the command follows. Learnt with the
    # wake word, the room's voices would be as loud as the speaker.
    wake, said = speech("hey mycroft", sounds, "en-gb-x-rp", 150), speech(COMMAND[0], sounds, COMMAND[1])
    lead_s, gap_s, tail_s = 5.0, 0.8, 4.0
    scene_said = np.concatenate([wake, np.zeros(round(gap_s * RATE)), said])
    room = talker(lead_s + len(scene_said) / RATE + tail_s + 0.1, sounds)
    wake_ends = lead_s + len(wake) / RATE
    opens_at, command_from = wake_ends + fires_after_s, wake_ends + gap_s
    scene = in_room(scene_said, room, -30, lead_s, tail_s)
    alone = in_room(np.zeros(0), room, -30, 0.0, command_from + 0.1)  # as if no wake word had been said
    runs = []
    for pcm, reason in ((scene, "wakeword"), (alone, "mqtt")):
        listener, host = make_listener()
        before, rest = split(pcm, opens_at)
        play(listener, host, before)
        listener.open(reason)
        gap, rest = split(rest, command_from - 0.1 - opens_at)
        play(listener, host, gap)
        runs.append((listener, host, rest))
    (listener, host, rest), (alone_listener, _, _) = runs
    assert listener.segmenter.noise.voice_dbfs > SILENT_DBFS
    assert listener.segmenter.noise.voice_dbfs == pytest.approx(alone_listener.segmenter.noise.voice_dbfs, abs=0.5)
    play(listener, host, rest)
    check_upload(host, command_from, command_from + len(said) / RATE)


def test_a_follow_up_after_the_other_voice_stopped_takes_the_command_whole(sounds: Path) -> None:
    # A request over another voice at -25 dBFS; during the reply (only the wake word
    # hears the room) the other voice stops. The follow-up window must not judge the next
    # command against a voice that is no longer there.
    said = speech(COMMAND[0], sounds, COMMAND[1])
    listener, host = make_listener()
    room = talker(6.0 + len(said) / RATE + 3.1, sounds)
    before, after = split(in_room(said, room, -25, 6.0, 3.0), 5.5)
    play(listener, host, before)
    listener.open("mqtt")
    play(listener, host, after)
    assert len(host.uploads) == 1
    assert listener.segmenter.noise.voice_dbfs > SILENT_DBFS  # it was learnt before the request
    for event in (Event.ANSWER, Event.SPEAK):
        host.machine.handle(event)
    assert host.machine.busy
    quiet = in_room(np.zeros(0), noise("pink", 3.1, sounds), -60, 0.0, 3.0)
    play(listener, host, quiet)  # the reply: the other voice has stopped
    host.machine.handle(Event.DONE)
    opened = host.at
    listener.open("followup", timeout_s=5.0)
    assert listener.segmenter.noise.voice_dbfs == SILENT_DBFS
    play(listener, host, in_room(said, noise("pink", 0.5 + len(said) / RATE + 2.1, sounds), -60, 0.5, 2.0))
    check_upload(host, opened + 0.5, opened + 0.5 + len(said) / RATE, first=1)


def test_a_listen_after_the_microphone_was_off_forgets_the_voices_heard_before(sounds: Path) -> None:
    # Heard at rest, then nothing for a while (the microphone paused): a `listen` then must
    # not hold its command against the voice heard before, which may have stopped since.
    said = speech(COMMAND[0], sounds, COMMAND[1])
    listener, host = make_listener()
    play(listener, host, in_room(np.zeros(0), talker(5.1, sounds), -25, 0.0, 5.0))
    assert listener.segmenter.noise.voice_dbfs > SILENT_DBFS
    host.at += 2.0  # no frames: the microphone was paused
    opened = host.at
    listener.open("mqtt")
    assert listener.segmenter.noise.voice_dbfs == SILENT_DBFS
    play(listener, host, in_room(said, noise("pink", 0.5 + len(said) / RATE + 2.1, sounds), -60, 0.5, 2.0))
    check_upload(host, opened + 0.5, opened + 0.5 + len(said) / RATE)


def test_talk_as_loud_as_the_speaker_just_before_the_wake_word_does_not_block_the_command(sounds: Path) -> None:
    # Two people talk; a second after, one of them says the wake word and the command. The
    # room's voices were as loud as the wake word is: they cannot be told from the command
    # by their level, so they are not used, and the command is taken whole as before.
    wake = speech("hey mycroft", sounds, "en-gb-x-rp", 150)
    listener, host = make_listener()
    play(listener, host, in_room(np.zeros(0), talker(4.1, sounds), -21, 0.0, 4.0))
    assert listener.segmenter.noise.voice_dbfs > SILENT_DBFS
    said = speech(COMMAND[0], sounds, COMMAND[1])
    scene = np.concatenate([np.zeros(round(1.0 * RATE)), wake, np.zeros(round(0.8 * RATE)), said])
    command_from = host.at + (len(scene) - len(said)) / RATE
    play(listener, host, in_room(scene, noise("pink", len(scene) / RATE + 2.1, sounds), -60, 0.0, 2.0))
    assert len(host.wakes) == 1, "the wake word was not heard"
    check_upload(host, command_from, command_from + len(said) / RATE)
