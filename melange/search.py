"""One search box over the store: an IP, a MAC, a hostname, an interface or a device.

What an operator types is rarely labelled: `10.1.2.7`, `02:00:00:aa:bb:cc`,
`web-3`, a VIF id or a hypervisor's name. The query is read as what it parses
as: an address finds the live addresses equal to it and the blocks holding it;
a MAC finds the addresses and the interface carrying it; any other text finds
hostnames, interfaces, devices, block names and networks that start with it
(case-insensitively). Each kind is bounded (`limit`), so a one-letter query
costs a few small reads, never the store.
"""

from __future__ import annotations

from typing import Annotated, Any

from sqlalchemy import Connection, func, select

from melange import holds
from melange.errors import InvalidInput, MelangeError
from melange.interfaces import with_mac
from melange.models import blocks, interfaces, ip_addresses
from melange.params import Bounds
from melange.records import address_record, label
from melange.validate import format_mac, parse_ip, parse_mac

MAX_QUERY = 253  # the longest hostname
KINDS = ("address", "interface", "block", "network")


def search(conn: Connection, q: str, limit: Annotated[int, Bounds(1, 100)] = 20) -> dict:
    """What `q` names: `as`, what the query was read as (ip, mac or text), and `hits`,
    each a record with its `kind` (KINDS) and what a page needs to link to it;
    addresses first, then interfaces, blocks and networks."""
    q = q.strip() if isinstance(q, str) else ""
    if not q:
        raise InvalidInput("the search is empty: type an IP, a MAC, a hostname or a name")
    if len(q) > MAX_QUERY:
        raise InvalidInput(f"the search is longer than {MAX_QUERY} characters")
    address = _parsed(parse_ip, q)
    if address is not None:
        return {"as": "ip", "hits": _by_address(conn, int(address), address.version, limit)}
    mac = _parsed(parse_mac, q)
    if mac is not None:
        return {"as": "mac", "hits": _by_mac(conn, mac, limit)}
    return {"as": "text", "hits": _by_text(conn, q, limit)}


def _parsed(parse: Any, q: str) -> Any:
    try:
        return parse(q)
    except MelangeError:
        return None


def _addresses(conn: Connection, condition: Any, limit: int) -> list[dict]:
    from melange.addresses import _joined

    ip = ip_addresses.c
    query = (_joined().where(condition, holds.live(ip))
             .order_by(blocks.c.version, ip.address, ip.block_id).limit(limit))  # fmt: skip
    return [{"kind": "address", **address_record(row)} for row in conn.execute(query)]


def _blocks(conn: Connection, condition: Any, limit: int, order: Any) -> list[dict]:
    b = blocks.c
    query = select(b.id, b.cidr, b.name, b.network).where(condition).order_by(*order).limit(limit)
    return [{"kind": "block", "block_id": r.id, "cidr": r.cidr, "name": r.name,
             "label": label(r.name, r.cidr), "network": r.network}
            for r in conn.execute(query)]  # fmt: skip


def _interfaces(conn: Connection, condition: Any, limit: int) -> list[dict]:
    i = interfaces.c
    query = (select(i.vif_id, i.network, i.device, i.tenant, i.mac).where(condition)
             .order_by(i.vif_id).limit(limit))  # fmt: skip
    return [{"kind": "interface", "interface": r.vif_id, "network": r.network,
             "device": r.device, "tenant": r.tenant, "mac": format_mac(r.mac)}
            for r in conn.execute(query)]  # fmt: skip


def _by_address(conn: Connection, value: int, version: int, limit: int) -> list[dict]:
    """The address where it is allocated or held, and the blocks holding it (innermost
    first: the longest prefix)."""
    ip = ip_addresses.c
    b = blocks.c
    found = _addresses(conn, ip.address == value, limit)
    holding = (b.version == version) & (b.first_addr <= value) & (b.last_addr >= value)
    return found + _blocks(conn, holding, limit, (b.prefixlen.desc(), b.id))


def _by_mac(conn: Connection, mac: int, limit: int) -> list[dict]:
    return (_addresses(conn, ip_addresses.c.mac == mac, limit)
            + _interfaces(conn, with_mac(mac), limit))  # fmt: skip


def _starts(column: Any, q: str) -> Any:
    """`column` starts with `q`, ignoring case; `%` and `_` in `q` match themselves."""
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(escaped + "%", escape="\\")


def _by_text(conn: Connection, q: str, limit: int) -> list[dict]:
    """Hostnames, then interfaces (by VIF id or device), blocks by name, networks."""
    i = interfaces.c
    b = blocks.c
    hits = _addresses(conn, _starts(ip_addresses.c.hostname, q), limit)
    hits += _interfaces(conn, _starts(i.vif_id, q) | _starts(i.device, q), limit)
    hits += _blocks(conn, _starts(b.name, q), limit, (b.name,))
    networks = (select(b.network).where(_starts(b.network, q)).distinct()
                .order_by(b.network).limit(limit))  # fmt: skip
    hits += [{"kind": "network", "network": name} for (name,) in conn.execute(networks)]
    return hits
