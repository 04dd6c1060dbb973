"""Listing blocks costs a fixed number of statements, whatever the number of blocks.

Counted on a real store of each backend with the engine's `before_cursor_execute`
event: a listing of 30 blocks (with policies, parents and DNS servers) runs exactly
as many statements as a listing of 3 of the same kinds.
"""

from __future__ import annotations

from sqlalchemy import event

from melange import blocks, interfaces, macranges, policies
from melange.store import Store

GROUPS = 10


def _fill(conn) -> None:
    """GROUPS × (a top-level block with a policy and DNS servers, one of its subnets with
    its own DNS server, a plain block): every per-block lookup a record needs. The first
    group alone has the tenant "few", so a listing of it has 3 blocks."""
    policies.create(conn, "edge")
    for i in range(GROUPS):
        tenant = "few" if i == 0 else None
        top = blocks.create(
            conn,
            f"10.{i}.0.0/16",
            name=f"top-{i}",
            policy="edge",
            dns=[f"10.{i}.0.53", f"10.{i}.0.54"],
            gateway=f"10.{i}.0.1",
            tenant=tenant,
        )
        blocks.create(conn, f"10.{i}.1.0/24", parent=str(top["id"]), dns=[f"10.{i}.1.53"])
        blocks.create(conn, f"172.16.{i}.0/24", network="other", tenant=tenant)


def _statements(store: Store, fn) -> tuple[int, list[dict]]:
    """How many statements `fn` runs in one read transaction, and what it returns."""
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        result = store.read(fn)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    return len(seen), result


def test_block_list_runs_as_many_statements_for_30_blocks_as_for_3(store_url):
    """Per-block lookups (policy name, parent CIDR, DNS servers) ran 6 statements for
    these 3 blocks and 51 for 30; read for all listed blocks at once, 4 for either."""
    store = Store(store_url)
    try:
        store.write(_fill)
        few_count, few = _statements(store, lambda conn: blocks.list_blocks(conn, tenant="few"))
        many_count, many = _statements(store, blocks.list_blocks)
    finally:
        store.close()
    assert (len(few), len(many)) == (3, 3 * GROUPS)
    assert [b["parent"] for b in few] == [None, "10.0.0.0/16", None]
    assert (many[0]["policy"], many[0]["dns"]) == ("edge", ["10.0.0.53", "10.0.0.54"])
    assert many[-1]["cidr"] == f"172.16.{GROUPS - 1}.0/24"
    assert many_count == few_count, (few_count, many_count)


def test_interface_list_runs_as_many_statements_for_30_interfaces_as_for_3(store_url):
    """Each interface's addresses were two more queries per interface (8 against 56);
    read for a page of interfaces at once, the count does not grow with the number listed."""

    def fill(conn) -> None:
        blocks.create(conn, "10.1.0.0/24", network="vms")
        blocks.create(conn, "fd00:1::/64", network="vms")
        for i in range(30):
            device = "few" if i < 3 else "many"
            interfaces.create(conn, f"vif-{i:02}", network="vms", device=device,
                              mac=f"02:00:00:00:00:{i:02x}")  # fmt: skip

    listing = interfaces.list_interfaces
    store = Store(store_url)
    try:
        store.write(fill)
        few_count, few = _statements(store, lambda c: listing(c, device="few"))
        many_count, many = _statements(store, lambda c: listing(c, device="many"))
    finally:
        store.close()
    assert (len(few), len(many)) == (3, 27)
    assert few[0]["addresses"][0] == "10.1.0.1" and few[0]["addresses"][1].startswith("fd00:1::")
    assert all(len(record["addresses"]) == 2 for record in many)
    assert len({record["addresses"][0] for record in many}) == 27
    assert many_count == few_count, (few_count, many_count)


def _add_policies(conn, first: int, last: int) -> None:
    """Policies `first`..`last`-1, each with two ranges, an octet and a block using it."""
    for i in range(first, last):
        policies.create(conn, f"p{i:02}")
        policies.add_range(conn, f"p{i:02}", offset=10, length=5)
        policies.add_range(conn, f"p{i:02}", offset=2, length=1)
        policies.add_octet(conn, f"p{i:02}", 254)
        blocks.create(conn, f"10.{i}.0.0/24", policy=f"p{i:02}")


def _add_mac_ranges(conn, first: int, last: int) -> None:
    """MAC ranges `first`..`last`-1, each with one MAC handed to an interface."""
    if first == 0:
        blocks.create(conn, "10.200.0.0/16", network="vms")
    for i in range(first, last):
        macranges.create(conn, f"02:00:00:00:{i:02x}:00/40")
        interfaces.create(conn, f"vif-{i:02}", network="vms", mac=f"02:00:00:00:{i:02x}:01")


def test_policy_and_mac_range_lists_run_as_many_statements_for_30_as_for_3(store_url):
    """Ranges, octets and users per policy, MACs in use per MAC range: read for all
    listed at once (a policy cost three statements each, a MAC range one)."""
    listings = (policies.list_policies, macranges.list_ranges)
    store = Store(store_url)
    try:
        store.write(lambda conn: (_add_policies(conn, 0, 3), _add_mac_ranges(conn, 0, 3)))
        few = [_statements(store, listing) for listing in listings]
        store.write(lambda conn: (_add_policies(conn, 3, 30), _add_mac_ranges(conn, 3, 30)))
        many = [_statements(store, listing) for listing in listings]
    finally:
        store.close()
    (policy_few, _), (range_few, _) = few
    (policy_many, listed), (range_many, ranges) = many
    assert len(listed) == 30 and len(ranges) == 30
    assert listed[7]["unusable_ranges"] == [{"offset": 2, "length": 1}, {"offset": 10, "length": 5}]
    assert listed[7]["unusable_octets"] == [254] and listed[7]["blocks"] == 1
    assert [r["allocated"] for r in ranges] == [1] * 30
    assert (policy_many, range_many) == (policy_few, range_few)
