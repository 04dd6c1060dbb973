"""Opening the store, checking its schema, and running transactions.

Writes on SQLite take the database lock up front (BEGIN IMMEDIATE) so two
melange processes queue on the busy timeout instead of failing with
"database is locked" half-way through; MySQL and PostgreSQL lock the block
row instead (see `lock_block`). Lock waits, deadlocks and certification
failures are retried here, whole, so callers never see them.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    column,
    create_engine,
    event,
    exc,
    select,
    table,
    text,
)
from sqlalchemy.engine import make_url

from melange.clock import SYSTEM, Clock, using
from melange.errors import Conflict, MelangeError, SchemaOutdated, StoreUnavailable
from melange.lean import SQLITE_BUSY_TIMEOUT_MS, configure_sqlite
from melange.leanstore import ISOLATION, driver_options
from melange.locking import insert_one, lock_block, lock_named  # noqa: F401  (their old home)
from melange.lockwait import begin_write
from melange.migrations import SCHEMA_HEAD, initialise
from melange.prepared import (
    Prepared,
    allow_batches,
    commit_waiting,
    pipelined,
    raw_connection,
    translated_error,
)
from melange.urls import first_line, parse_store_url, redact, safe_url

# On Galera a writer learns that another node won the same block only at COMMIT,
# and the loser of one round often loses the next: 12 processes on 2 blocks over
# 3 nodes need more than 10 attempts for about 1 write in 600 (measured), more
# than 25 for about 1 in a million (each further attempt loses ~6 times in 10).
# With _backoff's 0.5 s cap, 25 attempts give up after about 10 s.
MAX_ATTEMPTS = 25
# An IntegrityError is retried only for the race it can be: see Store.run.
INTEGRITY_ATTEMPTS = 2
SERVER_IDLE_REUSE = 2.0  # seconds a server connection is reused without the pool's ping
# The tables an import fills, whose statistics `Store.loaded` renews.
LOADED = ("blocks", "ip_addresses", "interfaces", "allowed_ips", "nat_mappings")
T = TypeVar("T")

# Lock wait timeout; deadlock, which is also how Galera reports a failed certification
# and a transaction aborted for a replicated write; XA branch rolled back (deadlock).
_RETRYABLE_MYSQL = {1205, 1213, 1614}
_RETRYABLE_PG = {"40001", "40P01", "55P03"}


def is_retryable(error: BaseException) -> bool:
    """Lock contention that a fresh attempt of the whole transaction can get past."""
    original = getattr(error, "orig", None)
    if original is None:
        return False
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int) and args[0] in _RETRYABLE_MYSQL:
        return True
    if args and args[0] == 1180 and "deadlock" in str(original).lower():
        return True  # Galera: 'Got error 35 "Resource deadlock avoided" during COMMIT'
    if getattr(original, "sqlstate", None) in _RETRYABLE_PG:
        return True
    text_ = str(original).lower()
    return "database is locked" in text_ or "database table is locked" in text_


# What a driver says when the store itself cannot serve: (text or code, what it means).
_SQLITE_FAULTS = (
    ("readonly database", "is read-only"),
    ("database or disk is full", "has no space left"),
    ("disk i/o error", "cannot be read or written (disk I/O error)"),
    ("malformed", "is damaged; `melange db check` tells how"),
    ("file is not a database", "is not a database file, or is damaged"),
    ("unable to open database file", "cannot be opened"),
)
_MYSQL_FAULTS = {
    1021: "has no space left", 1114: "has no space left", 1036: "is read-only",
    1290: "is read-only", 1792: "is read-only", 126: "is damaged", 127: "is damaged",
    144: "is damaged", 145: "is damaged", 1034: "is damaged", 1194: "is damaged",
    1030: "reported a storage engine error",
}  # fmt: skip
_PG_FAULTS = {"53100": "has no space left", "25006": "is read-only", "XX001": "is damaged",
              "XX002": "is damaged"}  # fmt: skip


def store_fault(error: BaseException) -> str | None:
    """Why the store cannot serve (read-only, full, damaged), or None for other errors.

    These are not bugs and not the user's input: the command changed nothing and
    the store needs attention, which is exit 6 with one line (it was exit 1, or an
    AssertionError after retrying a read-only file as a dropped connection).
    """
    original = getattr(error, "orig", None)
    if original is None:
        return None
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_FAULTS:
        return _MYSQL_FAULTS[args[0]]
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate in _PG_FAULTS:
        return _PG_FAULTS[sqlstate]
    if type(original).__module__ == "sqlite3":
        message = str(original).lower()
        for needle, meaning in _SQLITE_FAULTS:
            if needle in message:
                return meaning
    return None


def is_connection_error(error: BaseException) -> bool:
    """The server went away or cannot be reached (as opposed to a bad statement)."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    original = getattr(error, "orig", None)
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int) and args[0] in {2002, 2003, 2005, 2006, 2013, 1045, 1049}:
        return True
    return type(original).__name__ in {"OperationalError"} and not is_retryable(error)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):  # noqa: ANN001
        configure_sqlite(dbapi_connection)

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("melange_write", False)
        # The driver's own cursor: SQLAlchemy's statement machinery costs more
        # than the BEGIN itself on the allocation path.
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        try:
            if write:
                begin_write(raw_connection(conn))  # LockBusy inside no_lock_wait
            else:
                raw_connection(conn).execute(statement)
        except conn.dialect.loaded_dbapi.Error as error:
            raise translated_error(conn, statement, (), error) from error


def create_private_file(path: Path) -> None:
    """A new SQLite store, and the directories made for it, readable by their owner
    only (0600/0700): it holds every MAC and hostname. An existing file keeps its
    mode, so an operator may open it to a group with chgrp and chmod g+r."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str) -> Engine:
    """An engine with bounded connect time, whose connections are reused in-process."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    connect_args: dict = {}
    if backend == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
    elif backend in ("mysql", "mariadb"):
        tls_asked = any(key.startswith("ssl") for key in parsed.query)
        connect_args.update(driver_options("mysql", tls_asked=tls_asked))
    elif backend == "postgresql":
        connect_args.update(driver_options("postgresql", tls_asked=False))
        if "options" in parsed.query:
            del connect_args["options"]  # the URL's own server options win
    options: dict = {}
    if backend != "sqlite":
        options["isolation_level"] = ISOLATION  # as the lean store's (melange.leanstore)
    if backend != "sqlite":
        # Connections are kept for the life of the process (a daemon, a script
        # using the library): opening one costs more than a whole allocation.
        options.update(pool_pre_ping=True, pool_size=8, max_overflow=56)
    with warnings.catch_warnings():
        # SQLite ignores query arguments it does not take, with a warning on stderr:
        # an error instead, so a typo in the URL is not silently dropped.
        warnings.simplefilter("error", exc.SAWarning)
        engine = create_engine(url, connect_args=connect_args, **options)
    if backend == "sqlite":
        # After create_engine has accepted the URL: a refused one creates nothing.
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            create_private_file(Path(database))
        _configure_sqlite(engine)
    allow_batches(engine)
    return engine


class Store:
    """One store (database); `write` and `read` run functions in transactions."""

    def __init__(
        self,
        url: str,
        *,
        release_hold: int = 48 * 3600,
        recheck_schema: bool = False,
        named: bool = False,
        clock: Clock = SYSTEM,
    ) -> None:
        self.url = url
        self.clock = clock  # the time its transactions read (melange.clock)
        self.named = named  # see require_existing
        self.release_hold = release_hold
        # A command checks the schema once; a daemon re-reads the revision inside
        # every transaction, so an upgrade made by a newer melange elsewhere is
        # noticed before it writes (one indexed read, on the transaction's own
        # connection: a transaction of its own per request cost a tenth of one).
        self.recheck_schema = recheck_schema
        self._engine: Engine | None = None
        self._idle: Connection | None = None
        self._idle_pid = 0
        self._idle_since = 0.0
        self._idle_lock = threading.Lock()
        self._checked = False

    @functools.cached_property
    def backend(self) -> str:
        return parse_store_url(self.url).get_backend_name()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            parse_store_url(self.url)
            try:
                self._engine = make_engine(self.url)
            except (exc.SQLAlchemyError, exc.SAWarning, OSError, ValueError, TypeError) as error:
                raise StoreUnavailable(
                    f"cannot open the store {safe_url(self.url)}: "
                    f"{redact(first_line(error), self.url)}"
                ) from None
        return self._engine

    def require_existing(self) -> None:
        """A named SQLite store must exist before a read (exit 6), which creates nothing.

        Connecting creates the file (and make_engine its directory): a read with a
        mistyped --db answered from a new empty store and left it behind. Writes,
        `db upgrade` and the per-user default store are still created on first use.
        """
        if not self.named:
            return
        parsed = parse_store_url(self.url)
        database = parsed.database
        if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
            return
        if parsed.query.get("uri") or database.startswith("file:"):
            return  # an SQLite URI filename: its mode= decides, not us
        if not Path(database).exists():
            raise StoreUnavailable(
                f"no store at {database}; a write command or `melange db upgrade` creates it"
            )

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, None
        if idle is not None and self._idle_pid == os.getpid():
            # The pool is going away: the connection is closed, not reset and
            # returned (a reset on one the server dropped logs a traceback).
            idle.invalidate()
            idle.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _connect(self) -> Connection:
        """A connection; a lock held by another writer while this one connects (SQLite's
        WAL switch on a new file) is waited out, not reported as an unreachable store."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self.engine.connect()
            except exc.DBAPIError as error:
                if is_retryable(error) and attempt < MAX_ATTEMPTS:
                    _backoff(attempt)
                    continue
                raise self.unavailable("cannot reach the store", error) from None
            except TypeError as error:  # a query argument the driver does not take
                raise self.unavailable("cannot open the store", error) from None
            except OSError as error:  # a file the URL names (a TLS CA, key) cannot be read
                raise self.unavailable("cannot open the store", error) from None
        raise self.unavailable("cannot reach the store", None)

    def unavailable(self, what: str, error: BaseException | None) -> StoreUnavailable:
        """Exit 6 naming the store (its password hidden, also in the driver's words)."""
        message = f"{what} {safe_url(self.url)}"
        if error is not None:
            message += f": {redact(first_line(error), self.url)}"
        return StoreUnavailable(message)

    @contextmanager
    def faults(self) -> Iterator[None]:
        """Database errors that escape a block become what they mean (see `failure`)."""
        try:
            yield
        except exc.DBAPIError as error:
            failure = self.failure(error)
            if failure is None:
                raise
            raise failure from None

    def failure(self, error: exc.DBAPIError) -> MelangeError | None:
        """What a database error means to the user, when it is not a bug: exit 6 for a
        store that cannot take the change (read-only, full, damaged) or went away."""
        fault = store_fault(error)
        if fault is not None:
            return self._faulty(error, fault)
        if is_connection_error(error):
            return self.unavailable("lost the store", error)
        return None

    def refused(self, error: exc.DBAPIError) -> Conflict:
        """A write the store refused (a constraint) after a retry: exit 4, in its words."""
        return Conflict(f"the store refused the change: {redact(first_line(error), self.url)}")

    def _faulty(self, error: exc.DBAPIError, fault: str) -> StoreUnavailable:
        detail = redact(first_line(error), self.url)
        return StoreUnavailable(f"the store {safe_url(self.url)} {fault} ({detail})")

    @contextmanager
    def connection(self, *, write: bool) -> Iterator[Connection]:
        """A connection outside any transaction, for work that runs its own (migrations,
        which lock, switch SQLite's foreign keys off and commit DDL their way); it
        goes back to the store afterwards. Call `schema_changed` if the work did."""
        with self._connection(write) as conn:
            yield conn

    def schema_changed(self) -> None:
        """The next transaction checks the schema again (a migration just ran)."""
        self._checked = False

    @contextmanager
    def _connection(self, write: bool, conn: Connection | None = None) -> Iterator[Connection]:
        conn = conn or self._take_idle() or self._connect()
        try:
            yield conn.execution_options(melange_write=write)
        finally:
            self._put_back(conn)

    def _take_idle(self) -> Connection | None:
        """The connection the last transaction left, if no other thread took it.

        Checking a connection out of the pool and back costs more than a whole
        one-row transaction (a liveness ping and a reset on a server, event
        dispatch everywhere), so one idle connection is kept between
        transactions. A server connection is reused without a ping only for a
        few seconds; after that it is pinged, and one the server dropped (a
        restart, KILL, wait_timeout) is discarded. Handing a dropped one back to
        the pool instead made the pool's reset (a ROLLBACK) fail, and log a
        19-line traceback on stderr after a command that succeeded.
        """
        with self._idle_lock:
            conn, self._idle = self._idle, None
            since = self._idle_since
        if conn is None:
            return None
        if self._idle_pid != os.getpid():
            return None  # a forked child must not share its parent's connection
        if self.backend != "sqlite" and time.monotonic() - since > SERVER_IDLE_REUSE:
            if not _alive(conn):
                conn.invalidate()  # closed without the pool's reset
                conn.close()
                return None
        return conn

    def _put_back(self, conn: Connection) -> None:
        if conn.in_transaction():  # as closing a pooled connection would
            try:
                conn.rollback()
            except exc.DBAPIError:
                conn.invalidate()
        reusable = set(conn.get_execution_options()) <= {"melange_write"}
        if reusable and not conn.invalidated and not conn.closed:
            # Options set on the connection (streaming, say) would outlive the
            # transaction that set them; such a connection goes back to the pool.
            with self._idle_lock:
                if self._idle is None:
                    self._idle, self._idle_pid = conn, os.getpid()
                    self._idle_since = time.monotonic()
                    return
        conn.close()

    def ensure_schema(self) -> None:
        """Create an empty store's schema; refuse (exit 6) an old or unknown one."""
        if self._checked:
            return
        revision = self.current_revision()
        if revision is None:
            initialise(self)
            revision = self.current_revision()
        if revision != SCHEMA_HEAD:
            raise SchemaOutdated(schema_message(revision))
        self._checked = True

    def current_revision(self) -> str | None:
        """The store's Alembic revision, None for an empty store."""
        with self._connection(write=False) as conn:
            try:
                with conn.begin():
                    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except exc.DBAPIError as error:
                fault = store_fault(error)
                if fault is not None:
                    raise self._faulty(error, fault) from None
                if is_connection_error(error) and not _missing_table(error):
                    raise self.unavailable("cannot reach the store", error) from None
                if _missing_table(error):
                    if _has_tables(conn):
                        # A first use elsewhere may have committed the whole schema
                        # between the two reads: look again before calling it foreign.
                        return _recorded_revision(conn) or "unknown"
                    return None
                raise

    def run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """Run `fn` in one transaction, retrying it whole on lock contention."""
        self.ensure_schema()
        retried_idle = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            idle = self._take_idle()
            committing = False
            try:
                with (
                    using(self.clock),
                    self._connection(write, idle or self._connect()) as conn,
                    conn.begin(),
                    pipelined(conn),
                ):
                    if self.recheck_schema:
                        _same_revision(conn)
                    result = fn(conn)
                    committing = True
                    commit_waiting(conn)
                return result
            except MelangeError:
                raise
            except exc.IntegrityError as error:
                # A check-then-insert that lost a race to a concurrent writer: our
                # statement waited for the winner's commit, so running again at once
                # sees it and raises the real conflict (or picks something else).
                # Refused again, it is a real conflict: exit 4 now, not after 25
                # backed-off attempts (seconds).
                if write and attempt < INTEGRITY_ATTEMPTS:
                    continue
                raise self.refused(error) from None
            except exc.DBAPIError as error:
                if is_retryable(error) and attempt < MAX_ATTEMPTS:
                    _backoff(attempt)
                    continue
                if is_retryable(error):
                    raise StoreUnavailable(
                        f"the store stayed busy after {MAX_ATTEMPTS} attempts; try again"
                    ) from None
                if (
                    is_connection_error(error)
                    and store_fault(error) is None
                    and idle is not None
                    and not committing
                    and not retried_idle
                    and self.backend != "sqlite"
                ):
                    # A kept connection the server dropped while idle (a restart):
                    # nothing was committed, so the whole transaction runs again
                    # on a fresh connection, as the pool's ping would have ensured.
                    retried_idle = True
                    continue
                failure = self.failure(error)
                if failure is not None:
                    raise failure from None
                raise
        raise StoreUnavailable(f"the store stayed busy after {MAX_ATTEMPTS} attempts; try again")

    def write(self, fn: Callable[[Connection], T]) -> T:
        return self.run(fn, write=True)

    def read(self, fn: Callable[[Connection], T]) -> T:
        return self.run(fn, write=False)

    def loaded(self) -> None:
        """After a bulk load (an import): PostgreSQL's planner would otherwise know
        nothing of the new rows until autovacuum's first ANALYZE, about a minute later,
        and meanwhile sorted the whole address table for every page of `ip list`.
        SQLite keeps no statistics (its plans do not depend on them); MariaDB renews its
        own in the background, and the address pages name their index there."""
        if self.engine.dialect.name == "postgresql":
            self.write(lambda conn: conn.execute(text(f"ANALYZE {', '.join(LOADED)}")))


def _alive(conn: Connection) -> bool:
    """Whether the server still has this connection (the dialect's own ping)."""
    try:
        return bool(conn.dialect.do_ping(raw_connection(conn)))
    except conn.dialect.loaded_dbapi.Error:
        return False


def _missing_table(error: BaseException) -> bool:
    message = str(getattr(error, "orig", error)).lower()
    return "no such table" in message or "doesn't exist" in message or "does not exist" in message


def _recorded_revision(conn: Connection) -> str | None:
    """The revision in alembic_version, if the table is there (read after `_has_tables`)."""
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _has_tables(conn: Connection) -> bool:
    from sqlalchemy import inspect

    conn.rollback()
    return bool(inspect(conn).get_table_names())


_REVISION = Prepared(select(column("version_num")).select_from(table("alembic_version")))


def _same_revision(conn: Connection) -> None:
    """SchemaOutdated (6) when the store is no longer at the revision this code knows."""
    revision = _REVISION.scalar(conn)
    if revision != SCHEMA_HEAD:
        raise SchemaOutdated(schema_message(revision))


def schema_message(revision: str | None) -> str:
    if revision in (None, "unknown"):
        return "the store has tables but no melange schema revision; is it a melange store?"
    if revision < SCHEMA_HEAD:
        return (
            f"the store's schema is at revision {revision}, older than this melange "
            f"({SCHEMA_HEAD}); run `melange db upgrade`"
        )
    return (
        f"the store's schema is at revision {revision}, which this melange does not know "
        f"(it expects {SCHEMA_HEAD}); upgrade melange"
    )


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5))
