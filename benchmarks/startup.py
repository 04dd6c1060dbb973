"""Start-up of direct commands: the lean path (melange.lean) against the full one.

Every command is a fresh process of this virtualenv's interpreter, output
discarded, in rotating order round after round after one untimed warm-up
round (benchmarks.common.rotating_walls). The baseline is the bare process
`python -c "import sqlite3; …one insert…"`; the full path is the same CLI
with the lean path switched off in that process, as melange ran before it.
On MariaDB and PostgreSQL (melange.leanstore) the same pair runs against a
database made for the run, beside a bare process of the driver alone
(connect, one insert, commit). The processes may cache bytecode
(PYTHONDONTWRITEBYTECODE is dropped for them), as an installed melange has it:
compiling the sources again in every process would be a third of a lean
command's time, and no user's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from benchmarks.common import (
    BACKEND_LABELS,
    BackendUnavailable,
    bare_sqlite_process,
    median,
    ms,
    rotating_walls,
    section,
    store_url,
    table,
)

GOAL = 3.0  # a direct `block allocate` process, times the baseline (issue 17)
SERVERS = ("mariadb", "postgresql")
# The bare driver process of each server: connect, one insert, commit.
BARE = {
    "mariadb": "import pymysql; c = pymysql.connect(host={host!r}, port={port}, user={user!r}, "
               "database={db!r}, ssl_disabled=True); k = c.cursor(); k.execute("
               "'INSERT INTO locks (name, counter) VALUES (%s, 0)', ('bare' + str(id(k)),)); "
               "c.commit()",
    "postgresql": "import psycopg; c = psycopg.connect(host={host!r}, port={port}, user={user!r}, "
                  "dbname={db!r}); c.execute('INSERT INTO locks (name, counter) VALUES (%s, 0)', "
                  "('bare' + str(id(c)),)); c.commit()",
}  # fmt: skip


def _cli(db: str, *args: str, lean: bool) -> list[str]:
    off = "" if lean else "import melange_cli.context as c; c.LEAN_OPERATIONS = frozenset(); "
    code = f"import sys; {off}from melange_cli.main import main; sys.exit(main())"
    return [sys.executable, "-c", code, "--db", db, "-o", "plain", *args]


def _prepared(url: str) -> None:
    """A block to allocate from and an address to show, made on the full path."""
    from melange import operations
    from melange.store import Store

    store = Store(url)
    operations.run(store, "block.create", {"cidr": "10.0.0.0/12", "name": "B"})
    operations.run(store, "block.allocate", {"block": "B", "address": "10.0.0.9"})
    store.close()


def _bare_server(backend: str, url: str) -> list[str]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    code = BARE[backend].format(host=parsed.host, port=parsed.port, user=parsed.username,
                                db=parsed.database)  # fmt: skip
    return [sys.executable, "-c", code]


def run(quick: bool) -> str:
    rounds = 7 if quick else 15
    allocate, show = ("block", "allocate", "B"), ("ip", "show", "10.0.0.9")
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        db = str(Path(tmp) / "melange.db")
        _prepared(f"sqlite:///{db}")
        commands = {
            "base": ('`python -c "import sqlite3; …one insert…"`', bare_sqlite_process(Path(tmp))),
            "lean": ("`melange block allocate B` (lean)", _cli(db, *allocate, lean=True)),
            "full": ("`melange block allocate B` (full path)", _cli(db, *allocate, lean=False)),
            "show": ("`melange ip show 10.0.0.9` (lean)", _cli(db, *show, lean=True)),
            "show_full": ("`melange ip show 10.0.0.9` (full path)", _cli(db, *show, lean=False)),
        }
        for backend in () if quick else SERVERS:
            label = BACKEND_LABELS[backend]
            try:
                url = stack.enter_context(store_url(backend, "startup"))
            except BackendUnavailable as error:
                notes.append(f"{label} skipped: {error}")
                continue
            _prepared(url)
            commands[f"{backend}_bare"] = (f"{label}: the driver alone, one insert",
                                           _bare_server(backend, url))  # fmt: skip
            commands[f"{backend}_lean"] = (f"{label}: `melange block allocate B` (lean)",
                                           _cli(url, *allocate, lean=True))  # fmt: skip
            commands[f"{backend}_full"] = (f"{label}: `melange block allocate B` (full path)",
                                           _cli(url, *allocate, lean=False))  # fmt: skip
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        with mock.patch.dict(os.environ, environ, clear=True):
            times = rotating_walls({k: argv for k, (_, argv) in commands.items()}, rounds)
    medians = {key: median(values) for key, values in times.items()}
    base = medians["base"]
    rows = [
        [label, ms(medians[key]), f"{medians[key] / base:.2f}"]
        for key, (label, _) in commands.items()
    ]
    lean = medians["lean"] / base
    method = (
        f"Wall time of a whole process, median of {rounds} rounds (rotating order, one "
        "untimed warm-up round); ratios against the bare Python + sqlite3 insert process "
        f"of the same rounds. Goal: a direct `block allocate` on SQLite ≤ {GOAL:g}× the "
        f"baseline: {lean:.2f}×, {'met' if lean <= GOAL else 'MISSED'}."
    )
    body = table(["command", "median wall time", "/ baseline"], rows)
    if notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in notes)
    return section("Start-up: direct commands without SQLAlchemy", method, body)
