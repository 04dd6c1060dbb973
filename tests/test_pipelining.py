"""Writes that wait for the COMMIT (melange.prepared `send`): same outcome everywhere.

On the servers (psycopg's pipeline mode, PyMySQL's multi-statement queries) a
sent write is not on the wire until the next statement whose result is read, or
the COMMIT; on SQLite it runs at once. Either way, later statements of the
transaction see it, a failing one fails the transaction with SQLAlchemy's
error, and an aborted transaction leaves nothing behind.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, exc, insert, select, text

from melange.errors import Conflict
from melange.prepared import (
    Prepared,
    commit_waiting,
    pipelined,
    release_savepoint,
    rollback_to_savepoint,
    savepoint,
)
from melange.store import Store

PROBE = Table(
    "pipeline_probe",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("v", Integer),
)
_PUT = Prepared(insert(PROBE).values(id=bindparam("id"), v=bindparam("v")))
_GET = Prepared(select(PROBE.c.v).where(PROBE.c.id == bindparam("id")))


@pytest.fixture
def store(store_url):
    store = Store(store_url)
    store.ensure_schema()
    PROBE.create(store.engine)
    yield store
    store.close()
    PROBE.drop(store.engine)  # server databases are shared by the tests of a run
    store.close()


def _rows(store: Store) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(PROBE).order_by(PROBE.c.id))]


def test_later_statements_of_the_transaction_see_sent_writes(store):
    def change(conn):
        _PUT.send(conn, id=1, v=10)
        through_prepared = _GET.scalar(conn, id=1)
        _PUT.send(conn, id=2, v=20)
        through_sqlalchemy = conn.execute(text("SELECT v FROM pipeline_probe WHERE id = 2"))
        return through_prepared, through_sqlalchemy.scalar()

    assert store.run(change, write=True) == (10, 20)
    assert _rows(store) == [(1, 10), (2, 20)]


def test_sent_writes_wait_for_the_commit_on_the_server_drivers(store, backend):
    observed = {}

    def change(conn):
        _PUT.send(conn, id=1, v=1)
        _PUT.send(conn, id=2, v=2)
        observed["server saw nothing"] = _nothing_sent(store, conn.connection.dbapi_connection)
        observed["elsewhere"] = _rows_elsewhere(store)

    store.run(change, write=True)
    # SQLite runs in-process: there is no round trip to save, so writes run at once.
    assert observed["server saw nothing"] is (backend != "sqlite")
    assert observed["elsewhere"] == []  # uncommitted either way
    assert _rows(store) == [(1, 1), (2, 2)]


def _nothing_sent(store: Store, raw) -> bool:
    """True when the server has not seen this connection's transaction start."""
    if store.backend == "postgresql":
        return raw.info.transaction_status == 0  # not even the BEGIN has gone out
    if store.backend.startswith("mysql"):
        from tests.support.sql import execute_sql

        trx = "SELECT trx_id FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = "
        return execute_sql(store.url, trx + str(raw.server_thread_id[0])) == []
    return False


def _rows_elsewhere(store: Store) -> list[tuple]:
    """The probe table as another session sees it (SQLite: WAL, so no waiting)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(store.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(PROBE))]
    finally:
        engine.dispose()


def test_a_failing_sent_write_fails_the_commit_with_sqlalchemys_error(store):
    with store.engine.connect() as conn:
        with pytest.raises(exc.IntegrityError), conn.begin(), pipelined(conn):
            _PUT.send(conn, id=1, v=1)
            _PUT.send(conn, id=1, v=2)  # the same key: refused, here or at the commit
            commit_waiting(conn)
        # The connection is usable afterwards, and nothing of the failed one is left.
        with conn.begin(), pipelined(conn):
            _PUT.send(conn, id=3, v=3)
            commit_waiting(conn)
    assert _rows(store) == [(3, 3)]


def test_the_store_maps_a_refused_sent_write_to_conflict(store, monkeypatch):
    monkeypatch.setattr("melange.store.MAX_ATTEMPTS", 2)

    def change(conn):
        _PUT.send(conn, id=1, v=1)
        _PUT.send(conn, id=1, v=1)

    with pytest.raises(Conflict, match="the store refused the change"):
        store.run(change, write=True)
    assert _rows(store) == []


def test_writes_waiting_when_the_transaction_fails_are_dropped(store):
    class Stop(Exception):
        pass

    def failing(conn):
        _PUT.send(conn, id=1, v=1)
        raise Stop

    with pytest.raises(Stop):
        store.run(failing, write=True)
    # The next transaction (on the connection the store kept) commits only its own write.
    store.run(lambda conn: _PUT.send(conn, id=2, v=2), write=True)
    assert _rows(store) == [(2, 2)]


def _savepoint_cycles(store: Store, refused_at: set[int], cycles: int) -> list[str]:
    """`cycles` requests as a batch runs them carefully (melange.operations._savepoint):
    a savepoint, a sent write, the release that sends it; a write refused (a duplicate
    key at the cycles in `refused_at`) is rolled back to its savepoint. On a fresh
    connection, so that the driver's count of each statement starts at zero."""
    store.engine.dispose()
    outcomes = []
    with store.engine.connect() as conn, conn.begin(), pipelined(conn):
        for cycle in range(cycles):
            savepoint(conn, "probe")
            try:  # refused here on SQLite (nothing waits), at the release on a server
                _PUT.send(conn, id=0 if cycle in refused_at else cycle + 1, v=cycle)
                release_savepoint(conn, "probe")
                outcomes.append("stored")
            except exc.IntegrityError:
                rollback_to_savepoint(conn, "probe")
                release_savepoint(conn, "probe")
                outcomes.append("refused")
        conn.rollback()
    return outcomes


def test_a_refusal_at_any_point_of_a_run_of_savepoints_leaves_the_connection_usable(store):
    """psycopg prepares a statement on its fifth run; when that run was in a pipeline an
    earlier write aborted, it still counted the statement as prepared, and the next
    release of the savepoint failed with 'prepared statement "_pg3_1" does not exist'
    (seen in a batch that ran again carefully). Every statement run on the driver names
    whether to prepare it, so a refusal anywhere in the run leaves each later one whole."""
    store.run(lambda conn: _PUT.send(conn, id=0, v=0), write=True)
    for refused in range(1, 12):
        outcomes = _savepoint_cycles(store, {0, refused}, cycles=14)
        expected = ["refused" if n in (0, refused) else "stored" for n in range(14)]
        assert outcomes == expected, refused
