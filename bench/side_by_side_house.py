"""The side-by-side bench's house: zigbee2mqtt-like lights and switches on a real broker.

Each device is announced the way zigbee2mqtt announces it (a retained MQTT discovery config per
entity under `homeassistant/<component>/<ieee>/<component>/config`, `name: null` so the entity takes
its device's name, `suggested_area`, availability on the bridge's state topic), and a small
simulator plays the devices: a command on `zigbee2mqtt/<name>/set` (JSON, or a bare ON / OFF)
changes the device and its new state is published on `zigbee2mqtt/<name>`, as zigbee2mqtt does.
So a command causes what it causes at home: a state change in Home Assistant and, with
mqtt_statestream, a burst of state and attribute messages.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

BASE = "zigbee2mqtt"
BRIDGE_STATE = f"{BASE}/bridge/state"
AREAS = [
    "Kitchen", "Living room", "Dining room", "Hall", "Bedroom", "Bathroom",
    "Office", "Kids room", "Guest room", "Garage", "Garden", "Laundry",
]  # fmt: skip
LIGHTS = ["ceiling light", "floor lamp", "spotlights", "wall light"]
SWITCHES = ["socket", "heater"]
EXTRA_LIGHT = "reading lamp"  # the lights added to measure the prompt's growth


@dataclass
class Device:
    """One zigbee2mqtt device with one entity (a light or a switch)."""

    index: int
    component: str  # "light" or "switch"
    name: str  # zigbee2mqtt's friendly name, also the entity's name
    area: str
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def ieee(self) -> str:
        return f"0x00158d00{self.index:08x}"

    @property
    def object_id(self) -> str:
        return "_".join(self.name.lower().split())

    @property
    def entity_id(self) -> str:
        return f"{self.component}.{self.object_id}"

    @property
    def topic(self) -> str:
        return f"{BASE}/{self.name}"

    @property
    def command_topic(self) -> str:
        return f"{self.topic}/set"

    @property
    def discovery_topic(self) -> str:
        return f"homeassistant/{self.component}/{self.ieee}/{self.component}/config"

    @property
    def is_on(self) -> bool:
        return self.state.get("state") == "ON"

    def discovery(self) -> dict[str, Any]:
        """The discovery config, as zigbee2mqtt 1.x publishes it for such a device."""
        config: dict[str, Any] = {
            "availability": [{"topic": BRIDGE_STATE, "value_template": "{{ value_json.state }}"}],
            "command_topic": self.command_topic,
            "device": {
                "identifiers": [f"zigbee2mqtt_{self.ieee}"],
                "manufacturer": "IKEA" if self.component == "light" else "Aqara",
                "model": "LED2003G10" if self.component == "light" else "SP-EUC01",
                "name": self.name,
                "suggested_area": self.area,
                "sw_version": "1.0.38",
            },
            "name": None,
            "object_id": self.object_id,
            "origin": {"name": "Zigbee2MQTT", "sw": "1.42.0", "url": "https://www.zigbee2mqtt.io"},
            "state_topic": self.topic,
            "unique_id": f"{self.ieee}_{self.component}_zigbee2mqtt",
        }
        if self.component == "light":
            config |= {
                "schema": "json",
                "brightness": True,
                "brightness_scale": 254,
                "supported_color_modes": ["color_temp"],
                "min_mireds": 250,
                "max_mireds": 454,
            }
        else:
            config |= {"payload_on": "ON", "payload_off": "OFF", "value_template": "{{ value_json.state }}"}
        return config

    def initial_state(self) -> dict[str, Any]:
        if self.component == "light":
            return {"state": "OFF", "brightness": 254, "color_mode": "color_temp", "color_temp": 370, "linkquality": 90}
        return {"state": "OFF", "power": 0, "linkquality": 120}


def build(areas: list[str] = AREAS) -> list[Device]:
    """72 devices: in each of 12 areas four lights and two switches."""
    devices: list[Device] = []
    for area in areas:
        for kind, names in (("light", LIGHTS), ("switch", SWITCHES)):
            for name in names:
                devices.append(Device(len(devices) + 1, kind, f"{area} {name}", area))
    for device in devices:
        device.state = device.initial_state()
    return devices


def extra_lights(count: int, first_index: int) -> list[Device]:
    """`count` more lights, one in each of the first areas, to measure what one more costs."""
    added = [Device(first_index + i, "light", f"{area} {EXTRA_LIGHT}", area) for i, area in enumerate(AREAS[:count])]
    for device in added:
        device.state = device.initial_state()
    return added


class Zigbee2Mqtt:
    """The devices on the broker: announces them and answers their commands (see the module docstring)."""

    def __init__(self, host: str, port: int, devices: list[Device]) -> None:
        self.devices = {d.command_topic: d for d in devices}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-zigbee2mqtt")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("the zigbee2mqtt simulator could not connect to the broker")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(f"{BASE}/+/set", qos=1)
        self._connected.set()

    def announce(self, devices: list[Device] | None = None) -> None:
        """Publish the bridge state, discovery configs and states (all retained); returns once sent."""
        with self._lock:
            for device in devices or []:
                self.devices[device.command_topic] = device
            todo = devices if devices is not None else list(self.devices.values())
        infos = [self.client.publish(BRIDGE_STATE, json.dumps({"state": "online"}), qos=1, retain=True)]
        for device in todo:
            infos.append(self.client.publish(device.discovery_topic, json.dumps(device.discovery()), 1, True))
            infos.append(self.client.publish(device.topic, json.dumps(device.state), qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(10)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            device = self.devices.get(message.topic)
            if device is None:
                return
            text = message.payload.decode(errors="replace").strip()
            try:
                change = json.loads(text)
            except ValueError:
                change = None
            if not isinstance(change, dict):
                change = {"state": text.upper()}  # zigbee2mqtt takes a bare ON / OFF as {"state": ...}
            change = {k: v for k, v in change.items() if k in ("state", "brightness", "color_temp")}
            if str(change.get("state", "")).upper() == "TOGGLE":
                change["state"] = "OFF" if device.is_on else "ON"
            device.state = {**device.state, **change}
            payload = json.dumps(device.state)
        client.publish(device.topic, payload, qos=0, retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
