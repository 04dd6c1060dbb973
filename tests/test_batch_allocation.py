"""A group commit's single allocations done together (melange.batch_allocation).

What must hold: a batch's outcome is one its requests could have one by one, in some
order (outcomes, addresses, free space, counters and audit trail alike); a request
that depends on another of the batch (a MAC or a DNS name asked twice, a MAC that
already holds an address) still gets the one-by-one answer; a refused request writes
nothing; and the requests really share their statements. Real stores: every backend
for the cases, SQLite files for the property (a copy of one store per order tried).
A batch the store itself refuses (a constraint met mid-batch) is run again one by one:
tests/test_group_commit.py's poisoned batches go through this path.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

from melange import operations
from melange.errors import Conflict, Exhausted, InvalidInput, MelangeError, NotFound
from melange.operations import Request
from melange.store import Store


def _allocate(block: str, **params: Any) -> Request:
    return Request("block.allocate", {"block": block, **params}, "tester", "socket")


def _setup(store: Store) -> None:
    run = operations.run
    run(store, "block.create", {"cidr": "10.61.0.0/28", "name": "b", "domain": "lab.test"})
    run(store, "block.create", {"cidr": "10.62.0.0/30", "name": "tiny"})
    run(store, "block.create", {"cidr": "10.63.0.0/24", "name": "parent"})
    run(store, "block.create", {"cidr": "10.63.0.0/26", "parent": "parent"})
    run(store, "block.create", {"cidr": "fd00:61::/64", "name": "six", "generator": "eui64",
                                "domain": "lab.test"})  # fmt: skip
    run(store, "block.allocate", {"block": "b", "mac": "02:00:00:00:00:05", "hostname": "db"})


def _address(outcome: Any) -> str:
    assert isinstance(outcome, list) and len(outcome) == 1, outcome
    return outcome[0]["address"]


def test_a_batch_of_every_kind_of_request_gets_the_one_by_one_answers(store_url: str) -> None:
    store = Store(store_url, release_hold=3600)
    try:
        _setup(store)
        held = operations.run(store, "ip.list", {"block": "b"})
        batch = [
            _allocate("b", mac="02:00:00:00:00:01", hostname="web1"),
            _allocate("b", mac="02:00:00:00:00:02"),
            _allocate("b", mac="02:00:00:00:00:01"),  # the same MAC again: idempotent
            _allocate("b", mac="02:00:00:00:00:03", hostname="web1"),  # the same name
            _allocate("b", mac="zz"),
            _allocate("nosuch", mac="02:00:00:00:00:04"),
            _allocate("b", mac="02:00:00:00:00:05", hostname="db2"),  # holds one: renamed
            _allocate("b"),
            _allocate("parent", mac="02:00:00:00:00:06"),
            _allocate("tiny", mac="02:00:00:00:00:07"),
            _allocate("tiny", mac="02:00:00:00:00:08"),
            _allocate("tiny", mac="02:00:00:00:00:09"),  # a /30 has two to give
            _allocate("six", mac="02:00:00:00:00:0a", hostname="v6"),
            # The name the rename above frees: the rename runs after the batch's others
            # (its MAC holds an address), so this one finds the name in use, as it would
            # had it come first: both orders are answers concurrent callers may get.
            _allocate("b", mac="02:00:00:00:00:0b", hostname="db"),
            _allocate("nosuch", mac="02:00:00:00:00:0c"),
        ]
        out = operations.run_batch(store, batch)
        first, second, again = _address(out[0]), _address(out[1]), _address(out[2])
        assert again == first and first != second
        assert out[0][0]["dns_name"] == "web1.lab.test"
        assert isinstance(out[3], Conflict) and "web1.lab.test" in out[3].message
        assert isinstance(out[4], InvalidInput)
        assert isinstance(out[5], NotFound)
        assert _address(out[6]) == held[0]["address"]
        assert out[6][0]["dns_name"] == "db2.lab.test"
        assert _address(out[7]) not in {first, second, held[0]["address"]}
        assert isinstance(out[8], Conflict) and "has subnets" in out[8].message
        tiny = {_address(out[9]), _address(out[10])}
        assert tiny == {"10.62.0.1", "10.62.0.2"}
        assert isinstance(out[11], Exhausted)
        assert _address(out[12]) == "fd00:61::ff:fe00:a"  # EUI-64 of its MAC
        assert isinstance(out[13], Conflict) and "db.lab.test" in out[13].message
        assert isinstance(out[14], NotFound) and out[14] is not out[5]  # each its own

        rows = operations.run(store, "ip.list", {})
        by_address = {row["address"]: row for row in rows}
        assert len(by_address) == len(rows) == 7  # the held one, and six new
        assert by_address[first]["hostname"] == "web1"
        assert by_address[held[0]["address"]]["hostname"] == "db2"
        shown = operations.run(store, "block.show", {"block": "b"})
        assert shown["utilization"]["used"] == 4
        with store.engine.connect() as conn:
            audited = conn.execute(text(
                "SELECT count(*) FROM audit_log WHERE command = 'block.allocate' "
                "AND actor = 'tester' AND via = 'socket'")).scalar()  # fmt: skip
        successes = sum(isinstance(o, list) for o in out)
        assert audited == successes == 8
        # The free space agrees with the addresses: the next allocations skip them all.
        more = operations.run(store, "block.allocate", {"block": "b", "count": 3})
        assert not {row["address"] for row in more} & by_address.keys()
    finally:
        store.close()


def test_a_batch_shares_its_statements(tmp_path: Path) -> None:
    """Sixteen allocations of one block in one batch: a few statements for all of them,
    where one by one each took about ten (SQLite's own count of what it ran)."""
    store = Store(f"sqlite:///{tmp_path / 'm.db'}", release_hold=3600)
    try:
        operations.run(store, "block.create", {"cidr": "10.65.0.0/24", "name": "s",
                                               "domain": "lab.test"})  # fmt: skip
        statements: list[str] = []

        def trace(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
            dbapi_connection.set_trace_callback(statements.append)

        store.close()  # connections opened from now on are traced
        event.listen(store.engine, "connect", trace)

        def batch(start: int) -> list[Any]:
            statements.clear()
            return operations.run_batch(store, [
                _allocate("s", mac=f"02:00:00:00:02:{start + i:02x}", hostname=f"h{start + i}")
                for i in range(16)])  # fmt: skip

        batch(0)  # the connection's first use reads the schema's revision
        out = batch(16)
        assert all(isinstance(o, list) for o in out)
        # Each request's own: its DNS name's check. Its address row and audit row go in
        # one multi-row INSERT each for the batch (melange.prepared.executemany). The
        # rest, eight statements, is shared: BEGIN, the block, its MACs, its expired
        # holds, its free range read and written, its counter, COMMIT.
        assert sum(s.startswith("INSERT INTO ip_addresses") for s in statements) == 1
        assert sum(s.startswith("INSERT INTO audit_log") for s in statements) == 1
        assert len(statements) <= 16 + 2 + 8, statements
    finally:
        store.close()


# --- the property: some one-by-one order gives the batch's outcome -----------------

MACS = ["02:00:00:00:03:01", "02:00:00:00:03:02", "02:00:00:00:03:03", "02:00:00:00:00:05",
        "bad"]  # fmt: skip
REQUESTS = st.builds(
    lambda block, mac, hostname: _allocate(
        block, **{k: v for k, v in (("mac", mac), ("hostname", hostname)) if v is not None}),
    st.sampled_from(["b", "tiny", "six", "parent", "nosuch"]),
    st.none() | st.sampled_from(MACS),
    st.none() | st.sampled_from(["web1", "web2", "db"]),
)  # fmt: skip


def _state(path: Path) -> tuple:
    """The store's content without times, generations and row ids."""
    conn = sqlite3.connect(path)
    try:
        addresses = sorted(conn.execute(
            "SELECT block_id, address, mac, active_mac, hostname, tenant, state, dns_name "
            "FROM ip_addresses").fetchall())  # fmt: skip
        free = sorted(conn.execute("SELECT block_id, first_addr, last_addr FROM free_ranges"))
        counters = sorted(conn.execute("SELECT id, allocated_count FROM blocks"))
        trail = [(*row[:-1], _timeless(json.loads(row[-1]))) for row in conn.execute(
            "SELECT actor, via, command, block_id, address, params, kind, subject, outcome "
            "FROM audit_log ORDER BY id")]  # fmt: skip
    finally:
        conn.close()
    return addresses, free, counters, trail


def _timeless(value: Any) -> Any:
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k != "allocated_at"}
    return value


def _outcome(value: Any) -> Any:
    if isinstance(value, MelangeError):
        return (type(value).__name__, value.message)
    return _timeless(value)


def _run(template: Path, path: Path, requests: list[Request], together: bool) -> tuple:
    for suffix in ("-wal", "-shm"):  # nothing of the last example's store may be replayed
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, path)
    assert len(_state(path)[2]) == 5, "the copy lacks the template's blocks"
    store = Store(f"sqlite:///{path}", release_hold=3600)
    try:
        if together:
            out = operations.run_batch(store, requests)
        else:  # one by one: a batch of one runs alone
            out = [operations.run_batch(store, [request])[0] for request in requests]
    finally:
        store.close()
    return [_outcome(o) for o in out], _state(path)


_TEMPLATE: list[Path] = []  # one set-up store for every example


def _template(tmp_path_factory: Any) -> Path:
    if not _TEMPLATE:
        path = Path(tmp_path_factory.mktemp("batch")) / "template.db"
        store = Store(f"sqlite:///{path}", release_hold=3600)
        _setup(store)
        store.close()
        _TEMPLATE.append(path)
    return _TEMPLATE[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(requests=st.lists(REQUESTS, min_size=2, max_size=4))
def test_a_batch_ends_as_some_one_by_one_order_would(tmp_path_factory, requests) -> None:
    template = _template(tmp_path_factory)
    work = template.parent / "work.db"
    outcomes, state = _run(template, work, requests, together=True)
    for order in itertools.permutations(range(len(requests))):
        seq_outcomes, seq_state = _run(template, work, [requests[i] for i in order], False)
        by_index = dict(zip(order, seq_outcomes, strict=True))
        if seq_state == state and [by_index[i] for i in range(len(requests))] == outcomes:
            return
    raise AssertionError(f"no one-by-one order gives {outcomes}")
