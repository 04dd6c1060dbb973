"""Bulk allocation: one transaction, batched inserts, progress reported per batch."""

from __future__ import annotations

from melange import operations
from melange.store import Store


def test_count_reports_progress_per_batch_and_returns_every_record(store_url):
    store = Store(store_url)
    operations.run(store, "block.create", {"cidr": "10.50.0.0/16", "name": "bulk"})
    seen: list[tuple[int, int]] = []
    result = operations.run(
        store,
        "block.allocate",
        {"block": "bulk", "count": 12_000, "progress": lambda d, t: seen.append((d, t))},
    )
    assert len(result) == 12_000
    assert result[0]["address"] == "10.50.0.1" and result[-1]["address"] == "10.50.46.224"
    assert seen[-1] == (12_000, 12_000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 2
    shown = operations.run(store, "block.show", {"block": "bulk"})["utilization"]
    assert shown["used"] == 12_000
    listed = operations.run(store, "ip.list", {"block": "bulk"})
    assert [r["address"] for r in listed] == [r["address"] for r in result]
