"""`assistant voices list | install NAME`, and the voice line of `assistant check`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from assistant.config import Config
from assistant.voice.catalog import CatalogueVoice, VoiceError, fetch_catalogue, find_voice, install_voice
from assistant.voice.choice import choose, installed_voices, voices_dir

EXIT_FAILURE = 1


def run(config: Config, args: argparse.Namespace) -> int:
    """Run `voices list` or `voices install NAME`."""
    if args.voices_command == "install":
        return _install(config, args.name)
    return _list(config)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _installed_line(directory: Path, name: str) -> str:
    model = directory / f"{name}.onnx"
    try:
        settings = json.loads((directory / f"{name}.onnx.json").read_text(encoding="utf-8"))
        audio = settings["audio"]
        details = f"{settings['language']['code']}, {audio['quality']}, {audio['sample_rate']} Hz"
    except (OSError, ValueError, KeyError, TypeError):
        details = "config unreadable"
    return f"  {name:36} {details:28} {_mb(model.stat().st_size):>9}"


def _list(config: Config) -> int:
    directory = voices_dir(config.device.state_dir)
    installed = installed_voices(directory)
    print(f"installed in {directory}:")
    for name in installed:
        print(_installed_line(directory, name))
    if not installed:
        print("  (none)")
    print(f"speaking: {choose(config.tts, config.device.state_dir, config.device.language).reason}")
    try:
        catalogue = fetch_catalogue(config.tts.voices_url)
    except VoiceError as error:
        print(f"available: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"available from {config.tts.voices_url} ({len(catalogue)} voices):")
    for voice in sorted(catalogue.values(), key=lambda v: v.key):
        mark = "installed" if voice.key in installed else ""
        print(f"  {voice.key:36} {voice.language_name:30} {voice.quality:7} {_mb(voice.size):>9} {mark}".rstrip())
    return 0


class ProgressPrinter:
    """Download progress on the terminal: one updating line on a tty, a line per 10 % otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown: dict[str, int] = {}

    def __call__(self, name: str, have: int, total: int) -> None:
        """Report `have` of `total` bytes of `name`."""
        percent = 100 * have // total if total else 100
        if self.tty:
            end = "\n" if have >= total else ""
            self.stream.write(f"\r{name}: {_mb(have)} of {_mb(total)} ({percent} %)\x1b[K{end}")
        elif percent // 10 != self.shown.get(name, -1) // 10 or name not in self.shown:
            self.stream.write(f"{name}: {_mb(have)} of {_mb(total)} ({percent} %)\n")
        self.shown[name] = percent
        self.stream.flush()


def _install(config: Config, name: str) -> int:
    directory = voices_dir(config.device.state_dir)
    try:
        catalogue = fetch_catalogue(config.tts.voices_url)
        voice: CatalogueVoice = find_voice(catalogue, name)
        fetched = install_voice(voice, config.tts.voices_url, directory, ProgressPrinter(sys.stderr))
    except VoiceError as error:
        print(f"voices install: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as error:  # the state directory is not writable, the disk is full
        print(f"voices install: {directory}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    state = "installed" if fetched else "already installed"
    print(f"{voice.key} {state} in {directory} ({voice.language_name}, {voice.quality}, {_mb(voice.size)}), checked")
    choice = choose(config.tts, config.device.state_dir, config.device.language)
    if choice.engine == "piper" and choice.voice == voice.key:
        print(f"replies will be spoken by {choice.reason} (a running daemon: systemctl reload assistant)")
    else:
        print(f'replies are spoken by {choice.reason}; to use this voice set [tts] voice = "{voice.key}"')
    return 0


async def check_voice(config: Config) -> bool:
    """`assistant check`: print which voice will speak (loading a Piper voice proves it works)."""
    choice = choose(config.tts, config.device.state_dir, config.device.language)
    if choice.problem is not None:
        print(f"voice: FAILED: {choice.problem}")
        return False
    if choice.engine != "piper" or choice.model is None:
        print(f"voice: {choice.engine} ({choice.reason})")
        return True
    from assistant.voice.piper import PiperVoice
    from assistant.voice.tts import TtsError

    try:
        await PiperVoice(choice.model, config.tts.speed).ready()
    except TtsError as error:
        print(f"voice: FAILED: {error}")
        return False
    print(f"voice: ok ({choice.reason})")
    return True
