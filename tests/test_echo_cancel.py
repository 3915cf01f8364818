"""Barge-in over the device's own voice, with an echo canceller: the daemon's own (in the process,
`[audio] echo_cancel`) or PulseAudio's.

The room is made of the session's PulseAudio: a `module-loopback` carries everything the
virtual speaker plays back into the virtual microphone (at 0 dB or -6 dB, about 40 ms
late), so the daemon hears its own voice as loud as a person standing near it. The daemon's
canceller takes the samples it wrote out of what its microphone hears. PulseAudio's is what
`scripts/install-service.sh --echo-cancel` sets up on a device (`module-echo-cancel
aec_method=webrtc`): the daemon plays into its sink `assistant_speaker` and records its source
`assistant_mic`, and the canceller subtracts what it played from what the microphone heard.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon import Daemon
from fake_openai import FakeOpenAI
from support import Broker, MqttRecorder, PulseAudio, SpeakerRecorder, stop_process
from test_wake import WAKE, wake_sections

ROOT = Path(__file__).resolve().parents[1]

StartDaemon = Callable[..., tuple[Daemon, str]]
LOOP_LATENCY_MS = 40  # speaker to microphone: the sound card's buffers and the air
# Of up to 21 trials after a first reply that is not counted (a canceller converges over its
# first 2.5 s of loud echo, README), the daemon's canceller must hear most: 11. A trial is heard
# 80-92 % of the time; at 80 % a run fails 1 time in 1000 (5 of 9: 1 in 50). PulseAudio's, heard
# 65-74 % at -6 dB and 0 % at 0 dB (README), must hear a third: 7.
TRIALS = 21
# The fake voice (espeak en-us, 175 wpm) saying this fires hey_mycroft twice in three (measured offline):
# a reply that quotes it wakes a device that hears itself.
SELF_WAKE = "Say: hey mycroft. Then your request. " * 3
LONG_REPLY = "This is a very long announcement about the weather, the garden and nothing at all. " * 6


def shipped_canceller() -> list[str]:
    """The arguments of the module-echo-cancel line in config/echo-cancel.pa, which
    scripts/install-service.sh --echo-cancel installs: the tests load exactly that."""
    for line in (ROOT / "config/echo-cancel.pa").read_text().splitlines():
        if line.startswith("load-module module-echo-cancel "):
            words = shlex.split(line)
            # pactl wants a value with spaces quoted inside the argument, as the .pa file writes it
            return [f'{k}="{v}"' if " " in v else f"{k}={v}" for k, _, v in (w.partition("=") for w in words[2:])]
    raise AssertionError("config/echo-cancel.pa loads no module-echo-cancel")


@dataclass
class Room:
    """The speaker looped into the microphone at `gain_db`, heard through a `canceller`."""

    gain_db: int
    canceller: str  # "in-process" (the daemon's own) or "pulseaudio" (module-echo-cancel)

    @property
    def needed(self) -> int:
        """How many of TRIALS barge-ins must be heard (see TRIALS)."""
        return TRIALS // 2 + 1 if self.canceller == "in-process" else TRIALS // 3

    def start(self, start_daemon: StartDaemon, sections: dict[str, dict[str, object]]) -> tuple[Daemon, str]:
        """A daemon that hears the room through the canceller."""
        if self.canceller == "in-process":
            sections["audio"] = {**sections.get("audio", {}), "echo_cancel": True}
            return start_daemon(sections, OPENAI_API_KEY="test-key")
        return start_daemon(
            sections, OPENAI_API_KEY="test-key", PULSE_SOURCE="assistant_mic", PULSE_SINK="assistant_speaker"
        )


def _module_sink_input(pulse: PulseAudio, module: str) -> str:
    """The index of the sink input a module (the loopback) owns."""
    index = None
    for raw in pulse.pactl("list", "sink-inputs").splitlines():
        line = raw.strip()
        if line.startswith("Sink Input #"):
            index = line.removeprefix("Sink Input #")
        elif line == f"Owner Module: {module}" and index is not None:
            return index
    raise AssertionError(f"module {module} has no sink input")


def _room(pulse: PulseAudio, gain_db: int, canceller: str = "none") -> Iterator[Room]:
    modules = []
    try:
        loop = pulse.pactl(
            "load-module",
            "module-loopback",
            f"source={PulseAudio.SPEAKER_MONITOR}",
            f"sink={PulseAudio.MIC_SINK}",
            f"latency_msec={LOOP_LATENCY_MS}",
            "source_dont_move=true",
            "sink_dont_move=true",
        ).strip()
        modules.append(loop)
        pulse.pactl("set-sink-input-volume", _module_sink_input(pulse, loop), f"{gain_db}dB")
        if canceller == "pulseaudio":
            modules.append(
                pulse.pactl(
                    "load-module",
                    "module-echo-cancel",
                    *shipped_canceller(),
                    f"source_master={PulseAudio.MIC_SOURCE}",  # a device's are its card's (module-udev-detect)
                    f"sink_master={PulseAudio.SPEAKER_SINK}",
                ).strip()
            )
        yield Room(gain_db, canceller)
    finally:
        for module in reversed(modules):
            pulse.pactl("unload-module", module)
        pulse.pactl("set-source-volume", PulseAudio.MIC_SOURCE, "100%")  # in case a gain control moved it


# PulseAudio's canceller is left out here: under CPU load (stress-ng --cpu 2) it once let a quoted
# wake word through at -6 dB, which the README reports; at rest it never did in four runs.
ROOMS = [("in-process", 0), ("in-process", -6)]


@pytest.fixture(params=ROOMS, ids=[f"{c}-{g}dB" for c, g in ROOMS])
def room(request: pytest.FixtureRequest, pulse: PulseAudio) -> Iterator[Room]:
    """The speaker heard by the microphone as loud as it plays (0 dB) or at half the amplitude."""
    canceller, gain_db = request.param
    yield from _room(pulse, gain_db, canceller)


BARGE_IN_ROOMS = [("in-process", 0), ("in-process", -6), ("pulseaudio", -6)]


@pytest.fixture(params=BARGE_IN_ROOMS, ids=[f"{c}-{g}dB" for c, g in BARGE_IN_ROOMS])
def barge_in_room(request: pytest.FixtureRequest, pulse: PulseAudio) -> Iterator[Room]:
    canceller, gain_db = request.param
    yield from _room(pulse, gain_db, canceller)


@pytest.fixture
def loud_room(pulse: PulseAudio) -> Iterator[Room]:
    """No canceller at all."""
    yield from _room(pulse, 0)


def _say(mqtt: MqttRecorder, root: str, text: str, request_id: str) -> float:
    since = time.monotonic()
    mqtt.publish(f"{root}/say", json.dumps({"text": text, "id": request_id}))
    return mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking" and m.time > since, timeout=15).time


def _woke(mqtt: MqttRecorder, root: str, since: float, timeout: float = 3.0) -> bool:
    """Whether `event/wake` came after `since` (within `timeout` of now: the detector fires
    about half a second after the phrase ends)."""
    try:
        mqtt.wait_for(f"{root}/event/wake", predicate=lambda m: m.time > since, timeout=timeout)
    except AssertionError:
        return False
    return True


def _barge_in_trials(
    mqtt: MqttRecorder, root: str, pulse: PulseAudio, speaker: SpeakerRecorder, wake: Path, needed: int
) -> list[bool]:
    """Say the wake word into the microphone during a first long reply, then during up to TRIALS
    more until `needed` of them are heard or can no longer be: was it heard each time?"""
    heard: list[bool] = []
    for trial in range(1 + TRIALS):
        counted = heard[1:]
        if sum(counted) >= needed or len(counted) - sum(counted) > TRIALS - needed:
            break
        speaking = _say(mqtt, root, LONG_REPLY, f"long-{trial}")
        speaker.wait_for_sound(threshold=1000, timeout=10, since=speaking)
        pulse.play_into_mic(wake)
        heard.append(_woke(mqtt, root, speaking))
        mqtt.publish(f"{root}/cancel", "{}")
        mqtt.wait_for(f"{root}/state", predicate=lambda m, t=speaking: m.text == "idle" and m.time > t, timeout=15)
    return heard


def test_wake_word_barges_in_over_the_devices_own_voice(
    barge_in_room: Room,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    pulse: PulseAudio,
    speaker: SpeakerRecorder,
    speech: Callable[..., Path],
    start_daemon: StartDaemon,
) -> None:
    phrase, voice, wpm = WAKE
    wake = speech(phrase, voice=voice, wpm=wpm, pad_before=1.0, pad_after=0.5)
    _daemon, root = barge_in_room.start(start_daemon, wake_sections(mqtt_broker, fake, listen_timeout_s=1.0))
    first, *heard = _barge_in_trials(mqtt, root, pulse, speaker, wake, barge_in_room.needed)
    print(f"{barge_in_room}: barge-in heard {sum(heard)} of {len(heard)} after the first reply ({first}): {heard}")
    assert sum(heard) >= barge_in_room.needed, heard
    assert fake.of("audio/transcriptions") == []  # the device's voice after each wake word was no request


def test_the_devices_own_voice_never_wakes_it(
    room: Room,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
) -> None:
    """A reply that quotes the wake word three times, heard back through the canceller."""
    _daemon, root = room.start(start_daemon, wake_sections(mqtt_broker, fake))
    speaking = _say(mqtt, root, SELF_WAKE, "quote")
    mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > speaking, timeout=60)
    mqtt.assert_no_message(f"{root}/event/wake", duration=1.0)  # nor in the echo's tail
    assert [m for m in mqtt.messages(f"{root}/event/wake") if m.time > speaking] == []
    assert fake.of("audio/transcriptions") == []


def test_without_the_canceller_the_device_wakes_itself(
    loud_room: Room,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
) -> None:
    """The control: the same reply through the plain speaker and microphone wakes the device,
    so the loop is real and the test above can fail."""
    _daemon, root = start_daemon(wake_sections(mqtt_broker, fake), OPENAI_API_KEY="test-key")
    speaking = _say(mqtt, root, SELF_WAKE, "quote")
    wake = mqtt.wait_for(f"{root}/event/wake", predicate=lambda m: m.time > speaking, timeout=30).json()
    assert wake["reason"] == "wakeword" and wake["model"] == "hey_mycroft"


def test_the_shipped_canceller_keeps_the_gain_controls_off() -> None:
    args = shipped_canceller()
    assert "aec_method=webrtc" in args
    assert 'aec_args="analog_gain_control=0 digital_gain_control=0"' in args
    assert "source_name=assistant_mic" in args and "sink_name=assistant_speaker" in args


def test_the_pulseaudio_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd/assistant-pulse.service").read_text()
    assert "-F /etc/assistant/echo-cancel.pa" in unit and "User=assistant" in unit
    assert "unix:/run/assistant-pulse/native" in (ROOT / "scripts/install-service.sh").read_text()
    assert "socket=/run/assistant-pulse/native" in (ROOT / "config/echo-cancel.pa").read_text()
    (tmp_path / "assistant-pulse.service").write_text(unit.replace("/usr/bin/pulseaudio", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "assistant-pulse.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_install_refuses_echo_cancel_with_lean_alsa() -> None:
    """Checked before anything is installed (the tests run as root: nothing must happen)."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/install-service.sh"), "--echo-cancel", "--lean-alsa"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1 and "exclude each other" in result.stderr, result.stderr


def test_the_shipped_pulseaudio_config_gives_the_daemon_the_cancelled_devices(tmp_path: Path) -> None:
    """config/echo-cancel.pa as assistant-pulse.service runs it, but with two virtual cards in
    place of PulseAudio's card detection and the socket in a temporary directory."""
    shipped = (ROOT / "config/echo-cancel.pa").read_text()
    assert "load-module module-udev-detect\n" in shipped
    cards = (
        "load-module module-null-sink sink_name=card rate=48000\nload-module module-null-source source_name=cardmic\n"
    )
    script = tmp_path / "echo-cancel.pa"
    socket = tmp_path / "native"
    script.write_text(
        shipped.replace("load-module module-udev-detect\n", cards).replace("/run/assistant-pulse/native", str(socket))
    )
    (tmp_path / "xdg").mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}
    env.pop("PULSE_SERVER", None)
    log = f"--log-target=file:{tmp_path / 'pulse.log'}"
    process = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "-n", "-F", str(script), "--exit-idle-time=-1", "--disable-shm=yes", log],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = {**env, "PULSE_SERVER": f"unix:{socket}"}
        deadline = time.monotonic() + 15
        info = ""
        while time.monotonic() < deadline and process.poll() is None:
            result = subprocess.run(["pactl", "info"], env=client, capture_output=True, text=True, check=False)
            info = result.stdout
            if result.returncode == 0 and "Default Source: assistant_mic" in info:
                break
            time.sleep(0.1)
        assert process.poll() is None, (tmp_path / "pulse.log").read_text(errors="replace")
        assert "Default Sink: assistant_speaker" in info and "Default Source: assistant_mic" in info, info
        modules = subprocess.run(
            ["pactl", "list", "short", "modules"], env=client, capture_output=True, text=True, check=True
        )
        assert "aec_method=webrtc" in modules.stdout and "sink_master" not in modules.stdout
    finally:
        stop_process(process)
