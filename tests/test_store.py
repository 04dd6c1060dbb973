"""The store: migrations on every backend, schema checks, and a store that is not there."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from melange import migrations, operations
from melange.models import metadata
from melange.store import SCHEMA_HEAD, Store
from tests.support.backends import fresh_database

ROOT = Path(__file__).parent.parent


def run_cli(*args: str, timeout: float = 30) -> tuple[int, str, str, float]:
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "melange_cli.main", "-o", "plain", *args],
        capture_output=True, text=True, timeout=timeout, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def test_schema_head_constant_matches_the_migrations():
    assert migrations.head_revision() == SCHEMA_HEAD


def _empty_url(backend: str, tmp_path: Path):
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}", None
    database = fresh_database(backend)
    return database.url, database


def test_migrations_from_empty_and_from_the_previous_revision(backend, tmp_path):
    url, database = _empty_url(backend, tmp_path)
    try:
        store = Store(url)
        migrations.upgrade(store, "0001")
        assert store.current_revision() == "0001"
        code, _, err, _ = run_cli("--db", url, "block", "list")
        assert code == 6
        assert "melange db upgrade" in err and err.count("\n") == 1
        code, out, err, _ = run_cli("--db", url, "db", "upgrade")
        assert code == 0, err
        assert out.split("\t")[0] == SCHEMA_HEAD
        code, out, err, _ = run_cli("--db", url, "block", "create", "10.9.0.0/24")
        assert code == 0, err
        # The migrated schema is exactly what the models describe.
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        engine.dispose()
        assert diffs == []
    finally:
        if database is not None:
            database.drop()


def test_first_use_initialises_an_empty_store(backend, tmp_path):
    url, database = _empty_url(backend, tmp_path)
    try:
        assert Store(url).current_revision() is None
        code, out, err, _ = run_cli("--db", url, "block", "create", "10.9.0.0/24")
        assert code == 0, err
        assert Store(url).current_revision() == SCHEMA_HEAD
    finally:
        if database is not None:
            database.drop()


def test_a_newer_schema_than_the_code_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    operations.run(Store(url), "block.list", {})
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    code, _, err, _ = run_cli("--db", url, "block", "list")
    assert code == 6
    assert "9999" in err and "upgrade melange" in err


UNREACHABLE = [
    ("mysql-closed-port", "mysql+pymysql://root@127.0.0.1:1/melange"),
    ("mysql-wrong-password", "mysql+pymysql://root:wrong@127.0.0.1:3306/melange"),
    ("mysql-unknown-host", "mysql+pymysql://root@no-such-host.invalid/melange"),
    ("pg-closed-port", "postgresql+psycopg://postgres@127.0.0.1:1/melange"),
    ("pg-unknown-host", "postgresql+psycopg://postgres@no-such-host.invalid/melange"),
    ("pg-unknown-database", "postgresql+psycopg://postgres@127.0.0.1:5432/no_such_db_x"),
    ("sqlite-unwritable-place", "sqlite:////proc/melange/none.db"),
    ("unknown-driver", "nosuchdb://x/y"),
]


@pytest.mark.parametrize(("case", "url"), UNREACHABLE, ids=[c for c, _ in UNREACHABLE])
def test_an_unreachable_store_is_exit_6_within_10_seconds(case, url):
    code, out, err, elapsed = run_cli("--db", url, "block", "allocate", "x")
    assert code == 6, (case, err)
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "wrong" not in err  # no password echoed
    assert elapsed < 10


def test_upgrade_fills_the_allocated_counter_from_existing_rows(backend, tmp_path):
    from sqlalchemy import MetaData, insert, select

    url, database = _empty_url(backend, tmp_path)
    try:
        migrations.upgrade(Store(url), "0002")
        engine = create_engine(url, poolclass=NullPool)
        old = MetaData()
        old.reflect(engine)
        now = datetime(2026, 1, 1)
        with engine.begin() as conn:
            conn.execute(insert(old.tables["blocks"]).values(
                id=1, cidr="10.0.0.0/24", version=4, first_addr=(10 << 24).to_bytes(16, "big"),
                last_addr=((10 << 24) + 255).to_bytes(16, "big"), prefixlen=24, type="private",
                generator="lowest-free", created_at=now, updated_at=now))  # fmt: skip
            conn.execute(insert(old.tables["ip_addresses"]), [
                {"block_id": 1, "address": ((10 << 24) + i).to_bytes(16, "big"),
                 "state": state, "allocated_at": now,
                 "released_at": None if state == "allocated" else now}
                for i, state in enumerate(["allocated"] * 3 + ["held"] * 2, start=2)
            ])  # fmt: skip
        migrations.upgrade(Store(url))
        with engine.connect() as conn:
            new = MetaData()
            new.reflect(conn)
            count = conn.execute(select(new.tables["blocks"].c.allocated_count)).scalar()
        engine.dispose()
        assert count == 3
    finally:
        if database is not None:
            database.drop()


def test_free_range_keys_migrate_both_ways_keeping_the_free_space(backend, tmp_path):
    """0006 re-keys free_ranges by last address; what is free must not move, either way."""
    url, database = _empty_url(backend, tmp_path)
    try:
        store = Store(url)
        operations.run(store, "block.create", {"cidr": "10.0.0.0/24", "name": "a"})
        operations.run(store, "block.create", {"cidr": "10.1.0.0/24", "name": "b"})
        got = operations.run(store, "block.allocate", {"block": "a", "count": 20})
        for record in got[5:8]:  # holes in the middle: three ranges in block a
            operations.run(store, "ip.release", {"address": record["address"], "now": True})
        operations.run(store, "block.allocate", {"block": "b", "count": 3})
        before = _free_ranges(url)
        assert len(before) == 3
        store.close()
        migrations.downgrade(Store(url), "0005")
        assert Store(url).current_revision() == "0005"
        assert _free_ranges(url) == before
        migrations.upgrade(Store(url))
        assert _free_ranges(url) == before
        store = Store(url)
        again = operations.run(store, "block.allocate", {"block": "a", "count": 4})
        assert [r["address"] for r in again] == [r["address"] for r in got[5:8]] + ["10.0.0.21"]
        store.close()
    finally:
        if database is not None:
            database.drop()


def _free_ranges(url: str) -> list[tuple]:
    from tests.support.sql import execute_sql

    return sorted(execute_sql(url, "SELECT block_id, first_addr, last_addr FROM free_ranges"))


def test_initialise_does_nothing_to_a_store_created_meanwhile(store_url):
    """A first-use initialise that lost the race must not run migrations over the winner's
    schema (it did, and crashed melanged, when that store's revision had changed since)."""
    from tests.support.sql import execute_sql

    store = Store(store_url)
    operations.run(store, "block.create", {"cidr": "10.9.0.0/24"})
    execute_sql(store_url, "UPDATE alembic_version SET version_num = '0000'")
    migrations.initialise(Store(store_url))  # as a thread that saw an empty store would
    assert Store(store_url).current_revision() == "0000"
    execute_sql(store_url, f"UPDATE alembic_version SET version_num = '{SCHEMA_HEAD}'")


def test_connecting_while_another_writer_holds_a_new_file_waits(tmp_path):
    """A connection opened while another holds a new file's lock waits for it. (A rarer race
    at melanged's start, a reader connecting while another thread switched a new file to WAL,
    was once reported as 'cannot reach the store: database is locked'; connects now retry.)"""
    import sqlite3
    import threading

    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(0.5, lambda: holder.execute("ROLLBACK"))
    timer.start()
    try:
        result = operations.run(Store(f"sqlite:///{path}"), "block.list", {})
    finally:
        timer.join()
        holder.close()
    assert result == []


_KILL_SESSION = {
    "mysql": ("SELECT CONNECTION_ID()", "KILL {}"),
    "postgresql": ("SELECT pg_backend_pid()", "SELECT pg_terminate_backend({})"),
}


@pytest.mark.servers_only
@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_a_kept_connection_the_server_dropped_is_replaced_not_reported(store_url, write):
    """The store keeps its last server connection for the next transaction without the
    pool's ping; when the server has dropped it meanwhile (a restart, a killed session),
    the transaction runs again on a fresh connection instead of failing with exit 6."""
    from sqlalchemy import text

    from tests.support.sql import execute_sql

    store = Store(store_url)
    try:
        operations.run(store, "block.create", {"cidr": "10.8.0.0/24", "name": "kept"})
        which, kill = _KILL_SESSION[store.engine.dialect.name]
        session = store.read(lambda conn: conn.execute(text(which)).scalar())
        execute_sql(store_url, kill.format(session))
        if write:
            record = operations.run(store, "block.allocate", {"block": "kept"})[0]
            assert record["address"] == "10.8.0.1"
        else:
            assert operations.run(store, "block.show", {"block": "kept"})["cidr"] == "10.8.0.0/24"
        again = store.read(lambda conn: conn.execute(text(which)).scalar())
        assert again != session
    finally:
        store.close()


def test_options_set_in_one_transaction_do_not_reach_the_next(store_url):
    """The store keeps its last connection for the next transaction; streaming switched on
    for one query must not stay on (on PostgreSQL a later UPDATE then failed inside a
    server-side cursor: `reconcile --fix` did, until a connection with options set was let
    go instead of kept)."""
    from sqlalchemy import text

    store = Store(store_url)
    try:
        rows = store.read(
            lambda conn: conn.execution_options(yield_per=10).execute(text("SELECT 1")).all()
        )
        assert rows == [(1,)]
        seen = store.read(lambda conn: dict(conn.get_execution_options()))
        assert "yield_per" not in seen and "stream_results" not in seen
        record = operations.run(store, "block.create", {"cidr": "10.7.0.0/24", "name": "opt"})
        assert record["cidr"] == "10.7.0.0/24"
    finally:
        store.close()


def test_a_daemons_store_notices_an_upgrade_made_elsewhere_before_it_writes(store_url):
    """melanged's store re-reads the schema revision in every transaction (not in one of
    its own): once a newer melange has moved the store on, the next request is refused
    (exit 6) and writes nothing, while the revision check of a command is made once."""
    from melange.errors import SchemaOutdated
    from tests.support.sql import execute_sql

    daemon = Store(store_url, recheck_schema=True)
    command = Store(store_url)
    operations.run(daemon, "block.create", {"cidr": "10.60.0.0/24", "name": "up"})
    operations.run(command, "block.show", {"block": "up"})
    execute_sql(store_url, "UPDATE alembic_version SET version_num = 'f00dfeed'")
    try:
        with pytest.raises(SchemaOutdated) as refused:
            operations.run(daemon, "block.allocate", {"block": "up"})
        assert refused.value.exit_code == 6 and "f00dfeed" in refused.value.message
        assert execute_sql(store_url, "SELECT count(*) FROM ip_addresses") == [(0,)]
        # A command's store checked the schema when it opened; it does not look again.
        assert operations.run(command, "block.show", {"block": "up"})["name"] == "up"
    finally:
        execute_sql(store_url, f"UPDATE alembic_version SET version_num = '{SCHEMA_HEAD}'")
        daemon.close()
        command.close()
