"""Real MariaDB and PostgreSQL stores for tests: one fresh database per test run.

The servers come from MELANGE_TEST_MYSQL_URL / MELANGE_TEST_PG_URL (server
URLs without a database), defaulting to the local ones `make test` starts.
Each run creates its own database, empties it between tests and drops it at
the end. A server that does not answer fails the test in CI and skips it on a
developer machine, saying so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from melange import models
from melange.store import SCHEMA_HEAD, Store
from tests.support.realparts import missing_capability

SERVER_URLS = {
    "mysql": ("MELANGE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"),
    "postgresql": ("MELANGE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"),
}
# Children before parents, so emptying never trips a foreign key.
TABLES_IN_DELETE_ORDER = [
    models.nat_mappings,
    models.allowed_ips,
    models.allocated_macs,
    models.free_ranges,
    models.routes,
    models.block_dns_servers,
    models.ip_addresses,
    models.interfaces,
    models.blocks,
    models.unusable_ranges,
    models.unusable_octets,
    models.policies,
    models.mac_ranges,
    models.audit_addresses,
    models.audit_log,
    models.api_tokens,
]


class ServerDatabase:
    """A database of this test run on a real server; `url` includes it."""

    def __init__(self, backend: str) -> None:
        env, default = SERVER_URLS[backend]
        self.server_url = os.environ.get(env, default)
        self.name = f"melange_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.url = make_url(self.server_url).set(database=self.name).render_as_string(
            hide_password=False
        )
        admin_db = "postgres" if backend == "postgresql" else None
        self.admin_url = make_url(self.server_url).set(database=admin_db)
        self.created = False
        self._resetter: Engine | None = None

    def _admin(self):
        return create_engine(self.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})  # fmt: skip

    def create(self, *, migrate: bool = True) -> None:
        """Create the (empty) database; migrated to the current schema unless told not to."""
        engine = self._admin()
        try:
            with engine.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {self.name}"))
        except Exception as error:  # noqa: BLE001
            missing_capability(f"database server {self.admin_url!r} does not answer: {error}")
        finally:
            engine.dispose()
        self.created = True
        if migrate:
            Store(self.url).ensure_schema()

    def reset(self) -> None:
        """Empty every melange table, keeping the schema (much faster than re-creating).

        DELETE, not TRUNCATE: on these small tables TRUNCATE (DDL) is several times
        slower. The connection is kept between tests (pinged first: a test may have
        killed it), which saves most of a reset's time."""
        if self._resetter is None:
            self._resetter = create_engine(self.url, pool_size=1, pool_pre_ping=True)
        with self._resetter.begin() as conn:
            conn.execute(update(models.blocks).values(parent_id=None))
            for table in TABLES_IN_DELETE_ORDER:
                conn.execute(delete(table))
            # A test may have aged the schema revision on purpose.
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": SCHEMA_HEAD})

    def drop(self) -> None:
        if self._resetter is not None:
            self._resetter.dispose()
            self._resetter = None
        if not self.created:
            return
        engine = self._admin()
        # Stores opened by the tests keep pooled connections: PostgreSQL must be told.
        force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {self.name}{force}"))
        engine.dispose()


class Backends:
    """Lazily created per-run databases, one per server backend."""

    def __init__(self) -> None:
        self.databases: dict[str, ServerDatabase] = {}

    def url(self, backend: str, tmp_path: Path) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / 'melange.db'}"
        database = self.databases.get(backend)
        if database is None:
            database = ServerDatabase(backend)
            self.databases[backend] = database
            database.create()
        database.reset()
        return database.url

    def close(self) -> None:
        for database in self.databases.values():
            database.drop()


def fresh_database(backend: str) -> ServerDatabase:
    """A database of its own (for tests that need an empty, unmigrated store)."""
    database = ServerDatabase(backend)
    database.create(migrate=False)
    return database


@contextmanager
def unmigrated_store(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, unmigrated store of the test's own (for migration tests): an
    SQLite file, or a server database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'unmigrated.db'}"
        return
    database = fresh_database(backend)
    try:
        yield database.url
    finally:
        database.drop()
