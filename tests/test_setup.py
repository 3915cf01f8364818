"""scripts/setup.sh: what it installs for each architecture, and the 32-bit stop."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def setup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")} | env
    return subprocess.run(
        ["bash", str(SETUP), *args], capture_output=True, text=True, env=environment, timeout=60, check=False
    )


def plan(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


@pytest.mark.parametrize("arch", ["armhf", "armel", "armv7l", "armv6l"])
def test_a_32_bit_userland_stops_at_once_with_its_own_status(arch: str) -> None:
    result = setup(ASSISTANT_ARCH=arch)  # no --plan: it would install, were it not stopped first
    assert result.returncode == 4  # not the daemon's 2 (config) or 3 (credentials)
    assert f"32-bit ARM system ({arch})" in result.stderr
    assert "64-bit Raspberry Pi OS" in result.stderr
    assert "ASSISTANT_ALLOW_32BIT=1" in result.stderr
    assert result.stdout == ""  # nothing installed, nothing started


def test_a_32_bit_build_when_allowed_adds_compilers_and_piwheels_and_no_piper() -> None:
    found = plan(setup("--plan", ASSISTANT_ARCH="armhf", ASSISTANT_ALLOW_32BIT="1"))
    assert found["architecture"] == "armhf"
    packages = found["system packages"].split()
    assert {"build-essential", "libffi-dev", "libportaudio2"} <= set(packages)
    assert len(packages) == len(set(packages))
    assert found["python packages"] == ". PIP_EXTRA_INDEX_URL=https://www.piwheels.org/simple"


def test_64_bit_gets_piper_and_the_echo_canceller_and_no_compiler() -> None:
    for arch in ("arm64", "amd64"):
        found = plan(setup("--plan", ASSISTANT_ARCH=arch))
        assert "build-essential" not in found["system packages"]
        assert "libportaudio2" in found["system packages"]
        assert found["python packages"].strip() == ".[piper,echo]"
    with_tests = plan(setup("--test", "--plan", ASSISTANT_ARCH="arm64"))
    assert with_tests["python packages"].strip() == ".[test,piper,echo]"
    assert "mosquitto" in with_tests["system packages"]


def test_this_machine_is_detected_from_its_userland() -> None:
    found = plan(setup("--plan"))
    dpkg = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True)
    assert found["architecture"] == dpkg.stdout.strip()


def test_an_unknown_option_is_refused() -> None:
    result = setup("--frobnicate")
    assert result.returncode == 1
    assert "usage" in result.stderr
