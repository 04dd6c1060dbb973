"""Static routes per block (served to DHCP clients as classless static routes)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from melange import blocks as block_ops
from melange.errors import Conflict, InvalidInput, NotFound
from melange.models import routes
from melange.records import ip_text
from melange.validate import parse_cidr, parse_ip

R = routes.c


def _record(block, destination: str, gateway: int) -> dict:
    return {
        "block_id": block.id,
        "block": block.name or block.cidr,
        "destination": destination,
        "gateway": ip_text(gateway, block.version),
    }


def add(conn: Connection, block_ref: str, destination: str, *, gateway: str) -> dict:
    dest = parse_cidr(destination)
    via = parse_ip(gateway, what="route gateway")
    block = block_ops.resolve(conn, block_ref)
    if dest.version != block.version or via.version != block.version:
        raise InvalidInput(
            f"route {dest} via {via} is not of the same IP version as block {block.cidr}"
        )
    if conn.execute(select(R.id).where(R.block_id == block.id, R.destination == str(dest))).first():
        raise Conflict(f"block {block.cidr} already has a route to {dest}")
    conn.execute(insert(routes).values(block_id=block.id, destination=str(dest), gateway=int(via)))
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
