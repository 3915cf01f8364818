#!/usr/bin/env python3
"""Check that every runtime dependency installs from binary wheels on a 64-bit Raspberry Pi.

A Pi has no compiler by default and building numpy there takes hours, so a dependency (or a
new release of one, or something it pulls in) without an aarch64 wheel would break `make run`
on the Pi while everything passes here. For each target (Raspberry Pi OS bookworm: CPython
3.11, glibc 2.36; trixie: CPython 3.13, glibc 2.41) this asks pip to resolve the project's
dependencies and the `piper` and `echo` extras with `--only-binary=:all:` for manylinux aarch64, and
fails naming the requirement that has no wheel.

A passing result is remembered (keyed by the requirements and the target) for a week, so
`make test` asks the index again only when pyproject.toml changes or the week is up.
`--armv7l` instead reports, one requirement at a time, which have no wheel for a 32-bit
Pi OS on PyPI (informational: exit 0).

    scripts/check_wheels.py [--armv7l] [--no-cache]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "assistant" / "wheel-check"
CACHE_TTL_S = 7 * 24 * 3600
EXTRAS = ("piper", "echo")  # optional dependencies the Pi installs too


def manylinux_platforms(glibc_minor: int, arch: str) -> tuple[str, ...]:
    """Every manylinux tag a system with glibc 2.`glibc_minor` runs, newest first.

    pip does not widen `--platform manylinux_2_36_aarch64` to older tags itself, and most
    wheels are tagged manylinux_2_17 (manylinux2014), the oldest one for ARM.
    """
    return (*(f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 16, -1)), f"manylinux2014_{arch}")


@dataclass(frozen=True)
class Target:
    """A Python on a Pi OS release: pip's --python-version, --abi and --platform for it."""

    name: str
    python: str  # "3.11"
    platforms: tuple[str, ...]

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")


AARCH64 = (
    Target("bookworm aarch64 (CPython 3.11)", "3.11", manylinux_platforms(36, "aarch64")),
    Target("trixie aarch64 (CPython 3.13)", "3.13", manylinux_platforms(41, "aarch64")),
)
ARMV7L = Target("bookworm armv7l (CPython 3.11)", "3.11", (*manylinux_platforms(36, "armv7l"), "linux_armv7l"))


def requirements(pyproject: str, extras: tuple[str, ...] = EXTRAS) -> list[str]:
    """The runtime dependencies and the given extras' requirements, as written in pyproject.toml."""
    project = tomllib.loads(pyproject)["project"]
    found = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        found += [r for r in optional.get(extra, []) if r not in found]
    return found


def pip_command(target: Target, reqs: list[str], dest: Path) -> list[str]:
    """`pip download` resolving `reqs` for `target` from wheels only."""
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest)]
    for platform in target.platforms:
        command += ["--platform", platform]
    command += ["--python-version", target.python, "--implementation", "cp"]
    command += ["--abi", target.abi, "--abi", "abi3", "--abi", "none"]
    return command + reqs


_MISSING = re.compile(r"No matching distribution found for (\S+)")
_CONFLICT = re.compile(r"^\s+(\S+) \S+ depends on (.+?)\s*$", re.MULTILINE)  # "hassil 3.13.0 depends on PyYAML<7"
_OFFLINE = re.compile(r"NewConnectionError|Failed to establish|Temporary failure in name resolution|ConnectionError")


def missing_requirement(pip_output: str) -> str | None:
    """The requirement pip found no wheel for (it may be one a dependency pulls in), if that is why it failed."""
    match = _MISSING.search(pip_output)
    if match:
        return match.group(1)
    # A dependency of one without a wheel: pip explains it as a conflict after trying every version.
    if "The conflict is caused by:" in pip_output:
        causes = dict.fromkeys(
            f"{dep} (needed by {pkg})"
            for pkg, dep in _CONFLICT.findall(pip_output.split("The conflict is caused by:")[1])
        )
        return "; ".join(causes) or None
    return None


def explain(target: Target, returncode: int, output: str) -> str | None:
    """None when pip resolved everything; else one line saying what is wrong."""
    if returncode == 0:
        return None
    missing = missing_requirement(output)
    if missing is not None:
        return f"{target.name}: no binary wheel for {missing}"
    if _OFFLINE.search(output):
        return f"{target.name}: could not reach the package index to check (offline?)"
    last = [line for line in output.splitlines() if line.strip() and "is ignored" not in line]
    return f"{target.name}: pip failed: {last[-1] if last else f'exit status {returncode}'}"


def cache_key(target: Target, reqs: list[str]) -> str:
    """Names a passing result: the same requirements for the same target."""
    text = "\n".join([target.name, *target.platforms, target.python, *sorted(reqs)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check(target: Target, reqs: list[str], use_cache: bool = True) -> str | None:
    """Resolve `reqs` for `target` (or trust a recent pass); None when all have wheels."""
    stamp = CACHE_DIR / f"pass-{cache_key(target, reqs)}"
    if use_cache and stamp.exists() and time.time() - stamp.stat().st_mtime < CACHE_TTL_S:
        return None
    dest = CACHE_DIR / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(pip_command(target, reqs, dest), capture_output=True, text=True, check=False)
    problem = explain(target, result.returncode, result.stdout + result.stderr)
    if problem is None:
        stamp.touch()
    return problem


def armv7l_report(reqs: list[str]) -> list[str]:
    """One line per requirement: whether it (and what it pulls in) has armv7l wheels on PyPI."""
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        for req in reqs:
            command = pip_command(ARMV7L, [req], Path(scratch))
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            problem = explain(ARMV7L, result.returncode, result.stdout + result.stderr)
            lines.append(f"{req}: {'ok' if problem is None else problem.split(': ', 1)[1]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--armv7l", action="store_true", help="report which requirements lack armv7l wheels")
    parser.add_argument("--no-cache", action="store_true", help="ask the index even after a recent pass")
    args = parser.parse_args(argv)
    reqs = requirements((ROOT / "pyproject.toml").read_text())
    if args.armv7l:
        print("\n".join(armv7l_report(reqs)))
        return 0
    problems = [p for t in AARCH64 if (p := check(t, reqs, use_cache=not args.no_cache)) is not None]
    for problem in problems:
        print(f"wheel check: {problem}", file=sys.stderr)
    if not problems:
        print(f"wheel check: {len(reqs)} requirements have wheels for {', '.join(t.name for t in AARCH64)}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
