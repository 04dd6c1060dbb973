"""The lean path on MariaDB and PostgreSQL (melange.leanstore): the hot direct commands
on PyMySQL or psycopg alone, with the statements shipped for each.

As on SQLite (tests/test_lean_path.py), what it does must be exactly what the full
path does, so each case runs on twin databases, one lean and one full, and compares
answers and rows; what it cannot serve it hands back, rolled back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from melange import operations, shipped
from melange.errors import NotFound, StoreUnavailable
from melange.lean import NeedsFullPath
from melange.leanstore import LeanServerStore, lean_store, server_target
from melange.prepared import REGISTRY
from melange.store import Store
from tests.support.backends import ServerDatabase
from tests.test_lean_path import ROOT, STEPS, TABLES, FixedClock, build_hierarchy

pytestmark = pytest.mark.servers_only


@pytest.fixture
def twins(backend: str) -> Iterator[tuple[str, str]]:
    """Two fresh, migrated databases on the server, each with blocks B and V6."""
    databases = [ServerDatabase(backend) for _ in range(2)]
    try:
        for database in databases:
            database.create()
            full = Store(database.url, clock=FixedClock())
            operations.run(full, "block.create", {"cidr": "10.0.0.0/24", "name": "B"})
            operations.run(full, "block.create", {"cidr": "2001:db8::/64", "name": "V6"})
            full.close()
        yield databases[0].url, databases[1].url
    finally:
        for database in databases:
            database.drop()


def _dump(url: str) -> dict[str, list]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]  # noqa: S608
                    for t in TABLES}  # fmt: skip
    finally:
        engine.dispose()


def _lean(url: str, **options) -> LeanServerStore:
    store = lean_store(url, release_hold=options.pop("release_hold", 48 * 3600),
                       clock=FixedClock())  # fmt: skip
    assert isinstance(store, LeanServerStore)
    return store


def test_the_lean_path_on_a_server_writes_and_answers_exactly_what_the_full_path_does(twins):
    lean_url, full_url = twins
    lean, full = _lean(lean_url), Store(full_url, clock=FixedClock())
    try:
        for name, params in STEPS:
            # Called directly, a lean store that cannot serve raises NeedsFullPath.
            assert operations.run(lean, name, dict(params)) == operations.run(full, name, params)
    finally:
        lean.close()
        full.close()
    assert _dump(lean_url) == _dump(full_url)
    assert len(_dump(lean_url)["audit_log"]) == 2 + 9 + 5


def test_block_show_and_dhcp_hosts_on_a_server_are_the_full_paths(twins):
    """`block show` of every kind of block, and the hosts file, streamed past one batch."""
    from melange import hostlines

    url = twins[0]
    build_hierarchy(url)
    full = Store(url, clock=FixedClock(), release_hold=3600)
    operations.run(full, "block.create", {"cidr": "10.64.0.0/16", "name": "big", "network": "n1"})
    operations.run(full, "mac_range.create", {"cidr": "02:64:00:00:00:00/24"})
    operations.run(full, "block.allocate", {"block": "big", "count": hostlines.STREAM_BATCH + 50})
    operations.run(full, "block.allocate", {"block": "V6", "mac": "02:00:00:00:06:01",
                                            "hostname": "six"})  # fmt: skip
    operations.run(full, "block.allocate", {"block": "big", "mac": "02:00:00:00:00:0c"})
    operations.run(full, "ip.release", {"address": "10.64.0.9"})
    lean = _lean(url, release_hold=3600)
    try:
        for ref in ("B", "V6", "P", "S", "SS", "172.16.1.0/26", "w3", "WIDE", "big"):
            assert operations.run(lean, "block.show", {"block": ref}) == operations.run(
                full, "block.show", {"block": ref}
            ), ref
        for params in ({}, {"network": "n1"}):
            whole = operations.run(full, "dhcp.hosts", params)
            assert operations.run(lean, "dhcp.hosts", params) == whole
            chunks: list[bytes] = []
            operations.run(lean, "dhcp.hosts", {**params, "sink": chunks.append})
            assert b"".join(chunks).decode() == whole and len(chunks) >= 1 + (not params)
        assert "02:00:00:00:00:0c,10.64." in operations.run(lean, "dhcp.hosts", {"network": "n1"})
        with pytest.raises(NotFound):
            operations.run(lean, "dhcp.hosts", {"network": "nosuch"})
    finally:
        lean.close()
        full.close()


def test_the_shipped_statements_are_what_the_live_server_compiles(backend, store_url):
    """The shipped modules are compiled without a server; the dialect of a connected
    engine knows the server (MariaDB or MySQL, which release): every shipped statement,
    its parameters and conversions must come out the same from it."""
    from importlib import import_module

    module = import_module(f"melange.shipped_{backend}")
    for hot in shipped.HOT_MODULES:  # they register their statements when imported
        import_module(hot)
    engine = create_engine(store_url, poolclass=NullPool, paramstyle="format")
    try:
        with engine.connect():
            dialect = engine.dialect  # initialised from the server
        assert sorted(module.STATEMENTS) == sorted(REGISTRY)
        for name in sorted(REGISTRY):
            sql, *rest = shipped.entry(REGISTRY[name].statement, dialect)
            shipped_sql, *shipped_rest = module.STATEMENTS[name]
            # MariaDB's dialect quotes more words (`position`) than MySQL's; both run either.
            assert (sql.replace("`", ""), rest) == (shipped_sql.replace("`", ""), shipped_rest)
    finally:
        engine.dispose()


def test_what_the_lean_path_cannot_serve_on_a_server_is_rolled_back_and_handed_on(twins):
    url = twins[0]
    full = Store(url, clock=FixedClock())
    operations.run(full, "block.create", {"cidr": "10.1.0.0/24", "name": "N", "network": "n1"})
    operations.run(full, "interface.create", {"vif": "vif1", "network": "n1",
                                              "mac": "02:00:00:00:00:01"})  # fmt: skip
    full.close()
    before = _dump(url)
    lean = _lean(url)
    try:
        with pytest.raises(NeedsFullPath):  # an interface is looked up by SQLAlchemy
            operations.run(lean, "block.allocate", {"block": "N", "interface": "vif1"})
        # The same connection serves the next transaction; the core's refusal is its own.
        with pytest.raises(NotFound):
            operations.run(lean, "ip.show", {"address": "10.0.0.1"})
    finally:
        lean.close()
    assert _dump(url) == before


def test_a_commit_the_server_never_confirmed_is_exit_6_not_run_again(twins, backend):
    """The connection dies after the allocation's statements, before COMMIT answers: the
    change was not made, and the command must not be run again on the full path (it
    could have been made): StoreUnavailable, the store as it was."""
    url = twins[0]
    before = _dump(url)
    lean = _lean(url)
    killer = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def allocate_then_lose_the_connection(conn):
        from melange import addresses

        made = addresses.allocate(conn, "B", mac="00:11:22:33:44:99")
        cursor = conn._raw.cursor()
        own = "SELECT CONNECTION_ID()" if backend == "mysql" else "SELECT pg_backend_pid()"
        cursor.execute(own)
        pid = cursor.fetchone()[0]
        cursor.close()
        kill = f"KILL {pid}" if backend == "mysql" else f"SELECT pg_terminate_backend({pid})"
        with killer.connect() as other:
            other.execute(text(kill))
        return made

    try:
        with pytest.raises(StoreUnavailable) as lost:
            lean.run(allocate_then_lose_the_connection, write=True)
        assert "lost the store" in str(lost.value)
        assert "00:11:22:33:44:99" not in json.dumps(_dump(url)["ip_addresses"], default=str)
        assert _dump(url) == before
        # The next transaction connects anew.
        assert operations.run(lean, "block.allocate", {"block": "B"})[0]["address"] == "10.0.0.1"
    finally:
        lean.close()
        killer.dispose()


def test_only_a_plain_server_url_is_served_lean():
    target = server_target("mysql+pymysql://ipam:s%40cret@db.example:3307/melange")
    assert target is not None
    assert (target.backend, target.host, target.port, target.database) == (
        "mysql", "db.example", 3307, "melange")  # fmt: skip
    assert (target.user, target.password) == ("ipam", "s@cret")
    v6 = server_target("postgresql+psycopg://u@[2001:db8::5]/melange")
    assert v6 is not None and (v6.host, v6.port, v6.password) == ("2001:db8::5", None, None)
    assert server_target("mariadb+pymysql://root@127.0.0.1/test").backend == "mysql"
    for url in (
        "mysql+pymysql://u@h/melange?ssl_ca=/etc/ca.pem",
        "postgresql+psycopg://u@/melange?host=/run/postgresql",
        "postgresql+psycopg://u@h/",
        "postgresql+psycopg://u@h",
        "postgresql://u@h/melange",
        "mysql+mysqldb://u@h/melange",
        "mysql+pymysql://u:p@ss@h/melange",
        "mysql+pymysql://u@h:99999/melange",
        "mysql+pymysql://u@h:0/melange",
        "postgresql+psycopg://u@h:/melange",
        "mysql+pymysql://u@::1/melange",
        "mysql+pymysql://u@h/mel%61nge",
        "sqlite:////srv/melange.db",
    ):
        assert server_target(url) is None, url


def _melange(url: str, *args: str) -> subprocess.CompletedProcess:
    """A direct melange process; its stderr's last line names the heavy libraries it
    imported, as JSON."""
    code = (
        "import sys, json\n"
        "from melange_cli.main import cli\n"
        "code = cli.main(sys.argv[1:], standalone_mode=False)\n"
        "heavy = {'sqlalchemy', 'netaddr', 'alembic'} & {m.split('.')[0] for m in sys.modules}\n"
        "print(json.dumps(sorted(heavy)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", code, "--db", url, "-o", "json", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)  # fmt: skip


def test_direct_hot_commands_on_a_server_import_no_sqlalchemy(twins):
    url = twins[0]

    def run(*args: str) -> object:
        done = _melange(url, *args)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stderr.strip().splitlines()[-1]) == [], args
        return json.loads(done.stdout)

    made = run("block", "allocate", "B", "--mac", "00:11:22:33:44:55", "--hostname", "h")
    assert made["address"] == "10.0.0.1"
    assert run("ip", "show", "10.0.0.1")["mac"] == "00:11:22:33:44:55"
    assert len(run("block", "allocate", "B", "--count", "2")) == 2
    assert run("ip", "release", "10.0.0.1")["state"] == "held"
    assert run("block", "show", "B")["utilization"]["used"] == 2
    assert run("dhcp", "hosts") == []  # the held address's reservation is gone


def test_lean_processes_on_a_server_allocating_at_once_each_get_their_own_address(twins):
    url = twins[0]
    code = "import sys; from melange_cli.main import main; sys.exit(main())"
    argv = [sys.executable, "-c", code, "--db", url, "-o", "plain", "block", "allocate", "B"]
    processes = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]  # fmt: skip
    answers = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 8, answers
    assert len({out.strip() for out, _ in answers}) == 8
    rows = _dump(url)
    assert len(rows["ip_addresses"]) == 8


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://root:secret@127.0.0.1:1/melange",
        "postgresql+psycopg://postgres:secret@127.0.0.1:1/melange",
    ],
)
def test_an_unreachable_server_is_exit_6_in_the_full_paths_words_at_once(url):
    """No second connect (and timeout) on the full path: the lean store says it."""
    lean = lean_store(url, release_hold=3600)
    assert isinstance(lean, LeanServerStore)
    with pytest.raises(StoreUnavailable) as lean_error:
        operations.run(lean, "ip.show", {"address": "10.0.0.1"})
    full = Store(url)
    with pytest.raises(StoreUnavailable) as full_error:
        operations.run(full, "ip.show", {"address": "10.0.0.1"})
    full.close()
    assert str(lean_error.value) == str(full_error.value)
    assert "secret" not in str(lean_error.value)


def test_a_lean_transaction_is_read_committed_as_the_full_paths(twins, backend):
    """Once a writer holds a block's lock it must see what the previous holder committed
    (melange.leanstore ISOLATION); MariaDB's default, REPEATABLE READ, would not."""
    lean = _lean(twins[0])

    def isolation(conn) -> str:
        cursor = conn._raw.cursor()
        try:
            if backend == "postgresql":
                cursor.execute("SHOW transaction_isolation")
            else:
                cursor.execute("SELECT @@SESSION.tx_isolation")
            return str(cursor.fetchone()[0]).upper().replace("-", " ")
        finally:
            cursor.close()

    try:
        assert lean.run(isolation, write=False) == "READ COMMITTED"
    finally:
        lean.close()


def test_postgresql_connections_run_without_jit_unless_the_url_says():
    """A poorly estimated page query spent 0.3 s compiling for a 3 ms run (every page
    of `ip list`); melange's statements are short, so its connections turn JIT off
    (melange.leanstore driver_options). A URL's own `options` are the operator's."""
    database = ServerDatabase("postgresql")
    database.create()

    def jit(conn) -> str:
        cursor = conn._raw.cursor()
        try:
            cursor.execute("SHOW jit")
            return str(cursor.fetchone()[0])
        finally:
            cursor.close()

    try:
        lean = _lean(database.url)
        try:
            assert lean.run(jit, write=False) == "off"
        finally:
            lean.close()
        for url, wanted in ((database.url, "off"), (database.url + "?options=-c%20jit%3Don", "on")):
            full = Store(url)
            try:
                assert full.read(lambda conn: conn.execute(text("SHOW jit")).scalar_one()) == wanted
            finally:
                full.close()
    finally:
        database.drop()
