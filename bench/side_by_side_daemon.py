"""The daemon for the side-by-side bench, configured as the README tells a household to.

It knows the house its own way: MQTT discovery (the zigbee2mqtt devices), the bridge package's
house snapshot (`service_topic`) and mqtt_statestream (`statestream_topic`), with the default
`expose`. `wake.mode = "mqtt"` (it listens only when asked), `announce = false` so that it adds no
entities of its own to Home Assistant (which would expose its mute switch to Home Assistant's
agents and make the two houses differ), the fast path on (the default), espeak-ng as its voice
(replies to `ask` are not spoken unless asked), and the local test server as its API.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from daemon import Daemon, daemon_env, write_config
from support import MqttRecorder

SERVICE_TOPIC = "assistant/service"
STATESTREAM = "homeassistant/statestream"


def config(path: Path, site: str, broker_port: int, api_base_url: str, ha_version: str, state_dir: Path) -> Path:
    """Write the daemon's config file (see the module docstring)."""
    sections: dict[str, dict[str, Any]] = {
        "device": {"site_id": site, "name": "Home", "state_dir": str(state_dir)},
        "wake": {"mode": "mqtt"},
        "openai": {"base_url": api_base_url},
        "tts": {"engine": "espeak"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "homeassistant": {
            "statestream_topic": STATESTREAM,
            "service_topic": SERVICE_TOPIC,
            "version": ha_version,
            "announce": False,
        },
    }
    return write_config(path, sections)


class RunningDaemon:
    """`assistant run` on the bench's config: started, asked over MQTT, restarted."""

    def __init__(self, config_path: Path, pulse_env: dict[str, str], log: Path, mqtt: MqttRecorder) -> None:
        self.config_path = config_path
        self.env = daemon_env(pulse_env, OPENAI_API_KEY="test-key")
        self.log = log
        self.mqtt = mqtt
        self.site = config_path.stem
        self.root = f"assistant/{self.site}"
        self.daemon: Daemon | None = None
        self.starts = 0

    def start(self, timeout: float = 120) -> float:
        """Start it; seconds until it is ready (its `state` published after READY, seen on the broker)."""
        began = time.monotonic()
        self.starts += 1
        self.daemon = Daemon(self.config_path, self.env, self.log.with_suffix(f".{self.starts}.log"))
        deadline = began + timeout
        while True:
            found = self.mqtt.messages(f"{self.root}/state", lambda m: m.time >= began and m.text in ("idle", "muted"))
            if found:
                return found[0].time - began
            if self.daemon.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not become ready:\n{self.daemon.log()[-3000:]}")
            time.sleep(0.01)  # the next look at what the recorder has seen

    def stop(self) -> None:
        if self.daemon is not None:
            code = self.daemon.stop()
            if code != 0:
                print(f"warning: the daemon exited with {code}; its log: {self.daemon.log_path}")
            self.daemon = None

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.process.pid

    def ask(self, text: str, conversation_id: str | None = None) -> tuple[str, float]:
        """Publish an `ask` (not waiting for the broker's acknowledgement); its id and when it was sent."""
        request_id = uuid.uuid4().hex[:12]
        payload: dict[str, Any] = {"text": text, "id": request_id}
        if conversation_id is not None:
            payload["conversation_id"] = conversation_id
        sent = time.monotonic()
        self.mqtt.client.publish(f"{self.root}/ask", json.dumps(payload), qos=1)
        return request_id, sent

    def wait_reply(self, request_id: str, since: float, timeout: float = 20) -> tuple[float, dict[str, Any]]:
        """When `event/reply` for `request_id` arrived, and its payload."""
        reply = self.mqtt.wait_for(
            f"{self.root}/event/reply", lambda m: m.json().get("id") == request_id, timeout=timeout, since=since
        )
        return reply.time, dict(reply.json())
