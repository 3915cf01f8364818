"""The one template environment: Home Assistant's number semantics, sandbox and strictness."""

from __future__ import annotations

import jinja2
import pytest

from assistant.home.templating import environment, strict_environment


def render(source: str, **variables: object) -> str:
    return environment().from_string(source).render(**variables)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ value | float }}", "21.5"),
        ("{{ value | int }}", "21"),  # "21.5" -> 21, as Jinja's and Home Assistant's int do
        ("{{ float(value) + 1 }}", "22.5"),
        ("{{ 'x' | float(0) }}", "0"),
        ("{{ 'x' | int(-1) }}", "-1"),
        ("{{ '0x1A' | int(base=16) }}", "26"),
        ("{{ is_defined(nothing) }}", "False"),
        ("{{ nothing.deeper }}", ""),  # undefined names render empty, as in Home Assistant
    ],
)
def test_home_assistant_semantics(source: str, expected: str) -> None:
    assert render(source, value="21.5") == expected


@pytest.mark.parametrize("source", ["{{ 'unavailable' | float }}", "{{ int('on') }}", "{{ none | float }}"])
def test_a_number_that_is_not_one_is_an_error_without_a_default(source: str) -> None:
    with pytest.raises(jinja2.TemplateRuntimeError, match="no default was given"):
        render(source)


def test_the_sandbox_holds_and_strict_mode_names_the_missing_helper() -> None:
    assert render("{{ ''.__class__ }}") == ""  # unsafe attributes are not there ...
    with pytest.raises(jinja2.exceptions.SecurityError):  # ... and using them is refused
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(jinja2.UndefinedError, match="'stats' is undefined"):
        strict_environment().from_string("{{ stats('light.kitchen') }}").render()
    assert strict_environment().filters["float"] is environment().filters["float"]  # one environment
