"""`history --since` and `--limit` with absurd values: exit 2 and one line (a duration
beyond what a date can hold was an OverflowError, exit 1), while every value a date can
hold still answers, on every backend."""

from __future__ import annotations

from tests.support.cli import Melange

ABSURD_SINCE = [
    "99999999999999999999d",  # the one reported: timedelta overflow
    "12345678901234567890",  # seconds, as many
    "36501d",  # just over a century
    "9999999w",
    "0001-01-01T00:00:00+14:00",  # before year 1 once in UTC
    "9999-12-31T23:59:59-14:00",  # after 9999 once in UTC
    "-5d",
    "1e5",
    "nan",
    "",
    " ",
    "2026-13-01",
    "\u0663d",  # an Arabic-Indic digit: not a duration
    "2026-11-26T08:00:00Z\nx",
]


def test_an_absurd_since_is_invalid_input(melange):
    Melange(melange.db, melange.env).ok("db", "upgrade")  # a read does not create a store
    for since in ABSURD_SINCE:
        result = melange("history", "--since", since)
        assert result.exit_code == 2, (since, result.exit_code, result.stderr)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, (
            since, result.stderr)  # fmt: skip


def test_every_time_a_store_holds_still_answers(melange):
    melange.ok("block", "create", "10.0.0.0/24", "--name", "a")
    everything = melange.json("history")
    assert len(everything) == 1
    for since in ("0001-01-01T00:00:00", "36500d", "1d", "2000-01-01T00:00:00Z"):
        assert melange.json("history", "--since", since) == everything, since
    for since in ("9999-12-31T23:59:59", "0"):
        assert melange.json("history", "--since", since) == [], since


def test_limit_is_bounded(melange):
    melange.ok("block", "create", "10.0.0.0/24", "--name", "a")
    melange.ok("block", "create", "10.1.0.0/24", "--name", "b")
    newest = melange.json("history")[-1]
    assert melange.json("history", "--limit", "1") == [newest]
    for limit in ("0", "-1", "100001", "99999999999999999999"):
        result = melange("history", "--limit", limit)
        assert result.exit_code == 2, (limit, result.stderr)
        assert result.stderr.count("\n") == 1
