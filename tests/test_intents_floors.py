"""Floors in the local fast path: "turn off the lights upstairs" acts on the entities whose
area is on that floor, as Home Assistant's default agent does; anything it cannot pin
down (an unknown floor, nothing there, an area name on two floors) goes to the agent."""

from __future__ import annotations

from typing import Any

import pytest

from assistant.config import EntityConfig, HomeAssistantConfig
from assistant.fastpath import FastMatch, FastPath
from assistant.home.registry import Registry

GROUND, UP, CELLAR = "Ground floor", "Upstairs", "Basement"

HOUSE: list[dict[str, Any]] = [
    {"entity_id": "light.hall", "name": "Hall light", "area": "Hall", "floor": GROUND},
    {"entity_id": "light.lounge_ceiling", "name": "Ceiling light", "area": "Lounge", "floor": GROUND},
    {"entity_id": "light.lounge_lamp", "name": "Corner lamp", "area": "Lounge", "floor": GROUND},
    {"entity_id": "light.wc_down", "name": "Washroom light", "area": "Bathroom", "floor": GROUND},
    {"entity_id": "light.landing", "name": "Landing light", "area": "Landing", "floor": UP},
    {"entity_id": "light.study_ceiling", "name": "Ceiling light", "area": "Study", "floor": UP},
    {"entity_id": "light.bath_mirror", "name": "Mirror light", "area": "Bathroom", "floor": UP},
    {"entity_id": "light.cellar", "name": "Cellar bulb", "area": "Basement", "floor": CELLAR},
    {"entity_id": "light.workbench", "name": "Workbench lamp", "area": "Workshop", "floor": CELLAR},
    {"entity_id": "switch.kettle", "name": "Kettle", "area": "Kitchen", "floor": GROUND},
    {
        "entity_id": "cover.lounge_blind",
        "name": "Lounge blind",
        "area": "Lounge",
        "floor": GROUND,
        "device_class": "blind",
    },
    {"entity_id": "cover.study_blind", "name": "Study blind", "area": "Study", "floor": UP, "device_class": "blind"},
    {
        "entity_id": "cover.landing_curtain",
        "name": "Landing curtain",
        "area": "Landing",
        "floor": UP,
        "device_class": "curtain",
    },
    {"entity_id": "cover.garage", "name": "Garage door", "area": "Garage", "floor": GROUND, "device_class": "garage"},
    {"entity_id": "climate.lounge", "name": "Lounge radiator", "area": "Lounge", "floor": GROUND},
    {"entity_id": "climate.kitchen", "name": "Kitchen radiator", "area": "Kitchen", "floor": GROUND},
    {"entity_id": "climate.study", "name": "Study radiator", "area": "Study", "floor": UP},
    {"entity_id": "fan.study", "name": "Desk fan", "area": "Study", "floor": UP},
    {"entity_id": "fan.landing", "name": "Landing fan", "area": "Landing", "floor": UP},
    {"entity_id": "light.porch", "name": "Porch light"},  # no area, no floor
    {"entity_id": "light.attic", "name": "Attic light", "area": "Attic", "floor": "Loft"},  # not exposed
]
HIDDEN = {"light.attic"}


def make_registry(entities: list[dict[str, Any]]) -> Registry:
    expose = [e["entity_id"] for e in entities if e["entity_id"] not in HIDDEN]
    return Registry(HomeAssistantConfig(expose=expose, entities=[EntityConfig(**e) for e in entities]))


@pytest.fixture(scope="module")
def house() -> FastPath:
    return FastPath(make_registry(HOUSE), "en")


def targets(match: FastMatch | None) -> list[str]:
    """The entities acted on, sorted."""
    assert match is not None
    return sorted(args["entity_id"] for _tool, args in match.calls)


def calls(match: FastMatch | None) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls, sorted by entity."""
    assert match is not None
    return sorted(match.calls, key=lambda call: str(call[1]["entity_id"]))


UPSTAIRS_LIGHTS = ["light.bath_mirror", "light.landing", "light.study_ceiling"]
GROUND_LIGHTS = ["light.hall", "light.lounge_ceiling", "light.lounge_lamp", "light.wc_down"]


@pytest.mark.parametrize(
    ("text", "intent", "expected"),
    [
        ("turn off the lights upstairs", "HassTurnOff", UPSTAIRS_LIGHTS),
        ("switch off all the upstairs lights", "HassTurnOff", UPSTAIRS_LIGHTS),
        ("upstairs lights off please", "HassTurnOff", UPSTAIRS_LIGHTS),
        ("turn on the lights on the ground floor", "HassTurnOn", GROUND_LIGHTS),
        ("turn on the lights in the ground floor", "HassTurnOn", GROUND_LIGHTS),
        ("light up the ground floor", "HassTurnOn", GROUND_LIGHTS),
        ("turn on the ground floor lights", "HassTurnOn", GROUND_LIGHTS),
        ("turn off the lights in the workshop", "HassTurnOff", ["light.workbench"]),  # an area, as before
    ],
)
def test_lights_on_a_floor(house: FastPath, text: str, intent: str, expected: list[str]) -> None:
    match = house.match(text)
    assert match is not None, text
    assert match.intent == intent
    assert targets(match) == expected
    tool = "turn_on" if intent == "HassTurnOn" else "turn_off"
    assert {call[0] for call in match.calls} == {tool}


def test_what_is_said(house: FastPath) -> None:
    spoken = {
        "turn off the lights upstairs": "Turned off 3 lights upstairs.",
        "turn on the lights on the ground floor": "Turned on 4 lights on the ground floor.",
        "close the upstairs blinds": "Closing the study blind.",
        "set the upstairs brightness to 30%": "Set 3 lights upstairs to 30% brightness.",
        "turn on the ceiling light on the ground floor": "Turned on the ceiling light.",
    }
    for text, speech in spoken.items():
        match = house.match(text)
        assert match is not None, text
        assert match.speech == speech


def test_brightness_and_colour_on_a_floor(house: FastPath) -> None:
    match = house.match("set the upstairs brightness to 30%")
    assert match is not None
    assert match.intent == "HassLightSet"
    assert calls(match) == [("turn_on", {"entity_id": e, "brightness_pct": 30}) for e in UPSTAIRS_LIGHTS]
    match = house.match("set the ground floor to red")
    assert match is not None
    assert calls(match) == [("turn_on", {"entity_id": e, "rgb_color": [255, 0, 0]}) for e in GROUND_LIGHTS]


def test_covers_on_a_floor_keep_their_device_class(house: FastPath) -> None:
    match = house.match("close the upstairs blinds")
    assert match is not None
    assert match.calls == [("set_cover", {"entity_id": "cover.study_blind", "action": "close"})]
    match = house.match("open the blinds on the ground floor")
    assert match is not None
    assert match.calls == [("set_cover", {"entity_id": "cover.lounge_blind", "action": "open"})]  # not the garage


def test_a_name_on_a_floor(house: FastPath) -> None:
    """Two "Ceiling light"s: the floor tells them apart; without it the agent asks."""
    assert targets(house.match("turn on the ceiling light on the ground floor")) == ["light.lounge_ceiling"]
    assert targets(house.match("turn off the ceiling light on the upstairs")) == ["light.study_ceiling"]
    assert house.match("turn off the ceiling light upstairs") is None  # not one of Home Assistant's forms
    assert house.match("turn on the ceiling light") is None
    assert house.match("turn on the kettle upstairs") is None  # the kettle is downstairs


def test_thermostat_and_fans_on_a_floor(house: FastPath) -> None:
    match = house.match("set the upstairs temperature to 20 degrees")
    assert match is not None
    assert match.calls == [("set_climate", {"entity_id": "climate.study", "temperature": 20})]
    # Two radiators downstairs: Home Assistant sets one thermostat per command, so the agent asks.
    assert house.match("set the ground floor temperature to 20 degrees") is None
    # Home Assistant's preference: the one on the device's floor, then in its area.
    lounge = FastPath(make_registry(HOUSE), "en", area="Lounge")
    assert targets(lounge.match("set the ground floor temperature to 20 degrees")) == ["climate.lounge"]
    study = FastPath(make_registry(HOUSE), "en", area="Study")
    assert study.match("set the ground floor temperature to 20 degrees") is None
    match = house.match("set the upstairs fans to 50%")
    assert match is not None
    assert calls(match) == [
        ("set_fan_speed", {"entity_id": "fan.landing", "percentage": 50}),
        ("set_fan_speed", {"entity_id": "fan.study", "percentage": 50}),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "turn off the lights on the third floor",  # no such floor
        "turn off the lights in the loft",  # its only entity is not exposed
        "open the curtains on the ground floor",  # no curtains downstairs
        "set the basement temperature to 20 degrees",  # no thermostat down there
        "set the ground floor fans to 50%",  # no fans downstairs
        "turn off the lights in the bathroom",  # a bathroom on each floor: which one?
        "turn off the lights in the basement",  # the Basement area, or the whole Basement floor?
        "set the brightness in the basement to 50%",  # only an area wording, still the same question
        "turn off the basement lights",
        "upstairs",  # a mention, not a command
    ],
)
def test_no_wrong_action(house: FastPath, text: str) -> None:
    assert house.match(text) is None


def test_a_repeated_area_is_not_here_either() -> None:
    """A device in "Bathroom" cannot tell which bathroom it is in, so "the lights" go to the agent."""
    registry = make_registry(HOUSE)
    assert FastPath(registry, "en", area="Bathroom").match("turn off the lights") is None
    assert targets(FastPath(registry, "en", area="Study").match("turn off the lights")) == ["light.study_ceiling"]


def test_a_floor_with_one_area_of_the_same_name() -> None:
    """The Basement area alone on the Basement floor: both readings do the same, so it acts."""
    house = [e for e in HOUSE if e["entity_id"] != "light.workbench"]
    match = FastPath(make_registry(house), "en").match("turn off the lights in the basement")
    assert targets(match) == ["light.cellar"]


def test_one_floor_name_inside_another() -> None:
    """ "Ground" and "Ground floor": the floor whose whole name was said, never the shorter one."""
    house = [
        {"entity_id": "light.a", "name": "Lamp A", "area": "Den", "floor": "Ground"},
        {"entity_id": "light.b", "name": "Lamp B", "area": "Hall", "floor": "Ground floor"},
        {"entity_id": "light.c", "name": "Lamp C", "area": "Study", "floor": "First floor"},
        {"entity_id": "light.d", "name": "Lamp D", "area": "Nook", "floor": "First"},
    ]
    fast = FastPath(make_registry(house), "en")
    assert targets(fast.match("turn off the lights on the ground floor")) == ["light.b"]
    assert targets(fast.match("turn off the lights on the ground")) == ["light.a"]
    assert targets(fast.match("turn off the first floor lights")) == ["light.c"]
    assert targets(fast.match("turn on the lights in the first")) == ["light.d"]


def test_floors_follow_the_registry() -> None:
    registry = make_registry(HOUSE)
    fast = FastPath(registry, "en")
    assert fast.match("turn on the lights in the loft") is None
    registry.expose_patterns.append("light.attic")
    registry.add(registry.entities["light.attic"])
    assert targets(fast.match("turn on the lights in the loft")) == ["light.attic"]


def test_a_house_without_floors_is_as_before() -> None:
    plain = [{k: v for k, v in e.items() if k != "floor"} for e in HOUSE]
    fast = FastPath(make_registry(plain), "en")
    assert fast.match("turn off the lights upstairs") is None
    assert targets(fast.match("turn off the lights in the bathroom")) == ["light.bath_mirror", "light.wc_down"]


def test_german_floors() -> None:
    house = [
        {"entity_id": "light.buero", "name": "Deckenlicht", "area": "Büro", "floor": "Obergeschoss"},
        {"entity_id": "light.schlafzimmer", "name": "Stehlampe", "area": "Schlafzimmer", "floor": "Obergeschoss"},
        {"entity_id": "light.kueche", "name": "Küchenlicht", "area": "Küche", "floor": "Erdgeschoss"},
    ]
    de = FastPath(make_registry(house), "de")
    match = de.match("schalte die Lichter im Obergeschoss aus")
    assert targets(match) == ["light.buero", "light.schlafzimmer"]
    assert match is not None
    assert match.speech == "2 Lichter im Obergeschoss ausgeschaltet."
    assert de.match("schalte die Lichter im Dachgeschoss aus") is None  # no such floor
