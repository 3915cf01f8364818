"""Command line: run the daemon, check a setup, or do one turn by hand."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from assistant import __version__

# Imported where used: `--version` and `--help` must not pay for pydantic, the openai SDK
# (about 1 s of CPU here) or PortAudio, and each command loads only what it needs.
if TYPE_CHECKING:
    from assistant.config import Config
    from assistant.daemon.service import Assistant
    from assistant.daemon.turns import Turn
    from assistant.link.client import MqttLink

log = logging.getLogger("assistant")

EXIT_FAILURE, EXIT_CONFIG = 1, 2
SETTLE_ROUNDS = 4  # at most, before a one-off turn: retained discovery configs, then the states they name
SETTLE_TIMEOUT_S = 5.0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $ASSISTANT_CONFIG, /etc/assistant/assistant.toml, ./config/assistant.toml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser = argparse.ArgumentParser(prog="assistant", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"assistant {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    sub.add_parser("check", parents=[common], help="validate config, devices, broker, API endpoints")
    ask = sub.add_parser("ask", parents=[common], help="one text turn through the agent (tools act for real)")
    ask.add_argument("text", nargs="+")
    ask.add_argument("--speak", action="store_true", help="also speak the reply")
    say = sub.add_parser("say", parents=[common], help="speak TEXT through the configured voice")
    say.add_argument("text", nargs="+")
    listen = sub.add_parser("listen", parents=[common], help="one spoken turn from the microphone or a WAV")
    listen.add_argument("--file", type=Path, metavar="WAV", help="16-bit PCM WAV instead of the microphone")
    sub.add_parser("devices", parents=[common], help="list audio input and output devices")
    _add_voices_parser(sub, common)
    return parser


def _add_voices_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The `voices` command and its two subcommands (run by assistant.voice.commands)."""
    voices = sub.add_parser("voices", parents=[common], help="list or install Piper voices")
    action = voices.add_subparsers(dest="voices_command", required=True, metavar="ACTION")
    action.add_parser("list", parents=[common], help="installed voices, and those the Piper repository offers")
    install = action.add_parser("install", parents=[common], help="download a voice into the state directory")
    install.add_argument("name", help='e.g. "en_US-lessac-medium" (see `assistant voices list`)')


def _setup_logging(verbose: bool) -> None:
    level = (
        logging.DEBUG
        if verbose
        else getattr(logging, os.environ.get("ASSISTANT_LOG_LEVEL", "INFO").upper(), logging.INFO)
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):  # they may log request details
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `assistant` console script."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    if hasattr(signal, "SIGCHLD"):
        # asyncio reads the exit of each child (espeak-ng speaking a sentence). Started with
        # SIGCHLD ignored, as some service managers and shells leave it, the kernel would reap
        # them first: every exit read as 255 and logged as "Unknown child process pid N".
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if args.command == "devices":
        from assistant.audio.lookup import list_devices

        print(list_devices())
        return 0
    from assistant.config import ConfigError, load_config
    from assistant.link.client import MqttError
    from assistant.voice import commands as voice_commands

    try:
        config = load_config(args.config, credentials=args.command != "voices")
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "voices":
        return voice_commands.run(config, args)
    try:
        return asyncio.run(_COMMANDS[args.command](config, args))
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except MqttError as error:
        print(error, file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


async def _run(config: Config, args: argparse.Namespace) -> int:
    from assistant.config import find_config_file
    from assistant.daemon.service import Assistant

    path = find_config_file(args.config, os.environ)
    carried: list[Turn] = []
    link: MqttLink | None = None
    while True:
        assistant = Assistant(config, config_path=path, link=link)
        assistant.turns.take_over(carried)
        code = await assistant.run()
        if assistant.next_config is None:
            return code
        # SIGHUP with a valid config: start again with it; requests not yet answered (and the
        # broker connection, when [mqtt] is unchanged) go along.
        carried, link = assistant.turns.unfinished_turns(), assistant.kept_link
        config = assistant.next_config


async def _ask(config: Config, args: argparse.Namespace) -> int:
    from assistant.daemon.payloads import new_id
    from assistant.daemon.service import Assistant, describe_reply
    from assistant.daemon.turns import APOLOGY

    assistant = Assistant(config, daemon=False)
    async with _house_for_turn(assistant):
        reply = await assistant.turns.answer(" ".join(args.text), new_id(), None, speak=args.speak)
    print(describe_reply(reply))
    return EXIT_FAILURE if reply.text == APOLOGY else 0


@asynccontextmanager
async def _house_for_turn(assistant: Assistant) -> AsyncIterator[None]:
    """Connected to the broker, with what it holds retained read, for one CLI turn.

    The house's MQTT messages are handled as they arrive for as long as the turn lasts,
    as the daemon's dispatcher does: the service bridge's answer comes back while the
    agent waits for it. Before the turn starts, everything retained on our subscriptions
    has been read: see `_read_retained`.
    """
    import uuid

    link = assistant.link
    marker = f"{assistant.root}/cli/{uuid.uuid4().hex[:12]}"
    echoes: asyncio.Queue[bytes] = asyncio.Queue()
    link.subscribe([*assistant.house.topics(), marker])
    reader: asyncio.Task[None] | None = None
    try:
        await link.start(timeout=10)
        reader = asyncio.create_task(_handle_messages(assistant, marker, echoes))
        await _read_retained(assistant, marker, echoes)
        yield
    finally:
        if reader is not None:
            reader.cancel()
        link.stop()


async def _handle_messages(assistant: Assistant, marker: str, echoes: asyncio.Queue[bytes]) -> None:
    """Route every incoming message (entity states, discovery, bridge results) until cancelled."""
    while True:
        message = await assistant.link.messages.get()
        if message.topic == marker:
            assistant.house.flush()  # configs read in the same batch as the marker subscribe now
            echoes.put_nowait(message.payload)
            continue
        try:
            assistant.inputs.on_message(message)
            if assistant.link.messages.empty():
                assistant.house.flush()  # subscribe to the state topics that discovery taught us
        except Exception:  # one bad message must not end the turn's reader
            log.exception("handling a message on %s failed", message.topic)


async def _read_retained(assistant: Assistant, marker: str, echoes: asyncio.Queue[bytes]) -> None:
    """Until the broker has sent what it holds retained for every topic we subscribe to.

    The broker serves one client in order: a marker we publish to ourselves after
    subscribing comes back after the retained messages of those subscriptions, and our
    reader has handled them by the time it sees the marker. Discovery configs read on the
    way add state topics, so we go round again until no new subscription was made.
    """
    link = assistant.link
    for attempt in range(1, SETTLE_ROUNDS + 1):
        subscribed = set(link.subscriptions)
        token = str(attempt).encode()
        link.publish(marker, token, qos=1)
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT_S):
                while await echoes.get() != token:
                    pass
        except TimeoutError:
            log.warning(
                "the broker did not echo %s within %.0f s: entity states may be missing", marker, SETTLE_TIMEOUT_S
            )
            return
        if link.subscriptions == subscribed:
            return


async def _say(config: Config, args: argparse.Namespace) -> int:
    from assistant.agent.providers import make_client, resolve
    from assistant.audio.devices import SoundCard
    from assistant.voice.tts import make_voice

    client = make_client(resolve(config, "tts", os.environ)) if config.tts.engine == "openai" else None
    voice = make_voice(config.tts, client, config.device.language, config.device.state_dir)
    if voice is None:
        print("tts.engine is 'none': nothing to say", file=sys.stderr)
        return EXIT_FAILURE
    await SoundCard(config.audio.output_device).play(voice.synthesize(" ".join(args.text)), lambda: voice.sample_rate)
    return 0


async def _listen(config: Config, args: argparse.Namespace) -> int:
    from assistant.audio.devices import SoundCard
    from assistant.audio.microphone import Microphone
    from assistant.audio.noise import WARMUP_S
    from assistant.audio.pcm import AudioError, read_wav
    from assistant.audio.vad import Segmenter, Utterance, webrtc_classifier
    from assistant.daemon.service import Assistant, describe_reply
    from assistant.daemon.turns import VoiceTurn

    rate = config.audio.sample_rate
    segmenter = Segmenter(config.vad, webrtc_classifier(config.vad.aggressiveness, rate), rate, config.audio.frame_ms)
    utterance: Utterance | None = None
    if args.file:
        try:
            pcm = read_wav(args.file, rate)
        except (AudioError, OSError) as error:
            print(error, file=sys.stderr)
            return EXIT_FAILURE
        pcm += b"\0" * (rate * 2 * (config.vad.silence_ms + 100) // 1000)  # let the end be heard
        # the noise floor judges nothing in its first WARMUP_S: speech at the file's very start counts
        pcm = b"\0" * round(rate * WARMUP_S) * 2 + pcm
        for start in range(0, len(pcm) - segmenter.frame_bytes + 1, segmenter.frame_bytes):
            event = segmenter.feed(pcm[start : start + segmenter.frame_bytes])
            if isinstance(event, Utterance):
                utterance = event
                break
        audio = utterance.audio if utterance else pcm
    else:
        print("listening...", file=sys.stderr)
        microphone = Microphone(
            SoundCard(config.audio.output_device),
            config.audio.input_device,
            rate,
            config.audio.frame_ms,
            config.audio.input_gain,
        )
        try:
            async with asyncio.timeout(config.vad.max_utterance_s + 30):
                async for frame in microphone.frames():
                    event = segmenter.feed(frame)
                    if isinstance(event, Utterance):
                        utterance = event
                        break
        except TimeoutError:
            print("heard nothing", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            microphone.close()
        assert utterance is not None
        audio = utterance.audio
    assistant = Assistant(config, daemon=False)
    async with _house_for_turn(assistant):
        text, reply = await assistant.turns.voice_turn(VoiceTurn(audio, rate))
    print(f"heard: {text}")
    if reply is not None:
        print(describe_reply(reply))
    return 0 if reply is not None or text else EXIT_FAILURE


def file_permission_warnings(path: Path, env: Mapping[str, str]) -> list[str]:
    """Secrets others can read: a config file holding keys, or credential files, not private.

    Readable by the group counts too: on a Pi the service user's group often has other
    members (the login user is commonly added to it), and each of them could read the key.
    """
    import tomllib

    from assistant.config.environment import secret_settings

    warnings = []
    data: object = tomllib.loads(path.read_text())
    held = []
    for key in secret_settings():
        node = data
        for part in key:
            node = node.get(part) if isinstance(node, dict) else None
        if node:
            held.append(".".join(key))
    mode = path.stat().st_mode
    if held and mode & 0o077:
        who = "everyone" if mode & 0o007 else f"its group ({_group_name(path)})"
        warnings.append(
            f"{path} holds secrets ({', '.join(held)}) and is readable by {who}: move them to credential files "
            f"(LoadCredential, see README), or chmod 600 {path} with the file owned by the user the daemon runs as"
        )
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    for file in sorted(Path(cred_dir).iterdir()) if cred_dir else []:
        if file.stat().st_mode & 0o077:
            warnings.append(f"credential {file} is readable by others (chmod 600 {file})")
    return warnings


def _group_name(path: Path) -> str:
    import grp

    gid = path.stat().st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


async def _check_stages(config: Config) -> bool:
    """One line per API stage in use: its credentials tried against its endpoint."""
    import openai

    from assistant.agent.providers import CredentialError, resolve, stages_in_use, verify

    ok = True
    for stage in stages_in_use(config):
        api = resolve(config, stage, os.environ)
        try:
            note = await verify(api)
            print(f"{stage}: ok ({api.provider} {api.endpoint}; {note})")
        except CredentialError as error:
            ok = False
            print(f"{stage}: FAILED: {error}")
        except openai.APIError as error:
            ok = False
            print(f"{stage}: FAILED: {api.endpoint}: {type(error).__name__}: {error}")
    return ok


async def _check(config: Config, args: argparse.Namespace) -> int:
    from assistant.audio.lookup import device_name, list_devices
    from assistant.audio.pcm import AudioError
    from assistant.config import find_config_file
    from assistant.home.registry import Registry
    from assistant.link.client import MqttError, MqttLink
    from assistant.voice import commands as voice_commands

    ok = True
    print(f"config: ok (site {config.device.site_id}, topics {config.topic_root}/...)")
    for warning in file_permission_warnings(find_config_file(args.config, os.environ), os.environ):
        ok = False
        print(f"permissions: FAILED: {warning}")
    try:
        print(list_devices())
    except OSError as error:  # PortAudio itself could not start
        print(f"audio: cannot list devices: {error}")
    needs = {"input": config.wake.mode != "mqtt", "output": config.tts.engine != "none" or config.realtime.enabled}
    for kind, spec in (("input", config.audio.input_device), ("output", config.audio.output_device)):
        try:
            print(f"audio {kind}: ok ({device_name(spec, kind)})")
        except (AudioError, OSError) as error:
            if needs[kind]:
                ok = False
                print(f"audio {kind}: FAILED: {error}")
            else:
                why = "wake.mode is mqtt: listen requests will fail" if kind == "input" else "tts.engine is none"
                print(f"audio {kind}: none ({error}); not needed, {why}")
    ok = await voice_commands.check_voice(config) and ok
    link = MqttLink(config.mqtt, config.topic_root, will=False)
    try:
        await link.start(timeout=5)
        print(f"mqtt: ok ({config.mqtt.host}:{config.mqtt.port})")
    except MqttError as error:
        ok = False
        print(f"mqtt: FAILED: {error}")
    finally:
        link.stop()
    ok = await _check_stages(config) and ok
    registry = Registry(config.homeassistant)
    print(f"entities ({len(registry.entities)} declared, {len(registry.exposed())} exposed):")
    for entity_id, entity in sorted(registry.entities.items()):
        mark = "exposed" if registry.is_exposed(entity_id) else "hidden "
        print(f"  {mark} {entity_id:32} {entity.name}" + (f" [{entity.area}]" if entity.area else ""))
    return 0 if ok else EXIT_FAILURE


_COMMANDS = {"run": _run, "check": _check, "ask": _ask, "say": _say, "listen": _listen}
