"""Static routes per block (served to DHCP clients as classless static routes).

A route's gateway must be on-link: inside the block the route is added to, or
the gateway the block has in effect (a subnet may inherit one outside it).
A route to the default destination replaces, for the block's DHCP clients,
the default route through the block's gateway (their router becomes the
route's gateway). Every block's option 121 must fit what dnsmasq accepts:
255 bytes on the wire, and an opts-file line of at most 1024 characters
(longer ones dnsmasq splits and drops as "bad dhcp-option"); a route that
would break either, for the block or any subnet below it that inherits it,
is refused.
"""

from __future__ import annotations

import netaddr
from sqlalchemy import Connection, delete, insert, select

from melange import blocks as block_ops
from melange import dhcp, subnets
from melange.errors import Conflict, InvalidInput, NotFound
from melange.models import routes
from melange.records import block_label, ip_text
from melange.validate import parse_cidr, parse_ip

R = routes.c
MAX_OPTION_BYTES = 255  # one DHCP option's length octet
MAX_OPTS_LINE = 1024  # characters dnsmasq reads as one opts-file line (measured, 2.90)
_WIDEST_ROUTER = (1 << 32) - 1  # 255.255.255.255: a gateway change never makes a line longer


def _record(block, destination: str, gateway: int) -> dict:
    return {
        "block_id": block.id,
        "block": block_label(block),
        "destination": destination,
        "gateway": ip_text(gateway, block.version),
    }


def _check_on_link(conn: Connection, block, via: netaddr.IPAddress) -> None:
    """A DHCP client can only reach a gateway on its own link: inside the block, or the
    gateway it is given as its router (a subnet's inherited one may lie outside it)."""
    if via in netaddr.IPNetwork(block.cidr):
        return
    gateway, _ = subnets.nearest(block, subnets.ancestors(conn, block), "gateway")
    if gateway != int(via):
        raise InvalidInput(
            f"route gateway {via} is not on-link: it lies outside block {block.cidr}"
            " and is not its gateway"
        )


def check_fits(conn: Connection, block) -> None:
    """Conflict when option 121 of `block`, or of a block below it, no longer fits dnsmasq
    (bytes on the wire, or the opts-file line), counting the default route at its
    widest so that no later gateway change can push it over."""
    if block.version != 4:
        return
    chain = subnets.ancestors(conn, block)
    tree = block_ops.Tree.of([*chain, block, *subnets.descendants(conn, block.id)])
    route_lists = subnets.route_lists(conn, tree.by_id)
    default = subnets.DEFAULT_ROUTE[4]
    for leaf in tree.leaves(block):
        merged = subnets.merged_routes(leaf, subnets.chain_in(leaf, tree.by_id), route_lists)
        pairs = [(dest, via) for dest, (via, _) in merged.items() if dest != default]
        pairs.append((default, _WIDEST_ROUTER))
        size = dhcp.classless_size(pairs)
        length = len(dhcp.classless_line(dhcp.block_tag(leaf), pairs)) - 1
        if size > MAX_OPTION_BYTES or length > MAX_OPTS_LINE:
            raise Conflict(
                f"too many routes for block {leaf.cidr}: its classless static routes would "
                f"take {size} bytes (at most {MAX_OPTION_BYTES}) and a {length}-character "
                f"opts line (at most {MAX_OPTS_LINE}), which dnsmasq would drop"
            )


def add(conn: Connection, block_ref: str, destination: str, *, gateway: str) -> dict:
    dest = parse_cidr(destination)
    via = parse_ip(gateway, what="route gateway")
    block = block_ops.resolve(conn, block_ref)
    if dest.version != block.version or via.version != block.version:
        raise InvalidInput(
            f"route {dest} via {via} is not of the same IP version as block {block.cidr}"
        )
    _check_on_link(conn, block, via)
    if conn.execute(select(R.id).where(R.block_id == block.id, R.destination == str(dest))).first():
        raise Conflict(f"block {block.cidr} already has a route to {dest}")
    conn.execute(insert(routes).values(block_id=block.id, destination=str(dest), gateway=int(via)))
    check_fits(conn, block)  # a refusal rolls the insert back with the transaction
    block_ops.touch(conn, block.id)
    return _record(block, str(dest), int(via))


def list_routes(conn: Connection, block_ref: str) -> list[dict]:
    block = block_ops.resolve(conn, block_ref)
    rows = conn.execute(
        select(R.destination, R.gateway).where(R.block_id == block.id).order_by(R.id)
    )
    return [_record(block, dest, gw) for dest, gw in rows]


def delete_route(conn: Connection, block_ref: str, destination: str) -> dict:
    dest = str(parse_cidr(destination))
    block = block_ops.resolve(conn, block_ref)
    row = conn.execute(
        select(R.id, R.gateway).where(R.block_id == block.id, R.destination == dest)
    ).first()
    if row is None:
        raise NotFound(f"block {block.cidr} has no route to {dest}")
    conn.execute(delete(routes).where(R.id == row.id))
    block_ops.touch(conn, block.id)
    return _record(block, dest, row.gateway)
