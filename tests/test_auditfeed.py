"""melange.auditfeed: the changes since the last look, from the audit trail, on every
backend; on a server, a change whose transaction commits after a later one's is still
seen (its id was a gap), and one that never commits costs a whole read, once."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import create_engine, delete, insert
from sqlalchemy.pool import NullPool

from melange.auditfeed import CHANGES_AT, GAP_TTL, AuditFeed
from melange.models import audit_log
from melange.store import Store


def _row(block_id: int | None, address: int | None) -> dict:
    return {"at": datetime(2026, 1, 1), "actor": "t", "via": "test", "command": "ip.update",
            "block_id": block_id, "address": address, "params": "{}", "outcome": "{}"}  # fmt: skip


@pytest.fixture
def engine(store_url):
    Store(store_url).ensure_schema()
    engine = create_engine(store_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def _since(engine, feed: AuditFeed, now: float):
    with engine.connect() as conn, conn.begin():
        return feed.since(conn, now)


def _write(engine, *rows: dict) -> None:
    with engine.begin() as conn:
        for row in rows:
            conn.execute(insert(audit_log), row)


def test_each_change_is_seen_once_and_a_change_of_many_reads_everything(engine):
    feed = AuditFeed()
    assert _since(engine, feed, 0.0) is None  # the first look: everything
    assert _since(engine, feed, 1.0) == []
    _write(engine, _row(1, 10), _row(1, 11))
    assert sorted(_since(engine, feed, 2.0)) == [(1, 10), (1, 11)]
    assert _since(engine, feed, 3.0) == []
    _write(engine, _row(1, None))  # a block changed, or many addresses at once
    assert _since(engine, feed, 4.0) is None
    _write(engine, _row(2, 20))
    assert _since(engine, feed, 5.0) == [(2, 20)]


@pytest.mark.servers_only
def test_a_change_committed_after_a_later_one_is_still_seen(engine):
    """Transaction A takes its audit id first and commits last: the look in between
    sees B's row only, notes A's id as a gap, and the next look finds A's row."""
    feed = AuditFeed()
    _write(engine, _row(9, 9))  # a store with a history
    _since(engine, feed, 0.0)
    with engine.connect() as a:
        transaction = a.begin()
        a.execute(insert(audit_log), _row(1, 100))  # id n, not committed yet
        _write(engine, _row(1, 200))  # id n+1, committed
        assert _since(engine, feed, 1.0) == [(1, 200)]
        assert feed.high - 1 in feed.gaps  # A's id, just below B's
        transaction.commit()
    assert _since(engine, feed, 2.0) == [(1, 100)]
    assert feed.high - 1 not in feed.gaps


@pytest.mark.servers_only
def test_an_id_that_never_commits_costs_one_whole_read_when_it_expires(engine):
    feed = AuditFeed()
    _write(engine, _row(9, 9))  # a store with a history
    _since(engine, feed, 0.0)
    with engine.connect() as a:
        transaction = a.begin()
        a.execute(insert(audit_log), _row(1, 100))
        _write(engine, _row(1, 200))
        transaction.rollback()  # the id is a gap for good
    assert _since(engine, feed, 1.0) == [(1, 200)]
    assert _since(engine, feed, 1.0 + GAP_TTL / 2) == []
    assert _since(engine, feed, 1.0 + GAP_TTL) is None  # not sure what it missed: all
    assert feed.gaps == {} and _since(engine, feed, 2.0 + GAP_TTL) == []
    assert _since(engine, feed, 3.0 + 2 * GAP_TTL) == []  # once only


@pytest.mark.servers_only
def test_a_change_in_flight_when_the_feed_starts_is_seen(engine):
    """Ids just below the highest when the feed starts may be transactions in flight."""
    feed = AuditFeed()
    _write(engine, _row(9, 9))
    with engine.connect() as a:
        transaction = a.begin()
        a.execute(insert(audit_log), _row(3, 300))
        _write(engine, _row(3, 301))
        assert _since(engine, feed, 0.0) is None  # start: a whole read
        transaction.commit()
    assert _since(engine, feed, 1.0) == [(3, 300)]


def test_a_burst_into_an_empty_trail_leaves_no_gaps_below_it(engine):
    """An empty trail at the start says nothing of where a server's counter resumes; a
    burst too big to follow (a whole read) then sets the floor, and no id below it is
    looked for (it would never come, and its expiry would cost another whole read)."""
    _write(engine, *[_row(1, n) for n in range(3)])
    with engine.begin() as conn:  # an emptied trail: the counter goes on from 3
        conn.execute(delete(audit_log))
    feed = AuditFeed()
    assert _since(engine, feed, 0.0) is None
    _write(engine, *[_row(1, n) for n in range(CHANGES_AT + 5)])
    assert _since(engine, feed, 1.0) is None
    assert feed.gaps == {}
    _write(engine, _row(1, 5000))
    assert _since(engine, feed, 2.0) == [(1, 5000)]
    assert _since(engine, feed, 2.0 + GAP_TTL) == []


def test_a_reader_that_fails_half_way_reads_whole_next_time(engine):
    """The feed has moved past the changes a failing reader did not take in: follow
    starts again, so the next call reads everything."""
    feed = AuditFeed()
    calls: list = []

    def follow(now: float, fail: bool = False) -> bool:
        def each(block_id: int, address: int) -> None:
            if fail:
                raise RuntimeError("the store went away")
            calls.append((block_id, address))

        with engine.connect() as conn, conn.begin():
            return feed.follow(conn, now, lambda: calls.append("whole"), each)

    assert follow(0.0) is False and calls == ["whole"]
    _write(engine, _row(1, 10))
    with pytest.raises(RuntimeError):
        follow(1.0, fail=True)
    assert follow(2.0) is False and calls[-1] == "whole"
    _write(engine, _row(1, 11))
    assert follow(3.0) is True and calls[-1] == (1, 11)
