"""The Home Assistant side of the service bridge: config/homeassistant/assistant_bridge.yaml.

Its own templates run in the Home Assistant stand-in (tests/ha_standin.py) against the real
broker, fed what any client on the broker could publish. Every request gets an answer on the
result topic, and nothing outside the package's allowlist is ever carried out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from ha_standin import BridgeStandIn, Entity, HomeAssistantError, Invalid, ServiceNotFound
from support import Broker, MqttRecorder

TOPIC, RESULT = "assistant/service", "assistant/service/result"
NOT_ALLOWED = "not allowed by the Home Assistant bridge: "
TARGETS = NOT_ALLOWED + "data may not name targets "
LIGHT = "invalid data for light.turn_on: "
NOT_JSON = "the request is not a JSON object"


def house() -> dict[str, Entity]:
    return {
        "switch.allowed": Entity(),
        "switch.other": Entity(device_id="plug_device"),
        "switch.plug_usb": Entity(device_id="plug_device"),
        "switch.gone": Entity(state="unavailable"),
        "switch.broken": Entity(fails="Failed to send request: device did not respond"),
        "light.garden": Entity(),
        "climate.study": Entity(state="heat", attributes={"hvac_modes": ["heat", "off"]}),
        "cover.garage": Entity(state="closed"),
        "fan.ceiling": Entity(),
    }


@pytest.fixture
def home_assistant(mqtt_broker: Broker) -> Iterator[BridgeStandIn]:
    # as an installer would narrow it: not every switch, only the ones named "allowed..."
    allowed = (
        r"^(switch\.allowed.*|switch\.gone|switch\.broken|switch\.missing|light\..+|climate\..+|cover\..+|fan\..+)$"
    )
    stand_in = BridgeStandIn(mqtt_broker.host, mqtt_broker.port, house(), variables={"allowed_entities": allowed})
    yield stand_in
    stand_in.close()


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


def test_an_allowed_call_is_carried_out_and_answered_ok(home_assistant: BridgeStandIn, mqtt: MqttRecorder) -> None:
    answer = send(mqtt, call("light", "turn_on", "light.garden", {"brightness_pct": 40, "rgb_color": [255, 0, 0]}))
    assert answer["ok"] is True and "error" not in answer
    assert send(mqtt, call("climate", "set_temperature", "climate.study", {"temperature": 21}))["ok"] is True
    assert send(mqtt, call("climate", "set_hvac_mode", "climate.study", {"hvac_mode": "off"}))["ok"] is True
    assert send(mqtt, call("cover", "set_cover_position", "cover.garage", {"position": 30}))["ok"] is True
    assert send(mqtt, call("fan", "set_percentage", "fan.ceiling", {"percentage": 55}))["ok"] is True
    assert home_assistant.performed == [
        {
            "action": "light.turn_on",
            "entity_id": "light.garden",
            "data": {"brightness_pct": 40.0, "rgb_color": (255, 0, 0)},
        },
        {"action": "climate.set_temperature", "entity_id": "climate.study", "data": {"temperature": 21.0}},
        {"action": "climate.set_hvac_mode", "entity_id": "climate.study", "data": {"hvac_mode": "off"}},
        {"action": "cover.set_cover_position", "entity_id": "cover.garage", "data": {"position": 30}},
        {"action": "fan.set_percentage", "entity_id": "fan.ceiling", "data": {"percentage": 55}},
    ]
    assert home_assistant.errors == []


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
    home_assistant: BridgeStandIn, mqtt: MqttRecorder, action: str, entity_id: Any, data: Any, expected: str
) -> None:
    domain, _, service = action.partition(".")
    answer = send(mqtt, call(domain, service, entity_id, data))
    assert answer["ok"] is False
    assert expected in answer["error"], answer["error"]
    assert home_assistant.performed == []
    assert home_assistant.errors == []  # answered by the package, not left to an automation error


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
    home_assistant: BridgeStandIn, mqtt: MqttRecorder, payload: str, error: str
) -> None:
    assert send(mqtt, payload, request_id="") == {"id": "", "ok": False, "error": error}
    assert home_assistant.performed == []


def test_the_answer_echoes_the_id_whatever_it_looks_like(home_assistant: BridgeStandIn, mqtt: MqttRecorder) -> None:
    for request_id in ("123456789012", "0123", "1e5", "abc def"):
        answer = send(mqtt, call("switch", "turn_on", "switch.allowed"), request_id=request_id)
        assert str(answer["id"]) == request_id and answer["ok"] is True


def test_the_stand_in_does_what_home_assistant_does_with_an_unchecked_call(mqtt_broker: Broker) -> None:
    """The refusals above mean something only if the stand-in would otherwise act as Home Assistant does."""
    stand_in = BridgeStandIn(mqtt_broker.host, mqtt_broker.port, house())
    try:
        stand_in._action({"action": "switch.turn_on", "target": {"entity_id": "switch.allowed, switch.other"}}, {})
        assert [p["entity_id"] for p in stand_in.performed] == ["switch.allowed", "switch.other"]
        stand_in.performed.clear()
        step = {
            "action": "switch.turn_on",
            "target": {"entity_id": "switch.allowed"},
            "data": {"device_id": "plug_device"},
        }
        stand_in._action(step, {})
        assert [p["entity_id"] for p in stand_in.performed] == ["switch.allowed", "switch.other", "switch.plug_usb"]
        stand_in.performed.clear()
        for entity_id in ("switch.missing", "switch.gone"):  # passed over without an error
            stand_in._action({"action": "switch.turn_on", "target": {"entity_id": entity_id}}, {})
        assert stand_in.performed == []
        with pytest.raises(Invalid):
            stand_in._action(
                {"action": "light.turn_on", "target": {"entity_id": "light.garden"}, "data": {"brightness_pct": 500}},
                {},
            )
        # continue_on_error goes on after a Home Assistant error, never after invalid data or an unknown action
        stand_in._sequence(
            [{"action": "switch.turn_on", "target": {"entity_id": "switch.broken"}, "continue_on_error": True}], {}
        )
        with pytest.raises(HomeAssistantError):
            stand_in._sequence([{"action": "switch.turn_on", "target": {"entity_id": "switch.broken"}}], {})
        with pytest.raises(Invalid):
            stand_in._sequence(
                [
                    {
                        "sequence": [
                            {"action": "switch.turn_on", "target": {"entity_id": "switch.allowed"}, "data": {"x": 1}}
                        ],
                        "continue_on_error": True,
                    }
                ],
                {},
            )
        with pytest.raises(ServiceNotFound):
            stand_in._sequence(
                [{"action": "lock.open", "target": {"entity_id": "lock.x"}, "continue_on_error": True}], {}
            )
    finally:
        stand_in.close()
