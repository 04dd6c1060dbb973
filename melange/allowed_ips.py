"""Allowed IPs: an address that another interface may use too (a VIP, a shared address;
Neutron's allowed address pairs), as Melange v1.0 had them.

The rules: the address is allocated (a held one is not; restore it first) in a block
of the interface's network, and it is not one of the interface's own addresses (those
are always its own: allowing one is a conflict, not a silent no-op). Allowing an
address already allowed is idempotent. An allowance is a row of `allowed_ips`, and it
goes with its interface or its address (FK cascade): `interface delete`,
`ip release --now`, an expired hold reclaimed, `block delete --force`. While the
address is held the row stays, shown nowhere, so `ip restore` brings the allowance back.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select

from melange import addresses, holds
from melange.errors import Conflict, NotFound
from melange.models import allowed_ips, blocks, interfaces, ip_addresses
from melange.records import ip_text, label
from melange.subnets import PAGE
from melange.validate import parse_ip

A = allowed_ips.c
IP = ip_addresses.c


def _interface(conn: Connection, vif: str):
    """The interface's id, name and network (melange.interfaces imports this module,
    so it cannot be asked)."""
    row = conn.execute(
        select(interfaces.c.id, interfaces.c.vif_id, interfaces.c.network).where(
            interfaces.c.vif_id == vif
        )
    ).first()
    if row is None:
        raise NotFound(f"no interface {vif!r}")
    return row


def _record(vif: str, row) -> dict:
    """An allowance: the interface allowed, the address and its block, and the interface
    that owns the address (None for one allocated to no interface)."""
    return {
        "vif_id": vif,
        "address": ip_text(row.address, row.block_version),
        "block": label(row.block_name, row.block_cidr),
        "network": row.block_network,
        "owner": row.vif_id,
    }


def _refuse(interface, row) -> None:
    """The rules an address must meet to be allowed on `interface` (Conflict, exit 4)."""
    text = ip_text(row.address, row.block_version)
    where = label(row.block_name, row.block_cidr)
    if row.state != "allocated":
        raise Conflict(f"{text} is released (held); restore it before allowing it")
    if row.block_network != interface.network:
        raise Conflict(
            f"{text} is in block {where} of network {row.block_network or '(none)'}, "
            f"not in interface {interface.vif_id}'s network {interface.network}"
        )
    if row.interface_id == interface.id:
        raise Conflict(
            f"{text} is interface {interface.vif_id}'s own address; it needs no allowance"
        )


def _exists(conn: Connection, interface_id: int, ip_id: int) -> bool:
    found = conn.execute(
        select(A.interface_id).where(A.interface_id == interface_id, A.ip_address_id == ip_id)
    ).first()
    return found is not None


def allow(conn: Connection, vif: str, address: str, *, block: str | None = None) -> dict:
    """Let interface `vif` use ADDRESS (in BLOCK) too; allowing it again changes nothing."""
    parse_ip(address)  # a malformed address is a usage error (2) before any lookup (3)
    interface = _interface(conn, vif)
    row = addresses.find_locked(conn, address, block)
    _refuse(interface, row)
    if not _exists(conn, interface.id, row.id):
        conn.execute(insert(allowed_ips).values(interface_id=interface.id, ip_address_id=row.id))
    return _record(interface.vif_id, row)


def disallow(conn: Connection, vif: str, address: str, *, block: str | None = None) -> dict:
    """Take back an allowance. It may be taken back while the address is held, so that
    a restore does not bring it back; an address never allowed is not found (3)."""
    parse_ip(address)
    interface = _interface(conn, vif)
    row = addresses.find_locked(conn, address, block)
    if not _exists(conn, interface.id, row.id):
        text = ip_text(row.address, row.block_version)
        raise NotFound(f"{text} is not allowed on interface {interface.vif_id}")
    conn.execute(
        delete(allowed_ips).where(A.interface_id == interface.id, A.ip_address_id == row.id)
    )
    return _record(interface.vif_id, row)


def _shown():
    """Allowances with their address's record columns, of allocated addresses only."""
    owner = interfaces.alias("owner")
    return (
        select(
            A.interface_id,
            IP.address,
            IP.block_id,
            blocks.c.version.label("block_version"),
            blocks.c.name.label("block_name"),
            blocks.c.cidr.label("block_cidr"),
            blocks.c.network.label("block_network"),
            owner.c.vif_id,
        )
        .join(ip_addresses, IP.id == A.ip_address_id)
        .join(blocks, blocks.c.id == IP.block_id)
        .outerjoin(owner, owner.c.id == IP.interface_id)
        .where(holds.allocated(IP))
        .order_by(blocks.c.version, IP.address, IP.block_id)
    )


def list_allowed(conn: Connection, vif: str) -> list[dict]:
    """The addresses `vif` is allowed besides its own, in address order."""
    interface = _interface(conn, vif)
    rows = conn.execute(_shown().where(A.interface_id == interface.id))
    return [_record(interface.vif_id, row) for row in rows]


def by_interface(conn: Connection, interface_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each interface's allowed addresses, in address order: one query per page of
    interfaces (`interface list` costs the same for ten as for ten thousand)."""
    found: dict[int, list[str]] = {interface_id: [] for interface_id in interface_ids}
    ids = list(found)
    for start in range(0, len(ids), PAGE):
        query = _shown().where(A.interface_id.in_(ids[start : start + PAGE]))
        for row in conn.execute(query):
            found[row.interface_id].append(str(ip_text(row.address, row.block_version)))
    return found
