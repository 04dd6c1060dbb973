"""Export: the whole store (or one network) as one document, ready for json.dumps.

A block is identified by (network, CIDR), which the overlap rules make
unique, so nothing store-specific (ids) is exported and SQLite -> MariaDB ->
SQLite gives identical exports. Each table is read in one statement (its
rows for every exported block at once, grouped here), so an export of 30,000
blocks runs as many statements as one of 3. The document's format, and its
JSON and CSV text, are melange.transfer_format's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Select, select
from sqlalchemy.sql import ColumnElement

from melange import natlinks
from melange.models import (
    allowed_ips,
    block_dns_servers,
    blocks,
    interfaces,
    ip_addresses,
    mac_ranges,
    policies,
    routes,
    unusable_octets,
    unusable_ranges,
)
from melange.names import require_network
from melange.records import ip_text, iso
from melange.validate import format_mac


def export(
    conn: Connection,
    *,
    network: str | None = None,
    sink: Callable[[dict], object] | None = None,
) -> dict | None:
    """Everything (or one network) in a stable order, each table read in one statement;
    or, given `sink`, handed to it an entity at a time as read (melange.transfer_format
    .entities order), so a million addresses go out in constant memory."""
    require_network(conn, network)
    if sink is None:
        from melange.transfer_stream import from_ndjson, ndjson_lines

        return from_ndjson(ndjson_lines(_entities(conn, network)))
    for entity in _entities(conn, network):
        sink(entity)
    return None


def _entities(conn: Connection, network: str | None) -> Iterator[dict]:
    policy_query = _network_policies(select(policies), policies.c.id, network)
    policy_rows = conn.execute(policy_query.order_by(policies.c.name)).all()
    for policy in _policies(conn, policy_rows, network):
        yield {"policy": policy}
    mac_query = select(mac_ranges.c.cidr).order_by(mac_ranges.c.first_mac)
    for cidr in conn.execute(mac_query).scalars().all():
        yield {"mac_range": {"cidr": cidr}}
    yield from _blocks(conn, {row.id: row.name for row in policy_rows}, network)
    for interface in _interfaces(conn, network):
        yield {"interface": interface}
    for mapping in _nat_mappings(conn, network):
        yield {"nat_mapping": mapping}


def _network_blocks(query: Select, block_id: ColumnElement, network: str | None) -> Select:
    """`query` (rows keyed by `block_id`) narrowed to the blocks of `network`, if given."""
    if network is None:
        return query
    return query.join(blocks, blocks.c.id == block_id).where(blocks.c.network == network)


def _network_policies(query: Select, policy_id: ColumnElement, network: str | None) -> Select:
    """`query` (rows keyed by `policy_id`) narrowed, for one network, to the policies its
    blocks name (their rules travel with them)."""
    if network is None:
        return query
    named = select(blocks.c.policy_id).where(blocks.c.network == network)
    return query.where(policy_id.in_(named.scalar_subquery()))


def _grouped(rows) -> dict[Any, list[tuple]]:
    """Rows sorted by their first column, as lists per first column (without it)."""
    found: dict[Any, list[tuple]] = {}
    for key, *values in rows:
        found.setdefault(key, []).append(tuple(values))
    return found


def _policies(conn: Connection, rows, network: str | None) -> list[dict]:
    """The policies with their unusable ranges and octets (two statements for all)."""
    r, o = unusable_ranges.c, unusable_octets.c
    range_query = select(r.policy_id, r.start_offset, r.length).order_by(
        r.policy_id, r.start_offset, r.length
    )
    octet_query = select(o.policy_id, o.octet).order_by(o.policy_id, o.octet)
    ranges = _grouped(conn.execute(_network_policies(range_query, r.policy_id, network)))
    octets = _grouped(conn.execute(_network_policies(octet_query, o.policy_id, network)))
    return [
        {
            "name": row.name,
            "description": row.description,
            "unusable_ranges": [{"offset": a, "length": n} for a, n in ranges.get(row.id, [])],
            "unusable_octets": [octet for (octet,) in octets.get(row.id, [])],
        }
        for row in rows
    ]


BLOCK_ORDER = (blocks.c.network, blocks.c.version, blocks.c.first_addr, blocks.c.prefixlen,
               blocks.c.id)  # fmt: skip
STREAM_BATCH = 1000


def _blocks(conn: Connection, policy_names: dict[int, str], network: str | None) -> Iterator[dict]:
    """Every exported block (with its DNS servers and routes), each followed by its
    addresses: four statements, the addresses' read as they are handed on."""
    query = select(blocks).order_by(*BLOCK_ORDER)
    if network is not None:
        query = query.where(blocks.c.network == network)
    block_rows = conn.execute(query).all()
    cidr_of = {row.id: row.cidr for row in block_rows}
    d, r = block_dns_servers.c, routes.c
    dns_query = select(d.block_id, d.address, d.version).order_by(d.block_id, d.position)
    route_query = select(r.block_id, r.destination, r.gateway).order_by(r.block_id, r.id)
    dns = _grouped(conn.execute(_network_blocks(dns_query, d.block_id, network)))
    route_lists = _grouped(conn.execute(_network_blocks(route_query, r.block_id, network)))
    addresses = _addresses(conn, network)
    row = next(addresses, None)
    for block in block_rows:
        item = {
            "network": block.network,
            "cidr": block.cidr,
            "name": block.name,
            "tenant": block.tenant,
            "type": block.type,
            "gateway": ip_text(block.gateway, block.version),
            "dns": [ip_text(address, version) for address, version in dns.get(block.id, [])],
            "policy": policy_names.get(block.policy_id),
            "parent": cidr_of.get(block.parent_id),
            "generator": block.generator,
            "routes": [
                {"destination": dest, "gateway": ip_text(via, block.version)}
                for dest, via in route_lists.get(block.id, [])
            ],
        }  # fmt: skip
        if block.domain is not None:  # only then: a store without domains exports as before
            item["domain"] = block.domain
        yield {"block": item}
        while row is not None and row.block_id == block.id:
            yield {"address": _address(row, block.version)}
            row = next(addresses, None)


def _addresses(conn: Connection, network: str | None) -> Iterator[Any]:
    """The exported blocks' address rows (with their interface's id) in block order, then
    address order: one statement, read in batches (a server-side cursor on the servers)."""
    ip = ip_addresses.c
    query = (
        select(ip_addresses, interfaces.c.vif_id.label("vif_id"))
        .join(blocks, blocks.c.id == ip.block_id)
        .outerjoin(interfaces, interfaces.c.id == ip.interface_id)
        .order_by(*BLOCK_ORDER, ip.address)
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    options = {"stream_results": True, "yield_per": STREAM_BATCH}
    yield from conn.execute(query.execution_options(**options))


def _address(row, version: int) -> dict:
    return {
        "address": ip_text(row.address, version),
        "mac": format_mac(row.mac),
        "hostname": row.hostname,
        "interface": row.vif_id,
        "tenant": row.tenant,
        "state": row.state,
        "allocated_at": iso(row.allocated_at),
        "released_at": iso(row.released_at),
        "held_until": iso(row.held_until),
    }


def _interfaces(conn: Connection, network: str | None) -> Iterator[dict]:
    """The interfaces, each with its allowed IPs when it has any: one statement (each
    interface's rows side by side), read in batches as they are handed on."""
    a, ip = allowed_ips.c, ip_addresses.c
    allowed = (
        select(a.interface_id, blocks.c.cidr, blocks.c.version, ip.address, blocks.c.first_addr)
        .join(ip_addresses, ip.id == a.ip_address_id)
        .join(blocks, blocks.c.id == ip.block_id)
    )
    if network is not None:  # held addresses' too: they come back with a restore
        allowed = allowed.where(blocks.c.network == network)
    theirs = allowed.subquery()
    query = (
        select(interfaces, theirs.c.cidr.label("allowed_cidr"),
               theirs.c.version.label("allowed_version"),
               theirs.c.address.label("allowed_address"))  # fmt: skip
        .outerjoin(theirs, theirs.c.interface_id == interfaces.c.id)
        .order_by(interfaces.c.vif_id, theirs.c.version, theirs.c.address, theirs.c.first_addr)
    )
    if network is not None:
        query = query.where(interfaces.c.network == network)
    options = {"stream_results": True, "yield_per": STREAM_BATCH}
    item: dict | None = None
    current = None
    for r in conn.execute(query.execution_options(**options)):
        if r.id != current:
            if item is not None:
                yield item
            current = r.id
            item = {
                "vif_id": r.vif_id,
                "network": r.network,
                "device": r.device,
                "tenant": r.tenant,
                "mac": format_mac(r.mac),
            }
        if r.allowed_cidr is not None:  # only then: an export without any is as it was
            entry = {"cidr": r.allowed_cidr, "address": ip_text(r.allowed_address,
                                                                r.allowed_version)}  # fmt: skip
            item.setdefault("allowed_ips", []).append(entry)  # type: ignore[union-attr]
    if item is not None:
        yield item


def _nat_mappings(conn: Connection, network: str | None) -> Iterator[dict]:
    """Every NAT mapping (held addresses' too), each side as its block's (network, CIDR)
    and the address; for one network, those with both sides in it. One statement, read
    in batches by inside global address; the few mappings of one such address (in
    blocks of several networks) put in their order here."""
    query = natlinks.joined().add_columns(
        natlinks.GB.c.network.label("global_network"),
        natlinks.LB.c.network.label("local_network"),
    )
    if network is not None:
        query = query.where(natlinks.GB.c.network == network, natlinks.LB.c.network == network)
    query = query.order_by(None).order_by(natlinks.GB.c.version, natlinks.G.c.address)
    rows = conn.execute(query.execution_options(stream_results=True, yield_per=STREAM_BATCH))
    for _, group in groupby(rows, key=lambda row: (row.global_version, row.global_address)):
        for row in sorted(group, key=_nat_order):
            yield {
                "global_network": row.global_network,
                "global_cidr": row.global_cidr,
                "inside_global": ip_text(row.global_address, row.global_version),
                "local_network": row.local_network,
                "local_cidr": row.local_cidr,
                "inside_local": ip_text(row.local_address, row.local_version),
                "created_at": iso(row.created_at),
            }


def _nat_order(row) -> tuple:
    """By inside global, then inside local; one address in blocks of two networks ordered
    by network and CIDR, not by block id (ids differ in the store an import makes)."""
    return (
        row.global_version, row.global_address, row.global_network or "", row.global_cidr,
        row.local_version, row.local_address, row.local_network or "", row.local_cidr,
    )  # fmt: skip
