"""A stand-in for Home Assistant running config/homeassistant/assistant_bridge.yaml.

It reads the package, subscribes to its trigger topic on the real broker, renders the
package's own variables and condition with Jinja2 (plus the `match` test and `to_json`
filter Home Assistant adds), records the actions it would perform, and publishes the
result the package would publish.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

PACKAGE = Path(__file__).resolve().parents[1] / "config/homeassistant/assistant_bridge.yaml"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment()
    env.tests["match"] = lambda value, pattern: re.match(pattern, str(value)) is not None
    env.filters["to_json"] = json.dumps
    return env


class BridgeStandIn:
    """Executes the package's automation against the broker."""

    def __init__(self, host: str, port: int) -> None:
        self.automation = yaml.safe_load(PACKAGE.read_text())["automation"][0]
        self.topic = self.automation["triggers"][0]["topic"]
        self.performed: list[dict[str, Any]] = []
        self._env = _environment()
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(self.topic, qos=1)
        self.client.loop_start()

    def _render(self, value: Any, variables: dict[str, Any]) -> Any:
        if isinstance(value, str) and "{{" in value:
            text = self._env.from_string(value).render(**variables).strip()
            # Home Assistant reads a rendered template back as a native type where it can
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
        return value

    def evaluate(self, payload: bytes) -> tuple[bool, dict[str, Any]]:
        """What the automation decides for one trigger payload, and its variables."""
        try:
            payload_json = json.loads(payload)
        except ValueError:
            payload_json = jinja2.Undefined()
        trigger = {"payload_json": payload_json} if not isinstance(payload_json, jinja2.Undefined) else {}
        variables: dict[str, Any] = {"trigger": trigger}
        for name, value in self.automation["variables"].items():
            variables[name] = self._render(value, variables)
        condition = self.automation["actions"][0]["if"][0]["value_template"]
        return bool(self._render(condition, variables)), variables

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        allowed, variables = self.evaluate(message.payload)
        branch = self.automation["actions"][0]["then" if allowed else "else"]
        for step in branch:
            if step["action"] == "mqtt.publish":
                data = {k: self._render(v, variables) for k, v in step["data"].items()}
                payload = data["payload"] if isinstance(data["payload"], str) else json.dumps(data["payload"])
                client.publish(data["topic"], payload, qos=1)
            else:
                with self._lock:
                    self.performed.append(
                        {
                            "action": self._render(step["action"], variables),
                            "entity_id": self._render(step["target"]["entity_id"], variables),
                            "data": self._render(step["data"], variables),
                        }
                    )

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()
