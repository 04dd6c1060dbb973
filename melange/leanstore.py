"""Which lean store (melange.lean) a store URL gets, and the lean store of a server.

A direct command on MariaDB, MySQL or PostgreSQL paid the same import of
SQLAlchemy as on SQLite, and more: the dialect's first connection reads the
server's settings. Here the hot commands run on the driver alone (PyMySQL,
psycopg), with the statements SQLAlchemy compiled for it ahead of time
(melange/shipped_mysql.py, shipped_postgresql.py), connected as melange.store
connects: the same timeouts, TLS only when the URL asks for it, READ COMMITTED,
and on PyMySQL the row counts SQLAlchemy asks for (rows matched, not changed).

Only a plain URL is served lean: a scheme melange names (`mysql+pymysql`,
`mariadb+pymysql`, `postgresql+psycopg`), a host, a database, at most a user
and a password; query arguments (TLS files, a Unix socket, libpq options) are
SQLAlchemy's to translate, so such a URL takes the full path, as does any
error here (melange.lean), with two exceptions that stop the command as the
full path would stop it (exit 6, in its words): a server that cannot be
reached (a second attempt would only double the wait), and a connection lost
once a COMMIT was sent (the change may have been made: running it again could
make it twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from melange.clock import SYSTEM, Clock
from melange.errors import StoreUnavailable
from melange.lean import LeanRunner, LeanStore, NeedsFullPath, sqlite_path

CONNECT_TIMEOUT = 3  # seconds to reach a server: a dead host is exit 6 soon
IO_TIMEOUT = 60  # seconds PyMySQL waits on a read or write of a connected server
# Once a writer holds a block's lock, each statement must see what the previous
# holder committed: REPEATABLE READ's older snapshot would not.
ISOLATION = "READ COMMITTED"
# PyMySQL's codes for a connection that failed mid-statement (no answer came).
LOST_MYSQL = {2006, 2013, 2014, 2055}
DRIVERS = {"mysql+pymysql": "mysql", "mariadb+pymysql": "mysql", "postgresql+psycopg": "postgresql"}


def driver_options(backend: str, *, tls_asked: bool) -> dict[str, Any]:
    """The driver's connection options melange adds to what a URL says (melange.store
    passes them to SQLAlchemy, the lean store to the driver)."""
    if backend == "mysql":
        options: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": IO_TIMEOUT,
            "write_timeout": IO_TIMEOUT,
        }
        if not tls_asked:
            # PyMySQL tries TLS on every connection unless told not to: it loads the
            # system CA bundle (0.1 s, more than a whole command) to then verify nothing.
            # TLS to MariaDB is what the URL asks for (`?ssl_ca=…`), verified; else none.
            options["ssl_disabled"] = True
        return options
    if backend == "postgresql":
        # No JIT: melange's statements are short, and a page query whose row estimate
        # was poor compiled for 0.3 s to then run for 3 ms (every page of `ip list`).
        return {"connect_timeout": CONNECT_TIMEOUT, "options": "-c jit=off"}
    return {}


class ServerTarget(NamedTuple):
    """A server store as a plain URL names it."""

    backend: str  # "mysql" or "postgresql"
    host: str
    port: int | None
    database: str
    user: str | None
    password: str | None


def server_target(url: str) -> ServerTarget | None:
    """The server a plain MariaDB/MySQL/PostgreSQL URL names, else None (full path)."""
    scheme, sep, rest = url.partition("://")
    backend = DRIVERS.get(scheme)
    if backend is None or not sep or any(c in rest for c in "?#"):
        return None
    if rest.count("@") > 1:
        return None  # the full path says what is wrong with it
    authority, slash, database = rest.partition("/")
    if not slash or not database or "/" in database or "%" in database:
        return None
    userinfo, at, hostport = authority.rpartition("@")
    if "%" in hostport or hostport.endswith(":"):
        return None
    try:
        parts = urlsplit(f"//{hostport}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or port == 0:  # the full path says what is wrong (port 0 is no default)
        return None
    user = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    return ServerTarget(backend, host, port, database, user, password)


class LeanServerStore(LeanRunner):
    """A lean store on a database server (see the module doc); a driver's subclass says
    how to connect, begin, tell a lost connection and stream."""

    def __init__(
        self, target: ServerTarget, url: str, *, release_hold: int, clock: Clock = SYSTEM
    ) -> None:
        self.target = target
        self.url = url
        self.release_hold = release_hold
        self.clock = clock
        self._raw: Any = None

    def require_existing(self) -> None:
        """A server database is there or not: the connection tells."""

    def _connection(self) -> Any:
        if self._raw is None:
            try:
                self._raw = self._connect()
            except self._errors as error:
                # What the full path would say after its own attempt, without making the
                # user wait for a second connect timeout.
                raise StoreUnavailable(self._words("cannot reach the store", error)) from None
        return self._raw

    def _connect(self) -> Any:
        raise NotImplementedError

    def _lost(self, raw: Any, error: BaseException) -> bool:
        """Whether the connection itself failed (no answer: the COMMIT may have been
        made), as opposed to the server refusing the statement."""
        raise NotImplementedError

    def _words(self, what: str, error: BaseException) -> str:
        """`what`, the store's URL and the driver's words, passwords hidden (melange.store's
        `unavailable`)."""
        from melange.urls import first_line, redact, safe_url

        return f"{what} {safe_url(self.url)}: {redact(first_line(error), self.url)}"

    def _begin(self, raw: Any, write: bool) -> None:
        pass  # the first statement begins the transaction (autocommit is off)

    def _commit(self, raw: Any) -> None:
        try:
            raw.commit()
        except self._errors as error:
            if not self._lost(raw, error):
                # The server answered the COMMIT with a refusal (a deadlock, Galera's
                # certification): nothing was committed, and the full path retries.
                self._rollback(raw)
                raise NeedsFullPath(str(error)) from None
            self.close()
            raise StoreUnavailable(self._words("lost the store", error)) from None

    def _rollback(self, raw: Any) -> None:
        try:
            raw.rollback()
        except self._errors:
            self.close()  # a connection that cannot roll back is not reused

    def close(self) -> None:
        if self._raw is not None:
            try:
                self._raw.close()
            except self._errors:
                pass
            self._raw = None


class LeanMysqlStore(LeanServerStore):
    """MariaDB and MySQL, on PyMySQL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import pymysql

        from melange import shipped_mysql

        super().__init__(*args, **kwargs)
        self._shipped = shipped_mysql
        self._errors = (pymysql.Error,)

    def _connect(self) -> Any:
        import pymysql
        from pymysql.constants import CLIENT

        target = self.target
        return pymysql.connect(
            host=target.host, port=target.port or 3306, user=target.user,
            password=target.password or "", database=target.database,
            client_flag=CLIENT.FOUND_ROWS, autocommit=False,
            init_command=f"SET SESSION TRANSACTION ISOLATION LEVEL {ISOLATION}",
            **driver_options("mysql", tls_asked=False),
        )  # fmt: skip

    def _begin(self, raw: Any, write: bool) -> None:
        raw.begin()

    def _lost(self, raw: Any, error: BaseException) -> bool:
        code = error.args[0] if error.args else None
        return code in LOST_MYSQL or not raw.open

    def _cursor_kinds(self, raw: Any) -> dict[str, Any]:
        import pymysql.cursors

        return {"stream": lambda: raw.cursor(pymysql.cursors.SSCursor)}


class LeanPostgresStore(LeanServerStore):
    """PostgreSQL, on psycopg."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import psycopg

        from melange import shipped_postgresql

        super().__init__(*args, **kwargs)
        self._shipped = shipped_postgresql
        self._errors = (psycopg.Error,)

    def _connect(self) -> Any:
        import psycopg

        target = self.target
        given = {"user": target.user, "password": target.password, "port": target.port}
        arguments: dict[str, Any] = {key: value for key, value in given.items() if value}
        raw = psycopg.connect(host=target.host, dbname=target.database, **arguments,
                              **driver_options("postgresql", tls_asked=False))  # fmt: skip
        raw.isolation_level = psycopg.IsolationLevel[ISOLATION.replace(" ", "_")]
        return raw

    def _lost(self, raw: Any, error: BaseException) -> bool:
        return bool(raw.broken or raw.closed)

    def _cursor_kinds(self, raw: Any) -> dict[str, Any]:
        return {"stream": lambda: raw.cursor(name="melange_lean_stream")}


STORES: dict[str, type[LeanServerStore]] = {
    "mysql": LeanMysqlStore,
    "postgresql": LeanPostgresStore,
}


def lean_store(url: str, *, release_hold: int, clock: Clock = SYSTEM) -> LeanRunner | None:
    """The lean store of a store URL: a plain SQLite file (melange.lean) or a plain
    server URL (above); None for anything else, which the full path serves."""
    path: Path | None = sqlite_path(url)
    if path is not None:
        return LeanStore(path, release_hold=release_hold, clock=clock)
    target = server_target(url)
    if target is None:
        return None
    return STORES[target.backend](target, url, release_hold=release_hold, clock=clock)
