"""Listing blocks costs a fixed number of statements, whatever the number of blocks.

Counted on a real store of each backend with the engine's `before_cursor_execute`
event: a listing of 30 blocks (with policies, parents and DNS servers) runs exactly
as many statements as a listing of 3 of the same kinds.
"""

from __future__ import annotations

from sqlalchemy import event

from melange import blocks, policies
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
