"""The wheel check's pure parts: which requirements, which pip command, what pip's failure means."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from check_wheels import AARCH64, ARMV7L, Target, explain, manylinux_platforms, pip_command, requirements

PYPROJECT = """
[project]
name = "x"
dependencies = ["numpy>=1.26", "hassil>=3.12"]
[project.optional-dependencies]
piper = ["piper-tts>=1.8"]
echo = ["pywebrtc-audio>=0.2"]
test = ["pytest>=8"]
"""


def test_requirements_are_the_dependencies_and_the_piper_and_echo_extras_only() -> None:
    assert requirements(PYPROJECT) == ["numpy>=1.26", "hassil>=3.12", "piper-tts>=1.8", "pywebrtc-audio>=0.2"]


def test_the_real_pyproject_lists_the_runtime_dependencies() -> None:
    reqs = requirements((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    names = {re.split(r"[\[<>=~!; ]", r, maxsplit=1)[0] for r in reqs}  # "openai[realtime]>=2.0" -> "openai"
    assert {"openai", "numpy", "webrtcvad-wheels", "pymicro-wakeword", "piper-tts", "pywebrtc-audio"} <= names
    assert "pytest" not in names


def test_manylinux_tags_go_down_to_manylinux2014() -> None:
    tags = manylinux_platforms(36, "aarch64")
    assert tags[0] == "manylinux_2_36_aarch64"
    assert "manylinux_2_17_aarch64" in tags
    assert tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_16_aarch64" not in tags
    assert "manylinux_2_37_aarch64" not in tags


def test_targets_are_bookworm_and_trixie_aarch64() -> None:
    assert [(t.python, t.abi, t.platforms[0]) for t in AARCH64] == [
        ("3.11", "cp311", "manylinux_2_36_aarch64"),
        ("3.13", "cp313", "manylinux_2_41_aarch64"),
    ]
    assert "linux_armv7l" in ARMV7L.platforms


def test_pip_command_asks_for_wheels_for_the_target_only() -> None:
    target = Target("t", "3.13", ("manylinux_2_17_aarch64", "manylinux2014_aarch64"))
    command = pip_command(target, ["numpy>=2"], Path("/tmp/d"))
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in command
    joined = " ".join(command)
    assert "--platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64" in joined
    assert "--python-version 3.13 --implementation cp --abi cp313 --abi abi3 --abi none" in joined
    assert command[-1] == "numpy>=2"


def test_explain_names_the_requirement_without_a_wheel() -> None:
    output = (
        "WARNING: Location 'file:///opt/pypi/simple/cffi/' is ignored\n"
        "ERROR: Could not find a version that satisfies the requirement cffi>=1.0 (from sounddevice)\n"
        "ERROR: No matching distribution found for cffi>=1.0\n"
    )
    assert explain(AARCH64[0], 1, output) == "bookworm aarch64 (CPython 3.11): no binary wheel for cffi>=1.0"


def test_explain_passes_and_tells_offline_from_missing() -> None:
    assert explain(AARCH64[0], 0, "") is None
    offline = "WARNING: Retrying ... NewConnectionError('Failed to establish a new connection')\nERROR: oops\n"
    assert "could not reach the package index" in str(explain(AARCH64[1], 1, offline))
    other = "ERROR: something else went wrong\n"
    assert (
        explain(AARCH64[1], 2, other) == "trixie aarch64 (CPython 3.13): pip failed: ERROR: something else went wrong"
    )


def test_explain_names_a_dependency_without_a_wheel_behind_a_conflict() -> None:
    output = (
        "Collecting hassil>=3.12\n"
        "The conflict is caused by:\n"
        "    hassil 3.13.0 depends on PyYAML<7 and >=6.0\n"
        "    hassil 3.12.1 depends on PyYAML<7 and >=6.0\n"
        "\n"
        "To fix this you could try to:\n"
        "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/...\n"
    )
    assert explain(ARMV7L, 1, output) == (
        "bookworm armv7l (CPython 3.11): no binary wheel for PyYAML<7 and >=6.0 (needed by hassil)"
    )
