"""Many processes, one store: no duplicates, no lost writes, no errors; crashes are atomic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from melange import operations
from melange.models import ip_addresses
from melange.store import Store
from tests.support.stress import (
    active,
    check_counters,
    check_outcome,
    create_blocks,
    run_workers,
    spawn,
)

HERE = Path(__file__).parent
WORKERS = 16
OPS = 100


def test_sixteen_processes_allocate_and_release_without_duplicates(store_url):
    create_blocks(store_url)
    events = run_workers([store_url], WORKERS, OPS)
    rows = active(store_url)
    check_outcome(events, rows)
    check_counters(store_url, rows)


def test_count_is_all_or_nothing_when_killed(store_url, tmp_path):
    store = Store(store_url)
    operations.run(store, "block.create", {"cidr": "10.30.0.0/16", "name": "big"})
    outcomes = set()
    for delay in (0.3, 0.6, 1.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "melange_cli.main", "--db", store_url, "-o", "plain",
             "block", "allocate", "big", "--count", "50000"],  # fmt: skip
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )  # fmt: skip
        time.sleep(delay)  # where the kill lands in the allocation: what is tested
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        count = len(active(store_url))
        assert count in (0, 50000), f"killed after {delay}s: {count} addresses stored"
        outcomes.add(count)
        if count:
            operations.run(store, "block.delete", {"block": "big", "force": True})
            operations.run(store, "block.create", {"cidr": "10.30.0.0/16", "name": "big"})
    # The store is usable afterwards and still hands out the lowest address.
    result = operations.run(store, "block.allocate", {"block": "big"})
    assert result[0]["address"] == "10.30.0.1"
    assert 0 in outcomes, "no kill landed mid-way; the test did not test anything"


@pytest.mark.servers_only
def test_a_locked_block_does_not_hold_up_another(store_url):
    """SQLite has one writer at a time by design; per-block locks are for the servers."""
    store = Store(store_url)
    operations.run(store, "block.create", {"cidr": "10.40.0.0/24", "name": "a"})
    operations.run(store, "block.create", {"cidr": "10.41.0.0/24", "name": "b"})
    engine = create_engine(store_url, poolclass=NullPool)
    done = threading.Event()
    with engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT id FROM blocks WHERE name = 'a' FOR UPDATE")).all()
        started = time.monotonic()
        proc = spawn(["-m", "melange_cli.main", "--db", store_url, "-o", "plain",
                       "block", "allocate", "b"])  # fmt: skip
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, err
        assert out.strip() == "10.41.0.1"
        # And block a itself waits for the holder: the lock is real.
        waiting = spawn(["-m", "melange_cli.main", "--db", store_url, "-o", "plain",
                          "block", "allocate", "a"])  # fmt: skip
        # A generous deadline: on a loaded CI machine the process's start-up alone
        # has taken seconds; on failure, what the server was doing is shown.
        deadline = time.monotonic() + 90
        while not lock_waits(engine):  # the server shows it queued behind the holder
            assert waiting.poll() is None, "allocation from a locked block did not wait"
            assert time.monotonic() < deadline, (
                f"the allocation never waited for the lock: {sessions(engine)}"
            )
            time.sleep(0.01)
        assert waiting.poll() is None, "allocation from a locked block did not wait"
        holder.rollback()
        done.set()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert out.strip() == "10.40.0.1"
    assert elapsed < 30
    engine.dispose()
    with create_engine(store_url, poolclass=NullPool).connect() as conn:
        assert conn.execute(select(func.count()).select_from(ip_addresses)).scalar() == 2


def lock_waits(engine) -> int:
    """How many transactions on this test's database wait for a lock right now (the
    server is shared with other tests)."""
    if engine.dialect.name == "postgresql":
        query = (
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
        )
    else:  # MariaDB
        query = (
            "SELECT count(*) FROM information_schema.innodb_trx t"
            " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
            " WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
        )
    with engine.connect() as conn:
        return conn.execute(text(query)).scalar()


def sessions(engine) -> list[tuple]:
    """The sessions on this test's database and what each is doing, for a failure
    message."""
    if engine.dialect.name == "postgresql":
        query = (
            "SELECT pid, state, wait_event_type, wait_event, left(query, 80)"
            " FROM pg_stat_activity WHERE datname = current_database()"
        )
    else:  # MariaDB
        query = (
            "SELECT id, command, state, time, left(info, 80)"
            " FROM information_schema.processlist WHERE db = DATABASE()"
        )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(query))]
