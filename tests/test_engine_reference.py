"""The allocation engine against a slow reference that scans every address.

The engine keeps free ranges and interval/octet exclusions so it never walks a
block address by address; the reference (tests/support/allocation_model.py, also
what the property tests check against) does exactly that walk, with the contract's
rules written out plainly, on blocks small enough to scan:

- after random pre-allocations (`--address`), releases to holds, releases
  `--now` and holds that have run out, `--count k` must hand out the k lowest
  addresses the scan finds allowed and free, or, when fewer than k are, fail
  with "exhausted" and leave the store exactly as it was;
- melange.exclusions.Exclusions (next_allowed, reason, count) agrees with a
  brute-force scan on random intervals and octets, and its arithmetic count on
  a /8-sized range agrees with an independent computation.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melange import operations
from melange.errors import Conflict, Exhausted
from melange.exclusions import Exclusions
from melange.store import Store
from tests.support.allocation_model import Block, Model, allowed
from tests.support.scratch_stores import age_hold, empty_store_file
from tests.support.sql import dump_store

BLOCK = "ref"
POLICY = "refpol"
HOLD = 3600
V4_BASE = int(ipaddress.IPv4Address("172.16.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8:42::"))
MAC = "02:00:00:00:0a:01"


# -- blocks small enough to scan (the rules: tests/support/allocation_model.py)


@st.composite
def blocks(draw) -> Block:
    version = draw(st.sampled_from([4, 6]))
    # Down to /31 and /32 (IPv4), /127 and /128 (IPv6), where the edge rules change.
    if version == 4:
        prefixlen = draw(st.integers(22, 32))
    else:
        prefixlen = draw(st.integers(118, 128))
    size = 2 ** ((32 if version == 4 else 128) - prefixlen)
    base = V4_BASE if version == 4 else V6_BASE
    first = base + draw(st.integers(0, 15)) * size
    gateway = None
    if draw(st.booleans()):
        if version == 4 and prefixlen < 31:  # not the network or broadcast address
            gateway = draw(st.integers(1, size - 2))
        else:
            gateway = draw(st.integers(0, size - 1))
    ranges = draw(
        st.lists(
            st.tuples(
                st.integers(-size - 4, size + 4),
                st.integers(1, size) | st.integers(1, 4),
            ),
            max_size=4,
            unique=True,
        )
    )
    octets = draw(st.lists(st.integers(0, 255), max_size=5, unique=True))
    with_policy = bool(ranges or octets) or draw(st.booleans())
    return Block(version, prefixlen, first, gateway, tuple(ranges), tuple(octets), with_policy)


# -- a store per example


def fresh_store(directory: Path) -> tuple[Store, Path]:
    path = empty_store_file(directory)
    return Store(f"sqlite:///{path}", release_hold=HOLD), path


def create_block(store: Store, block: Block) -> None:
    if block.with_policy:
        operations.run(store, "policy.create", {"name": POLICY})
        for offset, length in block.ranges:
            operations.run(
                store, "policy.add_range", {"name": POLICY, "offset": offset, "length": length}
            )
        for octet in block.octets:
            operations.run(store, "policy.add_octet", {"name": POLICY, "octet": octet})
    operations.run(
        store,
        "block.create",
        {
            "cidr": block.cidr,
            "name": BLOCK,
            "gateway": None if block.gateway is None else block.text(block.gateway),
            "policy": POLICY if block.with_policy else None,
        },
    )


def dump_file(path: Path) -> list[tuple]:
    """Every row of every table of an SQLite store, sorted (conftest's dump_store, faster)."""
    with sqlite3.connect(path) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [
            (name, *map(repr, row))
            for name in names
            for row in conn.execute(f'SELECT * FROM "{name}"')
        ]
    conn.close()
    return sorted(rows)


def listed(store: Store, released: bool) -> list[str]:
    records = operations.run(store, "ip.list", {"block": BLOCK, "released": released})
    return [r["address"] for r in records]


# -- the engine's choices against the reference


@st.composite
def histories(draw):
    """A block, then addresses (indices) to pre-allocate and what becomes of each."""
    block = draw(blocks())
    indices = draw(st.lists(st.integers(0, block.size - 1), max_size=24, unique=True))
    fates = draw(
        st.lists(
            st.sampled_from(["keep", "keep", "hold", "free", "expire"]),
            min_size=len(indices),
            max_size=len(indices),
        )
    )
    return block, indices, fates


@settings(max_examples=60, deadline=None)
@given(histories(), st.data())
def test_count_allocation_matches_brute_force(history, data):
    block, wanted, fates = history
    model = Model(block)
    with tempfile.TemporaryDirectory(prefix="melange-ref-") as directory:
        store, path = fresh_store(Path(directory))
        try:
            create_block(store, block)
            for index, fate in zip(wanted, fates, strict=True):
                params = {"block": BLOCK, "address": block.text(index)}
                if model.allocate(None, index, None) != (0, [index]):  # not allowed
                    with pytest.raises(Conflict):
                        operations.run(store, "block.allocate", params)
                    continue
                got = operations.run(store, "block.allocate", params)
                assert [r["address"] for r in got] == [block.text(index)]
                if fate == "keep":
                    continue
                release = {"address": block.text(index), "block": BLOCK, "now": fate == "free"}
                operations.run(store, "ip.release", release)
                assert model.release(index, now=fate == "free") == (0, None)
                if fate == "expire":
                    age_hold(path, block.first + index)
                    assert model.expire(index)
            assert listed(store, False) == [block.text(i) for i in sorted(model.allocated)]
            assert listed(store, True) == [block.text(i) for i in sorted(model.held)]

            for _round in range(3):
                free = model.free()
                k = data.draw(
                    st.integers(1, 4) | st.integers(max(1, len(free) - 2), len(free) + 2),
                    label="count",
                )
                before = dump_file(path)
                code, chosen = model.allocate(None, None, k)
                if code == 5:
                    with pytest.raises(Exhausted):
                        operations.run(store, "block.allocate", {"block": BLOCK, "count": k})
                    assert dump_file(path) == before, "a failed allocation changed the store"
                    continue
                got = operations.run(store, "block.allocate", {"block": BLOCK, "count": k})
                assert [r["address"] for r in got] == [block.text(i) for i in chosen]
                assert listed(store, False) == [block.text(i) for i in sorted(model.allocated)]
                assert listed(store, True) == [block.text(i) for i in sorted(model.held)]

            # One more, without --count (and with a MAC): the lowest free, or exhausted.
            before = dump_file(path)
            code, chosen = model.allocate(0, None, None)
            if code == 5:
                with pytest.raises(Exhausted):
                    operations.run(store, "block.allocate", {"block": BLOCK, "mac": MAC})
                assert dump_file(path) == before
            else:
                got = operations.run(store, "block.allocate", {"block": BLOCK, "mac": MAC})
                assert [r["address"] for r in got] == [block.text(i) for i in chosen]
        finally:
            store.close()


def test_exhausted_count_through_cli_changes_nothing(melange):
    melange.ok("policy", "create", "p")
    melange.ok("policy", "add-range", "p", "--offset=-3", "--length=2")
    melange.ok("block", "create", "10.30.0.0/29", "--name", BLOCK, "--gateway", "10.30.0.1")
    melange.ok("policy", "add-octet", "p", "3")
    melange.ok("block", "update", BLOCK, "--policy", "p")
    # usable: .2 .4 (.0 net, .1 gw, .3 octet, .5 .6 range, .7 broadcast)
    melange.ok("block", "allocate", BLOCK, "--address", "10.30.0.4")
    before = dump_store(melange.db)
    result = melange("block", "allocate", BLOCK, "--count", "2")
    assert result.exit_code == 5, result.stderr
    assert dump_store(melange.db) == before
    assert melange.ok("block", "allocate", BLOCK, "--count", "1") == "10.30.0.2\n"
    assert melange("block", "allocate", BLOCK).exit_code == 5


def test_slash8_octet_policy_block(tmp_path):
    """A /8 block with octet rules: arithmetic utilisation, and allocation skips the octets."""
    store, _path = fresh_store(tmp_path)
    try:
        operations.run(store, "policy.create", {"name": POLICY})
        for octet in (0, 7, 255):
            operations.run(store, "policy.add_octet", {"name": POLICY, "octet": octet})
        operations.run(
            store,
            "block.create",
            {"cidr": "10.0.0.0/8", "name": BLOCK, "gateway": "10.0.0.1", "policy": POLICY},
        )
        shown = operations.run(store, "block.show", {"block": BLOCK})
        # 3 octets in each of the 65536 /24s; the network (.0) and broadcast (.255)
        # addresses are already among them; the gateway 10.0.0.1 is one more.
        assert shown["utilization"]["unusable"] == 3 * 65536 + 1
        assert shown["utilization"]["size"] == 2**24
        with pytest.raises(Conflict):
            operations.run(store, "block.allocate", {"block": BLOCK, "address": "10.1.2.7"})
        got = operations.run(store, "block.allocate", {"block": BLOCK, "count": 600})
        block = Block(4, 8, int(ipaddress.IPv4Address("10.0.0.0")), 1, (), (0, 7, 255), True)
        expected = [block.text(i) for i in range(4096) if allowed(block, i)][:600]
        assert [r["address"] for r in got] == expected
        assert expected[-1].startswith("10.0.2.")
    finally:
        store.close()


# -- Exclusions against brute force


def brute_excluded(first: int, last: int, intervals, octets) -> list[bool]:
    return [
        any(lo <= x <= hi for lo, hi in intervals) or (x & 0xFF) in octets
        for x in range(first, last + 1)
    ]


@st.composite
def exclusion_cases(draw):
    first = draw(st.integers(0, 4000))
    size = draw(st.integers(1, 800))
    last = first + size - 1
    edge = st.integers(first - 20, last + 20)
    intervals = [tuple(sorted(pair)) for pair in draw(st.lists(st.tuples(edge, edge), max_size=6))]
    octets = frozenset(draw(st.lists(st.integers(0, 255), max_size=6)))
    return first, last, intervals, octets


@settings(max_examples=150, deadline=None)
@given(exclusion_cases())
def test_exclusions_against_brute_force(case):
    first, last, intervals, octets = case
    ex = Exclusions.build(first, last, [(lo, hi, "r") for lo, hi in intervals], octets)
    excluded = brute_excluded(first, last, intervals, octets)
    assert ex.count() == sum(excluded)
    for x in range(first, last + 1):
        assert (ex.reason(x) is not None) == excluded[x - first], x
    # next_allowed, from every start point (and a few outside the range)
    following: int | None = None
    expected_next: dict[int, int | None] = {}
    for x in range(last, first - 1, -1):
        if not excluded[x - first]:
            following = x
        expected_next[x] = following
    for x in range(first - 3, last + 4):
        want = expected_next[max(x, first)] if x <= last else None
        assert ex.next_allowed(x) == want, x


def merged(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


SLASH8_FIRST = int(ipaddress.IPv4Address("10.0.0.0"))
SLASH8_LAST = int(ipaddress.IPv4Address("10.255.255.255"))


@settings(max_examples=60, deadline=None)
@given(
    octets=st.frozensets(st.integers(0, 255), min_size=1, max_size=6),
    spans=st.lists(st.tuples(st.integers(0, 2**24 - 1), st.integers(1, 3000)), max_size=4),
    with_edges=st.booleans(),
    probes=st.lists(st.integers(0, 2**24 - 1), min_size=1, max_size=5),
)
def test_exclusions_octets_on_a_slash8(octets, spans, with_edges, probes):
    intervals = [
        (SLASH8_FIRST + start, min(SLASH8_FIRST + start + length - 1, SLASH8_LAST))
        for start, length in spans
    ]
    if with_edges:  # network and broadcast, as exclusions_for adds them
        intervals += [(SLASH8_FIRST, SLASH8_FIRST), (SLASH8_LAST, SLASH8_LAST)]
    ex = Exclusions.build(
        SLASH8_FIRST, SLASH8_LAST, [(lo, hi, "r") for lo, hi in intervals], octets
    )
    # Independently: 65536 addresses per octet, plus each interval address whose
    # last octet is not already excluded (the intervals are short: enumerate them).
    union = merged(intervals)
    extra = sum(1 for lo, hi in union for x in range(lo, hi + 1) if (x & 0xFF) not in octets)
    assert ex.count() == 65536 * len(octets) + extra
    if not spans and not with_edges:
        assert ex.count() == 65536 * len(octets)

    def excluded(x: int) -> bool:
        return any(lo <= x <= hi for lo, hi in union) or (x & 0xFF) in octets

    for probe in probes:
        x = SLASH8_FIRST + probe
        assert (ex.reason(x) is not None) == excluded(x)
        want = x
        while want <= SLASH8_LAST and excluded(want):
            want += 1
        assert ex.next_allowed(x) == (want if want <= SLASH8_LAST else None), x


def test_exclusions_every_octet_excluded():
    ex = Exclusions.build(SLASH8_FIRST, SLASH8_LAST, [], frozenset(range(256)))
    assert ex.next_allowed(SLASH8_FIRST) is None
    assert ex.count() == 2**24


def test_exclusions_octet_wraps_to_next_slash24():
    first = int(ipaddress.IPv4Address("10.0.0.0"))
    ex = Exclusions.build(first, first + 1023, [(first + 256, first + 258, "r")], {254, 255, 0})
    assert ex.next_allowed(first + 254) == first + 259  # .254 .255 .256(0) .257 .258 skipped
    assert ex.count() == 3 * 4 + 2  # .257 and .258 are the interval's only non-octet hits
