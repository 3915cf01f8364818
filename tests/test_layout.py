"""The layout the README describes is the one in the tree, and every module stays small."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "assistant"
MAX_LINES = 425  # "about 400": a module past this has more than one job


def modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            found.add(path.relative_to(PACKAGE).as_posix())
    return found


def readme_layout() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Layout", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\s*[-*] `([\w/]+\.py)`", section, re.MULTILINE))


def test_the_readme_lists_every_module_and_only_those() -> None:
    listed, present = readme_layout(), modules()
    assert sorted(present - listed) == [], "modules missing from the README's layout section"
    assert sorted(listed - present) == [], "the README lists modules that do not exist"


def test_no_module_is_over_about_400_lines() -> None:
    sizes = {name: len((PACKAGE / name).read_text().splitlines()) for name in modules()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
