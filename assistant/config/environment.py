"""What the environment adds to the config file: ASSISTANT_* overrides and secrets.

An override is read according to the type the setting is declared with, because the
environment only holds text: a text setting takes the text as written (a device named
"123" stays a string), a secret is taken verbatim (a password `123456`, `true` or
`"quoted"` reaches the broker exactly so), and only numbers, booleans, lists and
tables are parsed as TOML. A secret is stripped of surrounding whitespace (a pasted key
often ends with a newline, which the HTTP client would refuse and we would misreport as
"not reachable"); one with a line break or control character inside is refused,
naming where it came from and never printing it.
"""

from __future__ import annotations

import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from assistant.config import SECRET_PROBLEM, Config, ConfigError, clean_secret

ENV_PREFIX = "ASSISTANT_"
SECRET_FILES = {
    "OPENAI_API_KEY": "openai_api_key",
    "AZURE_OPENAI_API_KEY": "azure_openai_api_key",
    "AZURE_OPENAI_AD_TOKEN": "azure_openai_ad_token",
    "ASSISTANT_MQTT__PASSWORD": "mqtt_password",
}
Kind = Literal["secret", "text", "typed"]


def _secret_or_problem(where: str, raw: str, problems: list[str]) -> str | None:
    try:
        return clean_secret(raw) or None
    except ValueError:
        problems.append(f"{where}: {SECRET_PROBLEM}")
        return None


def read_secret(name: str, env: Mapping[str, str]) -> str | None:
    """A secret from the environment ($NAME) or systemd's $CREDENTIALS_DIRECTORY, cleaned.

    The credential file names are those of SECRET_FILES (e.g. `openai_api_key`). Raises
    ConfigError, naming the variable or file, for a value that cannot be a secret.
    """
    problems: list[str] = []
    raw = env.get(name)
    if raw and raw.strip():
        value = _secret_or_problem(name, raw, problems)
    else:
        value = None
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        path = Path(cred_dir) / SECRET_FILES[name] if cred_dir else None
        if path is not None and path.is_file():
            try:
                value = _secret_or_problem(f"credential {path}", path.read_text(encoding="utf-8"), problems)
            except (OSError, UnicodeDecodeError) as error:
                problems.append(f"credential {path}: cannot be read ({type(error).__name__})")
    if problems:
        raise ConfigError(problems)
    return value


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field accepts, without None: `str | int | None` -> (str, int)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(arg for arg in get_args(annotation) if arg is not type(None))
    return (annotation,)


def _is_text(member: Any) -> bool:
    if get_origin(member) is Literal:
        return all(isinstance(value, str) for value in get_args(member))
    return member in (str, Path)


def setting_kind(path: list[str], model: type[BaseModel] = Config) -> Kind:
    """How an override of the setting at `path` (e.g. ["mqtt", "password"]) is read.

    Decided by the field's declared type; a key the model does not have is "typed" (the
    model then reports it as an unknown setting).
    """
    annotation: Any = model
    for part in path:
        models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
        field = models[0].model_fields.get(part) if len(models) == 1 else None
        if field is None:
            return "typed"
        annotation = field.annotation
    members = _members(annotation)
    if SecretStr in members:
        return "secret"
    return "text" if all(_is_text(member) for member in members) else "typed"


def secret_settings(model: type[BaseModel] = Config, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every secret setting's path, e.g. ("openai", "api_key"), ("mqtt", "password")."""
    paths = []
    for name, field in model.model_fields.items():
        members = _members(field.annotation)
        if SecretStr in members:
            paths.append((*prefix, name))
        paths += [
            path
            for member in members
            if isinstance(member, type) and issubclass(member, BaseModel)
            for path in secret_settings(member, (*prefix, name))
        ]
    return paths


def _typed_value(raw: str) -> Any:
    """Read an override as a TOML value (numbers, booleans, arrays), else as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Apply ASSISTANT_<SECTION>__<KEY>[__<SUBKEY>] variables on top of the file.

    Raises ConfigError with one line per variable that cannot be used.
    """
    problems: list[str] = []
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        kind = setting_kind(path)
        value: Any
        if kind == "secret":
            value = _secret_or_problem(name, raw, problems)
            if value is None:  # empty (unset) or refused
                continue
        else:
            value = raw.strip() if kind == "text" else _typed_value(raw)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"{'.'.join(path)}: cannot override inside a non-table value ({name})")
                break
            node = child
        else:
            node[path[-1]] = value
    if problems:
        raise ConfigError(problems)
    return data
