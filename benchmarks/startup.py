"""Start-up of direct commands: the lean path (melange.lean) against the full one.

Every command is a fresh process of this virtualenv's interpreter, output
discarded, in rotating order round after round after one untimed warm-up
round (benchmarks.common.rotating_walls). The baseline is the bare process
`python -c "import sqlite3; …one insert…"`; the full path is the same CLI
with the lean path switched off in that process, as melange ran before it.
The processes may cache bytecode (PYTHONDONTWRITEBYTECODE is dropped for
them), as an installed melange has it: compiling the sources again in every
process would be a third of a lean command's time, and no user's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

from benchmarks.common import bare_sqlite_process, median, ms, rotating_walls, section, table

GOAL = 3.0  # a direct `block allocate` process, times the baseline (issue 17)


def _cli(db: Path, *args: str, lean: bool) -> list[str]:
    off = "" if lean else "import melange_cli.context as c; c.LEAN_OPERATIONS = frozenset(); "
    code = f"import sys; {off}from melange_cli.main import main; sys.exit(main())"
    return [sys.executable, "-c", code, "--db", str(db), "-o", "plain", *args]


def run(quick: bool) -> str:
    from melange import operations
    from melange.store import Store

    rounds = 7 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "melange.db"
        store = Store(f"sqlite:///{db}")
        operations.run(store, "block.create", {"cidr": "10.0.0.0/12", "name": "B"})
        operations.run(store, "block.allocate", {"block": "B", "address": "10.0.0.9"})
        store.close()
        allocate, show = ("block", "allocate", "B"), ("ip", "show", "10.0.0.9")
        commands = {
            "base": ('`python -c "import sqlite3; …one insert…"`', bare_sqlite_process(Path(tmp))),
            "lean": ("`melange block allocate B` (lean)", _cli(db, *allocate, lean=True)),
            "full": ("`melange block allocate B` (full path)", _cli(db, *allocate, lean=False)),
            "show": ("`melange ip show 10.0.0.9` (lean)", _cli(db, *show, lean=True)),
            "show_full": ("`melange ip show 10.0.0.9` (full path)", _cli(db, *show, lean=False)),
        }
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
        "untimed warm-up round), on an SQLite store; ratios against the bare Python + "
        f"sqlite3 insert process of the same rounds. Goal: a direct `block allocate` "
        f"≤ {GOAL:g}× the baseline: {lean:.2f}×, {'met' if lean <= GOAL else 'MISSED'}."
    )
    return section(
        "Start-up: direct commands without SQLAlchemy",
        method,
        table(["command", "median wall time", "/ baseline"], rows),
    )
