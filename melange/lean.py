"""Direct commands on SQLite that start like a small tool: no SQLAlchemy on their path.

Importing SQLAlchemy costs a direct command more than everything else it does
(about two thirds of a `block allocate` process). The store is still defined
once, in SQLAlchemy and Alembic (melange.models, schema/); its hot statements
are compiled by SQLAlchemy ahead of time into melange/shipped_sqlite.py
(melange.shipped generates it, a test regenerates and compares), and a
`LeanConnection` runs them on sqlite3 under the names the core functions give
their `Prepared` statements. The core functions are the same ones: there is
no second allocator, only a second way to execute their prepared statements.

Anything the shipped statements do not cover (a statement built by
SQLAlchemy, a store to create or migrate, a driver error to map) raises
`NeedsFullPath` inside the transaction: it is rolled back, and the caller
runs the operation again on the full store (melange.store), which does
exactly what it always did. A lean attempt therefore never commits a partial
change and never reports an error of its own but the core's (exit 2 to 5).
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from melange.clock import SYSTEM, Clock, using
from melange.errors import MelangeError
from melange.prepared import executemany

SQLITE_BUSY_TIMEOUT_MS = 60_000
# FULL: each commit is on disk (the WAL synced) before anyone is told its address. With
# NORMAL a power loss could undo the last commits, and an address already handed out
# would be handed out again: what MariaDB and PostgreSQL never do in their defaults.
# It costs one fsync a commit (0.36 ms on the machines measured, docs/performance.md).
SQLITE_SYNCHRONOUS = "FULL"
T = TypeVar("T")


class NeedsFullPath(Exception):
    """The lean path cannot serve this; run the operation on the full store."""


def configure_sqlite(dbapi_connection: sqlite3.Connection) -> None:
    """The one home of a melange SQLite connection's settings (melange.store uses it)."""
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    # The cursor is closed whatever happens: a cursor left open by a failed PRAGMA
    # (a read-only file refuses WAL) keeps the file open after the connection's
    # close, until garbage collection.
    with closing(dbapi_connection.cursor()) as cursor:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")  # once per file; needs a moment alone
        cursor.execute(f"PRAGMA synchronous = {SQLITE_SYNCHRONOUS}")
        # Checkpoint every 10,000 WAL pages (~40 MB) rather than 1,000: an allocation
        # dirties a dozen pages, mostly the same ones each time, which one checkpoint
        # then copies once; single allocations run ~15% faster.
        cursor.execute("PRAGMA wal_autocheckpoint = 10000")
        cursor.execute("PRAGMA foreign_keys = ON")


# The type conversions SQLAlchemy applies on SQLite, by the kind melange.shipped
# records (tests/test_lean_path.py compares them with SQLAlchemy's own).
def _address_in(value: Any) -> bytes | None:
    return None if value is None else int(value).to_bytes(16, "big")


def _address_out(value: Any) -> int | None:
    return None if value is None else int.from_bytes(bytes(value), "big")


def _datetime_in(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise TypeError("SQLite DateTime type only accepts datetime and date objects")
        value = datetime(value.year, value.month, value.day)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def _datetime_out(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _boolean_out(value: Any) -> bool | None:
    return None if value is None else bool(value)


BIND = {"address": _address_in, "datetime": _datetime_in}
RESULT = {"address": _address_out, "datetime": _datetime_out, "boolean": _boolean_out}


class ShippedForm:
    """One shipped statement, with the interface of melange.prepared's compiled form."""

    def __init__(self, entry: tuple) -> None:
        sql, keys, defaults, binds, columns, results = entry
        self.sql: str = sql
        self.keys: tuple[str, ...] = keys
        self.defaults: dict[str, Any] = defaults
        self.binds = [(index, BIND[kind]) for index, kind in binds]
        self.row: Any = namedtuple("Row", columns) if columns else None  # noqa: PYI024
        self.results = [(index, RESULT[kind]) for index, kind in results]

    def arguments(self, params: dict[str, Any]) -> tuple:
        if self.defaults:
            params = {**self.defaults, **params}
        values = [params[key] for key in self.keys]
        for index, convert in self.binds:
            values[index] = convert(values[index])
        return tuple(values)

    def many_arguments(self, rows: Iterable[dict[str, Any]]) -> list[tuple]:
        """`arguments` of many parameter sets; a value that is the very object the previous
        set had (a bulk insert's `now`, its Nones) is converted once, as
        melange.prepared does it."""
        last: dict[int, tuple[Any, Any]] = {}
        converted = []
        keys, defaults, binds = self.keys, self.defaults, self.binds
        for params in rows:
            if defaults:
                params = {**defaults, **params}
            values = [params[key] for key in keys]
            for index, convert in binds:
                value = values[index]
                seen = last.get(index)
                if seen is None or seen[0] is not value:
                    seen = last[index] = (value, convert(value))
                values[index] = seen[1]
            converted.append(tuple(values))
        return converted

    def make_row(self, raw: Sequence[Any]) -> Any:
        if self.row is None:
            raise TypeError("this prepared statement returns no rows")
        values = list(raw)
        for index, convert in self.results:
            values[index] = convert(values[index])
        return self.row._make(values)


class LeanConnection:
    """What the core functions get as their connection on the lean path: it runs their
    named prepared statements from the shipped SQL, and nothing else (any other use is
    `NeedsFullPath`)."""

    lean = True

    def __init__(
        self,
        raw: Any,
        statements: dict[str, tuple],
        cursors: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        self._raw = raw
        self._statements = statements
        self._forms: dict[str, ShippedForm] = {}
        self._cursors = cursors or {}

    def _form(self, name: str | None) -> ShippedForm:
        form = self._forms.get(name) if name is not None else None
        if form is None:
            entry = self._statements.get(name) if name is not None else None
            if entry is None:
                raise NeedsFullPath(f"no shipped statement {name}")
            form = self._forms[name] = ShippedForm(entry)  # type: ignore[index]
        return form

    def execute_shipped(self, name: str | None, params: dict[str, Any], *, stream: bool = False):
        """(form, cursor) of the statement `name` run with `params` (melange.prepared).
        With `stream`, on a cursor that reads the rows as they come where the driver's
        plain one would load them all first (a server's)."""
        form = self._form(name)
        make = self._cursors.get("stream") if stream else None
        cursor = make() if make is not None else self._raw.cursor()
        try:
            cursor.execute(form.sql, form.arguments(params))
        except BaseException:
            cursor.close()
            raise
        return form, cursor

    def insert_shipped(self, name: str | None, params: dict[str, Any]) -> int:
        """The new row's id of an INSERT of one row: the id PostgreSQL's statement returns
        (SQLAlchemy compiles it with RETURNING there), else the driver's `lastrowid`."""
        _form, cursor = self.execute_shipped(name, params)
        try:
            if cursor.description is not None:
                return cursor.fetchone()[0]
            return cursor.lastrowid
        finally:
            cursor.close()

    def execute_shipped_many(self, name: str | None, rows: Iterable[dict[str, Any]]) -> None:
        """The statement `name` once per parameter set, with the driver's `executemany`
        (melange.prepared's `many`: a bulk allocation's rows)."""
        form = self._form(name)
        arguments = form.many_arguments(rows)
        if arguments:
            cursor = self._raw.cursor()
            try:
                executemany(cursor, form.sql, arguments)
            finally:
                cursor.close()

    def __getattr__(self, name: str) -> Any:
        # conn.execute(...), conn.dialect, conn.info: SQLAlchemy's, not shipped.
        raise NeedsFullPath(f"the core asked its connection for {name}")


def sqlite_path(url: str) -> Path | None:
    """The file of a plain `sqlite:///FILE` URL (what --db FILE becomes), else None: URIs,
    query arguments, in-memory stores and names SQLAlchemy would decode (`%`) are left to
    the full path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or any(c in url for c in "?%#"):
        return None
    database = url[len(prefix) :]
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


class LeanRunner:
    """What a lean store shares whatever its driver: one transaction on a schema checked
    in that same transaction, the core's refusals passed on, anything else rolled back
    and handed to the full path. The part of melange.store.Store that operations.run
    uses; a driver's store gives its connection and its transaction's three steps."""

    release_hold: int
    clock: Clock
    _shipped: Any  # the backend's shipped module (melange.shipped)
    _errors: tuple[type[BaseException], ...]  # the driver's own errors

    def _connection(self) -> Any:
        raise NotImplementedError

    def _begin(self, raw: Any, write: bool) -> None:
        raise NotImplementedError

    def _commit(self, raw: Any) -> None:
        raise NotImplementedError

    def _rollback(self, raw: Any) -> None:
        raise NotImplementedError

    def _cursor_kinds(self, raw: Any) -> dict[str, Callable[[], Any]]:
        """Cursors other than the plain one, by use ("stream": rows read as they come)."""
        return {}

    @contextmanager
    def faults(self) -> Iterator[None]:
        yield  # a driver error is never mapped here: `run` hands it to the full path

    def ensure_schema(self) -> None:
        raise NeedsFullPath("whole-store operations run on the full store")

    def run(self, fn: Callable[[Any], T], *, write: bool) -> T:
        """`fn` in one transaction (BEGIN IMMEDIATE for a write on SQLite, as Store.run),
        on a schema checked in that same transaction; anything but the core's own
        refusals is rolled back and becomes `NeedsFullPath`."""
        handed_on: tuple[type[BaseException], ...] = (*self._errors, NeedsFullPath)
        try:
            raw = self._connection()
            self._begin(raw, write)
        except self._errors as error:
            raise NeedsFullPath(str(error)) from None
        try:
            cursor = raw.cursor()
            try:
                cursor.execute("SELECT version_num FROM alembic_version")
                revision = cursor.fetchone()
            finally:
                cursor.close()
            if revision is None or revision[0] != self._shipped.SCHEMA_HEAD:
                raise NeedsFullPath("the store's schema is not the shipped one")
            with using(self.clock):
                conn = LeanConnection(raw, self._shipped.STATEMENTS, self._cursor_kinds(raw))
                result = fn(conn)
        except MelangeError:
            self._rollback(raw)
            raise
        except handed_on as error:
            self._rollback(raw)
            raise NeedsFullPath(str(error)) from None
        self._commit(raw)
        return result

    def write(self, fn: Callable[[Any], T]) -> T:
        return self.run(fn, write=True)

    def read(self, fn: Callable[[Any], T]) -> T:
        return self.run(fn, write=False)


class LeanStore(LeanRunner):
    """A lean store for an existing SQLite file whose schema is the one the shipped
    statements were compiled for."""

    _errors = (sqlite3.Error,)

    def __init__(self, path: Path, *, release_hold: int = 48 * 3600, clock: Clock = SYSTEM) -> None:
        from melange import shipped_sqlite

        self.path = path
        self.release_hold = release_hold
        self.clock = clock
        self._shipped = shipped_sqlite
        self._raw: sqlite3.Connection | None = None

    def require_existing(self) -> None:
        if not self.path.exists():
            raise NeedsFullPath("no store yet")  # the full path creates it or says why not

    def _connection(self) -> sqlite3.Connection:
        if self._raw is None:
            self.require_existing()
            raw = sqlite3.connect(
                self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            try:
                configure_sqlite(raw)
            except BaseException:
                raw.close()
                raise
            self._raw = raw
        return self._raw

    def _begin(self, raw: sqlite3.Connection, write: bool) -> None:
        raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _commit(self, raw: sqlite3.Connection) -> None:
        try:
            raw.execute("COMMIT")
        except sqlite3.Error as error:  # not committed (busy, I/O): the full path does it
            self._rollback(raw)
            raise NeedsFullPath(str(error)) from None

    def _rollback(self, raw: sqlite3.Connection) -> None:
        if raw.in_transaction:
            raw.execute("ROLLBACK")

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
