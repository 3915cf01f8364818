"""Cut streamed reply text into speakable pieces, so speech starts at the first sentence.

The first piece may end at a clause (comma, colon, semicolon) once it is long enough
to sound natural: that is where the wait for the first audio is decided. Later pieces
are whole sentences. Markdown that a model slips in is removed; it cannot be spoken.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n\s*\n|\n(?=\s*[-*\d])")
_LIST_NUMBER = re.compile(r"\d+[.)]")
_CLAUSE_END = re.compile(r"[,;:]\s+")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|^\s*[-*]\s+(?=\S)", re.MULTILINE)

FIRST_CLAUSE_MIN_CHARS = 40


def clean_for_speech(text: str) -> str:
    """Drop markdown emphasis, code ticks, headings and bullets; squeeze whitespace."""
    return " ".join(_MARKDOWN.sub("", text).split())


class SentenceSplitter:
    """Feed text deltas; get back pieces ready to synthesize."""

    def __init__(self, first_clause_min_chars: int = FIRST_CLAUSE_MIN_CHARS) -> None:
        self.first_clause_min_chars = first_clause_min_chars
        self._buffer = ""
        self._pieces = 0

    def feed(self, delta: str) -> list[str]:
        """Add streamed text; return the pieces it completed (often none)."""
        self._buffer += delta
        pieces = []
        while True:
            match = self._sentence_end()
            if match is None and self._pieces == 0:
                match = self._first_clause()
            if match is None:
                break
            piece = clean_for_speech(self._buffer[: match.end()])
            self._buffer = self._buffer[match.end() :]
            if piece:
                pieces.append(piece)
                self._pieces += 1
        return pieces

    def _sentence_end(self) -> re.Match[str] | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            if not _LIST_NUMBER.fullmatch(self._buffer[: match.end()].strip()):  # "1. " opens a list item
                return match
        return None

    def _first_clause(self) -> re.Match[str] | None:
        for match in _CLAUSE_END.finditer(self._buffer):
            if match.start() >= self.first_clause_min_chars:
                return match
        return None

    def flush(self) -> list[str]:
        """Whatever is left at the end of the reply."""
        piece, self._buffer = clean_for_speech(self._buffer), ""
        return [piece] if piece else []
