"""Allocations per second from 1, 4 and 16 processes on each backend.

Each process (benchmarks/worker.py) makes single allocations through the core
API, one transaction each, with MACs of its own. All processes of a run start
together (they wait for a barrier file) and the run is timed from creating the
barrier to the last process's end. Two layouts: every process on one shared /16,
and each process on a /16 of its own. Every configuration is run several times
(interleaved, each on fresh blocks) and the median throughput is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
LAYOUTS = ("shared", "own")


def _sizes(quick: bool) -> tuple[int, int]:
    """(allocations per process, repeats)."""
    return (10, 1) if quick else (40, 3)


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

    def __init__(self, size: int) -> None:
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        self.tmp = tempfile.TemporaryDirectory(prefix="melange-bench-")
        self.runs = 0
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", str(w)],
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
        self.tmp.cleanup()

    def _reply(self, proc: subprocess.Popen) -> str:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark worker died (exit status {proc.wait()})")
        return line.strip()

    def run(self, url: str, blocks: list[str], per_process: int) -> dict:
        """One worker per entry of `blocks`, started together; throughput and retries."""
        return self.run_targets([(url, block) for block in blocks], per_process)

    def run_targets(self, targets: list[tuple[str, str]], per_process: int) -> dict:
        """One worker per (store URL, block), started together; throughput and retries."""
        self.runs += 1
        barrier = str(Path(self.tmp.name) / f"go-{self.runs}")
        procs = self.procs[: len(targets)]
        for proc, (url, block) in zip(procs, targets, strict=True):
            command = {"url": url, "block": block, "count": per_process, "barrier": barrier}
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        for proc in procs:
            if (line := self._reply(proc)) != "ready":
                raise RuntimeError(f"a benchmark worker failed to start: {line}")
        started = time.time()
        Path(barrier).touch()
        results = [json.loads(self._reply(proc)) for proc in procs]
        elapsed = max(r["end"] for r in results) - started
        done = sum(r["allocations"] for r in results)
        return {
            "rate": done / elapsed,
            "allocations": done,
            "elapsed": elapsed,
            "retries": sum(r["retries"] for r in results),
            "errors": sum(r["error_count"] for r in results),
            "error_sample": next((r["errors"][0] for r in results if r["errors"]), None),
            "start_lag": max(r["start"] for r in results) - started,
        }


def _measure_backend(pool: _Pool, backend: str, per_process: int, repeats: int) -> dict:
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
                    samples[(layout, n)].append(pool.run(url, names, per_process))
    return samples


def run(quick: bool) -> str:
    per_process, repeats = _sizes(quick)
    rows = []
    notes = []
    measured = {}
    pool = _Pool(max(PROCESSES))
    try:
        for backend in BACKENDS:
            try:
                measured[backend] = _measure_backend(pool, backend, per_process, repeats)
            except BackendUnavailable as error:
                notes.append(f"{BACKEND_LABELS[backend]} skipped: {error}")
    finally:
        pool.close()
    for backend, samples in measured.items():
        for layout in LAYOUTS:
            rates = {n: median([s["rate"] for s in samples[(layout, n)]]) for n in PROCESSES}
            runs = [s for n in PROCESSES for s in samples[(layout, n)]]
            retries = {n: sum(s["retries"] for s in samples[(layout, n)]) for n in PROCESSES}
            errors = sum(s["errors"] for s in runs)
            lag = max(s["start_lag"] for s in runs)
            sample_error = next((s["error_sample"] for s in runs if s["error_sample"]), None)
            if sample_error:
                notes.append(f"{BACKEND_LABELS[backend]}, {layout}: e.g. {sample_error}")
            rows.append(
                [
                    BACKEND_LABELS[backend],
                    "one shared /16" if layout == "shared" else "a /16 per process",
                    *(f"{rates[n]:.0f}" for n in PROCESSES),
                    f"{rates[4] / rates[1]:.2f}",
                    f"{rates[16] / rates[1]:.2f}",
                    " / ".join(str(retries[n]) for n in PROCESSES),
                    errors,
                    f"{lag * 1000:.0f} ms",
                ]
            )
    header = [
        "backend",
        "layout",
        *(f"allocs/s, {n} proc" for n in PROCESSES),
        "4p / 1p",
        "16p / 1p",
        "retries (1/4/16 p, all repeats)",
        "errors",
        "max start lag",
    ]
    method = (
        f"Each process makes {per_process} single allocations (core API, one transaction "
        f"each, distinct MACs); processes start together on a barrier file and a run is "
        f"timed from the barrier to the last process's end. Figures are total allocations/s, "
        f"median of {repeats} interleaved run(s) per configuration, each on fresh blocks; "
        f"ratios are against the 1-process figure of the same backend and layout. Retries "
        f"count the store's backoffs (lock waits, deadlocks, unique-key clashes); worker "
        f"processes are started once and reused, so interpreter start-up is never timed; "
        f'"max start lag" is the latest worker\'s start after the barrier. '
        f"The machine has {os.cpu_count()} CPU(s), shared by the clients and the servers."
    )
    body = table(header, rows)
    if notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in notes)
    return section("Concurrency: allocations per second from 1, 4 and 16 processes", method, body)
