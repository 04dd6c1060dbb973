"""Looking into a store behind the CLI's back: one statement, or every row."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool


def _url(db: Path | str) -> str:
    return db if isinstance(db, str) else f"sqlite:///{db}"


def execute_sql(db: Path | str, statement: str) -> list[tuple]:
    """Run one SQL statement on a store (a file path or a URL); its rows, if any."""
    engine = create_engine(_url(db), poolclass=NullPool)
    with engine.begin() as conn:
        result = conn.execute(text(statement))
        rows = [tuple(r) for r in result] if result.returns_rows else []
    engine.dispose()
    return rows


def dump_store(db: Path | str) -> list[tuple]:
    """Every row of every table, sorted: equal dumps mean an unchanged store. Each table
    is read with `SELECT *` (reflecting the tables' columns took most of a dump's time
    on the servers, and the rows are compared as the driver gives them). The token uses
    an HTTP server of this process recorded are written first (melanged.http.auth
    writes them after answering): the store as it is once the requests are done."""
    auth = sys.modules.get("melanged.http.auth")
    if auth is not None:
        auth.USES.flush()
    engine = create_engine(_url(db), poolclass=NullPool)
    rows = []
    with engine.connect() as conn:
        quote = conn.dialect.identifier_preparer.quote
        for name in sorted(inspect(conn).get_table_names()):
            for row in conn.execute(text(f"SELECT * FROM {quote(name)}")):
                rows.append((name, *map(repr, row)))
    engine.dispose()
    return sorted(rows)
