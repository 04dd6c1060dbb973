"""`block allocate --count 50000` as whole processes, piped and on a terminal, against the
in-process core call on the same store in the same run.

Each sample allocates 50,000 addresses into an empty /16 of its own in one SQLite
file store: once as `operations.run(store, "block.allocate", …)` in this process
(the core call), once as a `melange` process with stdout on a pipe that this
process drains (the default output there: plain, the bare addresses), once with
stdout on a pseudo-terminal 80 columns wide, also drained as it comes (the
default output there: table, which above 2,000 rows prints as plain text with a
note). A one-address `block allocate` process shows what start-up costs, and the
core call with SQLAlchemy's executemany (as the bulk path was) shows the change.
They alternate in rotating order; medians are compared.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.cli import _melange
from benchmarks.common import median, section, store_url, table, timed, verdict

COUNT = 50_000


def _samples(quick: bool) -> int:
    return 3 if quick else 5


def piped(argv: list[str]) -> float:
    """Seconds of a process whose stdout is a pipe read to its end."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    while process.stdout.read(1 << 16):
        pass
    if process.wait() != 0:
        raise RuntimeError(f"{argv} failed")
    return time.perf_counter() - start


def on_terminal(argv: list[str], columns: int = 80) -> float:
    """Seconds of a process whose stdout is a pseudo-terminal COLUMNS wide, drained."""
    main_fd, child_fd = os.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm"}
    env.pop("COLUMNS", None)
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=child_fd, stderr=subprocess.DEVNULL, env=env)
    os.close(child_fd)
    try:
        while os.read(main_fd, 1 << 16):
            pass
    except OSError:  # EIO: the process closed the terminal
        pass
    os.close(main_fd)
    if process.wait() != 0:
        raise RuntimeError(f"{argv} failed on a terminal")
    return time.perf_counter() - start


@contextmanager
def _sqlalchemy_insert(old: bool) -> Iterator[None]:
    """With `old`, bulk inserts go through SQLAlchemy's `Connection.execute` as before
    the driver's executemany took them (what the old code did), for the before row."""
    from sqlalchemy import insert

    from melange import addresses
    from melange.models import ip_addresses

    class Old:
        def send(self, conn, **row) -> None:
            conn.execute(insert(ip_addresses), [row])

        def many(self, conn, rows) -> None:
            conn.execute(insert(ip_addresses), list(rows))

    kept = addresses._INSERT_ONE
    if old:
        addresses._INSERT_ONE = Old()  # type: ignore[assignment]
    try:
        yield
    finally:
        addresses._INSERT_ONE = kept


def run(quick: bool) -> str:
    from melange import operations
    from melange.store import Store

    samples = _samples(quick)
    times: dict[str, list[float]] = {}
    with store_url("sqlite", "bulkcli") as url:
        store = Store(url, release_hold=3600)
        blocks = 0

        def new_block() -> str:
            nonlocal blocks
            blocks += 1
            operations.run(store, "block.create", {"cidr": f"10.{blocks}.0.0/16",
                                                   "name": f"b{blocks}"})  # fmt: skip
            return f"b{blocks}"

        def command(*extra: str) -> list[str]:
            return [*_melange(), "--db", url, *extra, "block", "allocate", new_block(),
                    "--count", str(COUNT)]  # fmt: skip

        def core(old: bool = False) -> float:
            params = {"block": new_block(), "count": COUNT}
            with _sqlalchemy_insert(old):
                return timed(lambda: operations.run(store, "block.allocate", params))

        runs = {
            "core": core,
            "old": lambda: core(old=True),
            "one": lambda: piped([*_melange(), "--db", url, "block", "allocate", new_block()]),
            "piped": lambda: piped(command()),
            "json": lambda: piped(command("-o", "json")),
            "terminal": lambda: on_terminal(command()),
        }  # fmt: skip
        for key in runs:  # warm-up, untimed
            runs[key]()
        for i in range(samples):
            order = list(runs) if i % 2 == 0 else list(runs)[::-1]
            for key in order:
                times.setdefault(key, []).append(runs[key]())
        store.close()
    m = {key: median(values) for key, values in times.items()}
    core, pipe, term = m["core"], m["piped"], m["terminal"]
    rows = [
        ["in-process core call (`operations.run`)", f"{core:.2f} s", "1.00", "—"],
        ["in-process core call, rows through SQLAlchemy's executemany (the old path)",
         f"{m['old']:.2f} s", f"{m['old'] / core:.2f}", "— (before)"],
        ["whole process, piped (plain)", f"{pipe:.2f} s", f"{pipe / core:.2f}",
         verdict(pipe / core, 1.5, at_most=True)],
        ["whole process, piped, `-o json`", f"{m['json']:.2f} s", f"{m['json'] / core:.2f}",
         "— (reference)"],
        ["whole process, 80-column terminal (table → plain)", f"{term:.2f} s",
         f"{term / core:.2f}", f"terminal / piped {term / pipe:.2f}: "
         + verdict(term / pipe, 1.5, at_most=True)],
        ["one-address `block allocate` process, piped (start-up and one row)", f"{m['one']:.2f} s",
         f"{m['one'] / core:.2f}", "— (reference)"],
        ["piped 50,000 minus the one-address process", f"{pipe - m['one']:.2f} s",
         f"{(pipe - m['one']) / core:.2f}", "— (what the rows cost the process)"],
    ]  # fmt: skip
    method = (
        f"`block allocate --count {COUNT:,}` into an empty /16 of its own in one SQLite file "
        f"store, median of {samples} samples each after one untimed warm-up, all in "
        "rotating order. The core call runs in this process on the store it opened; the "
        "processes are `melange --db …` with stdout on a pipe or on a pseudo-terminal 80 "
        "columns wide, drained as it comes."
    )
    return section(
        f"Bulk allocation as a whole process ({COUNT:,} addresses)",
        method,
        table(["case", "median wall time", "/ core call", "target"], rows),
    )
