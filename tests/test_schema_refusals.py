"""Stores that migrations cannot start from are refused with exit 6 and one line, before
anything is touched: a schema revision this melange has no script for, and melange's
tables under an empty alembic_version (both were exit 1, "Can't locate revision" and
"table already exists")."""

from __future__ import annotations

from pathlib import Path

import pytest

from melange.store import SCHEMA_HEAD, Store
from tests.support.backends import fresh_database
from tests.support.cli import Melange
from tests.support.sql import dump_store, execute_sql


@pytest.fixture
def own_store(backend: str, tmp_path: Path):
    """A migrated store of the test's own (its schema revision is changed on purpose,
    which the shared server databases must not see)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'own.db'}"
        Store(url).ensure_schema()
        yield url
        return
    database = fresh_database(backend)
    try:
        Store(database.url).ensure_schema()
        yield database.url
    finally:
        database.drop()


def _melange(url: str, tmp_path: Path) -> Melange:
    env = {"MELANGE_CONFIG": None, "MELANGE_DB": None, "MELANGE_OUTPUT": None,
           "MELANGE_SOCKET": None, "MELANGE_DEBUG": None,
           "XDG_DATA_HOME": str(tmp_path / "xdg")}  # fmt: skip
    return Melange(url, env)


def _refused(melange: Melange, *args: str) -> str:
    result = melange(*args)
    assert result.exit_code == 6, (args, result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "internal error" not in result.stderr
    return result.stderr


def test_an_unknown_revision_is_refused_by_db_upgrade(own_store, tmp_path):
    melange = _melange(own_store, tmp_path)
    melange.ok("block", "create", "10.0.0.0/24", "--name", "a")
    execute_sql(own_store, "UPDATE alembic_version SET version_num = '9999'")
    before = dump_store(own_store)
    message = _refused(melange, "db", "upgrade")
    assert "'9999'" in message and "does not know" in message and "upgrade melange" in message
    _refused(melange, "block", "list")
    assert dump_store(own_store) == before


def test_an_empty_alembic_version_is_refused_by_every_command(own_store, tmp_path):
    melange = _melange(own_store, tmp_path)
    melange.ok("block", "create", "10.0.0.0/24", "--name", "a")
    execute_sql(own_store, "DELETE FROM alembic_version")
    before = dump_store(own_store)
    for args in (("db", "upgrade"), ("db", "current"), ("block", "list"),
                 ("block", "create", "10.1.0.0/24")):  # fmt: skip
        message = _refused(melange, *args)
        assert "alembic_version is empty" in message, message
    assert dump_store(own_store) == before
    # Once its revision is recorded again, the store works as before.
    execute_sql(own_store, f"INSERT INTO alembic_version (version_num) VALUES ('{SCHEMA_HEAD}')")
    assert melange.json("block", "list")[0]["name"] == "a"

