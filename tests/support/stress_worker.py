"""One stress-test process: allocate, release --now and re-allocate through the core API.

Run as `python -m tests.support.stress_worker URL WORKER OPS BLOCK...` (URL `socket:PATH`:
every operation through melanged's socket at PATH); prints one JSON line
per completed operation (and one per error), for the test to check the store
against.
"""

from __future__ import annotations

import json
import random
import sys

from melange import operations
from melange.errors import MelangeError
from melange.store import Store


def _runner(url: str):
    """operations.run on the store at `url`, or through melanged's socket (`socket:PATH`)."""
    if url.startswith("socket:"):
        from melange_cli import client

        path = url.removeprefix("socket:")
        return lambda _store, name, params: client.call(path, name, params)
    return operations.run


def main(url: str, worker: int, ops: int, blocks: list[str]) -> int:
    run = _runner(url)
    store = None if url.startswith("socket:") else Store(url, release_hold=3600)
    rng = random.Random(worker)
    held: dict[str, tuple[str, str]] = {}  # mac -> (block, address)
    for n in range(ops):
        try:
            if held and rng.random() < 0.4:
                mac = rng.choice(sorted(held))
                block, address = held.pop(mac)
                run(
                    store, "ip.release", {"address": address, "block": block, "now": True}
                )
                event = {"op": "release", "block": block, "address": address, "mac": mac}
            elif held and rng.random() < 0.15:
                mac = rng.choice(sorted(held))
                block, address = held[mac]
                again = run(store, "block.allocate", {"block": block, "mac": mac})
                event = {"op": "again", "block": block, "address": again[0]["address"],
                         "mac": mac, "expected": address}  # fmt: skip
            else:
                mac = f"02:{worker:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}:00:01"
                block = rng.choice(blocks)
                result = run(store, "block.allocate", {"block": block, "mac": mac})
                held[mac] = (block, result[0]["address"])
                event = {"op": "allocate", "block": block, "address": result[0]["address"],
                         "mac": mac}  # fmt: skip
        except MelangeError as error:
            event = {"op": "error", "code": error.code, "message": error.message}
        except Exception as error:  # noqa: BLE001  (reported, never hidden)
            event = {"op": "error", "code": "crash", "message": repr(error)}
        print(json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
