"""melanged hears commits instead of waiting for its next poll (melanged.wakeup): an
SQLite commit by any process, and every write melanged commits for its own clients
(melanged.batching's `committed`), on every backend. Each test gives the poll far
more time than it waits, so only a wake-up can pass it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from melange import operations
from melange.errors import NotFound
from melange.store import Store
from melanged.batching import GroupCommit
from melanged.wakeup import Wakeup
from tests.support import ROOT
from tests.support.http_daemon import MelangedHttp, make_tokens
from tests.support.melanged_harness import wait_until

LONG = 30.0  # a wait that only a wake-up ends in time


@pytest.fixture
def sqlite_store(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}", release_hold=0)
    operations.run(store, "block.create", {"cidr": "10.5.0.0/24", "name": "lan"})
    yield store
    store.close()


def _later(action, delay: float = 0.1) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_commit_by_another_process_ends_the_wait(sqlite_store, tmp_path):
    wakeup = Wakeup(tmp_path / "store.db")
    assert wakeup.watching
    code = ("import sys; from melange import operations; from melange.store import Store; "
            "operations.run(Store(sys.argv[1]), 'block.allocate', {'block': 'lan'})")
    writer = _later(lambda: subprocess.run(
        [sys.executable, "-c", code, f"sqlite:///{tmp_path / 'store.db'}"],
        check=True, cwd=ROOT, timeout=60))  # fmt: skip
    started = time.monotonic()
    assert wakeup.wait(LONG) is True
    assert time.monotonic() - started < LONG
    writer.join()
    wakeup.close()


def test_reads_and_other_files_do_not_wake_it(sqlite_store, tmp_path):
    wakeup = Wakeup(tmp_path / "store.db")
    wakeup.wait(0)  # what creating the store left pending
    for _ in range(3):  # each read opens and closes the file (read-write, as SQLite does)
        operations.run(sqlite_store, "block.list", {})
        with sqlite3.connect(tmp_path / "store.db") as conn:
            conn.execute("SELECT count(*) FROM blocks").fetchone()
    (tmp_path / "other.db-wal").write_text("not this store's\n")
    assert wakeup.wait(0.3) is False
    wakeup.close()


def test_other_files_of_the_directory_do_not_end_the_wait(sqlite_store, tmp_path):
    """A file written beside the store while melanged waits (its own hosts files, a
    lease file) is not a commit: the wait goes on, and a commit after it still ends it."""
    wakeup = Wakeup(tmp_path / "store.db")
    wakeup.wait(0)

    def write_then_commit() -> None:
        for n in range(5):
            (tmp_path / f"hosts.{n}").write_text("x\n")
            time.sleep(0.02)
        operations.run(sqlite_store, "block.allocate", {"block": "lan"})

    writer = _later(write_then_commit, delay=0.05)
    assert wakeup.wait(LONG) is True
    writer.join()
    assert len(operations.run(sqlite_store, "ip.list", {})) == 1
    wakeup.wait(0)
    (tmp_path / "lease").write_text("y\n")
    assert wakeup.wait(0.2) is False
    wakeup.close()


def test_a_store_named_through_a_link_is_watched_where_its_files_are(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    store = Store(f"sqlite:///{real / 'store.db'}", release_hold=0)
    operations.run(store, "block.create", {"cidr": "10.5.0.0/24", "name": "lan"})
    (tmp_path / "link.db").symlink_to(real / "store.db")
    wakeup = Wakeup(tmp_path / "link.db")
    wakeup.wait(0)
    writer = _later(lambda: operations.run(store, "block.allocate", {"block": "lan"}))
    assert wakeup.wait(LONG) is True
    writer.join()
    wakeup.close()
    store.close()


def test_a_poke_from_another_thread_ends_the_wait_and_pokes_merge(tmp_path):
    wakeup = Wakeup()  # no file: pokes only (a server backend)
    assert not wakeup.watching
    poker = _later(wakeup.poke)
    assert wakeup.wait(LONG) is True
    poker.join()
    wakeup.poke()
    wakeup.poke()
    assert wakeup.wait(LONG) is True
    assert wakeup.wait(0.05) is False  # the two pokes were one wake-up
    wakeup.close()
    wakeup.poke()  # after close: nothing, no error
    with pytest.raises(ValueError):
        wakeup.wait(0)


def test_a_wake_up_soon_after_the_last_waits_for_the_poll():
    """A stream of commits is looked at once per gap: a wake-up within `gap` of the one
    that last ended a wait ends this one `gap` after that one, or at its timeout."""
    wakeup = Wakeup()
    wakeup.poke()
    assert wakeup.wait(LONG, gap=LONG) is True  # the first: at once
    wakeup.poke()
    assert wakeup.wait(0.1, gap=LONG) is False  # too soon: the timeout comes first
    wakeup.poke()
    first = time.monotonic()
    assert wakeup.wait(LONG, gap=0.0) is True  # no gap: every wake-up counts
    wakeup.poke()
    assert wakeup.wait(LONG, gap=0.3) is True  # ended 0.3 s after the last one
    assert time.monotonic() - first >= 0.3
    wakeup.close()


def test_the_group_commit_tells_of_writes_only(store_url):
    """Every write committed through melanged's lanes (batched or not) is told once;
    a read and a refused write are not."""
    store = Store(store_url, release_hold=0)
    group = GroupCommit()
    told: list[int] = []
    group.committed = lambda: told.append(1)
    try:
        group.run(store, "block.create", {"cidr": "10.6.0.0/24", "name": "w"},
                  actor="t", via="socket")  # fmt: skip
        assert len(told) == 1
        made = group.run(store, "block.allocate", {"block": "w"}, actor="t", via="socket")
        assert len(told) == 2
        group.run(store, "ip.show", {"address": made[0]["address"]}, actor="t", via="socket")
        with pytest.raises(NotFound):
            group.run(store, "block.allocate", {"block": "nope"}, actor="t", via="socket")
        assert len(told) == 2
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_melanged_renders_its_own_commit_before_its_poll(tmp_path, kind, backends):
    """melanged polling every 30 s still renders an allocation made through its HTTP
    API at once: on SQLite by inotify, on a server backend by the group commit's word."""
    store_url = backends.url(kind, tmp_path)
    tokens = make_tokens(store_url)
    hosts = tmp_path / "dhcp" / "hosts"
    config = tmp_path / "melange.conf"
    config.write_text(f"[melanged]\npoll_interval = {LONG}\nwait_min = 0.05\n")
    daemon = MelangedHttp(tmp_path, ["--hostsfile", str(hosts)], config=config)
    daemon.argv += ["--db", store_url, "--http", f"127.0.0.1:{daemon.port}"]
    daemon.start()
    try:
        daemon.wait_serving()
        wait_until(hosts.exists, what="the first render")
        time.sleep(0.3)  # melanged is in its 30-second wait now
        with daemon.client(tokens["admin"]) as client:
            made = client.post("/v1/blocks", json={"cidr": "10.7.0.0/24", "name": "lan"})
            assert made.status_code == 201, made.text
            got = client.post("/v1/blocks/lan/allocations", json={"mac": "02:00:00:00:07:01"})
            assert got.status_code == 201, got.text
        waited = wait_until(lambda: "02:00:00:00:07:01" in hosts.read_text(), timeout=LONG / 3,
                            what="the allocation in the hosts file")  # fmt: skip
        assert waited < LONG / 3
    finally:
        assert daemon.stop() == 0


def test_a_wake_up_that_finds_nothing_new_looks_again_soon():
    """SQLite appends a commit to its WAL (the event) before syncing it and making it
    visible: a look that finds nothing after a wake-up is followed by RECHECKS more,
    RECHECK apart, until one finds the change (or they run out)."""
    from melanged.daemon import RECHECKS, _rechecks

    left = _rechecks(woken=True, changed=False, left=0)
    assert left == RECHECKS
    seen = [left]
    while left:
        left = _rechecks(woken=False, changed=False, left=left)
        seen.append(left)
    assert seen == list(range(RECHECKS, -1, -1))
    assert _rechecks(woken=False, changed=True, left=3) == 0
    assert _rechecks(woken=True, changed=True, left=0) == 0
    assert _rechecks(woken=False, changed=False, left=0) == 0
