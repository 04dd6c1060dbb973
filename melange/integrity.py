"""`melange db check`: is the store's data intact, page by page?

A damaged SQLite file often goes unnoticed: only the commands that happen to
read a damaged page fail ("database disk image is malformed"), and a page of
an index nobody reads today fails some later day. So the check reads
everything, with the database's own verifier, and says in one line what it
found. MariaDB/MySQL: CHECK TABLE on every table. PostgreSQL has no such
statement without an extension; every table is read whole, which makes the
server verify each page it reads (and its checksum, when the cluster has them).
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text

from melange.errors import StoreUnavailable
from melange.store import Store

MAX_SHOWN = 3  # problems named in the one-line summary


def check(store: Store) -> dict:
    """Verify every table; exit 6 with a summary line when anything is damaged."""
    problems, tables = store.read(_problems)
    if problems:
        shown = "; ".join(problems[:MAX_SHOWN])
        more = f" (and {len(problems) - MAX_SHOWN} more)" if len(problems) > MAX_SHOWN else ""
        raise StoreUnavailable(
            f"the store is damaged: {len(problems)} problem(s): {shown}{more}; "
            "restore it from a backup"
        )
    return {"status": "ok", "tables": tables}


def _problems(conn: Connection) -> tuple[list[str], int]:
    names = sorted(inspect(conn).get_table_names())
    dialect = conn.dialect.name
    if dialect == "sqlite":
        rows = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]
        return ([] if rows == ["ok"] else rows), len(names)
    if dialect in ("mysql", "mariadb"):
        quoted = ", ".join(conn.dialect.identifier_preparer.quote(n) for n in names)
        checked = conn.exec_driver_sql(f"CHECK TABLE {quoted}").all()
        bad = [f"{r[0]}: {r[3]}" for r in checked if r[2] == "error" or r[3] not in ("OK", None)]
        return [b for b in bad if not b.endswith(": Table is already up to date")], len(names)
    for name in names:
        conn.execute(text(f"SELECT count(*) FROM {conn.dialect.identifier_preparer.quote(name)}"))
    return [], len(names)
