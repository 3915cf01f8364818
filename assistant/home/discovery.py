"""Home Assistant MQTT discovery, parsed: which entities other devices announce.

zigbee2mqtt, Tasmota, ESPHome and any other HA-compatible publisher describe their
entities in retained JSON on ``<prefix>/<component>/[<node_id>/]<object_id>/config``, or
several at once on ``<prefix>/device/[<node_id>/]<object_id>/config`` (device-based
discovery, ``cmps``). One message becomes the full list of entities its topic now
announces, with keys expanded and entity ids and names derived the way Home Assistant
derives them, so the daemon can address those entities directly. Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from assistant.home.ids import Version, id_candidates


def _table(text: str) -> dict[str, str]:
    """Parse ``abbr=full`` pairs; kept as text so the long tables stay compact."""
    return {abbr: full for abbr, _, full in (pair.partition("=") for pair in text.split())}


# Union of homeassistant/components/mqtt/abbreviations.py over its history: publishers in
# the field still send retired keys (aux_*, hold_*, clrm, obj_id, ...), and no two
# versions map one abbreviation to different keys, so keeping them all is safe.
_ENTITY_KEYS = _table("""
    act_t=action_topic act_tpl=action_template act_stat_t=activity_state_topic
    act_val_tpl=activity_value_template atype=automation_type aux_cmd_t=aux_command_topic
    aux_stat_tpl=aux_state_template aux_stat_t=aux_state_topic av_tones=available_tones avty=availability
    avty_mode=availability_mode avty_t=availability_topic avty_tpl=availability_template
    away_mode_cmd_t=away_mode_command_topic away_mode_stat_tpl=away_mode_state_template
    away_mode_stat_t=away_mode_state_topic b_tpl=blue_template bat_lev_t=battery_level_topic
    bat_lev_tpl=battery_level_template bri_cmd_tpl=brightness_command_template bri_cmd_t=brightness_command_topic
    bri_scl=brightness_scale bri_stat_t=brightness_state_topic bri_tpl=brightness_template
    bri_val_tpl=brightness_value_template chrg_t=charging_topic chrg_tpl=charging_template
    cln_segmnts_cmd_t=clean_segments_command_topic cln_segmnts_cmd_tpl=clean_segments_command_template
    cln_t=cleaning_topic cln_tpl=cleaning_template clr_temp_cmd_tpl=color_temp_command_template
    clr_temp_cmd_t=color_temp_command_topic clr_temp_k=color_temp_kelvin clr_temp_stat_t=color_temp_state_topic
    clr_temp_tpl=color_temp_template clr_temp_val_tpl=color_temp_value_template clrm=color_mode
    clrm_stat_t=color_mode_state_topic clrm_val_tpl=color_mode_value_template cmd_off_tpl=command_off_template
    cmd_on_tpl=command_on_template cmd_t=command_topic cmd_tpl=command_template cmp=components cmps=components
    cod_arm_req=code_arm_required cod_dis_req=code_disarm_required cod_form=code_format
    cod_trig_req=code_trigger_required cont_type=content_type curr_hum_t=current_humidity_topic
    curr_hum_tpl=current_humidity_template curr_temp_t=current_temperature_topic
    curr_temp_tpl=current_temperature_template def_ent_id=default_entity_id dev=device dev_cla=device_class
    dir_cmd_t=direction_command_topic dir_cmd_tpl=direction_command_template dir_stat_t=direction_state_topic
    dir_val_tpl=direction_value_template dock_cmd_t=dock_command_topic dock_cmd_tpl=dock_command_template
    dock_t=docked_topic dock_tpl=docked_template dsp_prc=display_precision e=encoding en=enabled_by_default
    ent_cat=entity_category ent_pic=entity_picture err_t=error_topic err_tpl=error_template evt_typ=event_types
    exp_aft=expire_after fan_mode_cmd_tpl=fan_mode_command_template fan_mode_cmd_t=fan_mode_command_topic
    fan_mode_stat_tpl=fan_mode_state_template fan_mode_stat_t=fan_mode_state_topic fanspd_t=fan_speed_topic
    fanspd_tpl=fan_speed_template fanspd_lst=fan_speed_list flsh=flash flsh_tlng=flash_time_long
    flsh_tsht=flash_time_short frc_upd=force_update fx_cmd_tpl=effect_command_template
    fx_cmd_t=effect_command_topic fx_list=effect_list fx_stat_t=effect_state_topic fx_tpl=effect_template
    fx_val_tpl=effect_value_template g_tpl=green_template grp=group hold_cmd_tpl=hold_command_template
    hold_cmd_t=hold_command_topic hold_stat_tpl=hold_state_template hold_stat_t=hold_state_topic
    hs_cmd_t=hs_command_topic hs_cmd_tpl=hs_command_template hs_stat_t=hs_state_topic hs_val_tpl=hs_value_template
    hum_cmd_t=target_humidity_command_topic hum_cmd_tpl=target_humidity_command_template
    hum_stat_t=target_humidity_state_topic hum_state_tpl=target_humidity_state_template ic=icon
    img_e=image_encoding img_t=image_topic init=initial ir_e=infrared_encoding json_attr=json_attributes
    json_attr_t=json_attributes_topic json_attr_tpl=json_attributes_template l_ver_t=latest_version_topic
    l_ver_tpl=latest_version_template lrst_t=last_reset_topic lrst_val_tpl=last_reset_value_template max=max
    max_hum=max_humidity max_k=max_kelvin max_mirs=max_mireds max_temp=max_temp migr_discvry=migrate_discovery
    min=min min_hum=min_humidity min_k=min_kelvin min_mirs=min_mireds min_temp=min_temp mode=mode
    mode_cmd_tpl=mode_command_template mode_cmd_t=mode_command_topic mode_stat_t=mode_state_topic
    mode_stat_tpl=mode_state_template modes=modes msg_exp_int=message_expiry_interval name=name o=origin
    obj_id=object_id off_dly=off_delay on_cmd_type=on_command_type ops=options opt=optimistic
    osc_cmd_t=oscillation_command_topic osc_cmd_tpl=oscillation_command_template
    osc_stat_t=oscillation_state_topic osc_val_tpl=oscillation_value_template p=platform
    pause_cmd_t=pause_command_topic pause_mw_cmd_tpl=pause_command_template pct_cmd_t=percentage_command_topic
    pct_cmd_tpl=percentage_command_template pct_stat_t=percentage_state_topic
    pct_val_tpl=percentage_value_template pl=payload pl_arm_away=payload_arm_away
    pl_arm_custom_b=payload_arm_custom_bypass pl_arm_home=payload_arm_home pl_arm_nite=payload_arm_night
    pl_arm_vacation=payload_arm_vacation pl_avail=payload_available pl_cln_sp=payload_clean_spot
    pl_cls=payload_close pl_disarm=payload_disarm pl_hi_spd=payload_high_speed pl_home=payload_home
    pl_inst=payload_install pl_lo_spd=payload_low_speed pl_loc=payload_locate pl_lock=payload_lock
    pl_med_spd=payload_medium_speed pl_not_avail=payload_not_available pl_not_home=payload_not_home
    pl_off=payload_off pl_off_spd=payload_off_speed pl_on=payload_on pl_open=payload_open
    pl_osc_off=payload_oscillation_off pl_osc_on=payload_oscillation_on pl_paus=payload_pause
    pl_prs=payload_press pl_ret=payload_return_to_base pl_rst=payload_reset pl_rst_hum=payload_reset_humidity
    pl_rst_mode=payload_reset_mode pl_rst_pct=payload_reset_percentage pl_rst_pr_mode=payload_reset_preset_mode
    pl_stop=payload_stop pl_stop_tilt=payload_stop_tilt pl_stpa=payload_start_pause pl_strt=payload_start
    pl_toff=payload_turn_off pl_ton=payload_turn_on pl_trig=payload_trigger pl_unlk=payload_unlock
    pos=reports_position pos_clsd=position_closed pos_open=position_open pos_t=position_topic
    pos_tpl=position_template pow_cmd_t=power_command_topic pow_cmd_tpl=power_command_template
    pow_stat_t=power_state_topic pow_stat_tpl=power_state_template pr_mode_cmd_t=preset_mode_command_topic
    pr_mode_cmd_tpl=preset_mode_command_template pr_mode_stat_t=preset_mode_state_topic
    pr_mode_val_tpl=preset_mode_value_template pr_modes=preset_modes ptrn=pattern r_tpl=red_template
    rel_s=release_summary rel_u=release_url ret=retain rgb_cmd_tpl=rgb_command_template rgb_cmd_t=rgb_command_topic
    rgb_stat_t=rgb_state_topic rgb_val_tpl=rgb_value_template rgbw_cmd_tpl=rgbw_command_template
    rgbw_cmd_t=rgbw_command_topic rgbw_stat_t=rgbw_state_topic rgbw_val_tpl=rgbw_value_template
    rgbww_cmd_tpl=rgbww_command_template rgbww_cmd_t=rgbww_command_topic rgbww_stat_t=rgbww_state_topic
    rgbww_val_tpl=rgbww_value_template send_cmd_t=send_command_topic send_if_off=send_if_off
    set_fan_spd_t=set_fan_speed_topic set_pos_tpl=set_position_template set_pos_t=set_position_topic
    spd_cmd_t=speed_command_topic spd_rng_max=speed_range_max spd_rng_min=speed_range_min
    spd_stat_t=speed_state_topic spd_val_tpl=speed_value_template spds=speeds src_type=source_type
    stat_cla=state_class stat_closing=state_closing stat_clsd=state_closed stat_jam=state_jammed
    stat_locked=state_locked stat_locking=state_locking stat_off=state_off stat_on=state_on stat_open=state_open
    stat_opening=state_opening stat_stopped=state_stopped stat_t=state_topic stat_tpl=state_template
    stat_unlocked=state_unlocked stat_unlocking=state_unlocking stat_val_tpl=state_value_template step=step
    strt_mw_cmd_t=start_mowing_command_topic strt_mw_cmd_tpl=start_mowing_command_template stype=subtype
    sug_dsp_prc=suggested_display_precision sup_clrm=supported_color_modes sup_dur=support_duration
    sup_feat=supported_features sup_vol=support_volume_set swing_h_mode_cmd_tpl=swing_horizontal_mode_command_template
    swing_h_mode_cmd_t=swing_horizontal_mode_command_topic swing_h_mode_stat_tpl=swing_horizontal_mode_state_template
    swing_h_mode_stat_t=swing_horizontal_mode_state_topic swing_h_modes=swing_horizontal_modes
    swing_mode_cmd_tpl=swing_mode_command_template swing_mode_cmd_t=swing_mode_command_topic
    swing_mode_stat_tpl=swing_mode_state_template swing_mode_stat_t=swing_mode_state_topic swing_modes=swing_modes
    t=topic temp_cmd_tpl=temperature_command_template temp_cmd_t=temperature_command_topic
    temp_hi_cmd_tpl=temperature_high_command_template temp_hi_cmd_t=temperature_high_command_topic
    temp_hi_stat_tpl=temperature_high_state_template temp_hi_stat_t=temperature_high_state_topic
    temp_lo_cmd_tpl=temperature_low_command_template temp_lo_cmd_t=temperature_low_command_topic
    temp_lo_stat_tpl=temperature_low_state_template temp_lo_stat_t=temperature_low_state_topic
    temp_stat_tpl=temperature_state_template temp_stat_t=temperature_state_topic temp_unit=temperature_unit
    tilt_clsd_val=tilt_closed_value tilt_cmd_t=tilt_command_topic tilt_cmd_tpl=tilt_command_template
    tilt_inv_stat=tilt_invert_state tilt_max=tilt_max tilt_min=tilt_min tilt_opnd_val=tilt_opened_value
    tilt_opt=tilt_optimistic tilt_status_t=tilt_status_topic tilt_status_tpl=tilt_status_template tit=title
    trns=transition tz=timezone uniq_id=unique_id unit_of_meas=unit_of_measurement url_t=url_topic
    url_tpl=url_template val_tpl=value_template whit_cmd_t=white_command_topic whit_scl=white_scale
    whit_val_cmd_t=white_value_command_topic whit_val_scl=white_value_scale whit_val_stat_t=white_value_state_topic
    whit_val_tpl=white_value_template xy_cmd_t=xy_command_topic xy_cmd_tpl=xy_command_template
    xy_stat_t=xy_state_topic xy_val_tpl=xy_value_template
""")
# Keys of Home Assistant's MQTT platforms that have no abbreviation, so are not in the
# table above (const.py: CONF_SCHEMA, CONF_QOS, CONF_PRECISION, ...; the JSON light's flags).
_UNABBREVIATED = frozenset({
    "schema", "qos", "code", "precision", "temp_step", "fan_modes", "type",
    "brightness", "effect", "color_temp", "hs", "rgb", "xy", "white_value",
})  # fmt: skip
ENTITY_KEYS = frozenset(_ENTITY_KEYS.values()) | _UNABBREVIATED
"""Every key of a Home Assistant MQTT entity config, spelled out (what a hand-declared entity may use)."""

# Topics Home Assistant publishes to besides the `..._command_topic` ones.
_PUBLISH_KEYS = frozenset({"set_position_topic", "set_fan_speed_topic"})


def is_command_key(key: str) -> bool:
    """Whether `key` names a topic commands are published to (the entity's device listens there)."""
    return key.endswith("command_topic") or key in _PUBLISH_KEYS


def full_key(key: str) -> str:
    """The spelled-out name of an abbreviated entity key; any other key as it is."""
    return _ENTITY_KEYS.get(key, key)


_DEVICE_KEYS = _table("""
    cns=connections cu=configuration_url hw=hw_version ids=identifiers mdl=model mdl_id=model_id
    mf=manufacturer name=name sa=suggested_area sn=serial_number sw=sw_version
""")
_ORIGIN_KEYS = _table("name=name sw=sw_version url=support_url")

# Top-level options of a device-based payload that every component inherits unless it
# sets them itself (``device`` and ``origin`` always come from the top, as in HA).
_SHARED = frozenset({
    "availability", "availability_mode", "availability_template", "availability_topic",
    "payload_available", "payload_not_available", "state_topic", "command_topic", "qos", "encoding", "~",
})  # fmt: skip

# The names HA's MQTT platforms give an entity whose config has no `name` key at all.
_DEFAULT_NAMES = {
    "alarm_control_panel": "MQTT Alarm", "binary_sensor": "MQTT Binary sensor", "button": "MQTT Button",
    "camera": "MQTT Camera", "climate": "MQTT HVAC", "cover": "MQTT Cover", "event": "MQTT Event",
    "fan": "MQTT Fan", "humidifier": "MQTT Humidifier", "image": "MQTT Image", "lawn_mower": "MQTT Lawn Mower",
    "lock": "MQTT Lock", "number": "MQTT Number", "scene": "MQTT Scene", "select": "MQTT Select",
    "sensor": "MQTT Sensor", "siren": "MQTT Siren", "switch": "MQTT Switch", "text": "MQTT Text",
    "update": "MQTT Update", "vacuum": "MQTT Vacuum", "valve": "MQTT Valve", "water_heater": "MQTT Water Heater",
}  # fmt: skip
_LIGHT_NAMES = {"basic": "MQTT LightEntity", "json": "MQTT JSON Light", "template": "MQTT Template Light"}
# Platforms whose unnamed entities HA names after their device class instead.
_CLASS_NAMED = frozenset({"binary_sensor", "button", "event", "number", "sensor"})

_DOMAIN = re.compile(r"[a-z_]+")
_ID = re.compile(r"[A-Za-z0-9_-]+")
# python-slugify (which HA uses) goes through unidecode; NFKD covers accents, these the rest.
_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "đ": "d", "ð": "d", "ł": "l", "þ": "th", "°": "deg"})


@dataclass(frozen=True)
class Discovered:
    """One entity announced by discovery, as Home Assistant would set it up."""

    domain: str
    entity_id: str
    name: str
    area: str | None
    config: dict[str, Any]
    unique_id: str | None
    component: str | None = None  # its key in a device-based config's `cmps`


@dataclass(frozen=True)
class DiscoveryUpdate:
    """Everything `source` announces now; it replaces what was learned from it before."""

    source: str
    entities: list[Discovered]


class DiscoveryError(ValueError):
    """A discovery message that cannot be used; the message says why."""


def discovery_topics(prefix: str) -> list[str]:
    """The subscription filters that catch every discovery config topic (the same two HA uses)."""
    return [f"{prefix}/+/+/config", f"{prefix}/+/+/+/config"]


def slugify(text: str) -> str:
    """Slug as HA's util.slugify makes it: "" stays "", a slug with nothing left is "unknown"."""
    if not text:
        return ""
    return _slug(text) or "unknown"


def _slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.lower().translate(_FOLD))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii").lower()
    ascii_text = re.sub(r"(?<=\d),(?=\d)", "", ascii_text)  # "1,000" -> "1000", as python-slugify does
    return re.sub(r"[^a-z0-9]+", "_", ascii_text).strip("_")


def expand(config: dict[str, Any]) -> dict[str, Any]:
    """Expand abbreviated keys and resolve the `~` base topic; the input is left untouched."""
    result = _expand_keys(copy.deepcopy(config))
    if "~" in result:
        base = result.pop("~")
        _apply_base(result, "" if base is None else str(base))
    return result


def _rename(mapping: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    """Expand one level of keys; an abbreviation beats the same key spelled out (HA's order)."""
    result: dict[str, Any] = {}
    for key, value in mapping.items():
        full = table.get(key, key)
        if full != key or full not in result:
            result[full] = value
    return result


def _expand_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Expand the places HA expands: top level, device, origin and availability entries."""
    result = _rename(config, _ENTITY_KEYS)
    if isinstance(result.get("device"), dict):
        result["device"] = _rename(result["device"], _DEVICE_KEYS)
    if isinstance(result.get("origin"), dict):
        result["origin"] = _rename(result["origin"], _ORIGIN_KEYS)
    availability = result.get("availability")
    if isinstance(availability, dict):
        result["availability"] = _rename(availability, _ENTITY_KEYS)
    elif isinstance(availability, list):
        result["availability"] = [_rename(a, _ENTITY_KEYS) if isinstance(a, dict) else a for a in availability]
    return result


def _rebase(value: str, base: str) -> str:
    """Replace a leading and/or trailing `~` with the base topic; inner ones are literal."""
    lead = value.startswith("~")
    trail = len(value) > 1 and value.endswith("~")
    if not (lead or trail):
        return value
    middle = value[1 if lead else 0 : len(value) - 1 if trail else len(value)]
    return (base if lead else "") + middle + (base if trail else "")


def _apply_base(config: dict[str, Any], base: str) -> None:
    """Resolve `~` in every `...topic` value and in availability entries' `topic` (HA's rule)."""
    for key, value in config.items():
        if key.endswith("topic") and isinstance(value, str):
            config[key] = _rebase(value, base)
    availability = config.get("availability")
    entries = [availability] if isinstance(availability, dict) else availability
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("topic"), str):
            entry["topic"] = _rebase(entry["topic"], base)


def parse_discovery(
    topic: str, payload: bytes, prefix: str = "homeassistant", version: Version | None = None
) -> DiscoveryUpdate | None:
    """What a discovery message announces, ids by `version`'s rules; None for a topic that is no config topic."""
    parts = _split_topic(topic, prefix)
    if parts is None:
        return None
    component, object_id = parts
    if not payload:
        return DiscoveryUpdate(topic, [])  # retained config cleared: the entity or whole device is gone
    data = _load(payload)
    if component == "device":
        return DiscoveryUpdate(topic, _device_entities(data, version))
    config = expand(data)
    if not config or config.get("migrate_discovery") is True:
        return DiscoveryUpdate(topic, [])  # HA treats `{}` and a migration request as removal
    return DiscoveryUpdate(topic, [_entity(component, config, object_id, version)])


def _split_topic(topic: str, prefix: str) -> tuple[str, str] | None:
    """(component, object_id) of a config topic under prefix; None for any other topic."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head) or not topic.endswith("/config"):
        return None
    levels = topic[len(head) :].split("/")[:-1]
    if len(levels) not in (2, 3):
        return None
    component, ids = levels[0], levels[1:]
    if not _DOMAIN.fullmatch(component):
        raise DiscoveryError(f"{topic}: component {component!r} is not a domain ([a-z_]+)")
    for part in ids:
        if not _ID.fullmatch(part):
            raise DiscoveryError(f"{topic}: id {part!r} may only hold [a-zA-Z0-9_-]")
    return component, ids[-1]


def _load(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object, or DiscoveryError saying what it is instead."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DiscoveryError(f"payload is not UTF-8 text: {error}") from error
    except json.JSONDecodeError as error:
        raise DiscoveryError(f"payload is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise DiscoveryError(f"payload must be a JSON object, got {type(data).__name__}")
    return data


def _device_entities(data: dict[str, Any], version: Version | None) -> list[Discovered]:
    """One entity per component of a device-based payload; a platform-only component is removed."""
    top = _expand_keys(data)
    if top.get("migrate_discovery") is True:
        return []
    components = top.get("components")
    if not isinstance(components, dict):
        raise DiscoveryError("device discovery payload needs 'cmps', an object of component configs")
    shared = {key: value for key, value in top.items() if key in _SHARED}
    entities: list[Discovered] = []
    for component_id, raw in components.items():
        if not isinstance(raw, dict):
            raise DiscoveryError(f"component {component_id!r} must be a JSON object")
        own = _expand_keys(raw)
        platform = own.pop("platform", None)
        if not isinstance(platform, str) or not _DOMAIN.fullmatch(platform):
            raise DiscoveryError(f"component {component_id!r} needs a platform ('p') such as 'light'")
        if not own:
            continue
        merged = {**shared, **own}
        merged.update({key: top[key] for key in ("device", "origin") if key in top})
        entities.append(_entity(platform, expand(merged), component_id, version, component=component_id))
    return entities


def _entity(
    domain: str, config: dict[str, Any], fallback: str, version: Version | None, component: str | None = None
) -> Discovered:
    """Name, entity id and area for one expanded config; `fallback` is its discovery object id."""
    friendly = _friendly_name(domain, config)
    device = config.get("device")
    area = device.get("suggested_area") if isinstance(device, dict) else None
    unique_id = config.get("unique_id")
    return Discovered(
        domain=domain,
        entity_id=_entity_id(domain, config, friendly, fallback, version),
        name=friendly or fallback,
        area=area if isinstance(area, str) and area else None,
        config=config,
        unique_id=None if unique_id is None else str(unique_id),
        component=component,
    )


def _registry_device(config: dict[str, Any]) -> dict[str, Any] | None:
    """The device HA would register: only for entities with a unique_id and an identified device."""
    device = config.get("device")
    if not isinstance(device, dict) or config.get("unique_id") is None:
        return None
    if not device.get("identifiers") and not device.get("connections"):
        return None
    return device


def _default_name(domain: str, config: dict[str, Any]) -> str:
    """The name HA's MQTT platform uses when the config has no `name` key."""
    device_class = config.get("device_class")
    named_by_class = domain in _CLASS_NAMED and not (domain == "sensor" and device_class == "enum")
    if named_by_class and isinstance(device_class, str) and device_class:
        return device_class.replace("_", " ").capitalize()  # HA's English device-class name, approximately
    if domain == "light":
        return _LIGHT_NAMES.get(str(config.get("schema", "basic")), _LIGHT_NAMES["basic"])
    return _DEFAULT_NAMES.get(domain, f"MQTT {domain.replace('_', ' ').capitalize()}")


def _friendly_name(domain: str, config: dict[str, Any]) -> str | None:
    """`<device name> <entity name>`, the device name alone for `name: null`, else the entity name."""
    name = config["name"] if "name" in config else _default_name(domain, config)
    if name is not None:
        name = str(name)
    device = _registry_device(config)
    device_name = device.get("name") if device else None
    if not isinstance(device_name, str) or not device_name:
        return name
    return device_name if name is None else f"{device_name} {name}".strip()


def _entity_id(
    domain: str, config: dict[str, Any], friendly: str | None, fallback: str, version: Version | None
) -> str:
    """default_entity_id or object_id (see ids.id_candidates), then the friendly name, then the discovery object id."""
    for candidate in (*id_candidates(config, version), friendly, fallback):
        if isinstance(candidate, str) and (slug := _slug(candidate)):
            return f"{domain}.{slug}"
    return f"{domain}.unknown"
