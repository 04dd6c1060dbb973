"""Shared fixtures: a real SQLite store per test, and a CLI runner bound to it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parent))

from localusers import root_sleep, users  # noqa: E402, F401
from realparts import dnsmasq_server, netns_pair  # noqa: E402, F401

from melange.clock import SYSTEM, Clock  # noqa: E402
from melange_cli.context import App  # noqa: E402
from melange_cli.main import cli  # noqa: E402


@dataclass
class Melange:
    """Runs `melange --db <store> ARGS…` in-process, as a script would."""

    db: Path | str
    env: dict
    socket: str | None = None  # through melanged's socket instead of opening the store
    clock: Clock = SYSTEM  # what the store reads the time from (tests/support/clock.py)

    def __call__(self, *args: str, output: str = "plain", input: str | None = None) -> Result:
        runner = CliRunner()
        where = ["--socket", self.socket] if self.socket else ["--db", str(self.db)]
        argv = [*where, "-o", output, *args]
        return runner.invoke(cli, argv, env=self.env, input=input, catch_exceptions=False,
                             obj=App(clock=self.clock))  # fmt: skip

    def ok(self, *args: str, output: str = "plain") -> str:
        """Run and insist on success; the stdout."""
        result = self(*args, output=output)
        assert result.exit_code == 0, (args, result.exit_code, result.stderr)
        return result.stdout

    def json(self, *args: str):
        return json.loads(self.ok(*args, output="json"))


BACKENDS = ["sqlite", "mysql", "postgresql"]


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test is about SQLite files themselves")
    config.addinivalue_line("markers", "servers_only: the test needs MariaDB/PostgreSQL row locks")
    config.addinivalue_line("markers", "direct_only: the test is about the CLI opening the store")


def pytest_generate_tests(metafunc) -> None:
    """Store-level tests run once per backend, CLI tests also once through melanged's
    socket (on SQLite); markers narrow the list, never skip."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker
    if marker("sqlite_only"):
        chosen = ["sqlite"]
    elif marker("servers_only"):
        chosen = ["mysql", "postgresql"]
    else:
        chosen = BACKENDS
    if "melange" not in metafunc.fixturenames:
        metafunc.parametrize("backend", chosen)
        return
    combos = [(backend, "direct") for backend in chosen]
    if "sqlite" in chosen and not marker("direct_only"):
        combos.append(("sqlite", "socket"))
    metafunc.parametrize(("backend", "channel"), combos, ids=[f"{b}-{c}" for b, c in combos])


@pytest.fixture(scope="session")
def backends():
    from backends import Backends

    registry = Backends()
    yield registry
    registry.close()


@pytest.fixture
def store_url(backend: str, backends, tmp_path: Path) -> str:
    """An empty, migrated store on each backend in turn (one database per test run)."""
    return backends.url(backend, tmp_path)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "melange.db"


@pytest.fixture
def melange(backend: str, channel: str, backends, store_path: Path, tmp_path: Path):
    """The CLI on a fresh store: an SQLite file (`db` is its Path) or a server URL;
    with channel "socket", every command goes through a real melanged."""
    config = tmp_path / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 48h\n")
    env = {"MELANGE_CONFIG": str(config), "MELANGE_DB": None, "MELANGE_OUTPUT": None,
           "MELANGE_SOCKET": None, "MELANGE_DEBUG": None, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    db = store_path if backend == "sqlite" else backends.url(backend, tmp_path)
    if channel == "direct":
        yield Melange(db, env)
        return
    from socket_daemon import SocketDaemon

    with SocketDaemon(f"sqlite:///{db}", tmp_path / "daemon", config) as daemon:
        yield Melange(db, env, socket=str(daemon.socket))


def execute_sql(db: Path | str, statement: str) -> list[tuple]:
    """Run one SQL statement on a store (a file path or a URL); its rows, if any."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = db if isinstance(db, str) else f"sqlite:///{db}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        result = conn.execute(text(statement))
        rows = [tuple(r) for r in result] if result.returns_rows else []
    engine.dispose()
    return rows


def dump_store(db: Path | str) -> list[tuple]:
    """Every row of every table, sorted: equal dumps mean an unchanged store."""
    from sqlalchemy import MetaData, create_engine, select
    from sqlalchemy.pool import NullPool

    url = db if isinstance(db, str) else f"sqlite:///{db}"
    engine = create_engine(url, poolclass=NullPool)
    rows = []
    with engine.connect() as conn:
        meta = MetaData()
        meta.reflect(conn)
        for name, table in sorted(meta.tables.items()):
            for row in conn.execute(select(table)):
                rows.append((name, *map(repr, row)))
    engine.dispose()
    return sorted(rows)
