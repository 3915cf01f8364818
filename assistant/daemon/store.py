"""Small persistent state (mute, learned entity ids) in the state directory; a full or read-only disk is survivable."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Store:
    """A JSON file of settings that must survive a restart."""

    def __init__(self, directory: Path, name: str = "state.json") -> None:
        self.path = directory / name

    def load(self) -> dict[str, Any]:
        """What was saved, or {} if nothing (or nothing readable) was."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("cannot read %s (%s); starting from defaults", self.path, error)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, **values: Any) -> bool:
        """Merge and write atomically; False (and a warning) if the disk will not take it."""
        return self.replace({**self.load(), **values})

    def replace(self, data: dict[str, Any]) -> bool:
        """Write `data` as the whole file, atomically; False (and a warning) if the disk will not take it."""
        return self.write(json.dumps(data))

    def write(self, text: str) -> bool:
        """Write JSON `text` as the whole file, atomically; False (and a warning) if the disk will not take it."""
        temporary = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(text)
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("cannot save state to %s (%s); it will not survive a restart", self.path, error)
            return False
        return True
