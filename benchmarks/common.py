"""Shared pieces of the benchmarks: stores on each backend, timing, Markdown tables.

Server stores are databases of their own, named melange_bench_<pid>_<tag>, created
for one benchmark and dropped after it. The servers come from MELANGE_BENCH_MYSQL_URL
and MELANGE_BENCH_PG_URL (server URLs without a database), defaulting to the
local ones `make test` starts; a server that does not answer is skipped, saying so.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SERVER_URLS = {
    "mariadb": ("MELANGE_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"),
    "postgresql": ("MELANGE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"),
}
BACKENDS = ("sqlite", "mariadb", "postgresql")
BACKEND_LABELS = {"sqlite": "SQLite (file, WAL)", "mariadb": "MariaDB", "postgresql": "PostgreSQL"}


class BackendUnavailable(Exception):
    """The database server of a backend does not answer."""


def _server_url(backend: str):
    from sqlalchemy.engine import make_url

    env, default = SERVER_URLS[backend]
    return make_url(os.environ.get(env, default))


def _admin_engine(backend: str):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    admin_db = "postgres" if backend == "postgresql" else None
    return create_engine(
        _server_url(backend).set(database=admin_db),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )


@contextmanager
def store_url(backend: str, tag: str) -> Iterator[str]:
    """A URL of a fresh, empty store on `backend`, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="melange-bench-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'melange.db'}"
        return
    from sqlalchemy import text

    name = f"melange_bench_{os.getpid()}_{tag}_{uuid.uuid4().hex[:6]}"
    engine = _admin_engine(backend)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as error:  # noqa: BLE001  (reported as a skipped row)
        engine.dispose()
        raise BackendUnavailable(f"{backend} does not answer: {error}") from None
    try:
        yield _server_url(backend).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


def mac(n: int, prefix: int = 0x02) -> str:
    """A distinct locally administered unicast MAC for each n < 2**40."""
    value = (prefix << 40) | n
    return ":".join(f"{(value >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline else "n/a"


def verdict(value: float, target: float, *, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    sign = "≤" if at_most else "≥"
    return f"{sign} {target:g}: {'met' if ok else 'MISSED'}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def section(title: str, method: str, body: str) -> str:
    return f"## {title}\n\n{method}\n\n{body}\n"


def wall(argv: list[str]) -> float:
    """Seconds one whole process takes."""
    import subprocess
    import time

    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - start


def rotating_walls(argvs: dict[str, list[str]], rounds: int) -> dict[str, list[float]]:
    """Wall times of several commands: one untimed warm-up round, then `rounds` rounds in
    rotating order, so drift in the machine's load spreads over all of them alike."""
    times: dict[str, list[float]] = {key: [] for key in argvs}
    keys = list(argvs)
    for key in keys:
        wall(argvs[key])
    for i in range(rounds):
        shift = i % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(wall(argvs[key]))
    return times


# The raw baseline's table, shaped like melange's ip_addresses (see benchmarks/bulk.py).
RAW_SCHEMA = """
CREATE TABLE blocks (id INTEGER NOT NULL PRIMARY KEY);
CREATE TABLE interfaces (id INTEGER NOT NULL PRIMARY KEY);
CREATE TABLE ip_addresses (
    id INTEGER NOT NULL,
    block_id INTEGER NOT NULL,
    address BLOB NOT NULL,
    mac BIGINT,
    active_mac BIGINT,
    hostname VARCHAR(253),
    interface_id INTEGER,
    tenant VARCHAR(255),
    state VARCHAR(9) NOT NULL,
    allocated_at DATETIME NOT NULL,
    released_at DATETIME,
    PRIMARY KEY (id),
    CHECK ((state = 'allocated' AND released_at IS NULL)
           OR (state = 'held' AND released_at IS NOT NULL)),
    CHECK (active_mac IS NULL OR (state = 'allocated' AND active_mac = mac)),
    CHECK (state IN ('allocated', 'held')),
    FOREIGN KEY (block_id) REFERENCES blocks (id) ON DELETE RESTRICT,
    FOREIGN KEY (interface_id) REFERENCES interfaces (id) ON DELETE SET NULL,
    UNIQUE (block_id, active_mac),
    UNIQUE (block_id, address)
);
CREATE INDEX ix_ip_addresses_address ON ip_addresses (address);
CREATE INDEX ix_ip_addresses_block_id_state_released_at
    ON ip_addresses (block_id, state, released_at);
CREATE INDEX ix_ip_addresses_interface_id ON ip_addresses (interface_id);
CREATE INDEX ix_ip_addresses_mac ON ip_addresses (mac);
"""


def bare_sqlite_process(tmp: Path) -> list[str]:
    """The CLI baselines: argv of a new Python process making one sqlite3 insert."""
    import sqlite3
    import sys

    raw_path = tmp / "raw.db"
    conn = sqlite3.connect(raw_path)
    conn.executescript(RAW_SCHEMA + "INSERT INTO blocks (id) VALUES (1);")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    insert = (
        "INSERT INTO ip_addresses (block_id, address, state, allocated_at) "
        "VALUES (1, randomblob(16), 'allocated', datetime())"
    )
    code = (
        f'import sqlite3; c = sqlite3.connect({str(raw_path)!r}); c.execute("{insert}"); c.commit()'
    )
    return [sys.executable, "-c", code]
