"""Group-committed writes run on a pool of their own (melanged.http.app WRITE_THREADS):
a flood of allocations stuck behind the store's lock never keeps a read from being
answered, and each of them is answered once the lock is gone."""

from __future__ import annotations

import sqlite3
import threading
import time

from melange import operations
from melanged.http import app
from tests.support.http_daemon import HttpDaemon


def test_writes_stuck_on_the_store_do_not_hold_up_reads(tmp_path):
    path = tmp_path / "store.db"
    stuck = app.POOL_THREADS + app.WRITE_THREADS  # more than every thread of the old one pool
    with HttpDaemon(f"sqlite:///{path}", tmp_path / "api") as api:
        operations.run(api.store, "block.create", {"cidr": "10.0.0.0/24", "name": "B"})
        token = api.make_token("w", "writer")
        reader_token = api.make_token("r", "reader")
        for used in (token, reader_token):  # a token's first use is recorded: a write
            with api.client(token=used, timeout=30) as client:
                assert client.get("/v1/blocks").status_code == 200
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write: every writer waits
        statuses: list[int] = []

        def allocate(n: int) -> None:
            with api.client(token=token, timeout=60) as client:
                answer = client.post(
                    "/v1/blocks/B/allocations", json={"mac": f"02:00:00:00:00:{n:02x}"}
                )
                statuses.append(answer.status_code)

        writers = [threading.Thread(target=allocate, args=(n,)) for n in range(stuck)]
        try:
            for writer in writers:
                writer.start()
            time.sleep(1.0)  # every allocation has reached the server and waits
            assert statuses == []
            started = time.monotonic()
            with api.client(token=reader_token, timeout=30) as reader:
                shown = reader.get("/v1/blocks/B")
            assert shown.status_code == 200
            assert time.monotonic() - started < 5
            assert statuses == []  # the read was answered while they all still waited
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            for writer in writers:
                writer.join(timeout=60)
        assert statuses == [201] * stuck
        allocated = operations.run(api.store, "ip.list", {"block": "B"})
        assert len({row["address"] for row in allocated}) == stuck


def test_a_tokens_first_use_does_not_make_a_read_wait_for_the_stores_lock(tmp_path):
    """A use is recorded by a write (melange.tokens.record_use); behind another writer's
    lock the read is answered at once, and the use is written once the lock is gone."""
    path = tmp_path / "store.db"
    with HttpDaemon(f"sqlite:///{path}", tmp_path / "api") as api:
        operations.run(api.store, "block.create", {"cidr": "10.0.0.0/24", "name": "B"})
        token = api.make_token("fresh", "reader")  # never used: its first use is recorded
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with api.client(token=token, timeout=30) as reader:
                assert reader.get("/v1/blocks/B").status_code == 200
            assert time.monotonic() - started < 5
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        def last_used() -> object:
            listed = operations.run(api.store, "token.list", {})
            return next(t["last_used_at"] for t in listed if t["name"] == "fresh")

        deadline = time.monotonic() + 30
        while last_used() is None:
            assert time.monotonic() < deadline, "the token's use was never recorded"
            time.sleep(0.05)
