"""Shared fixtures: a real SQLite store per test, and a CLI runner bound to it."""

from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parent))

from realparts import dnsmasq_server, netns_pair  # noqa: E402, F401

from melange_cli.main import cli  # noqa: E402


@dataclass
class Melange:
    """Runs `melange --db <store> ARGS…` in-process, as a script would."""

    db: Path
    env: dict

    def __call__(self, *args: str, output: str = "plain", input: str | None = None) -> Result:
        runner = CliRunner()
        argv = ["--db", str(self.db), "-o", output, *args]
        return runner.invoke(cli, argv, env=self.env, input=input, catch_exceptions=False)

    def ok(self, *args: str, output: str = "plain") -> str:
        """Run and insist on success; the stdout."""
        result = self(*args, output=output)
        assert result.exit_code == 0, (args, result.exit_code, result.stderr)
        return result.stdout

    def json(self, *args: str):
        return json.loads(self.ok(*args, output="json"))


@pytest.fixture(scope="session")
def backends():
    from backends import Backends

    registry = Backends()
    yield registry
    registry.close()


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def store_url(request, backends, tmp_path: Path) -> str:
    """An empty, migrated store on each backend in turn (a fresh database per run)."""
    return backends.url(request.param, tmp_path)


@pytest.fixture(params=["mysql", "postgresql"])
def server_store_url(request, backends, tmp_path: Path) -> str:
    """Like store_url, on the server backends only (row locks, many writers)."""
    return backends.url(request.param, tmp_path)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "melange.db"


@pytest.fixture
def melange(store_path: Path, tmp_path: Path, monkeypatch) -> Melange:
    config = tmp_path / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 48h\n")
    env = {
        "MELANGE_CONFIG": str(config),
        "MELANGE_DB": None,
        "MELANGE_OUTPUT": None,
        "MELANGE_SOCKET": None,
        "MELANGE_DEBUG": None,
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
    }
    return Melange(store_path, env)


def dump_store(path: Path) -> list[tuple]:
    """Every row of every melange table, sorted: equal dumps mean an unchanged store."""
    with sqlite3.connect(path) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
            )
        ]
        rows = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                rows.append((table, *map(repr, row)))
    return sorted(rows)
