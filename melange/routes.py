"""Static routes per block (served to DHCP clients in option 121, RFC 3442).

A route's gateway must be on-link: inside the block the route is added to, or
the gateway the block has in effect (a subnet may inherit one outside it).
A route to the default destination replaces, for the block's DHCP clients,
the default route through the block's gateway (their router becomes the
route's gateway). Every block's option 121 must fit what the DHCP server
reads (the default backend's limits, melange.dhcp_backend); a route that
would break them, for the block or any subnet below it that inherits it,
is refused.
"""

from __future__ import annotations

import netaddr
from sqlalchemy import Connection, delete, insert, select

from melange import blocks as block_ops
from melange import dhcp_backend, subnets
from melange.errors import Conflict, InvalidInput, NotFound
from melange.models import routes
from melange.records import block_label, ip_text
from melange.validate import parse_cidr, parse_ip

R = routes.c
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
    """Conflict when option 121 of `block`, or of a leaf below it, no longer fits what the
    default DHCP backend's server reads, counting the default route at its widest
    so that no later gateway change can push it over."""
    if block.version != 4:
        return
    chain = subnets.ancestors(conn, block)
    tree = block_ops.Tree.of([*chain, block, *subnets.descendants(conn, block.id)])
    route_lists = subnets.route_lists(conn, tree.by_id)
    default = subnets.DEFAULT_ROUTE[4]
    backend = dhcp_backend.renderer()
    for leaf in tree.leaves(block):
        merged = subnets.merged_routes(leaf, subnets.chain_in(leaf, tree.by_id), route_lists)
        pairs = [(dest, via) for dest, (via, _) in merged.items() if dest != default]
        pairs.append((default, _WIDEST_ROUTER))
        backend.check_routes(leaf, pairs)


def add(conn: Connection, block: str, destination: str, *, gateway: str) -> dict:
    dest = parse_cidr(destination)
    via = parse_ip(gateway, what="route gateway")
    target = block_ops.resolve(conn, block)
    if dest.version != target.version or via.version != target.version:
        raise InvalidInput(
            f"route {dest} via {via} is not of the same IP version as block {target.cidr}"
        )
    _check_on_link(conn, target, via)
    taken = select(R.id).where(R.block_id == target.id, R.destination == str(dest))
    if conn.execute(taken).first():
        raise Conflict(f"block {target.cidr} already has a route to {dest}")
    conn.execute(insert(routes).values(block_id=target.id, destination=str(dest), gateway=int(via)))
    check_fits(conn, target)  # a refusal rolls the insert back with the transaction
    block_ops.touch(conn, target.id)
    return _record(target, str(dest), int(via))


def list_routes(conn: Connection, block: str) -> list[dict]:
    target = block_ops.resolve(conn, block)
    rows = conn.execute(
        select(R.destination, R.gateway).where(R.block_id == target.id).order_by(R.id)
    )
    return [_record(target, dest, gw) for dest, gw in rows]


def delete_route(conn: Connection, block: str, destination: str) -> dict:
    dest = str(parse_cidr(destination))
    target = block_ops.resolve(conn, block)
    row = conn.execute(
        select(R.id, R.gateway).where(R.block_id == target.id, R.destination == dest)
    ).first()
    if row is None:
        raise NotFound(f"block {target.cidr} has no route to {dest}")
    conn.execute(delete(routes).where(R.id == row.id))
    block_ops.touch(conn, target.id)
    return _record(target, dest, row.gateway)
