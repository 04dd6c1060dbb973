"""One allocating process of the concurrency benchmark, reused from run to run.

Run as `python -m benchmarks.worker WORKER`. For each JSON line on stdin
({"url", "block", "count", "barrier"}) it opens the store (once per URL),
prints "ready", waits until the file `barrier` exists, then makes `count`
single allocations from `block` (one core-API call, one transaction each, each
with a MAC of its own) and prints one JSON line: start and end (time.time()),
allocations, errors and retries (the store's backoffs on lock contention).
Keeping the processes between runs keeps interpreter start-up out of the
benchmark's wall time; it is never inside the timed part anyway.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(worker: int) -> int:
    import melange.addresses  # noqa: F401  (imported before any start, never timed)
    import melange.generators  # noqa: F401
    from benchmarks.common import mac
    from melange import operations, store
    from melange.errors import MelangeError

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
        melange_store = stores[url]
        print("ready", flush=True)
        while not os.path.exists(command["barrier"]):
            time.sleep(0.0005)
        retries = 0
        errors: list[str] = []
        start = time.time()
        for _ in range(command["count"]):
            serial += 1
            params = {"block_ref": command["block"], "mac": mac((worker << 24) | serial)}
            try:
                operations.run(melange_store, "block.allocate", params)
            except MelangeError as error:
                errors.append(error.message)
        end = time.time()
        result = {
            "start": start,
            "end": end,
            "allocations": command["count"] - len(errors),
            "errors": errors[:3],
            "error_count": len(errors),
            "retries": retries,
        }
        print(json.dumps(result), flush=True)
    for old in stores.values():
        old.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
