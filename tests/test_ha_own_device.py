"""The daemon's own device in a real Home Assistant, on every supported version.

The same entity ids on 2024.11 and 2025.4 (the ids the README names), driven from Home
Assistant's side: the Ask text box, the Mute switch, the Listen button; "Last request" and
"Last reply" show typed asks; everything goes unavailable when the daemon stops, and the
device comes back after a Home Assistant restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon import Daemon, base_sections
from fake_openai import FakeOpenAI
from real_ha import HomeAssistant
from support import Broker, MqttRecorder

StartDaemon = Callable[..., tuple[Daemon, str]]


def has_state(value: str) -> Callable[[dict[str, Any] | None], bool]:
    return lambda state: state is not None and state["state"] == value


def test_the_daemons_own_device_in_home_assistant(
    home_assistant: HomeAssistant,
    fake: FakeOpenAI,
    mqtt_broker: Broker,
    mqtt: MqttRecorder,
    start_daemon: StartDaemon,
) -> None:
    ha = home_assistant
    sections = base_sections(mqtt_broker.port, fake.url)
    site = sections["device"]["site_id"]
    sections["wake"] = {"mode": "mqtt"}
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    node = f"assistant_{site}"
    ids = {
        key: f"{platform}.{node}_{key}"
        for key, platform in [
            ("state", "sensor"),
            ("transcript", "sensor"),
            ("reply", "sensor"),
            ("mute", "switch"),
            ("listen", "button"),
            ("ask", "text"),
        ]
    }
    for entity_id in ids.values():  # the same ids on every supported version
        assert ha.wait_state(entity_id, timeout=60) is not None, (entity_id, ha.version)
    assert ha.wait_state(ids["state"], has_state("idle"))
    assert ha.state(ids["state"])["attributes"]["friendly_name"] == "Testy State"  # type: ignore[index]

    # a typed ask from the dashboard: Last request and Last reply show it
    ha.call("text", "set_value", {"entity_id": ids["ask"], "value": "hello from the dashboard"})
    reply = mqtt.wait_for(f"{root}/event/reply", timeout=20).json()
    assert (reply["request"], reply["text"]) == ("hello from the dashboard", "OK.")
    assert ha.wait_state(ids["transcript"], has_state("hello from the dashboard"))
    assert ha.wait_state(ids["reply"], has_state("OK."))

    # the Mute switch and the Listen button, pressed in Home Assistant
    ha.call("switch", "turn_on", {"entity_id": ids["mute"]})
    assert mqtt.wait_for(f"{root}/mute", predicate=lambda m: m.text == "ON", timeout=20)
    assert ha.wait_state(ids["mute"], has_state("on"))
    assert ha.wait_state(ids["state"], has_state("muted"))
    ha.call("switch", "turn_off", {"entity_id": ids["mute"]})
    assert ha.wait_state(ids["mute"], has_state("off"))
    ha.call("button", "press", {"entity_id": ids["listen"]})
    assert mqtt.wait_for(f"{root}/event/wake", timeout=20).json()["reason"]

    # Home Assistant restarts: the daemon announces itself again, and its entities come back live
    ha.restart()
    assert ha.wait_state(ids["state"], lambda s: s is not None and s["state"] not in ("unavailable", "unknown"))

    # the daemon stops: its entities go unavailable (its last will / clean offline)
    assert daemon.stop() == 0
    assert ha.wait_state(ids["state"], has_state("unavailable"))
    assert ha.wait_state(ids["mute"], has_state("unavailable"))
