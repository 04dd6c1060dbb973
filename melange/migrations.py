"""Alembic, driven from code: the store upgrades only when asked (or when empty).

Alembic is imported inside the functions only, so ordinary commands do not pay
for it. Migrations run on a connection the store hands out (`Migratable`): this
module does not import the store, which imports it to create an empty store's
schema on first use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, text

from melange.errors import SchemaOutdated, StoreUnavailable
from melange.prepared import on_galera, raw_connection

# The newest revision among schema/versions (a test holds the two together); the
# store refuses to work on any other.
SCHEMA_HEAD = "0010"


class Migratable(Protocol):
    """What migrations need of a store (melange.store.Store is one)."""

    def connection(self, *, write: bool) -> AbstractContextManager[Connection]:
        """A connection outside any transaction."""
        ...

    def schema_changed(self) -> None:
        """Forget that the schema was checked."""
        ...

    def current_revision(self) -> str | None:
        """The store's revision, None for an empty store."""
        ...


def schema_dir() -> Path:
    """Alembic's scripts: beside the source tree, or where the wheel put them."""
    here = Path(__file__).resolve().parent.parent / "schema"
    if (here / "env.py").is_file():
        return here
    return Path(sys.prefix) / "share" / "melange" / "schema"


def _config(connection: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(schema_dir()))
    config.attributes["connection"] = connection
    return config


def _lock(conn: Connection) -> None:
    """Two first commands on an empty MySQL/PostgreSQL store must not both create it."""
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.execute(text("SELECT GET_LOCK('melange_schema', 60)"))
    elif conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7071960)"))


def _unlock(conn: Connection) -> None:
    """MySQL's named lock belongs to the session, which a pool keeps: let it go."""
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.execute(text("SELECT RELEASE_LOCK('melange_schema')"))
        conn.commit()


def _caught_up(conn: Connection) -> None:
    """On a Galera node, wait until the node has applied what the cluster committed
    before now. A schema just made through another node replicates its tables (DDL, in
    order) before its alembic_version row (applied a moment later), and the schema lock
    is each node's own: without the wait a first command on the second node saw tables
    without a revision and refused the store as foreign (exit 6)."""
    if not on_galera(conn):
        return
    # Session-wide for one read and back (MariaDB's `SET STATEMENT` is not MySQL's).
    before = conn.execute(text("SELECT @@SESSION.wsrep_sync_wait")).scalar_one()
    conn.execute(text("SET SESSION wsrep_sync_wait = 1"))
    try:
        conn.execute(text("SELECT 1"))
    finally:
        conn.execute(text("SET SESSION wsrep_sync_wait = :before"), {"before": before})


def _revision(conn: Connection) -> str | None:
    """The recorded revision; None without an alembic_version table, "" when the
    table is there without its row."""
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or ""


def _check_known(conn: Connection, revision: str | None) -> None:
    """Refuse (exit 6) a store migrations cannot start from, before they touch it:
    a revision no script of this melange has (Alembic's "Can't locate revision"),
    or melange's tables with an empty alembic_version (running the first migration
    on them would fail half-way on "table already exists")."""
    from sqlalchemy import inspect

    if revision == "":
        if set(inspect(conn).get_table_names()) - {"alembic_version"}:
            raise StoreUnavailable(
                "the store has tables but its schema revision is missing (alembic_version "
                "is empty); restore it from a backup, or record the revision its tables "
                "match with `alembic stamp`"
            )
    elif revision is not None and revision not in known_revisions():
        raise SchemaOutdated(
            f"the store's schema is at revision {revision[:40]!r}, which this melange "
            f"does not know (its newest is {head_revision()}); a newer melange made it: "
            "upgrade melange"
        )


def upgrade(store: Migratable, revision: str = "head", *, only_if_empty: bool = False) -> None:
    """Apply migrations up to `revision` in one locked transaction where the backend can.

    With `only_if_empty`, nothing happens unless the store still has no schema once
    the lock is held: another process (or thread) may have created it meanwhile.
    """
    from alembic import command

    _migrate(store, lambda conn: command.upgrade(_config(conn), revision), only_if_empty)


def downgrade(store: Migratable, revision: str) -> None:
    """Go back to `revision` (tests, and an operator undoing an upgrade), as `upgrade` does."""
    from alembic import command

    _migrate(store, lambda conn: command.downgrade(_config(conn), revision), False)


def _migrate(store: Migratable, step: Callable[[Connection], None], only_if_empty: bool) -> None:
    with store.connection(write=True) as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild tables; with foreign keys on, dropping the
            # old table would cascade or fail. Checked again before commit.
            raw_connection(conn).execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                _lock(conn)
                _caught_up(conn)
                current = _revision(conn)
                if only_if_empty and current:
                    return
                _check_known(conn, current)
                step(conn)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("migration left rows that break a foreign key")
        finally:
            if sqlite:
                raw_connection(conn).execute("PRAGMA foreign_keys = ON")
            else:
                _unlock(conn)
    store.schema_changed()


def initialise(store: Migratable) -> None:
    """Create the schema of an empty store (first use), at the head revision.

    The models are the head schema (tests hold the migrations to them), so an
    empty store is created from them in one pass and stamped, instead of
    replaying every migration: table rebuilds on SQLite made a first command
    several times slower, and every new store pays for it.
    """
    _migrate(store, _create_head, only_if_empty=True)


def _create_head(conn: Connection) -> None:
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, insert

    from melange.models import LOCK_NAMES, locks, metadata

    version = Table(
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    # First, as Alembic does: where DDL commits at once (MySQL), a reader meanwhile
    # sees an empty revision (a store being created: it waits for the lock) rather
    # than tables without one (a foreign database).
    version.create(conn)
    metadata.create_all(conn)
    conn.execute(insert(locks), [{"name": name, "counter": 0} for name in LOCK_NAMES])
    conn.execute(insert(version).values(version_num=SCHEMA_HEAD))


def _scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(schema_dir()))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    """The newest revision among the migration scripts (tests hold SCHEMA_HEAD to it)."""
    return _scripts().get_current_head()


def known_revisions() -> set[str]:
    """Every revision this melange has a migration script for."""
    return {script.revision for script in _scripts().walk_revisions()}


def status(store: Migratable) -> dict:
    """The store's revision beside the one this melange expects."""
    revision = store.current_revision()
    return {"revision": revision, "head": SCHEMA_HEAD, "up_to_date": revision == SCHEMA_HEAD}


def current(store: Migratable) -> dict:
    """`melange db current`: the revision (an empty store is initialised first)."""
    if store.current_revision() is None:
        initialise(store)
    return status(store)


def upgrade_to_head(store: Migratable) -> dict:
    """`melange db upgrade`."""
    upgrade(store)
    return status(store)
