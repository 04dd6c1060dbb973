"""Schema 0007 both ways, with data, on every backend: stored holds, audit identities,
ids that are never handed out again."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import MetaData, create_engine, delete, insert, inspect, text
from sqlalchemy.pool import NullPool

from melange import migrations, operations
from melange.clock import utcnow
from melange.store import Store
from tests.support.backends import fresh_database
from tests.support.sql import execute_sql

RELEASED = utcnow().replace(microsecond=0) - timedelta(hours=1)  # still held after 0007


def _address(last: int) -> bytes:
    return ((10 << 24) + last).to_bytes(16, "big")


def _fill_0006(url: str) -> tuple[int, int]:
    """A store at 0006 with a block, an allocated and a held address, a deleted block
    and their audit rows (a MAC range's row carrying its id as block_id, as 0006 wrote)."""
    engine = create_engine(url, poolclass=NullPool)
    old = MetaData()
    old.reflect(engine)
    blocks, ips, audit = (old.tables[n] for n in ("blocks", "ip_addresses", "audit_log"))
    now = datetime(2026, 1, 1)
    block = {"version": 4, "prefixlen": 24, "type": "private", "generator": "lowest-free",
             "created_at": now, "updated_at": now}  # fmt: skip
    with engine.begin() as conn:
        kept = conn.execute(insert(blocks).values(
            cidr="10.0.0.0/24", name="a", first_addr=_address(0), last_addr=_address(255),
            **block)).inserted_primary_key[0]  # fmt: skip
        gone = conn.execute(insert(blocks).values(
            cidr="10.1.0.0/24", name="b", first_addr=_address(1 << 16),
            last_addr=_address((1 << 16) + 255), **block)).inserted_primary_key[0]  # fmt: skip
        conn.execute(delete(blocks).where(blocks.c.id == gone))
        conn.execute(insert(ips), [
            {"block_id": kept, "address": _address(2), "state": "allocated", "allocated_at": now,
             "released_at": None},
            {"block_id": kept, "address": _address(3), "state": "held", "allocated_at": now,
             "released_at": RELEASED},
        ])  # fmt: skip
        row = {"at": now, "actor": "x", "via": "cli", "params": "{}", "outcome": "{}"}
        conn.execute(insert(audit), [
            {**row, "command": "block.create", "block_id": kept},
            {**row, "command": "mac_range.create", "block_id": kept},
            {**row, "command": "block.create", "block_id": gone},
            {**row, "command": "block.delete", "block_id": gone},
        ])  # fmt: skip
    engine.dispose()
    return kept, gone


def _holds(url: str, block_id: int) -> list[tuple]:
    return sorted(execute_sql(
        url, f"SELECT address, state, released_at FROM ip_addresses WHERE block_id = {block_id}"
    ))  # fmt: skip


def test_0007_upgrades_and_downgrades_with_data(backend, tmp_path):
    if backend == "sqlite":
        url, database = f"sqlite:///{tmp_path / 'old.db'}", None
    else:
        database = fresh_database(backend)
        url = database.url
    try:
        migrations.upgrade(Store(url), "0006")
        kept, gone = _fill_0006(url)
        before = _holds(url, kept)
        migrations.upgrade(Store(url))
        store = Store(url)
        held = operations.run(store, "ip.list", {"released": True})
        # Holds found by the migration end 48 h after their release, for every client.
        assert [(h["address"], h["held_until"]) for h in held] == [
            ("10.0.0.3", (RELEASED + timedelta(hours=48)).isoformat() + "Z")]  # fmt: skip
        history = operations.run(store, "history", {"block": str(kept)})
        assert [(h["command"], h["kind"]) for h in history] == [("block.create", "block")]
        kinds = [h["kind"] for h in operations.run(store, "history", {})]
        assert kinds == ["block", "mac_range", "block", "block"]
        new = operations.run(store, "block.create", {"cidr": "10.2.0.0/24", "name": "c"})
        assert new["id"] > gone  # never the id of a block the history still names
        assert [h["command"] for h in operations.run(store, "history", {"block": "c"})] == [
            "block.create"]  # fmt: skip
        operations.run(store, "block.allocate", {"block": "c", "count": 3})
        store.close()

        migrations.downgrade(Store(url), "0006")
        assert Store(url).current_revision() == "0006"
        assert _holds(url, kept) == before
        audit = execute_sql(url, "SELECT command, block_id FROM audit_log ORDER BY id")
        assert audit[:4] == [("block.create", kept), ("mac_range.create", kept),
                             ("block.create", gone), ("block.delete", gone)]  # fmt: skip

        migrations.upgrade(Store(url))
        store = Store(url)
        again = operations.run(store, "ip.list", {"released": True})
        assert [h["held_until"] for h in again] == [h["held_until"] for h in held]
        store.close()
    finally:
        if database is not None:
            database.drop()


def _schema(url: str) -> dict:
    """Everything a store's schema is made of, as the backend reports it."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        seen = inspect(conn)
        tables = {
            table: {
                "columns": sorted(
                    (c["name"], str(c["type"]), c["nullable"]) for c in seen.get_columns(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in seen.get_indexes(table)
                ),
                "checks": sorted(c["name"] for c in seen.get_check_constraints(table)),
                "uniques": sorted(u["name"] for u in seen.get_unique_constraints(table)),
                "foreign_keys": sorted(
                    (f["name"], f["referred_table"], str(f["options"].get("ondelete")))
                    for f in seen.get_foreign_keys(table)
                ),
                "primary_key": seen.get_pk_constraint(table)["constrained_columns"],
            }
            for table in sorted(seen.get_table_names())
        }
        locks = sorted(tuple(row) for row in conn.execute(text("SELECT name, counter FROM locks")))
        autoincrement = []
        if conn.dialect.name == "sqlite":
            listed = "SELECT name FROM sqlite_master WHERE sql LIKE '%AUTOINCREMENT%'"
            autoincrement = sorted(conn.execute(text(listed)).scalars())
    engine.dispose()
    return {"tables": tables, "locks": locks, "autoincrement": autoincrement}


def test_a_new_store_has_exactly_the_migrated_schema(backend, tmp_path):
    """A new store is created from the models in one pass (replaying the migrations made a
    first command several times slower); it must be what the migrations make, constraints,
    lock rows and SQLite's AUTOINCREMENT included."""
    databases = []
    try:
        urls = []
        for name in ("new", "migrated"):
            if backend == "sqlite":
                urls.append(f"sqlite:///{tmp_path / name}.db")
            else:
                databases.append(fresh_database(backend))
                urls.append(databases[-1].url)
        new, migrated = urls
        operations.run(Store(new), "block.list", {})  # first use: initialised
        migrations.upgrade(Store(migrated))  # every migration from 0001
        assert Store(new).current_revision() == Store(migrated).current_revision()
        assert _schema(new) == _schema(migrated)
    finally:
        for database in databases:
            database.drop()
