"""Melange's SQLite write rates against raw `sqlite3` writing rows of the same shape.

The raw baseline is a table shaped like melange's ip_addresses (same columns and
types, the same primary key, unique constraints, checks, foreign keys and
indexes; stub parent tables for the foreign keys, enforced), in its own file in
WAL mode with melange's synchronous setting (melange.lean), as melange sets up its
SQLite stores.
Melange and raw samples alternate in one process, and medians are compared.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import (
    RAW_SCHEMA,
    mac,
    median,
    section,
    store_url,
    table,
    timed,
    verdict,
)
from melange.lean import SQLITE_SYNCHRONOUS

INSERT = (
    "INSERT INTO ip_addresses (block_id, address, mac, active_mac, hostname, interface_id,"
    " tenant, state, allocated_at, released_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _sizes(quick: bool) -> dict:
    if quick:
        return {"bulk": 50_000, "bulk_samples": 3, "batch": 30, "batches": 5}
    return {"bulk": 50_000, "bulk_samples": 5, "batch": 50, "batches": 9}


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")


class _Raw:
    """The raw sqlite3 baseline: one file, the same pragmas as melange's stores."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = self.connect()
        self.conn.executescript(RAW_SCHEMA)
        self.blocks = 0
        self.serial = 0

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {SQLITE_SYNCHRONOUS}")
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def new_block(self) -> int:
        self.blocks += 1
        self.conn.execute("INSERT INTO blocks (id) VALUES (?)", (self.blocks,))
        return self.blocks

    def bulk(self, block_id: int, count: int, first: int) -> None:
        """`count` rows in one transaction with executemany (rows built inside)."""
        now = _now()
        rows = [
            (
                block_id,
                (first + i).to_bytes(16, "big"),
                None,
                None,
                None,
                None,
                None,
                "allocated",
                now,
                None,
            )
            for i in range(count)
        ]
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(INSERT, rows)
        self.conn.execute("COMMIT")

    def one(self, conn: sqlite3.Connection, block_id: int) -> None:
        """One row with a MAC of its own, in a transaction of its own."""
        self.serial += 1
        value = (0x02 << 40) | self.serial
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            INSERT,
            (
                block_id,
                (0x0A000000 + self.serial).to_bytes(16, "big"),
                value,
                value,
                None,
                None,
                None,
                "allocated",
                _now(),
                None,
            ),
        )
        conn.execute("COMMIT")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def reopen(self) -> None:
        self.conn = self.connect()

    def one_fresh_connection(self, block_id: int) -> None:
        conn = self.connect()
        try:
            self.one(conn, block_id)
        finally:
            conn.close()


def run(quick: bool) -> str:
    from melange import operations
    from melange.store import Store

    sizes = _sizes(quick)
    count = sizes["bulk"]
    with store_url("sqlite", "bulk") as url, tempfile.TemporaryDirectory() as tmp:
        store = Store(url, release_hold=3600)
        raw = _Raw(Path(tmp) / "raw.db")
        blocks = 0

        def new_block() -> str:
            nonlocal blocks
            blocks += 1
            name = f"b{blocks}"
            cidr = f"10.{blocks}.0.0/16"
            operations.run(store, "block.create", {"cidr": cidr, "name": name})
            return name

        # (a) count=50,000 in one call against one executemany, alternating.
        bulk_m, bulk_r = [], []
        for i in range(sizes["bulk_samples"]):
            name, raw_block = new_block(), raw.new_block()
            params = {"block": name, "count": count}

            def melange_bulk(params=params) -> None:
                operations.run(store, "block.allocate", params)

            def raw_bulk(raw_block=raw_block) -> None:
                raw.bulk(raw_block, count, 0x0A000001)

            pair = [(bulk_m, melange_bulk), (bulk_r, raw_bulk)]
            for samples, fn in pair if i % 2 == 0 else pair[::-1]:
                samples.append(count / timed(fn))

        # (b) single-row transactions, in batches; each batch's rate is one sample.
        name, raw_block = new_block(), raw.new_block()
        store_file = url.removeprefix("sqlite:///")
        serial = 0
        keeper: list[sqlite3.Connection] = []

        def melange_batch() -> None:
            nonlocal serial
            for _ in range(sizes["batch"]):
                serial += 1
                params = {"block": name, "mac": mac(serial)}
                operations.run(store, "block.allocate", params)

        def raw_batch() -> None:
            for _ in range(sizes["batch"]):
                raw.one(raw.conn, raw_block)

        def raw_fresh_batch() -> None:
            for _ in range(sizes["batch"]):
                raw.one_fresh_connection(raw_block)

        def keep_open() -> None:
            keeper.append(sqlite3.connect(store_file))
            keeper[-1].execute("SELECT count(*) FROM blocks").fetchall()

        def let_go() -> None:
            keeper.pop().close()

        def nothing() -> None:
            pass

        # key: (set-up, timed batch, tear-down); set-up and tear-down untimed.
        series = {
            "m": (nothing, melange_batch, nothing),
            "mk": (keep_open, melange_batch, let_go),
            "r": (nothing, raw_batch, nothing),
            "rc": (raw.close, raw_fresh_batch, raw.reopen),
        }
        singles: dict[str, list[float]] = {key: [] for key in series}
        for before, fn, after in series.values():  # warm-up, untimed
            before()
            fn()
            after()
        for i in range(sizes["batches"]):
            order = list(series) if i % 2 == 0 else list(series)[::-1]
            for key in order:
                before, fn, after = series[key]
                before()
                singles[key].append(sizes["batch"] / timed(fn))
                after()
        raw.close()
        store.close()

    bm, br = median(bulk_m), median(bulk_r)
    sm, smk, sr, src = (median(singles[k]) for k in ("m", "mk", "r", "rc"))
    rows = [
        [
            f"(a) {count:,} addresses in one call/transaction",
            f"{bm:,.0f} rows/s",
            f"{br:,.0f} rows/s",
            f"{bm / br:.3f}",
            verdict(bm / br, 0.25, at_most=False),
        ],
        [
            "(b) single allocations, one transaction each",
            f"{sm:,.0f} /s",
            f"{sr:,.0f} /s",
            f"{sm / sr:.4f}",
            verdict(sm / sr, 0.2, at_most=False),
        ],
        [
            "(b') as (b), raw opening a new (and only) connection per transaction",
            f"{sm:,.0f} /s",
            f"{src:,.0f} /s",
            f"{sm / src:.3f}",
            "— (reference)",
        ],
        [
            "(b'') as (b), while an idle connection holds melange's store open",
            f"{smk:,.0f} /s",
            f"{sr:,.0f} /s",
            f"{smk / sr:.4f}",
            f"— (diagnostic: {smk / sm:.2f}× melange's (b) rate)",
        ],
    ]
    header = ["case", "melange (core API)", "raw sqlite3", "melange / raw", "target"]
    method = (
        f"SQLite file stores, WAL, synchronous={SQLITE_SYNCHRONOUS}, wal_autocheckpoint=10000 "
        f"(melange's "
        f"pragmas, on both sides). (a) `block.allocate` count={count:,} "
        f"into an empty /16 against one `executemany` of {count:,} rows in one transaction "
        f"(rows built inside the timed part), median of {sizes['bulk_samples']} alternating "
        f"samples each. (b) single allocations with distinct MACs, each a core-API call and "
        f"transaction of its own, against raw one-row `BEGIN IMMEDIATE; INSERT; COMMIT` "
        f"transactions on an open connection; (b') for reference, raw on a new connection "
        f"each time (melange's pragmas, no other connection open, so closing it checkpoints "
        f"the WAL: what a one-shot process pays); (b'') melange "
        f"again while a second, idle sqlite3 connection keeps its store open, so no close "
        f"is the last. Each sample is a batch of {sizes['batch']}, median of "
        f"{sizes['batches']} alternating batches. "
        f"The raw table: {RAW_SHAPE}."
    )
    return section(
        "Bulk and single-row write rates against raw sqlite3", method, table(header, rows)
    )


RAW_SHAPE = (
    "melange's ip_addresses columns and types, primary key, both unique constraints, the "
    "three checks, both foreign keys (enforced, to stub tables) and the four secondary indexes"
)
