"""Allocations per second through melanged from 1 and 16 clients: group commit on and off.

One melanged process (`melanged --foreground --socket`, as tests/support/socket_daemon.py
starts it) per backend and mode; client processes (this module run as `python -m
benchmarks.groupcommit worker W`, kept between runs) each make single allocations
through its socket in a loop, one connection per request as `melange --socket` makes
it, each with a MAC of its own. All clients of a run start together; the
allocations that end in a fixed window after a warm-up are counted. Layouts: one
shared /16 for every client, or a /16 per client. "off" is the same melanged with
its lanes emptied (melanged.batching: nothing joins a batch, so its socket front hands
every request to a handler thread), every request its own transaction as before group
commit; both modes run in the same run, interleaved, on fresh blocks, and the median
of the repeats is reported. Each run is started once melanged watches the store (its
start-up imports done). In the window, melanged's CPU time (all its threads, from
/proc) and the clients' (each its own process time) per allocation, the machine's
idle share, and the transactions by number of requests (melanged's lane counters).
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
# melanged as shipped ("on") or with no lane ("off": what it did before group commit, the
# benchmark's contrast only); SIGUSR1 writes its lanes' counters to MELANGE_BENCH_STATS.
MELANGED = """
import json, os, signal, sys
import melanged.batching as b
if {off}:
    b.BATCHED = b.SERVER_BATCHED = frozenset()
def stats(*_):
    with open(os.environ["MELANGE_BENCH_STATS"] + ".part", "w") as out:
        json.dump(b.GROUP.stats.snapshot(), out)
    os.replace(os.environ["MELANGE_BENCH_STATS"] + ".part", os.environ["MELANGE_BENCH_STATS"])
signal.signal(signal.SIGUSR1, stats)
from melanged.main import main
sys.argv[0] = "melanged"
sys.exit(main())
"""


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

    def run(self, daemon, blocks: list[str], warmup: float, window: float) -> dict:
        """One client per entry of `blocks`, started together: rate, latencies, and the CPU
        time melanged and the clients spent in the window, per allocation."""
        start_at = time.monotonic() + START_DELAY
        procs = self.procs[: len(blocks)]
        before = _lane_stats(daemon)
        cpu = _CpuWindow(daemon.proc.pid, start_at + warmup, start_at + warmup + window)
        for proc, block in zip(procs, blocks, strict=True):
            command = {"socket": str(daemon.socket), "block": block, "start_at": start_at,
                       "warmup": warmup, "window": window}  # fmt: skip
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        replies = []
        for proc in procs:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a benchmark client died (exit status {proc.wait()})")
            replies.append(json.loads(line))
        cpu.join()
        after = _lane_stats(daemon)
        latencies = sorted(us for r in replies for us in r["latencies_us"])
        done = len(latencies) or 1
        sizes = {int(k): v - before["sizes"].get(k, 0) for k, v in after["sizes"].items()}
        transactions = after["transactions"] - before["transactions"]
        return {
            "rate": len(latencies) / window,
            "p50_ms": _percentile(latencies, 0.50) / 1000,
            "p99_ms": _percentile(latencies, 0.99) / 1000,
            "errors": sum(r["errors"] for r in replies),
            "error_sample": next((r["sample"] for r in replies if r["sample"]), None),
            "server_cpu_ms": cpu.server * 1000 / done,
            "client_cpu_ms": sum(r["cpu_s"] for r in replies) * 1000 / done,
            "idle": cpu.idle,
            "batch": (after["requests"] - before["requests"]) / max(1, transactions),
            "sizes": {k: v for k, v in sorted(sizes.items()) if v},
        }


class _CpuWindow:
    """melanged's CPU seconds (all its threads, /proc/PID/stat) and the machine's idle
    fraction (/proc/stat) between two monotonic times, sampled by a thread of its own."""

    def __init__(self, pid: int, start: float, end: float) -> None:
        import threading

        self.server = 0.0
        self.idle = float("nan")
        self._thread = threading.Thread(target=self._sample, args=(pid, start, end))
        self._thread.start()

    def _sample(self, pid: int, start: float, end: float) -> None:
        time.sleep(max(0.0, start - time.monotonic()))
        server0, machine0 = _process_cpu(pid), _machine()
        time.sleep(max(0.0, end - time.monotonic()))
        server1, machine1 = _process_cpu(pid), _machine()
        self.server = server1 - server0
        total = sum(machine1) - sum(machine0)
        self.idle = (machine1[3] - machine0[3]) / total if total else float("nan")

    def join(self) -> None:
        self._thread.join()


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> list[int]:
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _lane_stats(daemon) -> dict:
    """melanged's lane counters (the MELANGED wrapper writes them on SIGUSR1)."""
    import signal

    path = Path(daemon.env["MELANGE_BENCH_STATS"])
    path.unlink(missing_ok=True)
    daemon.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("melanged wrote no lane counters")
        time.sleep(0.005)
    return json.loads(path.read_text())


def _percentile(ordered: list[int], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def _melanged(url: str, workdir: Path, mode: str):
    from tests.support.socket_daemon import SocketDaemon

    daemon = SocketDaemon(url, workdir)
    at = daemon.argv.index("-m")
    daemon.argv[at:at + 2] = ["-c", MELANGED.format(off=mode == "off")]
    daemon.env["MELANGE_BENCH_STATS"] = str(workdir / "lanes.json")
    daemon.start()
    deadline = time.monotonic() + 60
    while "watching" not in daemon.log.read_text():  # started: its imports done, first render
        if time.monotonic() > deadline:
            raise RuntimeError("melanged did not start watching the store")
        time.sleep(0.05)
    return daemon


def _backends() -> list[str]:
    """MELANGE_BENCH_GC_BACKENDS (comma-separated) or every backend."""
    chosen = os.environ.get("MELANGE_BENCH_GC_BACKENDS")
    return [b for b in BACKENDS if not chosen or b in chosen.split(",")]


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
                        result = clients.run(daemon, blocks, warmup, window)
                        samples.setdefault((mode, layout, n), []).append(result)
                        print(f"[bench]     {backend} {mode} {layout} {n}: "
                              f"{json.dumps(result)}", file=sys.stderr, flush=True)
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


def _cpu_rows(backend: str, samples: dict) -> list[list[object]]:
    """Where the time goes: CPU per allocation in melanged and in the clients, the
    machine's idle share, and the requests per transaction."""
    rows = []
    for (mode, layout, n), runs in samples.items():
        sizes: dict[int, int] = {}
        for s in runs:
            for size, times in s["sizes"].items():
                sizes[size] = sizes.get(size, 0) + times
        spread = ", ".join(f"{size}: {times}" for size, times in sorted(sizes.items())[:8])
        rows.append([
            BACKEND_LABELS[backend], mode, f"{n} {'on one /16' if layout == 'shared' else 'own'}",
            f"{median([s['rate'] for s in runs]):.0f}",
            f"{median([s['server_cpu_ms'] for s in runs]):.2f}",
            f"{median([s['client_cpu_ms'] for s in runs]):.2f}",
            f"{100 * median([s['idle'] for s in runs]):.0f} %",
            f"{median([s['batch'] for s in runs]):.1f}", spread or "-",
        ])  # fmt: skip
    return rows


def run(quick: bool) -> str:
    rows: list[list[object]] = []
    cpu_rows: list[list[object]] = []
    notes: list[str] = []
    clients = _Clients(CLIENTS)
    try:
        for backend in _backends():
            print(f"[bench]   groupcommit: {backend}", file=sys.stderr, flush=True)
            try:
                samples = _measure(clients, backend, quick)
            except BackendUnavailable as error:
                notes.append(f"{BACKEND_LABELS[backend]} skipped: {error}")
                continue
            more_rows, more_notes = _rows(backend, samples)
            cpu_rows += _cpu_rows(backend, samples)
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
    cpu_header = ["backend", "group commit", "clients", "allocs/s", "melanged CPU ms / alloc",
                  "clients' CPU ms / alloc", "machine idle", "requests / transaction",
                  "transactions by size (size: count)"]  # fmt: skip
    body = (table(header, rows) + "\n\nWhere the time goes (CPU in the window):\n\n"
            + table(cpu_header, cpu_rows)
            + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""))
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
        cpu_from = None
        while now < until:
            if cpu_from is None and now >= measure_from:
                cpu_from = time.process_time()
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
        cpu = time.process_time() - cpu_from if cpu_from is not None else 0.0
        print(json.dumps({"latencies_us": latencies, "errors": errors, "sample": sample,
                          "cpu_s": cpu}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(_worker())
