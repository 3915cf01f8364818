"""Which voice speaks: the engine and voice a config and the installed Piper voices give.

The rule (`[tts] engine`):
- "openai", "espeak", "none": that engine, always.
- "piper": Piper with `voice` (a voice name installed in `<state_dir>/voices`, or a path to
  an .onnx file); without `voice`, the installed voice for the device's language. No such
  voice is an error that says how to install one: an explicit choice is never swapped.
- "auto" (the default): Piper when it can be (piper-tts importable, and `voice` names an
  installed Piper voice, or `voice` is unset and a voice for the device's language is
  installed), else espeak-ng. `voice` set to an espeak-ng voice ("en-us") keeps espeak-ng.
  A Piper name that is not installed falls back to espeak-ng in the device's language,
  and the choice says so (check and the start-up log print it).

Several installed voices for the language: the one with the best quality is picked
(medium, then high, low, x_low: medium is Piper's usual balance of naturalness and speed),
then by name; set `voice` to choose another.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from assistant.config import ConfigError, TtsConfig

SUGGESTED_VOICE = "en_US-lessac-medium"
PIPER_NAME = re.compile(r"^(?P<language>[a-z]{2,3}_[A-Z]{2})-(?P<name>[^-/\\]+)-(?P<quality>x_low|low|medium|high)$")
QUALITY_ORDER = ("medium", "high", "low", "x_low")


@dataclass(frozen=True)
class Choice:
    """The engine that will speak, the Piper model if it is Piper, and why (for check and logs)."""

    engine: str  # "piper", "espeak", "openai" or "none"
    voice: str | None  # Piper voice name, espeak-ng voice, OpenAI voice
    model: Path | None  # Piper: the .onnx file
    reason: str
    problem: str | None = None  # set when engine "piper" was asked for and cannot be had


def voices_dir(state_dir: Path) -> Path:
    """Where `assistant voices install` puts Piper voices."""
    return state_dir / "voices"


def config_path(model: Path) -> Path:
    """A Piper voice's config file sits beside its model: NAME.onnx.json."""
    return model.with_name(model.name + ".json")


def installed_voices(directory: Path) -> list[str]:
    """Names of the complete voices in `directory` (model and config both present), sorted."""
    if not directory.is_dir():
        return []
    return sorted(p.name.removesuffix(".onnx") for p in directory.glob("*.onnx") if config_path(p).is_file())


def piper_available() -> bool:
    """piper-tts is installed (it has wheels for x86_64 and aarch64 only); nothing is imported."""
    return importlib.util.find_spec("piper") is not None


def find_model(voice: str, directory: Path) -> Path | None:
    """The .onnx file for a voice name installed in `directory`, or for a path to an .onnx file."""
    if voice.endswith(".onnx"):
        path = Path(voice).expanduser()
        return path if path.is_file() and config_path(path).is_file() else None
    path = directory / f"{voice}.onnx"
    return path if path.is_file() and config_path(path).is_file() else None


def _family(code: str) -> str:
    return re.split(r"[-_]", code, maxsplit=1)[0].lower()


def best_for_language(names: list[str], language: str) -> str | None:
    """The installed voice to use for `language` (e.g. "en", "en-GB"), or None."""
    region = language.replace("-", "_").split("_")[1].upper() if re.search(r"[-_]", language) else None

    def rank(name: str) -> tuple[int, int, str]:
        match = PIPER_NAME.match(name)
        quality = match["quality"] if match else "medium"
        same_region = bool(match and region and match["language"].endswith(f"_{region}"))
        return (0 if same_region else 1, QUALITY_ORDER.index(quality), name)

    fitting = [name for name in names if _family(name) == _family(language)]
    return min(fitting, key=rank) if fitting else None


def choose(config: TtsConfig, state_dir: Path, language: str) -> Choice:
    """Apply the rule in this module's docstring."""
    if config.engine in ("openai", "espeak", "none"):
        voice = config.voice or (language if config.engine == "espeak" else None)
        return Choice(config.engine, voice, None, f"tts.engine is '{config.engine}'")
    directory = voices_dir(state_dir)
    hint = f"assistant voices install {SUGGESTED_VOICE}"
    if config.voice:
        model = find_model(config.voice, directory)
        name = Path(config.voice).name.removesuffix(".onnx")
        if model is not None and piper_available():
            return Choice("piper", name, model, f"Piper voice {config.voice}")
        piper_like = config.voice.endswith(".onnx") or PIPER_NAME.match(config.voice) is not None
        if model is None:
            missing = (
                f"no Piper voice file {config.voice} (or its .json beside it)"
                if config.voice.endswith(".onnx")
                else f"Piper voice {config.voice} is not installed in {directory}: "
                f"assistant voices install {config.voice}"
            )
        else:
            missing = "piper-tts is not installed (pip install piper-tts; wheels exist for x86_64 and aarch64)"
        if config.engine == "piper":
            return Choice("piper", name, None, missing, problem=missing)
        if piper_like:
            return Choice("espeak", language, None, f"espeak-ng, because {missing}")
        return Choice("espeak", config.voice, None, f"espeak-ng voice {config.voice}")
    installed = installed_voices(directory)
    best = best_for_language(installed, language)
    if best is not None and piper_available():
        return Choice("piper", best, directory / f"{best}.onnx", f"Piper voice {best}, installed in {directory}")
    if best is not None:
        why = "piper-tts is not installed (pip install piper-tts; wheels exist for x86_64 and aarch64)"
    elif installed:
        why = f"no installed Piper voice speaks '{language}' ({', '.join(installed)})"
    else:
        why = f"no Piper voice is installed in {directory}"
    if config.engine == "piper":
        problem = f"tts.engine is 'piper' but {why}: {hint}"
        return Choice("piper", None, None, problem, problem=problem)
    return Choice("espeak", language, None, f"espeak-ng, because {why}; for a natural voice: {hint}")


def choose_or_refuse(config: TtsConfig, state_dir: Path, language: str) -> Choice:
    """`choose`, with engine "piper" and no voice a config error (exit 2 at start; a refused reload)."""
    choice = choose(config, state_dir, language)
    if choice.problem is not None:
        raise ConfigError([f"tts: {choice.problem}"])
    return choice
