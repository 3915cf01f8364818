"""Cut streamed reply text into speakable pieces, so speech starts at the first sentence.

The first piece may end at a clause (comma, colon, semicolon) once it is long enough
to sound natural: that is where the wait for the first audio is decided. Later pieces
are whole sentences. Markdown that a model slips in is removed; it cannot be spoken.

A piece ends on the token that ends it: a model streams "outside" "." " Enjoy", and
waiting for " Enjoy" to see the space after the period costs one token (about 30 ms)
before the first sentence can be synthesized. So a text that ends in a period is cut at
once unless the period may go on: after a number ("3." may become "3.5", "1." opens a
list), a single letter or a dotted word (initials, "e.g.", "a.m."), or a known
abbreviation ("Dr.", "Mr.", "etc."). Those wait for the next token, as before. A
closing quote that comes after the cut starts the next piece (it is not spoken).
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n\s*\n|\n(?=\s*[-*\d])")
_LIST_NUMBER = re.compile(r"\d+[.)]")
_CLAUSE_END = re.compile(r"[,;:]\s+")
_ENDS_NOW = re.compile(r"(?:[!?…]+|(?<![.\w])(?P<word>[\w.]*\w)\.)[\"')\]”’»]*\Z")
_CLAUSE_ENDS_NOW = re.compile(r"(?<=[^\W\d])[,;:]\Z")
# Words whose period does not end a sentence even with a space after it ("Dr. Smith").
_NEVER_END = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "vs", "approx", "cf", "ca", "nr", "bzw"})
# Words whose period may or may not end a sentence: the next token decides.
_MAY_GO_ON = _NEVER_END | {"etc", "jr", "sr", "inc", "ltd", "co", "no", "usw", "str", "ggf", "evtl", "inkl"}
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
            end = self._sentence_end()
            if end is None and self._pieces == 0:
                end = self._first_clause()
            if end is None:
                break
            piece = clean_for_speech(self._buffer[:end])
            self._buffer = self._buffer[end:]
            if piece:
                pieces.append(piece)
                self._pieces += 1
        return pieces

    def _sentence_end(self) -> int | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            head = self._buffer[: match.end()]
            if _LIST_NUMBER.fullmatch(head.strip()) or _after_abbreviation(head):  # "1. " opens a list item
                continue
            return match.end()
        ends_now = _ENDS_NOW.search(self._buffer)
        if ends_now is None or not any(c.isalnum() for c in self._buffer[: ends_now.start()]):
            return None
        word = ends_now.group("word")
        if word is not None and (len(word) == 1 or "." in word or word[-1].isdigit() or word.lower() in _MAY_GO_ON):
            return None
        return len(self._buffer)

    def _first_clause(self) -> int | None:
        for match in _CLAUSE_END.finditer(self._buffer):
            if match.start() >= self.first_clause_min_chars:
                return match.end()
        if len(self._buffer) > self.first_clause_min_chars and _CLAUSE_ENDS_NOW.search(self._buffer):
            return len(self._buffer)  # "," after a letter ("1," may become "1,200")
        return None

    def flush(self) -> list[str]:
        """Whatever is left at the end of the reply."""
        piece, self._buffer = clean_for_speech(self._buffer), ""
        return [piece] if piece else []


def _after_abbreviation(head: str) -> bool:
    """Whether `head` (a text up to a period and the space after it) ends in a title like "Dr." or "e.g."."""
    words = head.split()
    if not words or not words[-1].endswith("."):
        return False
    word = words[-1][:-1].lower()
    return word in _NEVER_END or word in {"e.g", "i.e", "z.b", "d.h"}
