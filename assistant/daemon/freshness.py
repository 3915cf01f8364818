"""Whether a request is too old to act on, from what the daemon can know about its age.

"Turn off the oven" an hour late is worse than an error, so a request older than
`[mqtt] request_max_age_s` is answered `stale_request` on event/error and not acted on.
What the daemon can know (README, "What the daemon survives"):

* `sent_at` in a JSON request (Unix seconds, or ISO 8601 with a zone): its exact age,
  as far as the publisher's clock agrees with ours. It always decides when present.
* A request from the backlog, i.e. kept by the broker for our persistent session while
  we were away (assistant/link/client.py tells these apart): it waited at most since we
  stopped reading (`away_since`). That is an upper bound, not its age: a request sent
  a second before we came back looks the same as one sent when we left. When the bound
  exceeds the limit, or we do not know it (the previous process crashed), the request
  is answered stale rather than acted on.
* A request received live, without `sent_at`: it reached us as soon as the broker had it.

The broker's own queue time is not visible to a client, and a request whose MQTT 5
message expiry ran out is dropped by the broker: the daemon never sees it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from assistant.daemon.payloads import BadRequest, decode_payload, optional_str


@dataclass(frozen=True)
class Stale:
    """Why a request is not acted on: its age (exact, or an upper bound; None if unknown)."""

    age_s: float | None
    exact: bool
    message: str


def judge(
    sent_at: float | None, *, backlog: bool, away_since: float | None, now: float, max_age_s: float
) -> Stale | None:
    """None when the request may be acted on; otherwise why not (see the module docstring)."""
    if sent_at is not None:
        age = max(0.0, now - sent_at)  # a publisher's clock ahead of ours: as if just sent
        if age <= max_age_s:
            return None
        return Stale(round(age, 1), True, f"it is {age:.0f} s old (by its sent_at), more than {max_age_s:g} s")
    if not backlog:
        return None
    if away_since is None:
        return Stale(None, False, "kept by the broker while the assistant was away for an unknown time")
    bound = max(0.0, now - away_since)
    if bound <= max_age_s:
        return None
    return Stale(
        round(bound, 1),
        False,
        f"kept by the broker while the assistant was away; it may be up to {bound:.0f} s old,"
        f" more than {max_age_s:g} s (add sent_at to a request for its exact age)",
    )


def sent_at_of(payload: bytes) -> float | None:
    """The `sent_at` of a JSON request as Unix seconds; None without one; BadRequest when unreadable."""
    try:
        data = decode_payload(payload)
    except BadRequest:
        return None  # the request's own parser says what is wrong with it
    if not isinstance(data, dict) or data.get("sent_at") is None:
        return None
    value = data["sent_at"]
    request_id = optional_str(data, "id", None) if isinstance(data.get("id"), str | int) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise BadRequest("'sent_at' must be Unix seconds or an ISO 8601 time with a zone", request_id)
