"""The Piper voices repository: its catalogue, and voices installed from it, checked.

The repository (rhasspy/piper-voices on Hugging Face, `tts.voices_url`) publishes
`voices.json`: for each voice its language, quality and files, each file with its size
and md5 digest, under a path such as `en/en_US/lessac/medium/en_US-lessac-medium.onnx`.
A voice is its .onnx model and .onnx.json config; installing it:

- downloads each file to `NAME.part` beside its final place, resuming a `.part` left by a
  dropped connection with an HTTP Range request (a server that ignores it is read again
  from the start);
- checks the size and md5 digest against the catalogue; a mismatch deletes the part and
  raises, so the next try starts clean;
- once every file is checked, moves each into place (an atomic rename), the model before
  the config: a voice counts as installed only when both are there (assistant.voice.choice),
  so a broken download never leaves a voice half-installed; a file already in place is
  checked again before it is kept.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CATALOGUE = "voices.json"
TIMEOUT_S = 30.0
BLOCK = 1 << 16
Progress = Callable[[str, int, int], None]  # file name, bytes so far, bytes in all


class VoiceError(Exception):
    """A voice could not be listed or installed; the message says why and what to do."""


@dataclass(frozen=True)
class VoiceFile:
    """One file of a voice in the repository."""

    path: str  # relative to the repository's base URL
    size: int
    md5: str

    @property
    def name(self) -> str:
        """The file's name once installed."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class CatalogueVoice:
    """A voice the repository offers."""

    key: str
    language: str  # e.g. en_US
    language_name: str  # e.g. English (United States)
    quality: str
    files: tuple[VoiceFile, ...]  # the .onnx model, then its .onnx.json config
    aliases: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """Bytes to download."""
        return sum(file.size for file in self.files)


def parse_catalogue(data: object) -> dict[str, CatalogueVoice]:
    """The voices in a decoded voices.json; VoiceError if it is not one."""
    if not isinstance(data, dict):
        raise VoiceError("the voice catalogue is not a JSON object")
    voices = {}
    for key, entry in data.items():
        if not isinstance(key, str) or not key or "/" in key or "\\" in key or key.startswith("."):
            log.warning("voice catalogue: skipping an entry with an unusable name %r", key)
            continue
        try:
            files = {
                path: VoiceFile(path, int(info["size_bytes"]), str(info["md5_digest"]))
                for path, info in entry["files"].items()
            }
            model = next(f for p, f in files.items() if p.endswith(f"{key}.onnx"))
            config = next(f for p, f in files.items() if p.endswith(f"{key}.onnx.json"))
            language = entry.get("language", {})
            country = language.get("country_english")
            name = language.get("name_english", language.get("code", "?")) + (f" ({country})" if country else "")
            voices[key] = CatalogueVoice(
                key,
                language.get("code", key.split("-", 1)[0]),
                name,
                str(entry.get("quality", "?")),
                (model, config),
                tuple(entry.get("aliases", ())),
            )
        except (KeyError, TypeError, ValueError, StopIteration, AttributeError):
            log.warning("voice catalogue: skipping malformed entry %r", key)
    return voices


def _url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + urllib.parse.quote(path)


def fetch_catalogue(base_url: str) -> dict[str, CatalogueVoice]:
    """The repository's current catalogue."""
    url = _url(base_url, CATALOGUE)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return parse_catalogue(json.load(response))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise VoiceError(f"cannot read the voice catalogue {url}: {error}") from None
    except ValueError as error:
        raise VoiceError(f"the voice catalogue {url} is not valid JSON: {error}") from None


def find_voice(catalogue: dict[str, CatalogueVoice], name: str) -> CatalogueVoice:
    """The voice called `name` (or one of its aliases); VoiceError naming close matches."""
    if name in catalogue:
        return catalogue[name]
    for voice in catalogue.values():
        if name in voice.aliases:
            return voice
    close = difflib.get_close_matches(name, list(catalogue), n=5, cutoff=0.6)
    if not close:  # "lessac" or "en_GB": the voices that contain it
        close = sorted(key for key in catalogue if name.lower() in key.lower())[:5]
    hint = f"; did you mean {', '.join(close)}?" if close else "; `assistant voices list` shows them all"
    raise VoiceError(f"no voice called {name!r} in the catalogue{hint}")


def md5_of(path: Path) -> str:
    """The md5 digest of a file, read in blocks (a model is 20-120 MB)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while block := file.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _matches(path: Path, file: VoiceFile) -> bool:
    return path.is_file() and path.stat().st_size == file.size and md5_of(path) == file.md5


def _download(base_url: str, file: VoiceFile, part: Path, progress: Progress) -> None:
    """Fill `part` up to the file's size, resuming what is there; VoiceError if the transfer breaks."""
    url = _url(base_url, file.path)
    have = part.stat().st_size if part.exists() else 0
    if have > file.size:
        part.unlink()
        have = 0
    if have == file.size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            if have and response.status != 206:  # the server sends the whole file again
                have = 0
            elif have:
                log.info("resuming %s at %d of %d bytes", file.name, have, file.size)
            with part.open("ab" if have else "wb") as out:
                progress(file.name, have, file.size)
                while have < file.size and (block := response.read(min(BLOCK, file.size - have))):
                    out.write(block)
                    have += len(block)
                    progress(file.name, have, file.size)
    except urllib.error.HTTPError as error:
        raise VoiceError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise VoiceError(
            f"{file.name}: the download broke off at {have} of {file.size} bytes ({reason}); "
            "run the same command again to resume"
        ) from None
    if have < file.size:
        raise VoiceError(
            f"{file.name}: the connection closed at {have} of {file.size} bytes; run the same command again to resume"
        )


def install_voice(voice: CatalogueVoice, base_url: str, directory: Path, progress: Progress) -> list[str]:
    """Install `voice` into `directory`; the names of the files fetched (none: it was already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    fetched: list[str] = []
    ready: list[tuple[Path, Path]] = []
    for file in voice.files:
        final = directory / file.name
        if _matches(final, file):
            continue
        part = directory / f"{file.name}.part"
        _download(base_url, file, part, progress)
        size, digest = part.stat().st_size, md5_of(part)
        if size != file.size or digest != file.md5:
            part.unlink()
            raise VoiceError(
                f"{file.name}: the download does not match the catalogue (md5 {digest}, expected {file.md5}; "
                f"{size} bytes, expected {file.size}); it was deleted and nothing was installed: try again"
            )
        ready.append((part, final))
        fetched.append(file.name)
    for part, final in ready:  # all checked; each move is atomic; the config (the "installed" mark) last
        os.replace(part, final)
    return fetched
