"""The store's own derived data: what a bug, a hand edit or a bad import can leave wrong.

Addresses outside their block or forbidden there, MACs active twice, missing
MAC guards, dangling interface references and wrong allocated counters.
Interfaces without addresses are not drift: `ip release` of an interface's
address leaves exactly that, on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Connection, func, select

from melange import blocks as block_ops
from melange import holds, subnets
from melange.models import blocks, interfaces
from melange.reconcile.findings import IP, B, address_text, blocks_where, finding
from melange.records import block_label
from melange.validate import format_mac


def store_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """Every finding about the store itself, in a fixed order of kinds."""
    return [
        *placement_findings(conn, network),
        *duplicate_mac_findings(conn, network),
        *interface_findings(conn, network),
        *counter_findings(conn, network),
    ]


def placement_findings(conn: Connection, network: str | None = None) -> Iterator[dict]:
    """Addresses outside their block, and ones its network/broadcast/gateway/policy forbid.

    One streamed pass over the addresses, with each block's exclusions built
    once (intervals and octet rules, never expanded).
    """
    block_rows = {row.id: row for row in conn.execute(blocks_where(select(blocks), network))}
    if not block_rows:
        return
    rules = block_ops.policy_rules(conn, [row.policy_id for row in block_rows.values()])
    exclusions = {
        bid: block_ops.exclusions_of(row, subnets.chain_in(row, block_rows), rules)
        for bid, row in block_rows.items()
    }
    query = blocks_where(
        select(IP.block_id, IP.address, IP.mac, IP.state)
        .join(blocks, B.id == IP.block_id)
        .order_by(IP.block_id, IP.address),
        network,
    )
    for block_id, address, mac, state in conn.execute(query.execution_options(yield_per=10_000)):
        block = block_rows[block_id]
        shown = {
            "address": address_text(address, block.version),
            "block": block_label(block),
            "block_id": block_id,
            "mac": format_mac(mac),
            "state": state,
        }
        if not block.first_addr <= address <= block.last_addr:
            yield finding("address_outside_block", **shown, cidr=block.cidr)
            continue
        reason = exclusions[block_id].reason(address)
        if reason:
            yield finding("address_excluded", **shown, reason=reason)


def duplicate_mac_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """A MAC allocated twice in one block (dnsmasq would serve only one of the
    addresses), and allocated rows whose `active_mac` guard is missing (the next
    `allocate --mac` would not see them and hand out a second address)."""
    twice = conn.execute(
        blocks_where(
            select(IP.block_id, IP.mac)
            .join(blocks, B.id == IP.block_id)
            .where(holds.allocated(IP), IP.mac.is_not(None))
            .group_by(IP.block_id, IP.mac)
            .having(func.count() > 1)
            .order_by(IP.block_id, IP.mac),
            network,
        )
    ).all()
    found = [_duplicate(conn, block_id, mac) for block_id, mac in twice]
    duplicated = {(block_id, mac) for block_id, mac in twice}
    return found + _unguarded(conn, network, duplicated)


def _duplicate(conn: Connection, block_id: int, mac: int) -> dict:
    rows = conn.execute(
        select(IP.address, B.version, B.name, B.cidr)
        .join(blocks, B.id == IP.block_id)
        .where(IP.block_id == block_id, IP.mac == mac, holds.allocated(IP))
        .order_by(IP.address)
    ).all()
    return finding(
        "mac_duplicate",
        mac=format_mac(mac),
        block=block_label(rows[0]),
        block_id=block_id,
        addresses=[address_text(r.address, r.version) for r in rows],
    )


def _unguarded(conn: Connection, network: str | None, duplicated: set) -> list[dict]:
    """Allocated rows with a MAC but no `active_mac` guard; those of a MAC allocated
    twice are left out (reported as mac_duplicate, which has no single fix)."""
    rows = conn.execute(
        blocks_where(
            select(IP.block_id, IP.address, IP.mac, B.version, B.name, B.cidr)
            .join(blocks, B.id == IP.block_id)
            .where(holds.allocated(IP), IP.mac.is_not(None), IP.active_mac.is_(None))
            .order_by(IP.block_id, IP.address),
            network,
        )
    )
    return [
        finding(
            "active_mac_missing",
            address=address_text(row.address, row.version),
            block=block_label(row),
            block_id=row.block_id,
            mac=format_mac(row.mac),
        )
        for row in rows
        if (row.block_id, row.mac) not in duplicated
    ]


def interface_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """Addresses whose interface no longer exists (the foreign key would have cleared
    the reference; a store written around it did not)."""
    query = blocks_where(
        select(IP.block_id, IP.address, IP.interface_id, B.version, B.name, B.cidr)
        .join(blocks, B.id == IP.block_id)
        .outerjoin(interfaces, interfaces.c.id == IP.interface_id)
        .where(IP.interface_id.is_not(None), interfaces.c.id.is_(None))
        .order_by(IP.block_id, IP.address),
        network,
    )
    return [
        finding(
            "interface_missing",
            address=address_text(row.address, row.version),
            block=block_label(row),
            block_id=row.block_id,
            interface_id=row.interface_id,
        )
        for row in conn.execute(query)
    ]


def counter_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """Blocks whose `allocated_count` (kept so utilisation never counts rows) is wrong."""
    counted = (
        select(IP.block_id, func.count().label("n"))
        .where(holds.allocated(IP))
        .group_by(IP.block_id)
        .subquery()
    )
    actual = func.coalesce(counted.c.n, 0)
    query = blocks_where(
        select(B.id, B.name, B.cidr, B.allocated_count, actual.label("actual"))
        .outerjoin(counted, counted.c.block_id == B.id)
        .where(B.allocated_count != actual)
        .order_by(B.id),
        network,
    )
    return [
        finding(
            "counter_mismatch",
            block=block_label(row),
            block_id=row.id,
            allocated_count=row.allocated_count,
            actual=row.actual,
        )
        for row in conn.execute(query)
    ]
