"""Write transactions that do not wait for SQLite's write lock (melange.lockwait), on a
real SQLite file whose lock another connection holds, as another process would."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from melange import operations
from melange.lean import SQLITE_BUSY_TIMEOUT_MS
from melange.lockwait import LockBusy, no_lock_wait
from melange.store import Store


@pytest.fixture
def store(tmp_path: Path):
    with closing(Store(f"sqlite:///{tmp_path / 'm.db'}", release_hold=3600)) as store:
        operations.run(store, "block.create", {"cidr": "10.66.0.0/24", "name": "w"})
        yield store


def _holder(store: Store) -> sqlite3.Connection:
    holder = sqlite3.connect(store.engine.url.database or "", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def _count(store: Store) -> int:
    return store.read(lambda conn: conn.exec_driver_sql(
        "SELECT count(*) FROM ip_addresses").scalar_one())  # fmt: skip


def test_a_held_lock_is_lock_busy_at_once_and_nothing_is_written(store: Store) -> None:
    holder = _holder(store)
    outcome: list[BaseException] = []

    def allocate() -> None:
        try:
            with no_lock_wait():
                operations.run(store, "block.allocate", {"block": "w"})
        except BaseException as error:  # noqa: BLE001  (looked at below)
            outcome.append(error)

    worker = threading.Thread(target=allocate, daemon=True)
    worker.start()
    worker.join(timeout=30)  # the busy timeout is a minute: waiting would still be here
    holder.execute("ROLLBACK")
    holder.close()
    assert len(outcome) == 1 and isinstance(outcome[0], LockBusy), outcome
    assert _count(store) == 0
    # The connection waits again afterwards, as every other caller expects.
    timeout = store.read(lambda conn: conn.exec_driver_sql("PRAGMA busy_timeout").scalar())
    assert timeout == SQLITE_BUSY_TIMEOUT_MS


def test_without_it_a_writer_waits_for_the_lock(store: Store) -> None:
    holder = _holder(store)
    def let_go() -> None:
        holder.execute("ROLLBACK")
        holder.close()

    release = threading.Timer(0.3, let_go)
    release.start()
    (made,) = operations.run(store, "block.allocate", {"block": "w"})
    release.join()
    assert made["address"] == "10.66.0.1"


def test_a_free_lock_is_taken_as_usual(store: Store) -> None:
    with no_lock_wait():
        (made,) = operations.run(store, "block.allocate", {"block": "w"})
    assert made["address"] == "10.66.0.1" and _count(store) == 1
