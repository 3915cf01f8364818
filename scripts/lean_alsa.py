#!/usr/bin/env python3
"""Print a lean ALSA configuration: the daemon opens the sound card(s) directly.

ALSA's default configuration on a Pi with PulseAudio or PipeWire installed sends the default
device through their plugins, and PortAudio, listing devices at start-up, loads every plugin
the configuration names (PulseAudio's, JACK's, the a52 encoder's with libavcodec...): about
17 MB of resident memory for a daemon that only needs one microphone and one speaker. This
configuration is the daemon's whole ALSA configuration (ALSA_CONFIG_PATH, set by the systemd
drop-in scripts/install-service.sh --lean-alsa writes): `default` is the chosen card's
device through `plug`, which converts the rate and channels the card lacks. The card is
then the daemon's alone while it runs; leave this out if other programs must play through it.

    scripts/lean_alsa.py [--playback CARD] [--capture CARD]

Without a card named, a USB one is preferred (a speakerphone or USB microphone), then any
that is not HDMI, from `aplay -l` and `arecord -l`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass

_CARD = re.compile(r"^card (\d+): (\S+) \[([^\]]*)\], device (\d+): (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Card:
    """One line of `aplay -l` / `arecord -l`."""

    index: int
    id: str
    name: str
    device: int
    description: str


def cards(listing: str) -> list[Card]:
    """The devices an `aplay -l` or `arecord -l` listing shows, in order."""
    return [Card(int(i), ident, name, int(dev), desc) for i, ident, name, dev, desc in _CARD.findall(listing)]


def choose(found: list[Card], wanted: str | None = None) -> Card | None:
    """The card named (by id, index or a part of its name), else USB first, then not HDMI."""
    if wanted is not None:
        for card in found:
            if wanted in (card.id, str(card.index)) or wanted.lower() in card.name.lower():
                return card
        return None

    def rank(card: Card) -> tuple[int, int]:
        text = f"{card.id} {card.name} {card.description}".lower()
        return (0 if "usb" in text else 2 if "hdmi" in text else 1, card.index)

    return min(found, key=rank, default=None)


def _pcm(card: Card) -> str:
    return f'{{ type plug slave.pcm {{ type hw card "{card.id}" device {card.device} }} }}'


def config(playback: Card, capture: Card | None) -> str:
    """The ALSA configuration text: `default` plays on `playback` and records from `capture`."""
    lines = [
        "# Written by scripts/install-service.sh --lean-alsa (scripts/lean_alsa.py): the assistant's only",
        "# ALSA configuration (ALSA_CONFIG_PATH): its sound card(s), directly, without sound-server plugins.",
        f"# playback: card {playback.index} {playback.name}, device {playback.device}",
    ]
    if capture is not None:
        lines.append(f"# capture:  card {capture.index} {capture.name}, device {capture.device}")
        lines.append("pcm.!default {")
        lines.append("    type asym")
        lines.append(f"    playback.pcm {_pcm(playback)}")
        lines.append(f"    capture.pcm {_pcm(capture)}")
        lines.append("}")
    else:
        lines.append(f"pcm.!default {_pcm(playback)}")
    lines.append(f'ctl.!default {{ type hw card "{playback.id}" }}')
    return "\n".join(lines) + "\n"


def _listing(program: str) -> str:
    try:
        return subprocess.run([program, "-l"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        sys.exit(f"{program} not found: install alsa-utils")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--playback", metavar="CARD", help="card id, index or part of its name")
    parser.add_argument("--capture", metavar="CARD", help="card id, index or part of its name")
    args = parser.parse_args(argv)
    playback = choose(cards(_listing("aplay")), args.playback)
    if playback is None:
        print(f"no playback card{f' matching {args.playback!r}' if args.playback else ''} (aplay -l)", file=sys.stderr)
        return 1
    recorders = cards(_listing("arecord"))
    capture = choose(recorders, args.capture)
    if capture is None and (args.capture or recorders):
        print(f"no capture card matching {args.capture!r} (arecord -l)", file=sys.stderr)
        return 1
    if capture is None:
        print('no capture card: wake.mode = "mqtt" only (the speaker alone is configured)', file=sys.stderr)
    sys.stdout.write(config(playback, capture))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
