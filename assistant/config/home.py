"""[homeassistant] and [[homeassistant.entities]]: Home Assistant's own MQTT keys, checked by name and topic."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from assistant.config.sections import Section
from assistant.home.discovery import ENTITY_KEYS, full_key, is_command_key


def _key_problem(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    """One problem at `loc` below the model being validated, reported as `<its path>.<loc>: message`."""
    return InitErrorDetails(
        type=PydanticCustomError("config_key", "{message}", {"message": message}), loc=loc, input=value
    )


def _publishable(topic: Any) -> bool:
    """Whether `topic` can be published to: a non-empty string without wildcards or NUL."""
    return isinstance(topic, str) and bool(topic) and not any(c in topic for c in "+#\0")


class EntityConfig(BaseModel):
    """A hand-declared entity: id, name, aliases, area, floor, plus Home Assistant's MQTT keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    entity_id: str = Field(pattern=r"^[a-z_]+\.[a-z0-9_]+$")
    name: str | None = None
    aliases: list[str] = []
    area: str | None = None
    floor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """Only Home Assistant's MQTT keys and our own: a typo would otherwise be ignored silently."""
        if not isinstance(data, dict):
            return data
        allowed = ENTITY_KEYS | cls.model_fields.keys()
        problems = []
        for key, value in data.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                guess = full_key(key) if full_key(key) != key else (close[0] if close else None)
                hint = f" (did you mean {guess}?)" if guess else ""
                problems.append(_key_problem((key,), f"unknown key{hint}", value))
            elif is_command_key(key) and not _publishable(value):
                problems.append(_key_problem((key,), "must be a topic to publish to: text, without + or #", value))
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return data

    @property
    def mqtt(self) -> dict[str, Any]:
        """Home Assistant MQTT keys (command_topic, payload_on, ...) as declared."""
        return dict(self.model_extra or {})


VERSION_PATTERN = re.compile(r"^(\d{4})\.(\d{1,2})(?:\.(\d+))?$")


def parse_version(text: str) -> tuple[int, int]:
    """(year, month) of a Home Assistant version "YYYY.M[.P]"; ValueError naming the text otherwise."""
    found = VERSION_PATTERN.fullmatch(text.strip())
    if found is None or not 1 <= int(found.group(2)) <= 12:
        raise ValueError(f"{text!r} is not a Home Assistant version: write it as YYYY.M or YYYY.M.P (e.g. 2025.4.4)")
    return int(found.group(1)), int(found.group(2))


DEFAULT_EXPOSE = ["light.*", "switch.*", "fan.*", "climate.*", "scene.*", "sensor.*", "binary_sensor.*"]


class HomeAssistantConfig(Section):
    """Which entities exist and which of them the agent may see and control."""

    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+]+$")
    learn_from_discovery: bool = True
    announce: bool = True
    statestream_topic: str | None = Field(None, pattern=r"^[^#+]+$")
    service_topic: str | None = Field(None, pattern=r"^[^#+]+$")
    bridge_timeout_s: float = Field(5.0, gt=0, le=60)
    version: str | None = None  # the Home Assistant version in use: whose entity id rules discovery follows
    expose: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPOSE))
    entities: list[EntityConfig] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, version: Any) -> Any:
        """A quoted "YYYY.M[.P]": unquoted, 2025.10 would read as the number 2025.1."""
        if isinstance(version, int | float) and not isinstance(version, bool):
            raise ValueError(f'write the version in quotes ("{version}" as a number loses a trailing 0)')  # noqa: TRY004
        if isinstance(version, str):
            parse_version(version)
        return version

    @property
    def ha_version(self) -> tuple[int, int] | None:
        """(year, month) of `version`, or None: follow the newest Home Assistant's rules."""
        return None if self.version is None else parse_version(self.version)

    @field_validator("entities")
    @classmethod
    def _unique_ids(cls, entities: list[EntityConfig]) -> list[EntityConfig]:
        seen: set[str] = set()
        for entity in entities:
            if entity.entity_id in seen:
                raise ValueError(f"entity_id {entity.entity_id!r} declared twice")
            seen.add(entity.entity_id)
        return entities

    @field_validator("entities")
    @classmethod
    def _one_entity_per_command_topic(cls, entities: list[EntityConfig]) -> list[EntityConfig]:
        """Two entities publishing to one topic: commanding one would command the other too."""
        owners: dict[str, str] = {}
        problems = []
        for index, entity in enumerate(entities):
            for key, topic in entity.mqtt.items():
                if is_command_key(key):
                    owner = owners.setdefault(topic, entity.entity_id)
                    if owner != entity.entity_id:
                        problems.append(_key_problem((index, key), f"already used by {owner} (topic {topic!r})", topic))
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return entities
