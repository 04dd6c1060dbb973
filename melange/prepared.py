"""Statements compiled once per dialect and run on the driver's own cursor.

Why: the statements an allocation is made of each touch one row, and for
them SQLAlchemy's work per execution (cache key, parameter processing, result
metadata) costs about ten times what the driver spends. They are still written
in SQLAlchemy Core, so one definition serves SQLite, MySQL and PostgreSQL, and
compiled by SQLAlchemy; only the execution is done here. Driver errors are
re-raised as SQLAlchemy's exceptions, so the store's retry and error mapping
treat them exactly as errors from `Connection.execute`.

A prepared statement takes only plain bind parameters (no expanding IN lists);
its type conversions (addresses as 16 bytes, SQLite's datetimes as text) are
the same ones SQLAlchemy would apply. Only SQLAlchemy's public API is used
(see `_Form`); setup.cfg still pins SQLAlchemy to the minor version the tests
run on, since this module leans on more of it than an ordinary caller does.

Writes whose row count nobody reads can be `send`: inside a transaction that
allows it (`pipelined`) on a connection that can batch (psycopg's pipeline
mode; PyMySQL's multi-statement queries, except on Galera), they wait and go to
the server with the next statement whose result is read, or with the COMMIT,
in one round trip. Under a block's lock every round trip is time the block's
other writers wait; an allocation's four writes and its COMMIT then cost one
round trip instead of five.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:  # imported where used: a lean process (melange.lean) never needs them
    from sqlalchemy import Connection, Engine, exc
    from sqlalchemy.engine import Dialect
    from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPIModule
    from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any]
# Keys, in the pooled connection's info, of the writes waiting to be sent, and of
# whether a MySQL connection is to a Galera node (absent: not checked, no batches).
_WAITING = "melange_waiting_writes"
_GALERA = "melange_galera"


class _RowType(Protocol):
    """A named tuple class, as `namedtuple` makes it (typeshed types it as plain tuple)."""

    def _make(self, values: Iterable[Any]) -> tuple[Any, ...]: ...


class _Form:
    """One statement as compiled for one dialect: SQL text, parameters, row shape.

    Only SQLAlchemy's public API is read here: the compiler's documented
    attributes (`binds`, `positiontup`, `post_compile_params`,
    `literal_execute_params`), the types' processors, and the statement's own
    columns (`exported_columns`: a SELECT's columns, a DML statement's
    RETURNING). All of it runs once per statement and dialect; executing one
    costs the same as it did with the compiler's private result columns.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        from sqlalchemy.sql.compiler import SQLCompiler
        from sqlalchemy.sql.expression import ReturnsRows

        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("prepared statements take plain bind parameters only")
        self.sql = str(compiled)
        self.positional = dialect.positional
        names = list(compiled.positiontup or ()) if self.positional else list(compiled.binds)
        self.names = tuple(names)
        binds = [compiled.binds[name] for name in names]
        self.keys = tuple(bind.key for bind in binds)
        self.defaults = {bind.key: bind.value for bind in binds if not bind.required}
        self.processors: list[tuple[int, Processor]] = []
        for index, bind in enumerate(binds):
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors.append((index, processor))
        columns = (
            list(statement.exported_columns.items()) if isinstance(statement, ReturnsRows) else []
        )
        self.row: _RowType | None = None
        if columns:
            self.row = cast(_RowType, namedtuple("Row", [key for key, _ in columns]))  # noqa: PYI024
        self.results: list[tuple[int, Processor]] = []
        for index, (_key, column) in enumerate(columns):
            processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if processor is not None:
                self.results.append((index, processor))

    def arguments(self, params: dict[str, Any]) -> tuple | dict:
        if self.defaults:
            params = {**self.defaults, **params}
        try:
            values = [params[key] for key in self.keys]
        except KeyError as missing:
            raise ValueError(f"prepared statement needs parameter {missing}") from None
        for index, processor in self.processors:
            values[index] = processor(values[index])
        if self.positional:
            return tuple(values)
        return dict(zip(self.names, values, strict=True))

    def many_arguments(self, rows: Iterable[dict[str, Any]]) -> list:
        """`arguments` for each of many parameter sets; a value that is the very object the
        previous set had (the `now` or None of every row of a bulk insert) is converted
        once, since converting it again for each row cost as much as the insert itself."""
        last: dict[int, tuple[Any, Any]] = {}
        converted = []
        for params in rows:
            if self.defaults:
                params = {**self.defaults, **params}
            try:
                values = [params[key] for key in self.keys]
            except KeyError as missing:
                raise ValueError(f"prepared statement needs parameter {missing}") from None
            for index, processor in self.processors:
                value = values[index]
                seen = last.get(index)
                if seen is None or seen[0] is not value:
                    seen = last[index] = (value, processor(value))
                values[index] = seen[1]
            converted.append(
                tuple(values) if self.positional else dict(zip(self.names, values, strict=True))
            )
        return converted

    def make_row(self, raw: Sequence[Any]) -> Any:
        """The driver's row as a named tuple of converted values."""
        if self.row is None:
            raise TypeError("this prepared statement returns no rows")
        if self.results:
            values = list(raw)
            for index, processor in self.results:
                values[index] = processor(values[index])
            return self.row._make(values)
        return self.row._make(raw)


# Rows per multi-row INSERT on SQLite: 999 variables is the least limit any SQLite has
# had (SQLITE_MAX_VARIABLE_NUMBER before 3.32).
SQLITE_VARIABLES = 999


@functools.lru_cache(maxsize=256)
def _rows_form(sql: str, rows: int) -> str | None:
    """`sql`, a plain one-row `INSERT ... VALUES (?, ...)`, made to insert `rows` rows at
    once; None for any other statement (executemany's row at a time then)."""
    head, sep, tail = sql.rpartition(" VALUES ")
    if not sep or not head.lstrip().upper().startswith("INSERT"):
        return None
    width = tail.count("?")
    if not width or tail != "(" + ", ".join("?" * width) + ")":
        return None
    return head + sep + ", ".join([tail] * rows)


def executemany(cursor: Any, sql: str, arguments: Sequence[Sequence[Any]]) -> None:
    """The driver's `executemany`, except for a plain INSERT on SQLite: many rows per
    statement there. Why: sqlite3's executemany steps once per row and lets go of the
    interpreter lock at each step; in melanged, whose threads share that lock, every
    step handed it to another thread and back (two futex calls and a wake-up each), and
    a group commit's rows cost more in those hand-offs than in SQLite."""
    if not isinstance(cursor, sqlite3.Cursor) or len(arguments) < 2 or not arguments[0]:
        cursor.executemany(sql, arguments)
        return
    if _rows_form(sql, 1) is None:  # not a plain one-row INSERT
        cursor.executemany(sql, arguments)
        return
    per = max(1, SQLITE_VARIABLES // len(arguments[0]))
    for start in range(0, len(arguments), per):
        chunk = arguments[start : start + per]
        values = [value for row in chunk for value in row]
        cursor.execute(cast(str, _rows_form(sql, len(chunk))), values)


# Every named statement, by name: what melange.shipped compiles ahead of time.
REGISTRY: dict[str, Prepared] = {}


def is_lean(conn: Any) -> bool:
    """Whether `conn` is a lean connection (melange.lean): it runs named statements only,
    so a caller that would read many ids in one IN (...) reads them one named statement
    each there instead."""
    return getattr(conn, "lean", False)


class Prepared:
    """A Core statement, compiled on first use for each dialect it meets.

    A named one may be given as a function that builds it, called on first
    use: a module whose statements are all named and built so imports no
    SQLAlchemy, and a lean connection (melange.lean) runs them from the SQL
    shipped for its dialect (melange.shipped) under the same name.
    """

    __slots__ = ("name", "_statement", "_build", "_forms")

    def __init__(
        self,
        statement: ClauseElement | Callable[[], ClauseElement],
        name: str | None = None,
    ) -> None:
        self.name = name
        self._statement: ClauseElement | None = None
        self._build: Callable[[], ClauseElement] | None = None
        if callable(statement):
            self._build = statement
        else:
            self._statement = statement
        self._forms: dict[str, _Form] = {}  # one driver per dialect here
        if name is not None:
            if name in REGISTRY:
                raise ValueError(f"two prepared statements are named {name}")
            REGISTRY[name] = self

    @property
    def statement(self) -> ClauseElement:
        if self._statement is None:
            assert self._build is not None
            self._statement = self._build()
        return self._statement

    def _form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = _Form(self.statement, dialect)
        return form

    def _execute(self, conn: Connection, params: dict[str, Any]):
        if is_lean(conn):  # melange.lean: the shipped SQL, on the driver
            return cast(Any, conn).execute_shipped(self.name, params)
        form = self._form(conn.dialect)
        arguments = form.arguments(params)
        waiting = conn.info.get(_WAITING)
        if waiting:
            return form, _send_waiting(conn, waiting, then=(form.sql, arguments))
        cursor = raw_connection(conn).cursor()
        try:
            cursor.execute(form.sql, arguments, **_PREPARING.get(conn.dialect.driver, {}))
        except conn.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise translated_error(conn, form.sql, arguments, error) from error
        return form, cursor

    def send(self, conn: Connection, **params: Any) -> None:
        """Execute a write whose row count nobody needs; in a pipelined transaction it
        waits for the next statement that is read, or for the COMMIT (module doc)."""
        waiting = None if is_lean(conn) else conn.info.get(_WAITING)
        if waiting is None:
            self.run(conn, **params)
            return
        form = self._form(conn.dialect)
        waiting.append((form.sql, form.arguments(params)))

    def run(self, conn: Connection, **params: Any) -> int:
        """Execute a statement that returns no rows; the number of rows it changed."""
        _form, cursor = self._execute(conn, params)
        count = cursor.rowcount
        cursor.close()
        return count

    def insert(self, conn: Connection, **params: Any) -> int:
        """Execute an INSERT of one row; the new row's id (its one-column primary key).
        Lean, as melange.lean reads it off the driver; else SQLAlchemy's own, which knows
        how each dialect returns it."""
        if is_lean(conn):
            return cast(Any, conn).insert_shipped(self.name, params)
        key = conn.execute(cast(Any, self.statement), params).inserted_primary_key
        if key is None:
            raise TypeError("insert takes an INSERT of one row")
        return key[0]

    def first(self, conn: Connection, **params: Any):
        """The first row (a named tuple), or None."""
        form, cursor = self._execute(conn, params)
        raw = cursor.fetchone()
        cursor.close()
        return None if raw is None else form.make_row(raw)

    def all(self, conn: Connection, **params: Any) -> list:
        form, cursor = self._execute(conn, params)
        rows = cursor.fetchall()
        cursor.close()
        return [form.make_row(raw) for raw in rows]

    def scalar(self, conn: Connection, **params: Any) -> Any:
        row = self.first(conn, **params)
        return None if row is None else row[0]

    def many(self, conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Execute a write once per parameter set with the driver's own `executemany`:
        for bulk inserts, where SQLAlchemy's parameter handling per row costs more than
        the driver's work. Writes waiting in a pipelined transaction go first."""
        if is_lean(conn):  # melange.lean: the shipped SQL, on the driver
            cast(Any, conn).execute_shipped_many(self.name, rows)
            return
        form = self._form(conn.dialect)
        arguments = form.many_arguments(rows)
        if not arguments:
            return
        send_waiting(conn)
        cursor = raw_connection(conn).cursor()
        try:
            executemany(cursor, form.sql, cast(Sequence[Sequence[Any]], arguments))
        except conn.dialect.loaded_dbapi.Error as error:
            raise translated_error(conn, form.sql, arguments, error) from error
        finally:
            cursor.close()


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """A transaction whose `send` writes may wait (see the module doc), on connections
    that batch; call `commit_waiting` to end it. Writes still waiting when the block
    exits by an exception are dropped with the transaction."""
    if not batches(conn):
        yield
        return
    info = conn.info  # kept: a connection the server dropped refuses to give it again
    info[_WAITING] = []
    try:
        yield
    finally:
        info.pop(_WAITING, None)


def commit_waiting(conn: Connection) -> None:
    """Send the waiting writes with the COMMIT, in one round trip (a no-op when nothing
    waits: the transaction's own commit follows)."""
    waiting = conn.info.get(_WAITING)
    if waiting:
        _send_waiting(conn, waiting, commit=True).close()


def send_waiting(conn: Connection) -> None:
    """Send the waiting writes now: a statement run through SQLAlchemy must see them."""
    waiting = conn.info.get(_WAITING)
    if waiting:
        _send_waiting(conn, waiting).close()


def _send_waiting(
    conn: Connection,
    waiting: list[tuple[str, Any]],
    *,
    then: tuple[str, Any] | None = None,
    commit: bool = False,
):
    """In one round trip: the waiting writes, then `then` (whose cursor is returned,
    positioned on its rows) or the COMMIT."""
    closing = then or (("COMMIT", None) if commit else None)
    statements = [*waiting, closing] if closing else list(waiting)
    waiting.clear()
    send = _SENDERS[conn.dialect.driver]
    try:
        return send(raw_connection(conn), statements)
    except conn.dialect.loaded_dbapi.Error as error:
        sql = "; ".join(sql for sql, _ in statements)
        raise translated_error(conn, sql, [a for _, a in statements], error) from error


def _pipeline(dbapi_connection, statements: list[tuple[str, Any]]):
    """psycopg: statements queued in pipeline mode, sent and synced together."""
    writes = dbapi_connection.cursor()
    last = dbapi_connection.cursor()
    try:
        with dbapi_connection.pipeline():
            for sql, arguments in statements[:-1]:
                writes.execute(sql, arguments, prepare=True)
            last.execute(*statements[-1], prepare=True)
    except BaseException:
        last.close()
        raise
    finally:
        writes.close()
    return last


def _multi_statement(dbapi_connection, statements: list[tuple[str, Any]]):
    """PyMySQL: one query of several statements (the connection has MULTI_STATEMENTS);
    the server stops at the first that fails, so a COMMIT after it never runs."""
    cursor = dbapi_connection.cursor()
    # PyMySQL interpolates on the client anyway; joined, the statements go as one query.
    sql = ";\n".join(cursor.mogrify(sql, arguments) for sql, arguments in statements)
    try:
        cursor.execute(sql)
        for _ in statements[1:]:
            cursor.nextset()  # raises the error of a statement that failed
    except BaseException:
        cursor.close()
        raise
    return cursor


_SENDERS = {"psycopg": _pipeline, "pymysql": _multi_statement}

# Every statement run here names whether the driver prepares it. psycopg, left to
# decide, prepares a statement on its fifth run; when that run is in a pipeline an
# earlier error aborted, it still takes the statement for prepared, and the next run
# fails with 'prepared statement "_pg3_N" does not exist'. A statement it is told to
# prepare is checked against its result on every first run, aborted or not.
_PREPARING: dict[str, dict[str, Any]] = {"psycopg": {"prepare": True}}


def batches(conn: Connection) -> bool:
    """Whether `send` writes may wait on this connection (see `allow_batches`)."""
    driver = conn.dialect.driver
    if driver == "pymysql":
        return not conn.info.get(_GALERA, True)
    return driver in _SENDERS


def allow_batches(engine: Engine) -> None:
    """Let the engine's connections batch waiting writes: psycopg always; PyMySQL with
    multi-statement queries switched on at connect, and never on a Galera node.

    Galera aborts a transaction that conflicts with a replicated one wherever it
    is; inside a multi-statement query the abort's error can be swallowed and the
    statements after it run in a new transaction, COMMIT included (the counter of
    a block was seen to drift under the Galera stress test). One statement per
    query keeps every abort visible.
    """
    from sqlalchemy import event

    if engine.dialect.driver == "pymysql":
        from pymysql.constants import CLIENT

        @event.listens_for(engine, "do_connect")
        def _multi_statements(_dialect, _record, _cargs, cparams) -> None:  # noqa: ANN001
            cparams["client_flag"] = cparams.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS

        @event.listens_for(engine, "connect")
        def _unless_galera(dbapi_connection, record) -> None:  # noqa: ANN001
            record.info[_GALERA] = _galera_node(dbapi_connection)

    if engine.dialect.driver in _SENDERS:
        # Writes waiting in a pipelined transaction go before any statement that
        # SQLAlchemy runs, so it sees them.
        event.listen(engine, "before_cursor_execute", lambda conn, *_: send_waiting(conn))


def on_galera(conn: Connection) -> bool:
    """Whether `conn` is to a node of a Galera cluster (see `allow_batches`)."""
    return conn.dialect.driver == "pymysql" and bool(conn.info.get(_GALERA, False))


def _galera_node(dbapi_connection) -> bool:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT @@wsrep_on")
        on = cursor.fetchone()[0]
    except dbapi_connection.Error:  # MySQL: no such variable
        on = 0
    finally:
        cursor.close()
        dbapi_connection.rollback()
    return bool(on)


def raw_connection(conn: Connection) -> DBAPIConnection:
    """The driver's own connection under `conn`, for what must bypass SQLAlchemy (a
    statement it would wrap in a transaction, the hot path); never invalidated here."""
    from sqlalchemy import exc

    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is None:
        raise exc.ResourceClosedError("the connection was invalidated")
    return dbapi_connection


def translated_error(
    conn: Connection, sql: str, arguments: Any, error: DBAPIModule.Error
) -> exc.DBAPIError:
    """The driver's error as SQLAlchemy raises it, for any statement run on the driver's
    cursor; a lost connection is invalidated, as SQLAlchemy would."""
    from sqlalchemy import exc

    dialect = conn.dialect
    lost = dialect.is_disconnect(error, conn.connection.dbapi_connection, None)
    if lost:
        conn.invalidate()
    translated = exc.DBAPIError.instance(
        sql,
        arguments,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
    assert isinstance(translated, exc.DBAPIError)  # a driver's error always is
    return translated


def savepoint(conn: Connection, name: str) -> None:
    """SAVEPOINT `name` on the driver's cursor: SQLAlchemy's own (begin_nested) compiles
    a statement each time and sends the waiting writes first, which was nearly half of
    a batched allocation (melange.operations.run_batch). In a pipelined transaction it
    waits, like a `send` write, for the next statement that is read."""
    sql = f"SAVEPOINT {name}"
    waiting = conn.info.get(_WAITING)
    if waiting is not None:
        waiting.append((sql, None))
        return
    _direct(conn, sql)


def release_savepoint(conn: Connection, name: str, *, wait: bool = False) -> None:
    """RELEASE SAVEPOINT `name`, with the writes still waiting, in one round trip: an
    error of any of them is raised here, while the savepoint can still be rolled back.
    With `wait`, in a pipelined transaction, it waits too, like a `send` write: a round
    trip saved, but a failing write then surfaces with a later statement."""
    sql = f"RELEASE SAVEPOINT {name}"
    waiting = conn.info.get(_WAITING)
    if wait and waiting is not None:
        waiting.append((sql, None))
        return
    _closing(conn, sql)


def rollback_to_savepoint(conn: Connection, name: str) -> None:
    """ROLLBACK TO SAVEPOINT `name` (what waits is sent first: it may be the SAVEPOINT)."""
    _closing(conn, f"ROLLBACK TO SAVEPOINT {name}")


def _closing(conn: Connection, sql: str) -> None:
    waiting = conn.info.get(_WAITING)
    if waiting:
        _send_waiting(conn, waiting, then=(sql, None)).close()
        return
    _direct(conn, sql)


def _direct(conn: Connection, sql: str) -> None:
    cursor = raw_connection(conn).cursor()
    try:
        cursor.execute(sql, **_PREPARING.get(conn.dialect.driver, {}))
    except conn.dialect.loaded_dbapi.Error as error:
        raise translated_error(conn, sql, (), error) from error
    finally:
        cursor.close()
