"""Allocations per second through melanged from 1 and 16 clients: group commit on and off.

One melanged process (`melanged --foreground --socket`, as tests/support/socket_daemon.py
starts it) per backend and mode; client processes (this module run as `python -m
benchmarks.groupcommit worker W`, kept between runs) each make single allocations
through its socket in a loop, one connection per request as `melange --socket` makes
it, each with a MAC of its own. All clients of a run start together; the
allocations that end in a fixed window after a warm-up are counted. Layouts: one
shared /16 for every client, or a /16 per client. "off" is the same melanged with
its lanes emptied (melanged.batching: nothing joins a batch), every request its
own transaction as before group commit; both modes run in the same run,
interleaved, on fresh blocks, and the median of the repeats is reported.
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
    mac,
    median,
    section,
    store_url,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 16
START_DELAY = 0.1
MODES = ("on", "off")
# melanged with no lane: what it did before group commit (the benchmark's contrast only).
OFF = ("import melanged.batching as b; b.BATCHED = b.SERVER_BATCHED = frozenset(); "
       "import sys; from melanged.main import main; sys.argv[0] = 'melanged'; "
       "sys.exit(main())")


def _timing(quick: bool) -> tuple[float, float, int]:
    """(warm-up s, window s, repeats)."""
    return (0.3, 1.0, 1) if quick else (0.5, 2.0, 3)


class _Clients:
    """Client processes, started once and given one run at a time."""

    def __init__(self, size: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "benchmarks.groupcommit", "worker", str(w)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env=env)  # fmt: skip
            for w in range(size)
        ]

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs:
            proc.wait(timeout=30)

    def run(self, socket: str, blocks: list[str], warmup: float, window: float) -> dict:
        """One client per entry of `blocks`, started together: rate and latencies."""
        start_at = time.monotonic() + START_DELAY
        procs = self.procs[: len(blocks)]
        for proc, block in zip(procs, blocks, strict=True):
            command = {"socket": socket, "block": block, "start_at": start_at,
                       "warmup": warmup, "window": window}  # fmt: skip
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        replies = []
        for proc in procs:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a benchmark client died (exit status {proc.wait()})")
            replies.append(json.loads(line))
        latencies = sorted(us for r in replies for us in r["latencies_us"])
        done = len(latencies)
        return {
            "rate": done / window,
            "p50_ms": _percentile(latencies, 0.50) / 1000,
            "p99_ms": _percentile(latencies, 0.99) / 1000,
            "errors": sum(r["errors"] for r in replies),
            "error_sample": next((r["sample"] for r in replies if r["sample"]), None),
        }


def _percentile(ordered: list[int], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def _melanged(url: str, workdir: Path, mode: str):
    from tests.support.socket_daemon import SocketDaemon

    daemon = SocketDaemon(url, workdir)
    if mode == "off":
        at = daemon.argv.index("-m")
        daemon.argv[at:at + 2] = ["-c", OFF]
    return daemon.start()


def _measure(clients: _Clients, backend: str, quick: bool) -> dict:
    """samples[(mode, layout, clients)] -> list of run results."""
    from melange import operations
    from melange.store import Store

    warmup, window, repeats = _timing(quick)
    samples: dict[tuple[str, str, int], list[dict]] = {}
    with store_url(backend, "group") as url, tempfile.TemporaryDirectory() as tmp:
        store = Store(url, release_hold=3600)
        made = 0

        def fresh() -> str:
            nonlocal made
            made += 1
            name = f"g{made}"
            cidr = f"{10 + made // 256}.{made % 256}.0.0/16"
            operations.run(store, "block.create", {"cidr": cidr, "name": name})
            return name

        for repeat in range(repeats):
            for mode in MODES:
                daemon = _melanged(url, Path(tmp) / f"{mode}{repeat}", mode)
                try:
                    for layout, n in (("shared", 1), ("shared", CLIENTS), ("own", CLIENTS)):
                        shared = layout == "shared"
                        blocks = [fresh()] * n if shared else [fresh() for _ in range(n)]
                        result = clients.run(str(daemon.socket), blocks, warmup, window)
                        samples.setdefault((mode, layout, n), []).append(result)
                finally:
                    daemon.stop()
        store.close()
    return samples


def _rows(backend: str, samples: dict) -> tuple[list[list[object]], list[str]]:
    rows, notes = [], []
    for mode in MODES:
        one = median([s["rate"] for s in samples[(mode, "shared", 1)]])
        shared = samples[(mode, "shared", CLIENTS)]
        own = samples[(mode, "own", CLIENTS)]
        rate_shared = median([s["rate"] for s in shared])
        rate_own = median([s["rate"] for s in own])
        errors = sum(s["errors"] for runs in samples.values() for s in runs)
        sample = next((s["error_sample"] for runs in samples.values() for s in runs
                       if s["error_sample"]), None)  # fmt: skip
        if sample:
            notes.append(f"{BACKEND_LABELS[backend]}: e.g. {sample}")
        rows.append([
            BACKEND_LABELS[backend], mode, f"{one:.0f}", f"{rate_shared:.0f}",
            f"**{rate_shared / one:.2f}**",
            f"{median([s['p50_ms'] for s in shared]):.1f} / "
            f"{median([s['p99_ms'] for s in shared]):.1f}",
            f"{rate_own:.0f}", f"**{rate_own / one:.2f}**",
            f"{median([s['p99_ms'] for s in own]):.1f}", errors,
        ])  # fmt: skip
    return rows, notes


def run(quick: bool) -> str:
    rows: list[list[object]] = []
    notes: list[str] = []
    clients = _Clients(CLIENTS)
    try:
        for backend in BACKENDS:
            print(f"[bench]   groupcommit: {backend}", file=sys.stderr, flush=True)
            try:
                samples = _measure(clients, backend, quick)
            except BackendUnavailable as error:
                notes.append(f"{BACKEND_LABELS[backend]} skipped: {error}")
                continue
            more_rows, more_notes = _rows(backend, samples)
            rows += more_rows
            notes += more_notes
    finally:
        clients.close()
    header = ["backend", "group commit", "allocs/s, 1 client", "16 clients, one /16",
              "16 / 1", "16 on one /16: p50 / p99 ms", "16 clients, a /16 each", "16 own / 1",
              "16 own: p99 ms", "errors"]  # fmt: skip
    warmup, window, repeats = _timing(quick)
    method = (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").strip() + (
        f" Warm-up {warmup} s, window {window} s, {repeats} repeat(s)."
    )
    body = table(header, rows) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")
    return section("Group commit through melanged", method, body)


def _worker() -> int:
    """A client process: for each command line on stdin, allocate through the socket
    until the window closes; one JSON line back."""
    from melange.errors import MelangeError
    from melange_cli import client

    worker = int(sys.argv[2])
    serial = 0
    for line in sys.stdin:
        command = json.loads(line)
        start_at = command["start_at"]
        measure_from = start_at + command["warmup"]
        until = measure_from + command["window"]
        latencies: list[int] = []
        errors, sample = 0, None
        time.sleep(max(0.0, start_at - time.monotonic()))
        now = time.monotonic()
        while now < until:
            serial += 1
            began = now
            params = {"block": command["block"], "mac": mac((worker << 24) | serial)}
            try:
                client.call(command["socket"], "block.allocate", params)
            except MelangeError as error:
                errors += 1
                sample = sample or error.message
                began = None
            now = time.monotonic()
            if began is not None and measure_from <= now < until:
                latencies.append(round((now - began) * 1e6))
        print(json.dumps({"latencies_us": latencies, "errors": errors, "sample": sample}),
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(_worker())
