"""How old a request may be, and whether it is acted on (assistant/daemon/freshness.py)."""

from __future__ import annotations

import json

import pytest

from assistant.daemon.freshness import judge, sent_at_of
from assistant.daemon.payloads import BadRequest

NOW = 1_800_000_000.0
MAX = 120.0


def test_a_live_request_without_a_timestamp_is_fresh() -> None:
    assert judge(None, backlog=False, away_since=None, now=NOW, max_age_s=MAX) is None


def test_sent_at_gives_the_exact_age() -> None:
    assert judge(NOW - 119, backlog=False, away_since=None, now=NOW, max_age_s=MAX) is None
    stale = judge(NOW - 3600, backlog=False, away_since=None, now=NOW, max_age_s=MAX)
    assert stale is not None and stale.age_s == 3600 and stale.exact
    assert "3600 s old" in stale.message


def test_sent_at_wins_over_the_backlog_bound() -> None:
    # offline for ten minutes, but the publisher says it sent this a second ago
    assert judge(NOW - 1, backlog=True, away_since=NOW - 600, now=NOW, max_age_s=MAX) is None


def test_a_clock_ahead_of_ours_is_age_zero() -> None:
    assert judge(NOW + 30, backlog=False, away_since=None, now=NOW, max_age_s=MAX) is None


def test_a_backlog_request_is_bounded_by_the_time_away() -> None:
    assert judge(None, backlog=True, away_since=NOW - 5, now=NOW, max_age_s=MAX) is None
    stale = judge(None, backlog=True, away_since=NOW - 600, now=NOW, max_age_s=MAX)
    assert stale is not None and stale.age_s == 600 and not stale.exact
    assert "up to 600 s" in stale.message


def test_a_backlog_request_after_an_unknown_time_away_is_stale() -> None:
    stale = judge(None, backlog=True, away_since=None, now=NOW, max_age_s=MAX)
    assert stale is not None and stale.age_s is None and not stale.exact
    assert "unknown" in stale.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NOW, NOW),
        (int(NOW), NOW),
        ("2027-01-15T08:00:00Z", NOW),  # epoch 1800000000
        ("2027-01-15T09:00:00+01:00", NOW),
    ],
)
def test_sent_at_is_epoch_seconds_or_iso_8601(value: object, expected: float) -> None:
    assert sent_at_of(json.dumps({"text": "hi", "sent_at": value}).encode()) == expected


def test_no_sent_at_in_plain_text_or_json_without_it() -> None:
    assert sent_at_of(b"turn on the light") is None
    assert sent_at_of(b'{"text": "hi"}') is None
    assert sent_at_of(b"ON") is None


@pytest.mark.parametrize("value", ["yesterday", "2027-01-15T08:00:00", True, [1], -5])
def test_a_bad_sent_at_is_a_bad_request(value: object) -> None:
    with pytest.raises(BadRequest, match="sent_at") as raised:
        sent_at_of(json.dumps({"text": "hi", "id": "r1", "sent_at": value}).encode())
    assert raised.value.request_id == "r1"


def test_time_away_is_the_clean_stop_else_the_last_sign_of_life() -> None:
    from assistant.daemon.service import away_since

    assert away_since({"offline_at": 5.0, "alive_at": 9.0}) == 5.0  # a clean stop said when it stopped reading
    assert away_since({"offline_at": None, "alive_at": 9}) == 9.0  # a crash: at most since the last heartbeat
    assert away_since({"alive_at": True}) is None
    assert away_since({}) is None
