"""One allocating process of the concurrency benchmarks, reused from run to run.

Run as `python -m benchmarks.worker WORKER`. For each JSON line on stdin
({"url", "block", "warmup", "window"}) it opens the store (once per URL),
prints "ready", reads the start time (one line, on the machine-wide monotonic
clock), sleeps until then, then makes single allocations from `block` (one core-API call, one
transaction each, each with a MAC of its own) until `start_at + warmup +
window`. It prints one JSON line: the allocations that ended inside the window
(after the warm-up) and their latencies in microseconds, the allocations of the
whole run, errors and retries (the store's backoffs on lock contention).

A fixed window measures the steady state, as pgbench and sysbench do: a fixed
number of allocations per process would time the slowest process's tail and the
start-up skew instead. Keeping the processes between runs keeps interpreter
start-up out of the figures.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


def timed_window(
    command: dict, serial: int, allocate: Callable[[int], object], refused: type[Exception]
) -> dict:
    """Wait for the start line, then `allocate(serial)` (a new serial each time) until the
    window closes; what happened, as the JSON reply. An exception of type `refused` is
    counted and shown, and the run goes on."""
    start_at = float(sys.stdin.readline())
    measure_from = start_at + command["warmup"]
    until = measure_from + command["window"]
    latencies: list[int] = []
    errors: list[str] = []
    total = 0
    clock = time.monotonic
    time.sleep(max(0.0, start_at - clock()))
    now = clock()
    while now < until:
        serial += 1
        began: float | None = now
        try:
            allocate(serial)
            total += 1
        except refused as error:
            errors.append(getattr(error, "message", None) or str(error))
            began = None
        now = clock()
        if began is not None and measure_from <= now < until:
            latencies.append(round((now - began) * 1e6))
    return {
        "allocations": len(latencies),
        "latencies_us": latencies,
        "total": total,
        "serial": serial,
        "errors": errors[:3],
        "error_count": len(errors),
    }


def _allocate_for(store, block: str, worker: int, serial: int, command: dict) -> dict:
    """Single allocations through the core API, one transaction each, in the window."""
    from benchmarks.common import mac
    from melange import operations
    from melange.errors import MelangeError

    def allocate(serial: int) -> object:
        params = {"block": block, "mac": mac((worker << 24) | serial)}
        return operations.run(store, "block.allocate", params)

    return timed_window(command, serial, allocate, MelangeError)


def main(worker: int) -> int:
    import melange.addresses  # noqa: F401  (imported before any start, never timed)
    import melange.generators  # noqa: F401
    from melange import store

    retries = 0
    backoff = store._backoff

    def counting_backoff(attempt: int) -> None:
        nonlocal retries
        retries += 1
        backoff(attempt)

    store._backoff = counting_backoff
    stores: dict[str, store.Store] = {}
    serial = 0
    for line in sys.stdin:
        command = json.loads(line)
        url = command["url"]
        if url not in stores:
            for old in stores.values():
                old.close()
            stores = {url: store.Store(url, release_hold=3600)}
            stores[url].ensure_schema()
        print("ready", flush=True)
        retries = 0
        result = _allocate_for(stores[url], command["block"], worker, serial, command)
        serial = result.pop("serial")
        result["retries"] = retries
        print(json.dumps(result), flush=True)
    for old in stores.values():
        old.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
