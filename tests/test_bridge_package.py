"""The Home Assistant side of the service bridge: config/homeassistant/assistant_bridge.yaml.

The package runs in a real Home Assistant (tests/real_ha.py, each supported version) on the real
broker, fed what any client on the broker could publish. Every request gets an answer on the
result topic, allowed calls are carried out (Home Assistant's state shows it, and the command
reaches the device's MQTT topic), and nothing outside the package's allowlist is ever carried out.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from real_ha import HomeAssistant, HomeAssistantError
from support import MqttRecorder

TOPIC, RESULT = "assistant/service", "assistant/service/result"
NOT_ALLOWED = "not allowed by the Home Assistant bridge: "
TARGETS = NOT_ALLOWED + "data may not name targets "
LIGHT = "invalid data for light.turn_on: "
NOT_JSON = "the request is not a JSON object"
HOUSE = ("switch.allowed", "switch.other", "switch.plug_usb", "switch.gone", "switch.broken", "light.garden")
HOUSE += ("climate.study", "cover.garage", "fan.ceiling")
DEVICES = "house/#"  # where the house's MQTT entities receive their commands


@pytest.fixture(scope="module")
def bridge(home_assistant: HomeAssistant) -> Iterator[HomeAssistant]:
    """The package as an installer would narrow it: not every switch, only the ones named "allowed..."."""
    allowed = (
        r"^(switch\.allowed.*|switch\.gone|switch\.broken|switch\.missing|light\..+|climate\..+|cover\..+|fan\..+)$"
    )
    home_assistant.install_bridge(allowed_entities=allowed)
    yield home_assistant
    home_assistant.install_bridge()


def send(mqtt: MqttRecorder, request: dict[str, Any] | str, request_id: str | None = None) -> dict[str, Any]:
    """Publish one request and return the answer that carries its id."""
    if isinstance(request, dict):
        request_id = request_id or uuid.uuid4().hex[:12]
        request = json.dumps({"id": request_id, **request})
    mqtt.publish(TOPIC, request)
    answer = mqtt.wait_for(RESULT, predicate=lambda m: str(m.json()["id"]) == (request_id or ""), timeout=10)
    return dict(answer.json())


def call(domain: str, service: str, entity_id: Any, data: Any = None) -> dict[str, Any]:
    return {"domain": domain, "service": service, "entity_id": entity_id, "data": {} if data is None else data}


def house_states(ha: HomeAssistant) -> dict[str, Any]:
    """What Home Assistant says of the house: state and attributes, not when they were written."""
    return {s["entity_id"]: (s["state"], s["attributes"]) for s in ha.states() if s["entity_id"] in HOUSE}


def runs(ha: HomeAssistant) -> list[dict[str, Any]]:
    """The bridge automation's stored runs (traces), oldest first."""
    return list(ha.ws({"type": "trace/list", "domain": "automation", "item_id": "assistant_service_bridge"}))


def wait_run_after(ha: HomeAssistant, before: list[dict[str, Any]], timeout: float = 10) -> dict[str, Any]:
    """The first run not in `before`, once it has stopped."""
    known = {run["run_id"] for run in before}
    deadline = time.monotonic() + timeout
    while True:
        new = [run for run in runs(ha) if run["run_id"] not in known]
        if new and new[0]["state"] == "stopped":
            return new[0]
        assert time.monotonic() < deadline, f"the bridge's run did not stop: {new}"


def test_an_allowed_call_is_carried_out_and_answered_ok(bridge: HomeAssistant, mqtt: MqttRecorder) -> None:
    answer = send(mqtt, call("light", "turn_on", "light.garden", {"brightness_pct": 40, "rgb_color": [255, 0, 0]}))
    assert answer["ok"] is True and "error" not in answer
    assert send(mqtt, call("climate", "set_temperature", "climate.study", {"temperature": 23}))["ok"] is True
    assert send(mqtt, call("climate", "set_hvac_mode", "climate.study", {"hvac_mode": "heat"}))["ok"] is True
    assert send(mqtt, call("cover", "set_cover_position", "cover.garage", {"position": 30}))["ok"] is True
    assert send(mqtt, call("fan", "set_percentage", "fan.ceiling", {"percentage": 55}))["ok"] is True
    # each answer went out after its call: the devices have their commands by now
    assert [(m.topic, m.text) for m in mqtt.messages(DEVICES)] == [
        ("house/garden/set", '{"state":"ON","color":{"r":255,"g":0,"b":0},"brightness":102}'),
        ("house/study/temperature", "23.0"),
        ("house/study/mode", "heat"),
        ("house/garage/position", "30"),
        ("house/ceiling/percentage", "55"),
    ]
    garden = bridge.state("light.garden")
    assert garden is not None and garden["state"] == "on"
    assert garden["attributes"]["brightness"] == 102 and garden["attributes"]["rgb_color"] == [255, 0, 0]
    study = bridge.state("climate.study")
    assert study is not None and study["state"] == "heat" and study["attributes"]["temperature"] == 23
    garage = bridge.state("cover.garage")
    assert garage is not None and garage["attributes"]["current_position"] == 30
    ceiling = bridge.state("fan.ceiling")
    assert ceiling is not None and ceiling["attributes"]["percentage"] == 55


# (name, "domain.service", entity_id, data, what the error says); none of them may be carried out
REFUSALS: list[tuple[str, str, Any, Any, str]] = [
    # one plain entity id, nothing else
    ("comma list", "switch.turn_on", "switch.allowed, switch.other", {}, NOT_ALLOWED + "entity_id must be one"),
    ("comma, no space", "switch.turn_on", "switch.allowed,switch.other", {}, NOT_ALLOWED + "entity_id must be one"),
    ("a JSON list", "switch.turn_on", ["switch.allowed", "switch.other"], {}, NOT_ALLOWED + "switch.turn_on on ["),
    ("malformed id", "switch.turn_on", "switch.allowed__x", {}, NOT_ALLOWED + "entity_id must be one"),
    ("capitals", "switch.turn_on", "switch.allowed_X", {}, NOT_ALLOWED + "entity_id must be one"),
    ("no entity", "switch.turn_on", "", {}, NOT_ALLOWED + "switch.turn_on on no entity"),
    ("registry uuid", "switch.turn_on", "0123456789abcdef0123456789abcdef", {}, NOT_ALLOWED + "switch.turn_on on 0"),
    # the allowlists
    ("entity not allowed", "switch.turn_on", "switch.other", {}, NOT_ALLOWED + "switch.turn_on on switch.other"),
    ("action not allowed", "lock.unlock", "lock.front_door", {}, NOT_ALLOWED + "lock.unlock on lock.front_door"),
    ("domain mismatch", "light.turn_on", "switch.allowed", {}, NOT_ALLOWED + "light.turn_on on switch.allowed"),
    # targets inside data would widen the call
    ("device_id in data", "switch.turn_on", "switch.allowed", {"device_id": "plug_device"}, TARGETS + "(device_id)"),
    ("entity_id in data", "switch.turn_on", "switch.allowed", {"entity_id": "switch.other"}, TARGETS + "(entity_id)"),
    ("area_id in data", "light.turn_on", "light.garden", {"area_id": "kitchen"}, TARGETS + "(area_id)"),
    ("floor_id in data", "light.turn_on", "light.garden", {"floor_id": "first"}, TARGETS + "(floor_id)"),
    ("label_id in data", "light.turn_on", "light.garden", {"label_id": "all"}, TARGETS + "(label_id)"),
    # only the keys the daemon sends, of the right type and range
    ("key not taken", "switch.turn_on", "switch.allowed", {"brightness_pct": 50}, NOT_ALLOWED + "switch.turn_on does"),
    ("other light key", "light.turn_on", "light.garden", {"flash": "long"}, NOT_ALLOWED + "light.turn_on does not"),
    ("data not an object", "light.turn_on", "light.garden", ["brightness_pct", 50], NOT_ALLOWED + "data must be"),
    ("brightness 500", "light.turn_on", "light.garden", {"brightness_pct": 500}, LIGHT + "brightness_pct must"),
    ("brightness text", "light.turn_on", "light.garden", {"brightness_pct": "50"}, LIGHT + "brightness_pct must"),
    ("brightness true", "light.turn_on", "light.garden", {"brightness_pct": True}, LIGHT + "brightness_pct must"),
    ("kelvin negative", "light.turn_on", "light.garden", {"color_temp_kelvin": -5}, LIGHT + "color_temp_kelvin must"),
    ("rgb of two", "light.turn_on", "light.garden", {"rgb_color": [1, 2]}, LIGHT + "rgb_color must"),
    ("rgb 300", "light.turn_on", "light.garden", {"rgb_color": [1, 2, 300]}, LIGHT + "rgb_color must"),
    ("rgb text", "light.turn_on", "light.garden", {"rgb_color": "red"}, LIGHT + "rgb_color must"),
    (
        "rgb and kelvin",
        "light.turn_on",
        "light.garden",
        {"rgb_color": [1, 2, 3], "color_temp_kelvin": 3000},
        "give either",
    ),
    (
        "position 101",
        "cover.set_cover_position",
        "cover.garage",
        {"position": 101},
        "position must be a number from 0 to 100",
    ),
    ("position missing", "cover.set_cover_position", "cover.garage", {}, "position is required"),
    ("percentage text", "fan.set_percentage", "fan.ceiling", {"percentage": "max"}, "percentage must be a number"),
    (
        "temperature text",
        "climate.set_temperature",
        "climate.study",
        {"temperature": "warm"},
        "temperature must be a number",
    ),
    ("hvac mode unknown", "climate.set_hvac_mode", "climate.study", {"hvac_mode": "sauna"}, "hvac_mode must be one of"),
    # what Home Assistant itself would pass over without a word
    ("missing entity", "switch.turn_on", "switch.missing", {}, "Home Assistant has no entity switch.missing"),
    ("unavailable entity", "switch.turn_on", "switch.gone", {}, "switch.gone is unavailable in Home Assistant"),
    (
        "mode it lacks",
        "climate.set_hvac_mode",
        "climate.study",
        {"hvac_mode": "cool"},
        "climate.study has no HVAC mode",
    ),
    # the call itself fails in Home Assistant
    (
        "integration error",
        "switch.turn_on",
        "switch.broken",
        {},
        "Home Assistant could not carry out switch.turn_on on",
    ),
]


@pytest.mark.parametrize(
    ("action", "entity_id", "data", "expected"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_every_refusal_is_answered_and_nothing_is_done(
    bridge: HomeAssistant, mqtt: MqttRecorder, action: str, entity_id: Any, data: Any, expected: str
) -> None:
    domain, _, service = action.partition(".")
    states, before = house_states(bridge), runs(bridge)
    answer = send(mqtt, call(domain, service, entity_id, data))
    assert answer["ok"] is False
    assert expected in answer["error"], answer["error"]
    assert mqtt.messages(DEVICES) == []  # a command would have gone out before the answer
    assert house_states(bridge) == states
    # answered by the package, not left to an automation error
    assert wait_run_after(bridge, before)["script_execution"] == "finished"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("switch on please", NOT_JSON),
        ('["switch", "turn_on"]', NOT_JSON),
        (
            '{"domain": "light", "service": "turn_on", "entity_id": "light.garden", "data": {"brightness_pct": NaN}}',
            NOT_JSON,
        ),
        ("", NOT_JSON),
    ],
)
def test_a_request_that_is_not_json_is_answered(
    bridge: HomeAssistant, mqtt: MqttRecorder, payload: str, error: str
) -> None:
    assert send(mqtt, payload, request_id="") == {"id": "", "ok": False, "error": error}
    assert mqtt.messages(DEVICES) == []


def test_the_answer_echoes_the_id_whatever_it_looks_like(bridge: HomeAssistant, mqtt: MqttRecorder) -> None:
    for request_id in ("123456789012", "0123", "1e5", "abc def"):
        answer = send(mqtt, call("switch", "turn_on", "switch.allowed"), request_id=request_id)
        assert str(answer["id"]) == request_id and answer["ok"] is True
    assert [m.text for m in mqtt.messages(DEVICES)] == ["ON"] * 4


def test_home_assistant_itself_would_carry_out_what_the_bridge_refuses(
    bridge: HomeAssistant, mqtt: MqttRecorder
) -> None:
    """The refusals above mean something only because Home Assistant, asked directly, would widen or
    silently skip these calls."""
    bridge.call("switch", "turn_off", {"entity_id": ["switch.allowed", "switch.other", "switch.plug_usb"]})
    bridge.call("switch", "turn_on", {"entity_id": "switch.allowed, switch.other"})  # a comma list: both
    assert [bridge.state(e)["state"] for e in ("switch.allowed", "switch.other")] == ["on", "on"]  # type: ignore[index]
    devices = bridge.ws({"type": "config/device_registry/list"})
    plug = next(d["id"] for d in devices if ["mqtt", "house_plug"] in d["identifiers"])
    bridge.call("switch", "turn_on", {"entity_id": "switch.allowed", "device_id": plug})  # the whole plug
    usb = bridge.state("switch.plug_usb")
    assert usb is not None and usb["state"] == "on"
    # a missing or unavailable entity: no error, nothing done, which would read as success
    assert bridge.call("switch", "turn_on", {"entity_id": "switch.missing"}) == []
    assert bridge.call("switch", "turn_on", {"entity_id": "switch.gone"}) == []
    assert "house/gone/set" not in {m.topic for m in mqtt.messages(DEVICES)}
    with pytest.raises(HomeAssistantError) as refused:  # invalid data, by contrast, is refused
        bridge.call("light", "turn_on", {"entity_id": "light.garden", "brightness_pct": 500})
    assert refused.value.status == 400
