"""`report utilization` on a large store: 10,000 blocks and 1,000,000 addresses.

Its cost should follow the number of blocks, never the number of addresses:
one query for the blocks, one grouped count of holds, three for policies.
"""

from __future__ import annotations

import sys

from benchmarks.common import median, ms, section, store_url, table, timed


def _fill(url: str, blocks: int, addresses: int) -> None:
    from melange import blocks as block_ops
    from melange import operations
    from melange.store import Store

    store = Store(url)
    operations.run(store, "block.create", {"cidr": "10.0.0.0/12", "name": "big", "network": "n0"})
    operations.run(store, "block.allocate", {"block": "big", "count": addresses})
    operations.run(store, "policy.create", {"name": "p"})
    operations.run(store, "policy.add_range", {"name": "p", "offset": 0, "length": 10})

    def create(conn) -> None:
        for i in range(blocks):
            cidr = f"172.{16 + i // 256}.{i % 256}.0/24"
            block_ops.create(conn, cidr, network=f"n{i % 50}", policy="p" if i % 2 else None)

    store.write(create)


def run(quick: bool) -> str:
    from melange import operations
    from melange.store import Store

    blocks, addresses, samples = (1_000, 100_000, 5) if quick else (10_000, 1_000_000, 7)
    with store_url("sqlite", "reports") as url:
        print(f"[bench]   reports: {blocks} blocks, {addresses} addresses", file=sys.stderr)
        _fill(url, blocks, addresses)
        store = Store(url)
        cases = {
            "all blocks": {},
            "`--above 50`": {"above": 50.0},
            "one network (of 50)": {"network": "n7"},
        }
        rows = []
        for label, params in cases.items():
            found = len(operations.run(store, "report.utilization", params))
            times = [
                timed(lambda p=params: operations.run(store, "report.utilization", p))
                for _ in range(samples)
            ]
            rows.append([label, found, ms(median(times))])
    body = table(["report", "blocks listed", "median (core API, one process)"], rows)
    method = (
        f"SQLite store with {blocks + 1:,} blocks (half with a policy) and {addresses:,} "
        f"allocated addresses in one /12; median of {samples} calls of `report.utilization`."
    )
    return section("Utilisation report on a large store", method, body)
