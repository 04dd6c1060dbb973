"""Looking into a store behind the CLI's back: one statement, or every row."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData, create_engine, select, text
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
    """Every row of every table, sorted: equal dumps mean an unchanged store."""
    engine = create_engine(_url(db), poolclass=NullPool)
    rows = []
    with engine.connect() as conn:
        meta = MetaData()
        meta.reflect(conn)
        for name, table in sorted(meta.tables.items()):
            for row in conn.execute(select(table)):
                rows.append((name, *map(repr, row)))
    engine.dispose()
    return sorted(rows)
