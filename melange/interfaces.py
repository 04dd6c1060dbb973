"""Interfaces (VIFs): a MAC and one address of each family their network has."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, Row, delete, insert, select, update

from melange import addresses, allowed_ips, macranges
from melange.clock import utcnow
from melange.errors import Conflict, Exhausted, NotFound
from melange.models import allocated_macs, blocks, interfaces, ip_addresses
from melange.names import require_device, require_network
from melange.paging import Page
from melange.records import iso
from melange.validate import format_mac, parse_mac, validate_name, validate_network

I = interfaces.c  # noqa: E741


def _get(conn: Connection, vif: str):
    row = conn.execute(select(interfaces).where(I.vif_id == vif)).first()
    if row is None:
        raise NotFound(f"no interface {vif!r}")
    return row


def records(conn: Connection, rows: Sequence[Row]) -> list[dict]:
    """The records of `rows` (interfaces), their addresses and allowed addresses read
    in one batch each."""
    ids = [row.id for row in rows]
    owned = addresses.by_interface(conn, ids)
    allowed = allowed_ips.by_interface(conn, ids)
    return [
        {
            "vif_id": row.vif_id,
            "network": row.network,
            "device": row.device,
            "tenant": row.tenant,
            "mac": format_mac(row.mac),
            "addresses": owned[row.id],
            "allowed_ips": allowed[row.id],
            "created_at": iso(row.created_at),
        }
        for row in rows
    ]


def record(conn: Connection, row: Row) -> dict:
    return records(conn, [row])[0]


def with_mac(mac: int) -> ColumnElement[bool]:
    """The condition "the interface has MAC `mac`", for reads that find one by it (the
    web view's search); the check that a new interface's MAC is free is `_check_new`."""
    return interfaces.c.mac == mac


def _leaf_blocks(conn: Connection, network: str) -> Sequence[Row]:
    """The network's blocks that hand out addresses (no subnets), oldest first."""
    child = blocks.alias("child")
    return conn.execute(
        select(blocks)
        .where(
            blocks.c.network == network,
            ~select(child.c.id).where(child.c.parent_id == blocks.c.id).exists(),
        )
        .order_by(blocks.c.version, blocks.c.id)
    ).all()


def create(
    conn: Connection,
    vif: str,
    *,
    network: str,
    device: str | None = None,
    tenant: str | None = None,
    mac: str | None = None,
) -> dict:
    """Create the interface, its MAC and its addresses in one transaction."""
    check_names(vif, network, device, tenant)
    mac_value = parse_mac(mac) if mac is not None else None
    _check_new(conn, vif, mac_value)
    require_network(conn, network)
    leaves = _leaf_blocks(conn, network)  # never empty: a subnet is in its parent's network
    range_id = None
    if mac_value is None:
        range_id, mac_value = macranges.next_free(conn)
    add(conn, vif, network=network, device=device, tenant=tenant, mac=mac_value, range_id=range_id)
    for version in sorted({b.version for b in leaves}):
        _allocate_one(conn, [b for b in leaves if b.version == version], vif, tenant)
    return record(conn, _get(conn, vif))


def check_names(vif: str, network: str, device: str | None, tenant: str | None) -> None:
    """An interface's names, for `interface create` and import alike (they reach
    `interface list` lines and the audit trail)."""
    validate_name(vif, "interface id")
    validate_network(network)
    if device is not None:
        validate_name(device, "device")
    if tenant is not None:
        validate_name(tenant, "tenant")


def _check_new(conn: Connection, vif: str, mac: int | None) -> None:
    """The interface id, and its MAC when chosen, belong to no other interface."""
    if conn.execute(select(I.id).where(I.vif_id == vif)).first():
        raise Conflict(f"interface {vif!r} already exists")
    if mac is not None:
        owner = conn.execute(select(I.vif_id).where(I.mac == mac)).scalar()
        if owner is not None:
            raise Conflict(f"MAC {format_mac(mac)} belongs to interface {owner!r}")


def add(
    conn: Connection,
    vif: str,
    *,
    network: str,
    device: str | None,
    tenant: str | None,
    mac: int,
    range_id: int | None = None,
) -> int:
    """Insert a checked interface with its MAC (taken from MAC range `range_id`, or
    given); its id. `create` gives it addresses after; an import brings its own."""
    check_names(vif, network, device, tenant)
    _check_new(conn, vif, mac)
    key = conn.execute(
        insert(interfaces).values(
            vif_id=vif, network=network, device=device, tenant=tenant, mac=mac,
            created_at=utcnow(),
        )
    ).inserted_primary_key  # fmt: skip
    assert key is not None  # a one-row insert into a table with a primary key reports it
    macranges.assign(conn, mac, key[0], range_id)
    return key[0]


def _allocate_one(conn: Connection, candidates: list, vif: str, tenant) -> None:
    """One address from the first block of the family that has room."""
    for block in candidates:
        try:
            addresses.allocate(conn, str(block.id), interface=vif, tenant=tenant)
            return
        except Exhausted:
            continue
    family = f"IPv{candidates[0].version}"
    raise Exhausted(f"no free {family} address left in network {candidates[0].network}")


def list_interfaces(
    conn: Connection, *, device: str | None = None, page: Page | None = None
) -> list:
    """Interfaces by VIF id; `page` reads one page of them (melange.paging)."""
    require_device(conn, device)
    query = select(interfaces).order_by(I.vif_id)
    if device is not None:
        query = query.where(I.device == device)
    if page is None:
        return records(conn, conn.execute(query).all())
    rows = conn.execute(page.query(query, (I.vif_id,))).all()
    return records(conn, page.rows(rows, lambda r: (r.vif_id,)))


def show(conn: Connection, vif: str) -> dict:
    return record(conn, _get(conn, vif))


def delete_interface(conn: Connection, vif: str, *, hold_seconds: int) -> dict:
    """Release the interface's addresses (held as any release) and free its MAC."""
    row = _get(conn, vif)
    result = record(conn, row)
    addresses.release_for_interface(conn, row.id, hold_seconds)
    conn.execute(
        update(ip_addresses).where(ip_addresses.c.interface_id == row.id).values(interface_id=None)
    )
    conn.execute(delete(allocated_macs).where(allocated_macs.c.interface_id == row.id))
    conn.execute(delete(interfaces).where(I.id == row.id))
    return result
