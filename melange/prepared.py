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
the same ones SQLAlchemy would apply.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable

Processor = Callable[[Any], Any]


class _Form:
    """One statement as compiled for one dialect: SQL text, parameters, row shape."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("prepared statements take plain bind parameters only")
        self.sql = str(compiled)
        self.positional = compiled.positional
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        self.names = tuple(names)
        binds = [compiled.binds[name] for name in names]
        self.keys = tuple(bind.key for bind in binds)
        self.defaults = {bind.key: bind.value for bind in binds if not bind.required}
        self.processors: list[tuple[int, Processor]] = []
        for index, bind in enumerate(binds):
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors.append((index, processor))
        columns = getattr(compiled, "_result_columns", None) or []
        self.row = namedtuple("Row", [c[0] for c in columns]) if columns else None  # noqa: PYI024
        self.results: list[tuple[int, Processor]] = []
        for index, column in enumerate(columns):
            processor = column[3].dialect_impl(dialect).result_processor(dialect, None)
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

    def make_row(self, raw: tuple):
        if self.results:
            raw = list(raw)
            for index, processor in self.results:
                raw[index] = processor(raw[index])
        return self.row._make(raw)


class Prepared:
    """A Core statement, compiled on first use for each dialect it meets."""

    __slots__ = ("statement", "_forms")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[str, _Form] = {}  # one driver per dialect here

    def _form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = _Form(self.statement, dialect)
        return form

    def _execute(self, conn: Connection, params: dict[str, Any]):
        form = self._form(conn.dialect)
        arguments = form.arguments(params)
        dbapi_connection = conn.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(form.sql, arguments)
        except conn.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise translated_error(conn, form.sql, arguments, error) from error
        return form, cursor

    def run(self, conn: Connection, **params: Any) -> int:
        """Execute a statement that returns no rows; the number of rows it changed."""
        _form, cursor = self._execute(conn, params)
        count = cursor.rowcount
        cursor.close()
        return count

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


def translated_error(conn: Connection, sql: str, arguments, error: Exception) -> exc.DBAPIError:
    """The driver's error as SQLAlchemy raises it, for any statement run on the driver's
    cursor; a lost connection is invalidated, as SQLAlchemy would."""
    dialect = conn.dialect
    lost = dialect.is_disconnect(error, conn.connection.dbapi_connection, None)
    if lost:
        conn.invalidate()
    return exc.DBAPIError.instance(
        sql,
        arguments,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
