"""The allocate/release stress run shared by the single-store and the Galera tests.

Each worker (tests/support/stress_worker.py, a process of its own) allocates, releases
and re-allocates from two blocks and prints one JSON event per operation; the
checks here say what must hold afterwards on any store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from melange import operations
from melange.models import blocks, ip_addresses
from melange.records import ip_text
from melange.store import Store
from tests.support import ROOT

BLOCKS = (("s1", "10.20.0.0/22"), ("s2", "10.21.0.0/22"))


def spawn(args: list[str]) -> subprocess.Popen:
    """A Python child with the project importable, its output captured as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def create_blocks(url: str) -> None:
    store = Store(url)
    for name, cidr in BLOCKS:
        operations.run(store, "block.create", {"cidr": cidr, "name": name, "network": "stress"})
    store.close()


def run_workers(urls: list[str], workers: int, ops: int) -> list[dict]:
    """`workers` processes, worker w on urls[w % len(urls)]; every event, none an error."""
    names = [name for name, _ in BLOCKS]
    procs = [
        spawn(["-m", "tests.support.stress_worker", urls[w % len(urls)], str(w), str(ops), *names])
        for w in range(workers)
    ]
    events = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        events.extend(json.loads(line) for line in out.splitlines())
    errors = [e for e in events if e["op"] == "error"]
    assert errors == [], errors[:5]
    assert len(events) == workers * ops
    return events


def active(url: str) -> list[tuple[str, str, int | None]]:
    """(block name, address, MAC) of every allocated address."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            select(blocks.c.name, ip_addresses.c.address, blocks.c.version, ip_addresses.c.mac)
            .join(blocks, blocks.c.id == ip_addresses.c.block_id)
            .where(ip_addresses.c.state == "allocated")
        ).all()
    engine.dispose()
    return [(name, ip_text(address, version), mac) for name, address, version, mac in rows]


def check_unique(rows: list[tuple[str, str, int | None]]) -> None:
    """No address, and no MAC, active twice in one block."""
    addresses = Counter((block, address) for block, address, _ in rows)
    assert [k for k, n in addresses.items() if n > 1] == []
    macs = Counter((block, mac) for block, _, mac in rows)
    assert [k for k, n in macs.items() if n > 1] == []


def check_outcome(events: list[dict], rows: list[tuple[str, str, int | None]]) -> None:
    """No address or MAC active twice in a block, and the store holds exactly what the
    workers' reported allocations and releases leave."""
    check_unique(rows)
    holding: dict[str, tuple[str, str]] = {}
    for event in events:
        if event["op"] == "allocate":
            holding[event["mac"]] = (event["block"], event["address"])
        elif event["op"] == "release":
            assert holding.pop(event["mac"]) == (event["block"], event["address"])
        elif event["op"] == "again":
            assert event["address"] == event["expected"], event
    by_mac = {f"{mac:012x}": (block, address) for block, address, mac in rows}
    assert by_mac == {mac.replace(":", ""): where for mac, where in holding.items()}


def check_counters(url: str, rows: list[tuple[str, str, int | None]]) -> None:
    """The per-block counters that utilisation reads stayed in step with the rows."""
    store = Store(url)
    for name, _ in BLOCKS:
        used = operations.run(store, "block.show", {"block": name})["utilization"]["used"]
        assert used == sum(1 for block, _, _ in rows if block == name)
    store.close()
