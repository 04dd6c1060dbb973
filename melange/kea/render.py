"""What Kea reads from the store: reservations (for its host database) and the
`Dhcp4` configuration fragment (subnets, their options, the host database).

Kea finds a reservation by (hardware address, subnet id), so every row and every
`subnet4` entry carry the same id, derived from the block's `NET/CIDR`: stable
as long as the block exists (an id SQLite may hand out again is not) and equal
on every host rendering the same store. Two CIDRs whose ids collide (1 in 4e9
per pair) are refused, never served under one id.

IPv4 only: a DHCPv6 host would need the `ipv6_reservations` table (address and
prefix rows per host, keyed by DUID, which the store does not hold) and a
`subnet6` fragment.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

import netaddr
from sqlalchemy import Connection, LargeBinary, select, type_coerce

from melange import holds, subnets
from melange.errors import Conflict
from melange.models import blocks, ip_addresses
from melange.names import require_network

MAX_SUBNET_ID = 4294967294  # Kea's subnet ids are 1 .. 2^32-2
MAX_OPTION_BYTES = 255


class Reservation(NamedTuple):
    """One row of Kea's `hosts` table as melange writes it (hw-address identifier)."""

    subnet_id: int
    mac: int  # 48 bits, as the store holds it (6 octets in Kea's table)
    address: int  # the IPv4 address as an integer
    hostname: str | None


def subnet_id(network: str, cidr: str) -> int:
    """The Kea subnet id of the block `cidr` of `network`."""
    digest = hashlib.blake2b(f"{network}/{cidr}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % MAX_SUBNET_ID + 1


def reservations(conn: Connection, network: str | None = None) -> list[Reservation]:
    """Every allocated IPv4 address with a MAC, as Kea's host database should hold it."""
    return list(reservations_by_address(conn, network).values())


def reservations_by_address(
    conn: Connection, network: str | None = None, where: tuple[int, int] | None = None
) -> dict[tuple[int, int], Reservation]:
    """The reservations by (block id, address): every one, or the one at `where`.

    Read whole on a pass that cannot tell what changed (50,000 rows is a normal size),
    so the address comes as the store's raw 16 bytes and the subnet id by block, not
    through a type per row."""
    require_network(conn, network)
    ip = ip_addresses.c
    served = select(blocks.c.id, blocks.c.network, blocks.c.cidr).where(
        blocks.c.version == 4, blocks.c.network.is_not(None))
    if network is not None:
        served = served.where(blocks.c.network == network)
    if where is not None:
        served = served.where(blocks.c.id == where[0])
    ids = {block_id: subnet_id(net, cidr) for block_id, net, cidr in conn.execute(served)}
    if not ids:
        return {}
    query = (
        select(ip.block_id, ip.mac, type_coerce(ip.address, LargeBinary), ip.hostname)
        .join(blocks, blocks.c.id == ip.block_id)
        .where(holds.allocated(ip), ip.mac.is_not(None), blocks.c.version == 4)
        .where(blocks.c.network.is_not(None))
        .order_by(ip.address, ip.block_id)
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    if where is not None:
        query = query.where(ip.block_id == where[0], ip.address == where[1])
    new = tuple.__new__
    big = int.from_bytes
    found: dict[tuple[int, int], Reservation] = {}
    for block_id, mac, raw, hostname in conn.execute(query).all():
        address = big(raw, "big")
        found[block_id, address] = new(Reservation, (ids[block_id], mac, big(raw[12:], "big"),
                                                     hostname or None))  # fmt: skip
    return found


def _served(conn: Connection, network: str | None) -> tuple[list, dict]:
    """The IPv4 blocks that serve DHCP (a network, no subnets), and every block of
    their networks by id (their ancestors among them)."""
    require_network(conn, network)
    query = (
        select(blocks)
        .where(blocks.c.network.is_not(None))
        .order_by(blocks.c.network, blocks.c.version, blocks.c.first_addr)
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    rows = conn.execute(query).all()
    parents = {row.parent_id for row in rows if row.parent_id is not None}
    served = [row for row in rows if row.id not in parents and row.version == 4]
    return served, {row.id: row for row in rows}



def option_121(pairs: list[tuple[str, int]]) -> bytes:
    """Option 121's payload on the wire (RFC 3442): per route the prefix length, the
    prefix's significant octets, then the router's four."""
    out = bytearray()
    for destination, gateway in pairs:
        net = netaddr.IPNetwork(destination)
        out.append(net.prefixlen)
        out += net.network.packed[: (net.prefixlen + 7) // 8]
        out += gateway.to_bytes(4, "big")
    return bytes(out)


def check_routes(block, pairs: list[tuple[str, int]]) -> None:
    """Conflict when option 121 of leaf `block` would exceed one option's 255 bytes."""
    size = len(option_121(pairs))
    if size > MAX_OPTION_BYTES:
        raise Conflict(
            f"too many routes for block {block.cidr}: its classless static routes would "
            f"take {size} bytes (at most {MAX_OPTION_BYTES})"
        )


def subnet_entries(conn: Connection, network: str | None = None) -> list[dict]:
    """One `subnet4` entry per IPv4 block that serves DHCP: no pool (only reserved
    hosts are served, as melange allocates every address), its router, DNS servers
    and classless routes as the block's own, inherited ones included."""
    served, by_id = _served(conn, network)
    levels = list(by_id)
    dns_lists = subnets.dns_lists(conn, levels)
    route_lists = subnets.route_lists(conn, levels)
    entries: list[dict] = []
    seen: dict[int, str] = {}
    for block in served:
        sid = subnet_id(block.network, block.cidr)
        if sid in seen:
            raise Conflict(f"blocks {seen[sid]} and {block.network}/{block.cidr} have the same "
                           f"Kea subnet id {sid}; move one to another network")  # fmt: skip
        seen[sid] = f"{block.network}/{block.cidr}"
        chain = subnets.chain_in(block, by_id)
        options: list[dict] = []
        router = subnets.router(block, chain, route_lists)
        if router is not None:
            options.append({"name": "routers", "data": str(netaddr.IPAddress(router, 4))})
        servers, _ = subnets.nearest_listed(block, chain, dns_lists)
        dns = [str(netaddr.IPAddress(a, 4)) for a, version in servers if version == 4]
        if dns:
            options.append({"name": "domain-name-servers", "data": ", ".join(dns)})
        pairs = subnets.client_routes(block, chain, route_lists)
        if pairs:
            options.append({"code": 121, "space": "dhcp4", "csv-format": False,
                            "data": option_121(pairs).hex().upper()})  # fmt: skip
        entries.append({
            "id": sid,
            "subnet": str(netaddr.IPNetwork(block.cidr).cidr),
            "user-context": {"melange": f"{block.network}/{block.cidr}"},
            "reservations-global": False,
            "reservations-in-subnet": True,
            "reservations-out-of-pool": True,
            "option-data": options,
        })  # fmt: skip
    return entries


def fragment(conn: Connection, network: str | None, hosts_database: dict) -> str:
    """The members of Kea's `Dhcp4` object melange maintains, to be included with
    `<?include "FILE"?>` as the last line of the operator's `Dhcp4` map."""
    members = {
        "host-reservation-identifiers": ["hw-address"],
        "hosts-databases": [hosts_database],
        "subnet4": subnet_entries(conn, network),
    }
    text = json.dumps(members, indent=2)
    body = text[1:-1].strip("\n")  # the members alone, without the enclosing braces
    scope = f"network {network}" if network else "every network"
    return f"// Rendered by melange from its store ({scope}); do not edit.\n{body}\n"


PLACEHOLDER_DATABASE = {
    "type": "mysql", "name": "kea", "host": "localhost", "user": "kea", "password": "CHANGE-ME",
}  # fmt: skip


def config_text(conn: Connection, network: str | None = None) -> str:
    """`melange dhcp config --backend kea`: the fragment, its host database left for the
    operator to name (melanged's `kea_config` file carries the real one)."""
    return fragment(conn, network, PLACEHOLDER_DATABASE)


def hosts_text(conn: Connection, network: str | None = None, sink=None) -> str | None:
    """The reservations, one `MAC,IP,SUBNET-ID[,HOSTNAME]` line each."""
    text = "".join(f"{reservation_line(r)}\n" for r in reservations(conn, network))
    if sink is None:
        return text
    sink(text.encode())
    return None


def opts_text(conn: Connection, network: str | None = None) -> str:
    """The subnets' entries (with their options) as JSON: Kea has no options file."""
    return json.dumps(subnet_entries(conn, network), indent=2) + "\n"


def reservation_line(r: Reservation) -> str:
    """A reservation as one line, for `reconcile`'s findings and `dhcp hosts`."""
    address = str(netaddr.IPAddress(r.address, 4))
    line = f"{r.mac.to_bytes(6, 'big').hex(':')},{address},{r.subnet_id}"
    return f"{line},{r.hostname}" if r.hostname else line


def parse_line(line: str) -> Reservation:
    mac, address, sid, *rest = line.split(",", 3)
    return Reservation(int(sid), int(mac.replace(":", ""), 16),
                       int(netaddr.IPAddress(address)), rest[0] if rest else None)  # fmt: skip
