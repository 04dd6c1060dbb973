"""Wall time of whole `melange` CLI processes against a bare Python + sqlite3 process.

Every command is a fresh process of this virtualenv's interpreter (the
`melange` console script beside it), output discarded, run in rotating
order round after round after one untimed warm-up round; medians are
compared with the baseline process `python -c "import sqlite3; ...one insert..."`
measured in the same rounds.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    bare_sqlite_process,
    median,
    ms,
    rotating_walls,
    section,
    store_url,
    table,
)

ADDRESSES = 100_000


def _sizes(quick: bool) -> int:
    """Timed rounds (each command once per round)."""
    return 7 if quick else 9


def _melange() -> list[str]:
    script = Path(sys.executable).parent / "melange"
    if script.exists():
        return [str(script)]
    found = shutil.which("melange")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from melange_cli.main import main; sys.exit(main())"]


def run(quick: bool) -> str:
    from melange import operations
    from melange.store import Store

    rounds = _sizes(quick)
    with store_url("sqlite", "cli") as url, tempfile.TemporaryDirectory() as tmp:
        store = Store(url, release_hold=3600)
        operations.run(store, "block.create", {"cidr": "10.0.0.0/14", "name": "B"})
        for _ in range(ADDRESSES // 50_000):
            operations.run(store, "block.allocate", {"block": "B", "count": 50_000})
        store.close()

        melange = [*_melange(), "--db", url]
        commands = {
            "base": (
                '`python -c "import sqlite3; …one insert…"` (baseline)',
                bare_sqlite_process(Path(tmp)),
            ),
            "sqla": (
                '`python -c "import sqlalchemy"` (reference)',
                [sys.executable, "-c", "import sqlalchemy"],
            ),
            "version": ("`melange --version`", [*_melange(), "--version"]),
            "allocate": (
                "`melange -o plain block allocate B`",
                [*melange, "-o", "plain", "block", "allocate", "B"],
            ),
            "list": (
                f"`melange -o json ip list` ({ADDRESSES:,} addresses)",
                [*melange, "-o", "json", "ip", "list"],
            ),
        }
        times = rotating_walls({k: argv for k, (_, argv) in commands.items()}, rounds)

    medians = {key: median(values) for key, values in times.items()}
    base = medians["base"]
    rows = [
        [label, ms(medians[key]), f"{medians[key] / base:.1f}"]
        for key, (label, _) in commands.items()
    ]
    method = (
        f"Wall time of a whole process, median of {rounds} rounds (commands in rotating "
        f"order, after one untimed warm-up round); the store is an SQLite file holding "
        f"{ADDRESSES:,} allocated addresses in block B (a /14); ratios are against the "
        "bare Python + sqlite3 process of the same rounds."
    )
    return section(
        "CLI: process wall time",
        method,
        table(["command", "median wall time", "/ baseline"], rows),
    )
