"""Allocations per second from 1, 4 and 16 processes on each backend.

Each process (benchmarks/worker.py) makes single allocations through the core
API, one transaction each, with MACs of its own, in a loop. All processes of a
run start together at a given time, and the allocations that end in a fixed
window after a short warm-up are counted (steady state). Two layouts: every
process on one shared /16, and each process on a /16 of its own. Every
configuration is run several times (interleaved, each on fresh blocks) and the
median throughput is reported, with per-allocation latency and fairness.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from benchmarks.common import (
    BACKEND_LABELS,
    BACKENDS,
    BackendUnavailable,
    median,
    section,
    store_url,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = (1, 4, 16)
# Time from sending the start time to the start: every worker is waiting by then.
START_DELAY = 0.05
LAYOUTS = ("shared", "own")


class Window(NamedTuple):
    """How long each run allocates before it is measured, and how long it is measured (s)."""

    warmup: float
    window: float


def timing(quick: bool) -> tuple[Window, int]:
    """(timing of each run, repeats), shared with the Galera benchmark."""
    return (Window(0.2, 0.5), 1) if quick else (Window(0.3, 2.0), 3)


class _Blocks:
    """Fresh, non-overlapping /16s: 10.0/16, 10.1/16, ... 10.255/16, 11.0/16, ..."""

    def __init__(self, url: str) -> None:
        from melange.store import Store

        self.store = Store(url, release_hold=3600)
        self.next = 0

    def create(self) -> str:
        from melange import operations

        k = self.next
        self.next += 1
        name = f"c{k}"
        cidr = f"{10 + k // 256}.{k % 256}.0.0/16"
        operations.run(self.store, "block.create", {"cidr": cidr, "name": name})
        return name


class _Pool:
    """Worker processes, started once and given one run at a time."""

    def __init__(self, size: int, module: str = "benchmarks.worker") -> None:
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        self.runs = 0
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", module, str(w)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=env,
            )
            for w in range(size)
        ]

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _reply(self, proc: subprocess.Popen) -> str:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark worker died (exit status {proc.wait()})")
        return line.strip()

    def run(self, url: str, blocks: list[str], window: Window) -> dict:
        """One worker per entry of `blocks`, started together; throughput and retries."""
        return self.run_targets([(url, block) for block in blocks], window)

    def run_targets(self, targets: list[tuple[str, str]], window: Window, **extra: str) -> dict:
        """One worker per (store URL, block), started together; throughput and retries.
        `extra` goes to every worker with the command (what an HTTP client needs)."""
        self.runs += 1
        procs = self.procs[: len(targets)]
        for proc, (url, block) in zip(procs, targets, strict=True):
            command = {"url": url, "block": block, **window._asdict(), **extra}
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        for proc in procs:
            if (line := self._reply(proc)) != "ready":
                raise RuntimeError(f"a benchmark worker failed to start: {line}")
        start_at = time.monotonic() + START_DELAY
        for proc in procs:
            proc.stdin.write(f"{start_at!r}\n")
            proc.stdin.flush()
        results = [json.loads(self._reply(proc)) for proc in procs]
        latencies = sorted(us for r in results for us in r["latencies_us"])
        done = sum(r["allocations"] for r in results)
        return {
            "rate": done / window.window,
            "allocations": done,
            "total": sum(r["total"] for r in results),
            "p50_ms": _percentile(latencies, 0.50) / 1000,
            "p99_ms": _percentile(latencies, 0.99) / 1000,
            "max_ms": (latencies[-1] if latencies else float("nan")) / 1000,
            "least_share": min(r["allocations"] for r in results) / done * len(results)
            if done
            else 0.0,
            "retries": sum(r["retries"] for r in results),
            "errors": sum(r["error_count"] for r in results),
            "error_sample": next((r["errors"][0] for r in results if r["errors"]), None),
        }


def _percentile(ordered: list[int], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def _measure_backend(pool: _Pool, backend: str, window: Window, repeats: int) -> dict:
    samples: dict[tuple[str, int], list[dict]] = {
        (layout, n): [] for layout in LAYOUTS for n in PROCESSES
    }
    with store_url(backend, "conc") as url:
        blocks = _Blocks(url)
        for _ in range(repeats):
            for layout in LAYOUTS:
                for n in PROCESSES:
                    if layout == "shared":
                        names = [blocks.create()] * n
                    else:
                        names = [blocks.create() for _ in range(n)]
                    samples[(layout, n)].append(pool.run(url, names, window))
    return samples


def run(quick: bool) -> str:
    window, repeats = timing(quick)
    rows = []
    notes = []
    measured = {}
    pool = _Pool(max(PROCESSES))
    try:
        for backend in BACKENDS:
            try:
                measured[backend] = _measure_backend(pool, backend, window, repeats)
            except BackendUnavailable as error:
                notes.append(f"{BACKEND_LABELS[backend]} skipped: {error}")
    finally:
        pool.close()
    for backend, samples in measured.items():
        for layout in LAYOUTS:
            rates = {n: median([s["rate"] for s in samples[(layout, n)]]) for n in PROCESSES}
            runs = [s for n in PROCESSES for s in samples[(layout, n)]]
            most = samples[(layout, max(PROCESSES))]
            retries = {n: sum(s["retries"] for s in samples[(layout, n)]) for n in PROCESSES}
            errors = sum(s["errors"] for s in runs)
            sample_error = next((s["error_sample"] for s in runs if s["error_sample"]), None)
            if sample_error:
                notes.append(f"{BACKEND_LABELS[backend]}, {layout}: e.g. {sample_error}")
            rows.append(
                [
                    BACKEND_LABELS[backend],
                    "one shared /16" if layout == "shared" else "a /16 per process",
                    *(f"{rates[n]:.0f}" for n in PROCESSES),
                    f"{rates[4] / rates[1]:.2f}",
                    f"**{rates[16] / rates[1]:.2f}**",
                    f"{median([s['p50_ms'] for s in most]):.1f} / "
                    f"{median([s['p99_ms'] for s in most]):.1f} / "
                    f"{max(s['max_ms'] for s in most):.0f}",
                    f"{min(s['least_share'] for s in most):.2f}",
                    " / ".join(str(retries[n]) for n in PROCESSES),
                    errors,
                ]
            )
    header = [
        "backend",
        "layout",
        *(f"allocs/s, {n} proc" for n in PROCESSES),
        "4p / 1p",
        "16p / 1p",
        "16 p latency ms: p50 / p99 / max",
        "16 p least share",
        "retries (1/4/16 p, all repeats)",
        "errors",
    ]
    method = (
        f"Each process makes single allocations (core API, one transaction each, distinct "
        f"MACs) in a loop. All processes of a run start together at a given time; after a "
        f"{window.warmup:g} s warm-up, the allocations that end within the next "
        f"{window.window:g} s are counted (steady-state throughput, as pgbench measures it; "
        f"a fixed number per process would time the last straggler instead). Figures are "
        f"total allocations/s, median of {repeats} interleaved run(s) per configuration, "
        f"each on fresh blocks; ratios are against the 1-process figure of the same backend "
        f"and layout. Latency is per allocation, all processes of the 16-process runs pooled "
        f'(p50 and p99 medians over the repeats, max over all); "least share" is the '
        f"allocations of the slowest of the 16 processes against an even share (1.00 = "
        f"perfectly fair, 0 = starved), the worst repeat. Retries count the store's backoffs "
        f"(lock waits, deadlocks, unique-key clashes) over whole runs; worker processes are "
        f"started once and reused, so interpreter start-up is never timed. The machine has "
        f"{os.cpu_count()} CPU(s), shared by the clients and the servers."
    )
    body = table(header, rows)
    if notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in notes)
    return section("Concurrency: allocations per second from 1, 4 and 16 processes", method, body)
