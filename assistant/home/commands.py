"""What to publish for each action on each Home Assistant MQTT platform.

The rules are Home Assistant's own: the same keys (command_topic, payload_on,
set_position_topic, brightness_scale, schema json, ...), the same defaults, and a
`<x>_template` key renders the payload of `<x>_topic` from `value`. Entities that are
not MQTT-native get a service call for the bridge instead (see `service_call`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from assistant.home.entities import Command, CommandError, Entity, render_template

# action -> the platforms that take it (MQTT-native or through the bridge)
ACTIONS: dict[str, set[str]] = {
    "turn_on": {"light", "switch", "fan", "input_boolean", "scene", "script", "siren", "humidifier", "media_player"},
    "turn_off": {"light", "switch", "fan", "input_boolean", "siren", "humidifier", "media_player"},
    "open": {"cover", "valve"},
    "close": {"cover", "valve"},
    "stop": {"cover", "valve"},
    "set_position": {"cover", "valve"},
    "set_temperature": {"climate", "water_heater"},
    "set_hvac_mode": {"climate"},
    "set_percentage": {"fan"},
    "lock": {"lock"},
    "unlock": {"lock"},
    "press": {"button"},
}


@dataclass(frozen=True)
class ServiceCall:
    """A Home Assistant action for the service bridge: `domain.service` on one entity."""

    domain: str
    service: str
    entity_id: str
    data: dict[str, Any]


def _publish(entity: Entity, topic_key: str, value: Any, variables: dict[str, Any] | None = None) -> Command:
    """One publish on `topic_key`, the payload rendered by its `_template` key if any."""
    topic = entity.key(topic_key)
    if not topic:
        raise CommandError(f"{entity.entity_id} has no {topic_key}")
    template = entity.key(topic_key.removesuffix("_topic") + "_template")
    if topic_key == "command_topic" and entity.domain == "light":
        template = None  # default-schema lights use payload_on/off, not a command template
    payload = render_template(template, {"value": value, **(variables or {})}) if template else str(value)
    return Command(str(topic), payload, bool(entity.key("retain", False)))


def _check(entity: Entity, action: str) -> None:
    if entity.domain not in ACTIONS.get(action, set()):
        raise CommandError(f"{entity.entity_id} ({entity.domain}) does not support {action}")


def _whole_number(raw: Any) -> int | None:
    """A config value meant as a whole number (254, 254.0, "254"), else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().isdigit() and len(raw) < 20:
        return int(raw)
    return None


def _scaled(entity: Entity, percent: float, key: str = "brightness_scale", default: int = 255) -> int:
    raw = entity.key(key, default)
    scale = _whole_number(raw)
    if scale is None or scale <= 0:
        # a scale of 0 would send brightness 0 for every percentage: the light stays dark
        raise CommandError(f"{entity.entity_id} has an invalid {key} {raw!r} in its config (need a whole number > 0)")
    return max(0, min(scale, round(percent / 100 * scale)))


def _light_on(entity: Entity, params: dict[str, Any]) -> list[Command]:
    brightness, kelvin, rgb = params.get("brightness_pct"), params.get("color_temp_kelvin"), params.get("rgb_color")
    use_kelvin = bool(entity.key("color_temp_kelvin", False))
    if entity.key("schema", "default") == "json":
        body: dict[str, Any] = {"state": "ON"}
        if brightness is not None:
            body["brightness"] = _scaled(entity, brightness)
        if kelvin is not None:
            body["color_temp"] = round(kelvin) if use_kelvin else round(1_000_000 / kelvin)
        if rgb is not None:
            body["color"] = {"r": rgb[0], "g": rgb[1], "b": rgb[2]}
        return [Command(str(entity.key("command_topic")), json.dumps(body), bool(entity.key("retain", False)))]
    commands = [_publish(entity, "command_topic", entity.key("payload_on", "ON"))]
    if brightness is not None:
        commands.append(_publish(entity, "brightness_command_topic", _scaled(entity, brightness)))
    if kelvin is not None:
        commands.append(
            _publish(entity, "color_temp_command_topic", round(kelvin) if use_kelvin else round(1e6 / kelvin))
        )
    if rgb is not None:
        red, green, blue = rgb
        commands.append(
            _publish(entity, "rgb_command_topic", f"{red},{green},{blue}", {"red": red, "green": green, "blue": blue})
        )
    if entity.key("on_command_type") == "brightness" and brightness is not None:
        commands = commands[1:]  # such lights turn on by the brightness message alone
    return commands


def _turn_on(entity: Entity, params: dict[str, Any]) -> list[Command]:
    if entity.domain == "light":
        return _light_on(entity, params)
    if params.get("brightness_pct") is not None or params.get("rgb_color") or params.get("color_temp_kelvin"):
        raise CommandError(f"{entity.entity_id} has no brightness or color")
    return [_publish(entity, "command_topic", entity.key("payload_on", "ON"))]


def _turn_off(entity: Entity) -> list[Command]:
    if entity.domain == "light" and entity.key("schema", "default") == "json":
        return [
            Command(str(entity.key("command_topic")), json.dumps({"state": "OFF"}), bool(entity.key("retain", False)))
        ]
    return [_publish(entity, "command_topic", entity.key("payload_off", "OFF"))]


def _position(entity: Entity, percent: float) -> int:
    opened, closed = int(entity.key("position_open", 100)), int(entity.key("position_closed", 0))
    return round(closed + (opened - closed) * percent / 100)


def _fan_speed(entity: Entity, percent: float) -> int:
    low, high = int(entity.key("speed_range_min", 1)), int(entity.key("speed_range_max", 100))
    return 0 if percent <= 0 else max(low, min(high, round(low + (high - low) * (percent - 1) / 99)))


def mqtt_commands(entity: Entity, action: str, params: dict[str, Any]) -> list[Command]:
    """The MQTT publishes that carry out `action` on an MQTT-native entity."""
    _check(entity, action)
    number: Any = params.get("value")
    match action:
        case "turn_on":
            return _turn_on(entity, params)
        case "turn_off":
            return _turn_off(entity)
        case "open" | "close" | "stop":
            default = {"open": "OPEN", "close": "CLOSE", "stop": "STOP"}[action]
            return [_publish(entity, "command_topic", entity.key(f"payload_{action}", default))]
        case "set_position":
            return [_publish(entity, "set_position_topic", _position(entity, float(number)))]
        case "set_temperature":
            return [_publish(entity, "temperature_command_topic", number)]
        case "set_hvac_mode":
            modes = entity.key("modes", ["auto", "off", "cool", "heat", "dry", "fan_only"])
            if number not in modes:
                raise CommandError(f"{entity.entity_id} has no mode {number!r} (modes: {', '.join(modes)})")
            return [_publish(entity, "mode_command_topic", number)]
        case "set_percentage":
            return [_publish(entity, "percentage_command_topic", _fan_speed(entity, float(number)))]
        case "lock" | "unlock":
            return [_publish(entity, "command_topic", entity.key(f"payload_{action}", action.upper()))]
        case "press":
            return [_publish(entity, "command_topic", entity.key("payload_press", "PRESS"))]
    raise CommandError(f"unknown action {action!r}")


_SERVICES = {
    "open": ("open_cover", "open_valve"),
    "close": ("close_cover", "close_valve"),
    "stop": ("stop_cover", "stop_valve"),
    "set_position": ("set_cover_position", "set_valve_position"),
}


def service_call(entity: Entity, action: str, params: dict[str, Any]) -> ServiceCall:
    """The Home Assistant action that does the same, for entities reached through the bridge."""
    _check(entity, action)
    data: dict[str, Any] = {}
    service = action
    if action in _SERVICES:
        service = _SERVICES[action][entity.domain == "valve"]
    if action == "turn_on":
        data = {k: params[k] for k in ("brightness_pct", "color_temp_kelvin", "rgb_color") if params.get(k) is not None}
    elif action == "set_position":
        data = {"position": round(float(params["value"]))}
    elif action == "set_temperature":
        data = {"temperature": params["value"]}
    elif action == "set_hvac_mode":
        data = {"hvac_mode": params["value"]}
    elif action == "set_percentage":
        data = {"percentage": round(float(params["value"]))}
    return ServiceCall(entity.domain, service, entity.entity_id, data)
