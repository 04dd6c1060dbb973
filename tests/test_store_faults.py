"""A damaged store, a duplicate that is a real conflict, a connection the server dropped:
each is one line with the contract's code (6, 4) or a clean success, never exit 1 or a
traceback on stderr.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, event, insert, text
from sqlalchemy.pool import NullPool

from melange import operations
from melange import store as store_module
from melange.clock import utcnow
from melange.errors import Conflict
from melange.models import policies
from melange.store import Store
from melange_cli.main import cli
from tests.support.melanged_harness import cli as harness_cli

PAGE = 4096
COMMANDS = [
    ("block", "list"),
    ("ip", "list"),
    ("dhcp", "hosts"),
    ("policy", "show", "p"),
    ("block", "allocate", "web", "--mac", "02:00:00:00:ff:ff"),
    ("export",),
]


def run(db, *args: str):
    env = {"MELANGE_DB": None, "MELANGE_SOCKET": None, "MELANGE_CONFIG": None}
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env)


# -- damaged SQLite files


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A store with blocks, addresses, a policy and an audit trail, closed cleanly."""
    store = tmp_path_factory.mktemp("pristine") / "melange.db"
    for args in (
        ("block", "create", "10.0.0.0/22", "--name", "web", "--network", "net1"),
        ("block", "allocate", "web", "--count", "300"),
        ("block", "allocate", "web", "--mac", "02:00:00:00:00:01", "--hostname", "h1"),
        ("policy", "create", "p"),
        ("policy", "add-range", "p", "--offset", "0", "--length", "4"),
    ):
        harness_cli(str(store), *args)
    assert sorted(p.name for p in store.parent.iterdir()) == ["melange.db"]
    return store


def test_db_check_passes_on_an_intact_store(pristine, tmp_path):
    copy = tmp_path / "melange.db"
    shutil.copy(pristine, copy)
    result = run(copy, "-o", "json", "db", "check")
    assert result.exit_code == 0, result.stderr
    assert '"status": "ok"' in result.stdout


def test_every_damaged_page_is_exit_6_or_unnoticed_never_1_and_db_check_finds_it(
    pristine, tmp_path
):
    pages = pristine.stat().st_size // PAGE
    assert pages > 20
    missed = []
    for page in range(1, pages):  # page 0 holds the header: "not a database" throughout
        damaged = tmp_path / f"page{page}.db"
        shutil.copy(pristine, damaged)
        with open(damaged, "r+b") as handle:
            handle.seek(page * PAGE)
            handle.write(os.urandom(PAGE))
        for args in COMMANDS:
            result = run(damaged, *args)
            assert result.exit_code in (0, 6), (page, args, result.stderr)
            assert "Traceback" not in result.stderr
            if result.exit_code == 6:
                assert len(result.stderr.splitlines()) == 1, result.stderr
        check = run(damaged, "db", "check")
        assert check.exit_code in (0, 6), (page, check.stderr)
        if check.exit_code == 0:
            missed.append(page)
        else:
            line = check.stderr.splitlines()
            assert len(line) == 1 and "damaged" in line[0] or "not a database" in line[0], line
    assert missed == []


def test_db_check_on_every_backend(store_url):
    assert run(store_url, "db", "upgrade").exit_code == 0
    result = run(store_url, "-o", "json", "db", "check")
    assert result.exit_code == 0, result.stderr
    assert '"tables": ' in result.stdout


# -- IntegrityError: a real conflict at once, a race retried once


def test_a_refused_duplicate_is_a_conflict_after_at_most_one_retry(store_url):
    """A change the store's unique keys refuse (no check before it, as a raced one
    would be) is tried at most twice, not 25 times with back-off (seconds)."""
    store = Store(store_url)
    attempts = 0

    def add(conn):
        nonlocal attempts
        attempts += 1
        conn.execute(insert(policies).values(name="dup", created_at=utcnow()))

    store.write(add)
    attempts = 0
    with pytest.raises(Conflict):
        store.write(add)
    assert attempts <= store_module.INTEGRITY_ATTEMPTS == 2
    store.close()


def _waiting_insert(conn) -> bool:
    """Whether some session waits with its INSERT INTO policies (on the winner's key)."""
    if conn.dialect.name == "postgresql":
        query = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND datname = current_database() "
                 "AND query LIKE 'INSERT INTO policies%'")  # fmt: skip
    else:
        query = ("SELECT count(*) FROM information_schema.processlist "
                 "WHERE id != CONNECTION_ID() AND db = DATABASE() "
                 "AND info LIKE 'INSERT INTO policies%'")  # fmt: skip
    waiting = conn.execute(text(query)).scalar() > 0
    conn.rollback()
    return waiting


@pytest.mark.servers_only
def test_a_raced_duplicate_policy_create_is_exit_4_after_one_retry(store_url):
    """Two `policy create p` at once: the loser's check saw nothing, its INSERT waits
    on the winner's key; once the winner commits, one more run says "exists"."""
    store = Store(store_url)
    inserts = 0

    @event.listens_for(store.engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, *_args):
        nonlocal inserts
        inserts += statement.lstrip().upper().startswith("INSERT INTO POLICIES")

    winner_engine = create_engine(store_url, poolclass=NullPool)
    outcome: list[BaseException | dict] = []
    with winner_engine.connect() as winner, winner_engine.connect() as watcher:
        winner.execute(insert(policies).values(name="p", created_at=utcnow()))

        def loser():
            try:
                outcome.append(operations.run(store, "policy.create", {"name": "p"}))
            except Exception as error:  # noqa: BLE001
                outcome.append(error)

        thread = threading.Thread(target=loser)
        thread.start()
        for _ in range(10_000):  # until the loser waits on the key (bounded, never timed)
            if _waiting_insert(watcher) or not thread.is_alive():
                break
        winner.commit()
        thread.join(timeout=60)
    winner_engine.dispose()
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    assert outcome[0].exit_code == 4
    assert "already exists" in outcome[0].message
    assert inserts <= 2
    print("INSERTS", inserts)
    store.close()


def test_a_repeated_policy_create_is_exit_4(melange):
    melange.ok("policy", "create", "p")
    result = melange("policy", "create", "p")
    assert result.exit_code == 4
    assert result.stderr.splitlines() == ["Error: policy 'p' already exists"]


# -- a connection the server dropped


def _kill(url: str, store: Store) -> None:
    """Drop the store's kept connection from the server's side (KILL / terminate)."""
    backend_id = store.read(
        lambda conn: conn.execute(
            text("SELECT pg_backend_pid()" if conn.dialect.name == "postgresql"
                 else "SELECT CONNECTION_ID()")
        ).scalar()
    )  # fmt: skip
    admin = create_engine(url, poolclass=NullPool)
    with admin.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_id})
        else:
            conn.execute(text(f"KILL {int(backend_id)}"))
        conn.commit()
    admin.dispose()


@pytest.mark.servers_only
@pytest.mark.parametrize("idle_reuse", [0.0, 3600.0], ids=["pinged", "reused"])
def test_a_dropped_connection_leaves_nothing_on_stderr(store_url, capfd, monkeypatch,
                                                      idle_reuse):  # fmt: skip
    """Killed between two commands of one process: the next allocation succeeds and
    prints nothing on stderr (it printed SQLAlchemy's 19-line "Exception during
    reset" when the kept connection went back to the pool after SERVER_IDLE_REUSE)."""
    monkeypatch.setattr(store_module, "SERVER_IDLE_REUSE", idle_reuse)
    store = Store(store_url)
    operations.run(store, "block.create", {"cidr": "10.0.0.0/24", "name": "web"})
    capfd.readouterr()
    for round_ in range(3):
        _kill(store_url, store)
        allocated = operations.run(
            store, "block.allocate", {"block": "web", "mac": f"02:00:00:00:00:0{round_ + 1}"}
        )
        assert allocated[0]["address"] == f"10.0.0.{round_ + 1}"
    _kill(store_url, store)
    store.close()
    out, err = capfd.readouterr()
    assert err == ""
