"""Uploads in noisy rooms: bytes per request when the wake word and a command are said over steady noise.

Each scene: noise (sox pink, brown, or a fan-like hum: brown noise with 120 Hz and its
harmonics; or a second voice talking all along) at a set RMS level, "hey mycroft"
(espeak-ng, en-gb-x-rp) after 1.5 s (5 s for the second voice, which talks all along),
a 0.8 s pause, "turn on the kitchen light" (1.34 s), then 16 s more of the noise, longer
than `max_utterance_s` (15 s). Where the wake word is not heard, the request is opened as
an MQTT `listen` would, when the wake phrase ends (in "wakeword" mode: the room was heard
at rest until then). It runs through the daemon's real listening logic
(`assistant.audio.listener.Listener`: the bundled wake word model, webrtcvad, the
segmenter) faster than real time, with the default config, and reports what would be sent
to transcription and how long after the command's end the request was handed on.

    .venv/bin/python bench/noise_uploads.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from listener_host import StreamHost, offline_listener
from room_noise import LEVELS, NOISES, RATE, in_room, noise, speech, talker

FRAME_BYTES = 960
LEAD_S, GAP_S, TAIL_S = 1.5, 0.8, 16.0
TALK_LEAD_S = 5.0  # a second voice talks all along: for some seconds before the wake word too
COMMAND = "turn on the kitchen light"


def listen(pcm: bytes, open_at_s: float | None = None) -> StreamHost:
    """Run `pcm` through a Listener: woken by the wake word, or (`open_at_s`) by an MQTT `listen` then."""
    host = StreamHost("wakeword")
    listener = offline_listener(host)
    for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        host.at = (start + FRAME_BYTES) / 2 / RATE
        if open_at_s is not None and host.at - FRAME_BYTES / 2 / RATE < open_at_s <= host.at:
            listener.open("mqtt")
        listener.feed(pcm[start : start + FRAME_BYTES])
    return host


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        wake = speech("hey mycroft", directory, "en-gb-x-rp", 150)
        command = speech(COMMAND, directory)
        said = np.concatenate([wake, np.zeros(round(GAP_S * RATE)), command])
        print(f"command {len(command) / RATE:.2f} s ({len(command) * 2} bytes of pcm16 at 16 kHz)\n")
        print(
            "| background | level | request opened by | bytes uploaded | seconds | handed on after the command's end |"
        )
        print("|---|---|---|---|---|---|")
        scenes = [(kind, level) for kind in NOISES for level in LEVELS]
        scenes += [("talker", level) for level in (-40, *LEVELS)]
        for kind, level in scenes:
            lead_s = TALK_LEAD_S if kind == "talker" else LEAD_S
            command_ends = lead_s + len(said) / RATE
            seconds = lead_s + len(said) / RATE + TAIL_S + 0.1
            background = talker(seconds, directory) if kind == "talker" else noise(kind, seconds, directory)
            pcm = in_room(said, background, level, lead_s, TAIL_S)
            host = listen(pcm)
            row = f"| {kind} | {level} dBFS | wake word: {'heard' if host.wakes else 'not heard'}"
            if not host.wakes:  # the request opened by an MQTT `listen` as the wake word ends instead
                host = listen(pcm, open_at_s=lead_s + len(wake) / RATE)
                row += ", `listen` instead"
            sent = sum(len(utterance.audio) for utterance, _ in host.uploads)
            after = f"{host.handed_at[0] - command_ends:.2f} s" if host.handed_at else "-"
            print(f"{row} | {sent} | {sent / 2 / RATE:.2f} | {after} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
