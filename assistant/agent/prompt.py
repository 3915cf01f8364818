"""The agent's instructions: a Jinja2 template with Home Assistant's familiar helpers.

`states('light.kitchen')`, `is_state(...)`, `state_attr(...)`, `is_state_attr(...)`, `has_value(...)`,
`states.light.kitchen.state`, `now()`, `utcnow()`, `areas()`, `area_name(...)`, `area_entities(...)`,
`entities` (the exposed ones) and `device`. Only exposed entities are visible, so the
prompt never tells the model about what it may not touch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, overload

import jinja2

from assistant.config import ConfigError, DeviceConfig
from assistant.home.entities import Entity
from assistant.home.registry import Registry
from assistant.home.templating import strict_environment

UNKNOWN = "unknown"
# Attributes Jinja's sandbox looks up to decide whether something may be called; the
# dynamic `states.<domain>` lookups must not answer them.
_SANDBOX_PROBES = {"unsafe_callable", "alters_data"}


class _EntityView:
    """`states.light.kitchen`: what a template may read of one entity."""

    def __init__(self, entity: Entity) -> None:
        self.entity_id = entity.entity_id
        self.name = entity.name
        self.state = entity.state or UNKNOWN
        self.attributes = dict(entity.attributes)
        self.area = entity.area

    def __str__(self) -> str:
        return self.state


class _Domain:
    def __init__(self, registry: Registry, domain: str) -> None:
        self._registry, self._domain = registry, domain

    def __getattr__(self, object_id: str) -> _EntityView | jinja2.Undefined:
        if object_id.startswith("_") or object_id in _SANDBOX_PROBES:
            raise AttributeError(object_id)
        entity = _visible(self._registry, f"{self._domain}.{object_id}")
        return _EntityView(entity) if entity else jinja2.ChainableUndefined(name=f"{self._domain}.{object_id}")


class _States:
    """`states('x')` and `states.domain.object_id`, as in Home Assistant templates."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __call__(self, entity_id: str) -> str:
        entity = _visible(self._registry, entity_id)
        return (entity.state or UNKNOWN) if entity else UNKNOWN

    def __getattr__(self, domain: str) -> _Domain:
        if domain.startswith("_") or domain in _SANDBOX_PROBES:
            raise AttributeError(domain)
        return _Domain(self._registry, domain)


class _Lazy(Sequence[dict[str, Any]]):
    """`entities`: summaries built only if the template uses them (thousands cost time every turn)."""

    def __init__(self, build: Callable[[], list[dict[str, Any]]]) -> None:
        self._build = build
        self._items: list[dict[str, Any]] | None = None

    def _all(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = self._build()
        return self._items

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | Sequence[dict[str, Any]]:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())


def _visible(registry: Registry, entity_id: str) -> Entity | None:
    entity = registry.entities.get(str(entity_id))
    return entity if entity is not None and registry.is_exposed(entity.entity_id) else None


class Instructions:
    """Compiled once (errors are config errors), rendered at every turn with live states."""

    def __init__(self, source: str, device: DeviceConfig, registry: Registry) -> None:
        self.source = source
        self.device = device
        self.registry = registry
        env = strict_environment()
        try:
            self.template = env.from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise ConfigError([f"agent.instructions: template error on line {error.lineno}: {error.message}"]) from None
        try:
            self.render()  # a misspelt helper or variable shows now, not in the middle of a turn
        except jinja2.TemplateError as error:
            raise ConfigError([f"agent.instructions: {error}"]) from None

    def variables(self) -> dict[str, Any]:
        """What the template can use."""
        registry = self.registry
        states = _States(registry)

        def state_attr(entity_id: str, name: str) -> Any:
            entity = _visible(registry, entity_id)
            return entity.attributes.get(name) if entity else None

        def is_state(entity_id: str, value: str | list[str]) -> bool:
            return states(entity_id) in ([value] if isinstance(value, str) else value)

        def area_name(entity_id: str) -> str | None:
            entity = _visible(registry, entity_id)
            return entity.area if entity else None

        def area_entities(area: str) -> list[str]:
            return [e.entity_id for e in registry.exposed() if (e.area or "").lower() == str(area).lower()]

        return {
            "states": states,
            "is_state": is_state,
            "state_attr": state_attr,
            "is_state_attr": lambda entity_id, name, value: state_attr(entity_id, name) == value,
            "has_value": lambda entity_id: states(entity_id) not in (UNKNOWN, "unavailable"),
            "areas": lambda: sorted({e.area for e in registry.exposed() if e.area}),
            "area_name": area_name,
            "area_entities": area_entities,
            "now": lambda: datetime.now().astimezone(),
            "utcnow": lambda: datetime.now(UTC),
            "entities": _Lazy(lambda: [e.summary() for e in registry.exposed()]),
            "device": self.device,
        }

    def render(self) -> str:
        """The instructions for this turn."""
        return self.template.render(**self.variables()).strip()
