"""Incoming MQTT messages, sorted by class on paho's thread and taken by the loop in batches.

A house can announce 100,000 discovery configs at once (a Home Assistant restart makes the
broker send every retained one again). Handing each to the event loop on its own
(`call_soon_threadsafe` per message, one shared bounded queue) starved the microphone and
dropped requests with the house traffic. So there are two classes here:

* requests: the daemon's own input topics, wake-word claims and service bridge results.
  Few and small; kept in order in a short queue. One that does not fit is set aside to be
  answered `busy`, never dropped without a word.
* house traffic: discovery configs and entity states. Only the latest payload of a topic
  matters (they are retained states), so they are kept in a dict keyed by topic: memory is
  bounded by the number of topics, and a newer payload replaces an older one not yet read.
  A topic that carries many entities (the bridge's `house/state`) is keyed by entity
  (`key_of`): there a newer payload replaces only the same entity's.

paho's thread only appends under a lock and wakes the loop once per batch, so it never waits
for the loop; the loop takes requests first and house traffic in slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

REQUEST_LIMIT = 100  # requests waiting for the dispatcher; more are answered busy
REFUSED_LIMIT = 1000  # refused requests waiting for their busy answer; beyond that only counted


@dataclass(frozen=True)
class Message:
    """An incoming message, handed to the loop.

    For a request of a persistent session (assistant/link/client.py): `mid`, `qos` and
    `session` to acknowledge it once handled; `backlog` when the broker kept it for us
    while we were away, since `away_since` (Unix time; None: for an unknown time).
    """

    topic: str
    payload: bytes
    retain: bool
    mid: int = 0
    qos: int = 0
    session: int = 0
    backlog: bool = False
    away_since: float | None = None


@dataclass
class InboxCounts:
    """What came in, for logs and benchmarks."""

    requests: int = 0
    house: int = 0
    replaced: int = 0  # house messages superseded by a newer payload on the same topic before being read
    refused: int = 0  # requests that did not fit: answered busy
    lost: int = 0  # refused requests beyond REFUSED_LIMIT: logged, not answered


class Inbox:
    """Two bounded classes of incoming messages; see the module docstring."""

    def __init__(self, request_limit: int = REQUEST_LIMIT, refused_limit: int = REFUSED_LIMIT) -> None:
        # Which topics are requests; the daemon sets it to its input topics. Until then every
        # message is one: kept in order, nothing replaced.
        self.is_request: Callable[[str], bool] = lambda topic: True
        # What a newer house message replaces, unread: by default the same topic's.
        self.key_of: Callable[[str, bytes], str] = lambda topic, payload: topic
        self.request_limit = request_limit
        self.refused_limit = refused_limit
        self.counts = InboxCounts()
        self._lock = threading.Lock()
        self._requests: deque[Message] = deque()
        self._refused: deque[Message] = deque()
        self._house: dict[str, Message] = {}
        self._taken: deque[Message] = deque()  # house traffic taken out for get_nowait()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._wake_scheduled = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop to wake (call on it); whatever came in before is announced now."""
        with self._lock:
            self._loop = loop
            self._wake_scheduled = False
        self._ready.set()

    # --- paho's thread -------------------------------------------------------

    def put(self, message: Message) -> None:
        """File a message (any thread); wakes the loop unless a wake-up is already on its way."""
        request = self.is_request(message.topic)
        key = None if request else self.key_of(message.topic, message.payload)  # outside the lock: may parse
        with self._lock:
            if key is None:
                self.counts.requests += 1
                if len(self._requests) < self.request_limit:
                    self._requests.append(message)
                elif len(self._refused) < self.refused_limit:
                    self.counts.refused += 1
                    self._refused.append(message)
                else:
                    self.counts.lost += 1
            else:
                self.counts.house += 1
                if self._house.pop(key, None) is not None:  # re-inserted: order of the latest arrival
                    self.counts.replaced += 1
                self._house[key] = message
            loop = self._loop
            wake = loop is not None and not self._wake_scheduled
            if wake:
                self._wake_scheduled = True
        if wake and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: nobody is left to read
                loop.call_soon_threadsafe(self._wake)

    # --- the loop ------------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._ready.set()

    async def wait(self) -> None:
        """Until something may have come in since the last wait."""
        if not self._pending():
            await self._ready.wait()
        self._ready.clear()

    def _pending(self) -> bool:
        return bool(self._requests or self._refused or self._house or self._taken)

    def take_requests(self) -> list[Message]:
        """Every waiting request, oldest first."""
        with self._lock:
            taken = list(self._requests)
            self._requests.clear()
        return taken

    def take_refused(self) -> tuple[list[Message], int]:
        """Requests that did not fit (to be answered busy), and how many were lost in all (too many even for that)."""
        with self._lock:
            taken, lost = list(self._refused), self.counts.lost
            self._refused.clear()
        return taken, lost

    def take_house(self) -> list[Message]:
        """All waiting house traffic, in order of each topic's latest arrival."""
        with self._lock:
            house, self._house = self._house, {}
        taken = [*self._taken, *house.values()]
        self._taken.clear()
        return taken

    def house_waiting(self) -> int:
        """House messages not taken yet."""
        return len(self._house) + len(self._taken)

    # --- one message at a time (one-off CLI turns, tests) ---------------------

    def empty(self) -> bool:
        """Whether nothing is waiting."""
        return not (self._requests or self._house or self._taken)

    def get_nowait(self) -> Message:
        """The next message, requests first; asyncio.QueueEmpty when there is none."""
        with self._lock:
            if self._requests:
                return self._requests.popleft()
            if not self._taken:
                self._taken.extend(self._house.values())
                self._house = {}
            if self._taken:
                return self._taken.popleft()
        raise asyncio.QueueEmpty

    async def get(self) -> Message:
        """Wait for the next message, requests first."""
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                await self.wait()
