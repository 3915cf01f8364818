"""Conversation memory: follow-up turns keep their context, within limits.

A conversation is forgotten after `ttl_s` without a turn, keeps at most `turns` turns,
and is trimmed (oldest turn first) to a token budget, so a long session never fails for
context length. Whole turns are kept or dropped, so a tool call never loses its result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]


def estimate_tokens(messages: list[Message]) -> int:
    """A cheap, slightly pessimistic token count (about 4 characters a token, plus framing)."""
    return sum(len(json.dumps(m, ensure_ascii=False)) // 4 + 4 for m in messages)


@dataclass
class _Conversation:
    turns: list[list[Message]] = field(default_factory=list)
    last_used: float = 0.0


class Memory:
    """Past turns per conversation id."""

    def __init__(self, turns: int, ttl_s: float, tokens: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_turns = turns
        self.ttl_s = ttl_s
        self.max_tokens = tokens
        self.clock = clock
        self._conversations: dict[str, _Conversation] = {}

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, c in self._conversations.items() if now - c.last_used > self.ttl_s]:
            del self._conversations[key]

    def history(self, conversation_id: str | None) -> list[Message]:
        """The messages of the remembered turns, oldest first (none without an id)."""
        self._expire()
        if conversation_id is None or conversation_id not in self._conversations:
            return []
        return [m for turn in self._conversations[conversation_id].turns for m in turn]

    def remember(self, conversation_id: str | None, turn: list[Message]) -> None:
        """Add a finished turn (user message to final answer) and trim to the limits."""
        if conversation_id is None or self.max_turns == 0 or self.ttl_s == 0:
            return
        self._expire()
        conversation = self._conversations.setdefault(conversation_id, _Conversation())
        conversation.turns.append(turn)
        conversation.last_used = self.clock()
        del conversation.turns[: max(0, len(conversation.turns) - self.max_turns)]
        while len(conversation.turns) > 1 and estimate_tokens(self.history(conversation_id)) > self.max_tokens:
            conversation.turns.pop(0)

    def forget(self, conversation_id: str) -> None:
        """Drop a conversation (e.g. when the user says to start over)."""
        self._conversations.pop(conversation_id, None)
