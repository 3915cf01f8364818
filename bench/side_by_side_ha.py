"""Home Assistant for the side-by-side bench: the tests' real Home Assistant, set up as a household would.

tests/real_ha.py starts it (the cached venv of scripts/ha-venv.sh, --skip-pip, onboarding, a
long-lived token); here its configuration is the bench's: MQTT (discovery on, as the UI flow
leaves it), mqtt_statestream as the README recommends (`publish_attributes: true`), the default
conversation agent, the repository's bridge package, and no house of its own (the devices come
by discovery, see side_by_side_house.py). openai_conversation is added through its config flow
(`POST /api/config/config_entries/flow`, as the UI does) with the API key of the local test
server, which the process reaches through `OPENAI_BASE_URL` (the openai SDK reads it when no
base URL is given, and openai_conversation gives none).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

from real_ha import BRIDGE_PACKAGE, CONFIGURATION, HomeAssistant, _mqtt_entry

BENCH_CONFIGURATION = """
conversation:
mqtt_statestream:
  base_topic: homeassistant/statestream
  publish_attributes: true
"""
DEFAULT_AGENT = "conversation.home_assistant"


class BenchHomeAssistant(HomeAssistant):
    """A Home Assistant with the bench's configuration (see the module docstring)."""

    def _write_config(self) -> None:
        (self.config_dir / "packages").mkdir(parents=True, exist_ok=True)
        (self.config_dir / ".storage").mkdir(exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port) + BENCH_CONFIGURATION)
        (self.config_dir / "packages/assistant_bridge.yaml").write_text(BRIDGE_PACKAGE.read_text())
        (self.config_dir / ".storage/core.config_entries").write_text(json.dumps(_mqtt_entry(self.broker)))

    def add_openai(self, api_key: str) -> str:
        """Set openai_conversation up through its config flow; returns its conversation agent's entity id."""
        flow = self._http("POST", "/api/config/config_entries/flow", {"handler": "openai_conversation"})
        done = self._http("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"api_key": api_key})
        if done.get("type") != "create_entry":
            raise RuntimeError(f"openai_conversation's config flow did not create an entry: {done}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            agents = [s["entity_id"] for s in self.states() if s["entity_id"].startswith("conversation.")]
            agents = [a for a in agents if a != DEFAULT_AGENT]
            if agents:
                return agents[0]
            time.sleep(0.1)  # the next look at Home Assistant's states
        raise RuntimeError(f"openai_conversation set up no conversation agent:\n{self.log_tail()}")

    def wait_entities(self, entity_ids: list[str], timeout: float = 120) -> None:
        """Until Home Assistant has every one of `entity_ids`, available."""
        deadline = time.monotonic() + timeout
        while True:
            states = {s["entity_id"]: s["state"] for s in self.states()}
            missing = [e for e in entity_ids if states.get(e) in (None, "unavailable")]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Home Assistant lacks {len(missing)} entities, e.g. {missing[:3]}")
            time.sleep(0.2)  # the next look at Home Assistant's states


class Conversation:
    """`POST /api/conversation/process` on one kept-alive connection (as an app or satellite keeps one)."""

    def __init__(self, ha: HomeAssistant) -> None:
        self.ha = ha
        self._connection: http.client.HTTPConnection | None = None

    def process(self, text: str, agent_id: str) -> tuple[float, dict[str, Any]]:
        """Send `text` to `agent_id`; (time.monotonic() when the answer was read, the answer)."""
        body = json.dumps({"text": text, "language": "en", "agent_id": agent_id})
        headers = {"Authorization": f"Bearer {self.ha.token}", "Content-Type": "application/json"}
        for attempt in (1, 2):  # a kept-alive connection Home Assistant closed is opened again once
            if self._connection is None:
                self._connection = http.client.HTTPConnection("127.0.0.1", self.ha.port, timeout=60)
            try:
                self._connection.request("POST", "/api/conversation/process", body, headers)
                response = self._connection.getresponse()
                data = response.read()
                answered = time.monotonic()
                break
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"conversation/process answered {response.status}: {data[:300]!r}")
        return answered, json.loads(data)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def succeeded(answer: dict[str, Any]) -> bool:
    """Whether a conversation/process answer says it acted (not an error such as an unknown name)."""
    return bool(answer.get("response", {}).get("response_type") == "action_done")


def speech(answer: dict[str, Any]) -> str:
    return str(answer.get("response", {}).get("speech", {}).get("plain", {}).get("speech", ""))
