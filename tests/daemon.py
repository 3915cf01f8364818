"""Run `assistant run` as a subprocess against the test broker, PulseAudio and API server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from support import MqttRecorder

ROOT = Path(__file__).resolve().parents[1]

ENTITIES = """
[[homeassistant.entities]]
entity_id = "light.kitchen"
name = "Kitchen light"
area = "Kitchen"
command_topic = "{ns}/kitchen/light/set"
state_topic = "{ns}/kitchen/light/state"
brightness_command_topic = "{ns}/kitchen/light/brightness/set"

[[homeassistant.entities]]
entity_id = "lock.front_door"
name = "Front door"
command_topic = "{ns}/door/set"
"""


def toml_value(value: Any) -> str:
    """A Python value written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]], entities: str = "") -> Path:
    """Write a config file from {section: {key: value}} (dotted sections allowed)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines) + entities)
    return path


def base_sections(broker_port: int, api_url: str, site_id: str | None = None) -> dict[str, dict[str, Any]]:
    """A config for tests: local broker, local API, OpenAI TTS (streamed pcm), quick endpointing."""
    return {
        "device": {"site_id": site_id or f"t{uuid.uuid4().hex[:8]}", "name": "Testy"},
        "vad": {"silence_ms": 500, "min_utterance_ms": 200},
        "wake": {"mode": "vad"},
        "agent": {"local_intents": False},  # these tests exercise the chat agent; the fast path has its own
        "openai": {"base_url": api_url + "/v1", "max_retries": 2, "timeout_s": 20},
        "tts": {"engine": "openai", "model": "gpt-4o-mini-tts", "voice": "alloy"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "homeassistant": {"expose": ["light.*", "switch.*"]},
    }


class Daemon:
    """`python -m assistant run` with its log captured to a file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "assistant", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )

    def wait_ready(self, mqtt: MqttRecorder, root: str, timeout: float = 20.0) -> None:
        """Until `<root>/state` says idle or muted (published after READY)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            last = mqtt.last(f"{root}/state")
            if last is not None and last.text in ("idle", "muted"):
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """What the daemon has logged so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def quiet_sections(broker_port: int, api_url: str) -> dict[str, dict[str, Any]]:
    """The test config without speech (faster turns, nothing queued on the speaker)."""
    sections = base_sections(broker_port, api_url)
    sections["tts"] = {"engine": "none"}
    return sections


def daemon_env(pulse_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The test process's environment with PulseAudio's and the given variables, no stray keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_OPENAI_", "ASSISTANT_"))}
    env.update(pulse_env)
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m assistant ARGS` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def wait_log(daemon: Daemon, pattern: str, timeout: float = 15, after: int = 0) -> re.Match[str]:
    """Wait until the daemon's log (from character `after` on) matches `pattern`."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        found = regex.search(daemon.log(), after)
        if found is not None:
            return found
        if daemon.process.poll() is not None or time.monotonic() >= deadline:
            raise AssertionError(
                f"daemon log has no {pattern!r} within {timeout}s (exit code {daemon.process.poll()}):\n"
                + daemon.log()[-4000:]
            )
        time.sleep(0.1)


NO_MICROPHONE_ALSA = """
defaults.pcm.card 0
defaults.pcm.device 0
defaults.ctl.card 0
pcm.!default { type asym playback.pcm { type null } }
"""


def no_microphone_alsa(directory: Path) -> dict[str, str]:
    """The environment of a machine with a speaker and no microphone (ALSA_CONFIG_PATH)."""
    path = directory / "alsa-no-microphone.conf"
    path.write_text(NO_MICROPHONE_ALSA)
    return {"ALSA_CONFIG_PATH": str(path)}
