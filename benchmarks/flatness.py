"""Allocation cost against how full a block is (full block / empty block of the same size).

Each sample is one `block.allocate` core-API call (one transaction) in this
process, timed, after which the address is released with --now (untimed), so
every block keeps its fill level and the full block's lowest free address
stays the same. Samples of a full block and its empty twin alternate, after a
few untimed warm-up calls, and the medians are compared. Full and empty twins
live in the same store, so both see the same table sizes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from benchmarks.common import (
    BACKEND_LABELS,
    BackendUnavailable,
    median,
    ms,
    section,
    store_url,
    table,
    timed,
    verdict,
)

FILL_BATCH = 50_000
WARMUP = 3


def _sizes(quick: bool) -> dict:
    if quick:
        return {
            "samples": 31,
            "fill16": 60_000,
            "fill8": 100_000,
            "fill6": 30_000,
            "server_fill16": 20_000,
            "server_samples": 21,
            "show_samples": 21,
        }
    return {
        "samples": 101,
        "fill16": 60_000,
        "fill8": 1_000_000,
        "fill6": 60_000,
        "server_fill16": 60_000,
        "server_samples": 51,
        "show_samples": 51,
    }


class _Bench:
    def __init__(self, url: str) -> None:
        from melange.store import Store

        self.store = Store(url, release_hold=3600)
        self.serial = 0

    def op(self, operation: str, **params):
        from melange import operations

        return operations.run(self.store, operation, params)

    def fill(self, block: str, count: int) -> None:
        """`count` addresses through `block.allocate --count`, in batches."""
        left = count
        while left > 0:
            self.op("block.allocate", block=block, count=min(FILL_BATCH, left))
            left -= FILL_BATCH

    def fill_eui64(self, block: str, count: int, seed: int = 7) -> None:
        """`count` EUI-64 addresses of random MACs, written directly (one-by-one
        allocation of 60,000 would take minutes), then the block's free ranges
        rebuilt by the core's own FreeSpace.rebuild. The addresses scatter over
        the /64, so the free space is ~`count` ranges: the hard case."""
        from sqlalchemy import insert, update

        from melange import blocks as block_ops
        from melange.clock import utcnow
        from melange.generators import eui64_address
        from melange.models import blocks, ip_addresses
        from melange.store import lock_block

        rng = random.Random(seed)
        macs = rng.sample(range(1, 1 << 40), count)

        def write(conn) -> None:
            row = lock_block(conn, block_ops.resolve(conn, block).id)
            now = utcnow()
            rows = [
                {
                    "block_id": row.id,
                    "address": eui64_address(row.first_addr, value),
                    "mac": value,
                    "active_mac": value,
                    "state": "allocated",
                    "allocated_at": now,
                }
                for value in ((0x02 << 40) | m for m in macs)
            ]
            for start in range(0, len(rows), 5000):
                conn.execute(insert(ip_addresses), rows[start : start + 5000])
            conn.execute(update(blocks).where(blocks.c.id == row.id).values(allocated_count=count))
            block_ops.free_space(conn, row).rebuild()

        self.store.write(write)

    def allocate_sample(self, block: str, with_mac: bool, mac_prefix: int = 0x06) -> float:
        """Seconds of one allocation; the address is released --now afterwards."""
        from benchmarks.common import mac

        params = {"block": block}
        if with_mac:
            self.serial += 1
            params["mac"] = mac(self.serial, prefix=mac_prefix)
        result: list = []
        seconds = timed(lambda: result.extend(self.op("block.allocate", **params)))
        self.op("ip.release", address=result[0]["address"], block=block, now=True)
        return seconds

    def show_sample(self, block: str) -> float:
        return timed(lambda: self.op("block.show", block=block))


def _alternate(cases: dict[str, Callable[[], float]], samples: int) -> dict[str, float]:
    """Median seconds per case; cases take turns, warm-up calls untimed."""
    for fn in cases.values():
        for _ in range(WARMUP):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(samples):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(cases[name]())
    return {name: median(values) for name, values in times.items()}


def _row(case: str, backend: str, fill: str, empty: float, full: float, target: float | None):
    value = full / empty
    return [
        case,
        BACKEND_LABELS[backend],
        fill,
        ms(empty),
        ms(full),
        f"{value:.2f}",
        verdict(value, target, at_most=True) if target else "—",
    ]


def _policy(bench: _Bench) -> None:
    bench.op("policy.create", name="edge")
    for octet in (0, 255):
        bench.op("policy.add_octet", name="edge", octet=octet)


def _sqlite_cases(sizes: dict) -> list[list]:
    rows = []
    n = sizes["samples"]
    with store_url("sqlite", "flat") as url:
        b = _Bench(url)
        _policy(b)
        for name, cidr, extra in (
            ("v4-16-full", "10.0.0.0/16", {}),
            ("v4-16-empty", "10.1.0.0/16", {}),
            ("pol-full", "10.2.0.0/16", {"policy": "edge"}),
            ("pol-empty", "10.3.0.0/16", {"policy": "edge"}),
            ("v4-8-full", "20.0.0.0/8", {}),
            ("v4-8-empty", "21.0.0.0/8", {}),
            ("v4-24", "30.0.0.0/24", {}),
            ("v6-mac-full", "fd00:1::/64", {}),
            ("v6-low-full", "fd00:2::/64", {}),
            ("v6-empty", "fd00:3::/64", {}),
        ):
            b.op("block.create", cidr=cidr, name=name, **extra)
        b.fill("v4-16-full", sizes["fill16"])
        b.fill("pol-full", sizes["fill16"])
        b.fill("v4-8-full", sizes["fill8"])
        b.fill("v4-24", 200)
        b.fill("v6-low-full", sizes["fill6"])
        b.fill_eui64("v6-mac-full", sizes["fill6"])

        f16, f8, f6 = (f"{sizes[k]:,}" for k in ("fill16", "fill8", "fill6"))
        m = _alternate(
            {
                "e": lambda: b.allocate_sample("v4-16-empty", True),
                "f": lambda: b.allocate_sample("v4-16-full", True),
            },
            n,
        )
        rows.append(_row("(a) IPv4 /16, lowest-free, with MAC", "sqlite", f16, m["e"], m["f"], 1.5))
        m = _alternate(
            {
                "e": lambda: b.allocate_sample("v4-8-empty", True),
                "f": lambda: b.allocate_sample("v4-8-full", True),
            },
            n,
        )
        rows.append(_row("(b) IPv4 /8, lowest-free, with MAC", "sqlite", f8, m["e"], m["f"], 2))
        m = _alternate(
            {
                "e": lambda: b.allocate_sample("v6-empty", True),
                "f": lambda: b.allocate_sample("v6-mac-full", True),
            },
            n,
        )
        rows.append(
            _row(
                "(c) IPv6 /64, eui64 (with MAC), fill scattered by random MACs",
                "sqlite",
                f6,
                m["e"],
                m["f"],
                None,
            )
        )
        m = _alternate(
            {
                "e": lambda: b.allocate_sample("v6-empty", False),
                "f": lambda: b.allocate_sample("v6-low-full", False),
            },
            n,
        )
        rows.append(_row("(c) IPv6 /64, lowest-free (no MAC)", "sqlite", f6, m["e"], m["f"], None))
        m = _alternate(
            {
                "e": lambda: b.allocate_sample("pol-empty", True),
                "f": lambda: b.allocate_sample("pol-full", True),
            },
            n,
        )
        rows.append(
            _row(
                "(d) IPv4 /16, policy: last octets 0 and 255 unusable",
                "sqlite",
                f16,
                m["e"],
                m["f"],
                None,
            )
        )
        m = _alternate(
            {"small": lambda: b.show_sample("v4-24"), "big": lambda: b.show_sample("v4-8-full")},
            sizes["show_samples"],
        )
        show = [
            "(e) `block.show` (utilisation): /8 vs /24",
            BACKEND_LABELS["sqlite"],
            f"/24: 200; /8: {sizes['fill8']:,}",
            ms(m["small"]),
            ms(m["big"]),
            f"{m['big'] / m['small']:.2f}",
            "—",
        ]
        rows.append(show)
    return rows


def _server_cases(backend: str, sizes: dict) -> list[list]:
    rows = []
    n = sizes["server_samples"]
    fill = sizes["server_fill16"]
    with store_url(backend, "flat") as url:
        b = _Bench(url)
        _policy(b)
        for name, cidr, extra in (
            ("v4-16-full", "10.0.0.0/16", {}),
            ("v4-16-empty", "10.1.0.0/16", {}),
            ("pol-full", "10.2.0.0/16", {"policy": "edge"}),
            ("pol-empty", "10.3.0.0/16", {"policy": "edge"}),
        ):
            b.op("block.create", cidr=cidr, name=name, **extra)
        b.fill("v4-16-full", fill)
        b.fill("pol-full", fill)
        m = _alternate(
            {
                "e": lambda: b.allocate_sample("v4-16-empty", True),
                "f": lambda: b.allocate_sample("v4-16-full", True),
            },
            n,
        )
        rows.append(
            _row("(a) IPv4 /16, lowest-free, with MAC", backend, f"{fill:,}", m["e"], m["f"], 1.5)
        )
        m = _alternate(
            {
                "e": lambda: b.allocate_sample("pol-empty", True),
                "f": lambda: b.allocate_sample("pol-full", True),
            },
            n,
        )
        rows.append(
            _row(
                "(d) IPv4 /16, policy: last octets 0 and 255 unusable",
                backend,
                f"{fill:,}",
                m["e"],
                m["f"],
                None,
            )
        )
    return rows


def run(quick: bool) -> str:
    sizes = _sizes(quick)
    rows = _sqlite_cases(sizes)
    notes = []
    for backend in ("mariadb", "postgresql"):
        try:
            rows += _server_cases(backend, sizes)
        except BackendUnavailable as error:
            notes.append(f"{BACKEND_LABELS[backend]} skipped: {error}")
    header = [
        "case",
        "backend",
        "addresses in the full block",
        "median, empty",
        "median, full",
        "full / empty",
        "target",
    ]
    method = (
        "Median time of one `block.allocate` core-API call (one transaction, in this process) "
        "in a full block and in an empty block of the same size in the same store, samples "
        f"alternating: {sizes['samples']} per block on SQLite, {sizes['server_samples']} on "
        "the servers. Each sampled address is released with --now right after (untimed), so "
        "fill levels stay constant. Blocks are filled with `block.allocate` count="
        f"{FILL_BATCH:,} calls, except the eui64 block (direct insert of EUI-64 addresses of "
        "random MACs plus the core's free-space rebuild). MariaDB and PostgreSQL run (a) and "
        f"(d) only, with {sizes['server_fill16']:,} addresses. (e) compares `block.show` medians "
        f"({sizes['show_samples']} samples) of the full /8 and a /24. Only the two medians "
        "of a row are paired; different rows ran at different moments, so compare ratios, "
        "not milliseconds, across rows."
    )
    body = table(header, rows)
    if notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in notes)
    return section("Flatness: allocation cost in full blocks vs empty ones", method, body)
