"""The links of an import between things it made: interfaces' allowed IPs and NAT mappings.

They name addresses, so they are made last, after every address is in. An export
carries them as the store holds them, held addresses' included (a restore brings
those back), so each names an address the import (or the store) has, in any state;
the other rules are `interface allow-ip`'s and `nat add`'s: an allowed IP is in a
block of its interface's network and not the interface's own; a mapping joins two
addresses, one way. Every problem is reported with its line; one means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from melange.clock import utcnow
from melange.errors import Conflict, InvalidInput
from melange.models import allowed_ips, blocks, ip_addresses, nat_mappings
from melange.transfer_addresses import when
from melange.transfer_parse import MALFORMED, problem
from melange.validate import parse_cidr, parse_ip

# An allowance: (line, interface id, the interface's name and network, its entry).
Allowance = tuple[int, int, str, str, dict]


@dataclass
class _Finder:
    """Addresses by the (network, CIDR) of their block and their text: one lookup each
    (an import's links are few), blocks remembered."""

    conn: Connection
    block_ids: dict[tuple[Any, str], int] = field(default_factory=dict)

    def row(self, network: str | None, cidr: str, address: str):
        """The address row (id, interface id), or InvalidInput naming what is missing."""
        canonical = str(parse_cidr(cidr))
        value = parse_ip(address)
        key = (network, canonical)
        if key not in self.block_ids:
            query = select(blocks.c.id).where(blocks.c.cidr == canonical)
            query = query.where(
                blocks.c.network == network if network else blocks.c.network.is_(None)
            )
            block_id = self.conn.execute(query).scalar()
            if block_id is None:
                raise InvalidInput(f"no block {canonical} in network {network or '(none)'}")
            self.block_ids[key] = block_id
        ip = ip_addresses.c
        found = self.conn.execute(
            select(ip.id, ip.interface_id).where(
                ip.block_id == self.block_ids[key], ip.address == int(value)
            )
        ).first()
        if found is None:
            raise InvalidInput(f"{value} is not an address of block {canonical}")
        return found


def import_links(
    conn: Connection, allowances: list[Allowance], mappings: list[tuple[int, dict]]
) -> tuple[dict[str, int], list[str]]:
    """Insert the allowed IPs and NAT mappings; (their counts, the problems found)."""
    finder = _Finder(conn)
    errors: list[str] = []
    allowed: dict[tuple[int, int], None] = {}
    for line, interface_id, vif, network, entry in allowances:
        try:
            key = _allowance(finder, interface_id, vif, network, entry)
            if key in allowed:
                raise Conflict(f"{entry['address']} is allowed on {vif} twice")
            allowed[key] = None
        except MALFORMED as error:
            errors.append(problem(line, "allowed IP", error))
    mapped: dict[tuple[int, int], datetime] = {}
    for line, item in mappings:
        try:
            key, created = _mapping(finder, item)
            if key in mapped or key[::-1] in mapped:
                raise Conflict(f"{item['inside_global']} and {item['inside_local']} map twice")
            mapped[key] = created
        except MALFORMED as error:
            errors.append(problem(line, "NAT mapping", error))
    if not errors and allowed:
        rows = [{"interface_id": i, "ip_address_id": a} for i, a in allowed]
        conn.execute(insert(allowed_ips), rows)
    if not errors and mapped:
        conn.execute(
            insert(nat_mappings),
            [
                {"inside_global_id": g, "inside_local_id": lo, "created_at": at}
                for (g, lo), at in mapped.items()
            ],
        )
    return {"allowed_ips": len(allowed), "nat_mappings": len(mapped)}, errors


def _allowance(
    finder: _Finder, interface_id: int, vif: str, network: str, entry: dict
) -> tuple[int, int]:
    """(interface id, address id) of one allowed IP: an address in the interface's network."""
    row = finder.row(network, entry["cidr"], entry["address"])
    if row.interface_id == interface_id:
        raise Conflict(f"{entry['address']} is interface {vif}'s own address")
    return interface_id, row.id


def _mapping(finder: _Finder, item: dict) -> tuple[tuple[int, int], datetime]:
    """(global id, local id) of one NAT mapping, and when it was made."""
    g = finder.row(item.get("global_network"), item["global_cidr"], item["inside_global"])
    lo = finder.row(item.get("local_network"), item["local_cidr"], item["inside_local"])
    if g.id == lo.id:
        raise InvalidInput(f"{item['inside_global']} cannot be mapped to itself")
    return (g.id, lo.id), when(item.get("created_at")) or utcnow()
