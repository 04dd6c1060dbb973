"""Allocations per second on a 3-node MariaDB Galera cluster, beside one MariaDB server.

The cluster is the tests' (tests/support/galera.py): three mariadbd on this machine,
started for the benchmark and removed after it. The worker processes are the
concurrency benchmark's (benchmarks/worker.py): single allocations through the
core API, one transaction each, distinct MACs, started together, counted over a
fixed window after a warm-up (steady state). On the cluster, process
i talks to node i mod 3 (1 process: node 1 only; 3: one per node; 12: four per
node); on the single server, all talk to it. Two layouts: every process on one
shared /16 (on Galera, writers on different nodes then conflict at COMMIT and
retry), and a /16 per process. Retries are the store's backoffs (certification
failures, deadlocks, unique-key clashes), given per 1,000 allocations.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import BackendUnavailable, median, section, store_url, table
from benchmarks.concurrency import Window, _Blocks, _Pool, timing

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = (1, 3, 12)
LAYOUTS = ("shared", "own")
SYNC_WAIT = "init_command=SET+SESSION+wsrep_sync_wait%3D1"
SINGLE = "MariaDB, one server"
GALERA = "Galera, 3 nodes"
GALERA_SYNCED = "Galera, 3 nodes, wsrep_sync_wait=1"


def _galera_module():
    """tests/support/galera.py, the tests' own cluster."""
    from tests.support import galera

    return galera


def _measure(
    pool: _Pool, stores: dict[str, list[str]], window: Window, repeats: int
) -> dict[str, dict]:
    """Samples per store label and (layout, processes); process i uses urls[i % len(urls)].

    Every repeat runs each store in turn, so drift in the machine's load spreads
    over all of them alike."""
    samples = {label: {(lay, n): [] for lay in LAYOUTS for n in PROCESSES} for label in stores}
    makers = {label: _Blocks(urls[0]) for label, urls in stores.items()}
    try:
        for _ in range(repeats):
            for label, urls in stores.items():
                for layout in LAYOUTS:
                    for n in PROCESSES:
                        if layout == "shared":
                            names = [makers[label].create()] * n
                        else:
                            names = [makers[label].create() for _ in range(n)]
                        targets = [(urls[i % len(urls)], name) for i, name in enumerate(names)]
                        samples[label][(layout, n)].append(pool.run_targets(targets, window))
    finally:
        for maker in makers.values():
            maker.store.close()
    return samples


@contextlib.contextmanager
def _cluster_stores() -> Iterator[tuple[dict[str, list[str]], float]]:
    """A fresh 3-node cluster with two stores: default reads, and wsrep_sync_wait=1."""
    galera = _galera_module()
    cluster = galera.GaleraCluster(3)
    try:
        cluster.start()
    except galera.GaleraUnavailable as error:
        raise BackendUnavailable(str(error).splitlines()[0]) from None
    try:
        cluster.create_database("plain")
        cluster.create_database("synced")
        yield (
            {
                GALERA: cluster.urls("plain"),
                GALERA_SYNCED: [f"{url}?{SYNC_WAIT}" for url in cluster.urls("synced")],
            },
            cluster.startup_seconds,
        )
    finally:
        cluster.stop()


def _single_server() -> str:
    """Where the single server is and how it flushes, for the method text."""
    from sqlalchemy import text

    from benchmarks.common import _admin_engine, _server_url

    where = f"{_server_url('mariadb').host}:{_server_url('mariadb').port or 3306}"
    engine = _admin_engine("mariadb")
    try:
        with engine.connect() as conn:
            flush = conn.execute(text("SELECT @@innodb_flush_log_at_trx_commit")).scalar()
    except Exception:  # noqa: BLE001  (only a detail of the description)
        flush = "unknown"
    finally:
        engine.dispose()
    return (
        f"the MariaDB on {where} (a fresh database, its own settings: "
        f"innodb_flush_log_at_trx_commit={flush})"
    )


def _row(label: str, layout: str, samples: dict) -> tuple[list[object], str | None]:
    rates = {n: median([s["rate"] for s in samples[(layout, n)]]) for n in PROCESSES}
    per_1000 = {}
    for n in PROCESSES:
        runs = samples[(layout, n)]
        done = sum(s["total"] for s in runs)
        per_1000[n] = 1000 * sum(s["retries"] for s in runs) / done if done else float("nan")
    runs = [s for n in PROCESSES for s in samples[(layout, n)]]
    errors = sum(s["errors"] for s in runs)
    sample_error = next((s["error_sample"] for s in runs if s["error_sample"]), None)
    row = [
        label,
        "one shared /16" if layout == "shared" else "a /16 per process",
        *(f"{rates[n]:.0f}" for n in PROCESSES),
        f"{rates[12] / rates[1]:.2f}",
        " / ".join(f"{per_1000[n]:.0f}" for n in PROCESSES),
        errors,
    ]
    note = f"{label}, {layout}: e.g. {sample_error}" if sample_error else None
    return row, note


def run(quick: bool) -> str:
    window, repeats = timing(quick)
    notes: list[str] = []
    startup = None
    stores: dict[str, list[str]] = {}
    with contextlib.ExitStack() as stack:
        try:
            stores[SINGLE] = [stack.enter_context(store_url("mariadb", "galera"))]
        except BackendUnavailable as error:
            notes.append(f"single MariaDB skipped: {error}")
        try:
            cluster_stores, startup = stack.enter_context(_cluster_stores())
            stores.update(cluster_stores)
        except BackendUnavailable as error:
            notes.append(f"Galera skipped: {error}")
        # Closed first (the stack unwinds backwards): workers let go of their
        # connections while the servers still answer.
        pool = _Pool(max(PROCESSES))
        stack.callback(pool.close)
        measured = _measure(pool, stores, window, repeats) if stores else {}
    rows = []
    for label, samples in measured.items():
        for layout in LAYOUTS:
            row, note = _row(label, layout, samples)
            rows.append(row)
            if note:
                notes.append(note)
    header = [
        "store",
        "layout",
        *(f"allocs/s, {n} proc" for n in PROCESSES),
        "12p / 1p",
        "retries per 1,000 allocations (1/3/12 p)",
        "errors",
    ]
    method = (
        f"Each process makes single allocations (core API, one transaction each, distinct "
        f"MACs) in a loop; processes start together and, after a {window.warmup:g} s "
        f"warm-up, the allocations that end within the next {window.window:g} s are counted. "
        f"Figures are total allocations/s, median of {repeats} run(s) per configuration, "
        f"each on fresh blocks, the stores taking turns "
        f"in each repeat. On the cluster, process i uses node i mod 3, so 3 and 12 processes "
        f"are spread evenly over the three nodes; the single server is {_single_server()}. "
        f"All three Galera nodes run on this machine, with innodb_flush_log_at_trx_commit=2 "
        f"as usual on Galera (a commit is safe once the other nodes have it) and replication "
        f"over loopback, so the figures show the cost of certification and retries, not of a "
        f"network. The wsrep_sync_wait=1 rows set it per session (in the URL): every read "
        f"first waits until the node has applied what the cluster committed before it. "
        f"Retries are the store's backoffs over whole runs (warm-up included), per 1,000 "
        f"allocations made in them. The machine has {os.cpu_count()} CPU(s), shared by the "
        f"clients and all servers."
    )
    if startup is not None:
        method += f" The cluster took {startup:.1f} s to start (3 nodes, rsync SST)."
    body = table(header, rows)
    if notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in notes)
    return section("Galera: allocations per second on a 3-node cluster", method, body)
