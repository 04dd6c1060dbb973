"""Policies: ranges and last octets that the blocks using them never hand out."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, select

from melange import blocks as block_ops
from melange.errors import Conflict, InvalidInput, NotFound
from melange.models import blocks, policies, unusable_octets, unusable_ranges
from melange.records import iso
from melange.store import lock_block, utcnow
from melange.validate import validate_line, validate_name

P = policies.c
MAX_OFFSET = 2**63  # BIGINT on every backend


def _get(conn: Connection, name: str):
    row = conn.execute(select(policies).where(P.name == name)).first()
    if row is None:
        raise NotFound(f"no policy {name!r}")
    return row


def record(conn: Connection, row) -> dict:
    ranges = conn.execute(
        select(unusable_ranges.c.start_offset, unusable_ranges.c.length)
        .where(unusable_ranges.c.policy_id == row.id)
        .order_by(unusable_ranges.c.start_offset, unusable_ranges.c.length)
    ).all()
    octets = conn.execute(
        select(unusable_octets.c.octet)
        .where(unusable_octets.c.policy_id == row.id)
        .order_by(unusable_octets.c.octet)
    ).scalars()
    used_by = conn.execute(select(func.count()).where(blocks.c.policy_id == row.id)).scalar()
    return {
        "name": row.name,
        "description": row.description,
        "unusable_ranges": [{"offset": o, "length": n} for o, n in ranges],
        "unusable_octets": list(octets),
        "blocks": used_by,
        "created_at": iso(row.created_at),
    }


def create(conn: Connection, name: str, *, description: str | None = None) -> dict:
    validate_name(name, "policy name")
    if description is not None:
        validate_line(description, "a policy description")
    if conn.execute(select(P.id).where(P.name == name)).first():
        raise Conflict(f"policy {name!r} already exists")
    conn.execute(insert(policies).values(name=name, description=description, created_at=utcnow()))
    return record(conn, _get(conn, name))


def list_policies(conn: Connection) -> list[dict]:
    return [record(conn, row) for row in conn.execute(select(policies).order_by(P.name))]


def show(conn: Connection, name: str) -> dict:
    return record(conn, _get(conn, name))


def delete_policy(conn: Connection, name: str) -> dict:
    row = _get(conn, name)
    used = conn.execute(select(blocks.c.cidr).where(blocks.c.policy_id == row.id)).scalars().all()
    if used:
        raise Conflict(
            f"policy {name!r} is used by {len(used)} blocks ({', '.join(used[:5])}); "
            "change them with `block update --no-policy` first"
        )
    result = record(conn, row)
    conn.execute(delete(policies).where(P.id == row.id))
    return result


def _refresh_blocks(conn: Connection, policy_id: int) -> None:
    """Blocks whose exclusions shrank get their exact free space back."""
    for block in block_ops.blocks_using_policy(conn, policy_id):
        lock_block(conn, block.id)
        block_ops.free_space(conn, block).rebuild()


def add_range(conn: Connection, name: str, *, offset: int, length: int) -> dict:
    if length < 1:
        raise InvalidInput(f"--length must be at least 1, not {length}")
    if abs(offset) >= MAX_OFFSET or length >= MAX_OFFSET:
        raise InvalidInput(f"--offset and --length must lie within ±{MAX_OFFSET - 1}")
    row = _get(conn, name)
    exists = conn.execute(
        select(unusable_ranges.c.id).where(
            unusable_ranges.c.policy_id == row.id,
            unusable_ranges.c.start_offset == offset,
            unusable_ranges.c.length == length,
        )
    ).first()
    if exists:
        raise Conflict(f"policy {name!r} already has the range offset {offset} length {length}")
    conn.execute(
        insert(unusable_ranges).values(policy_id=row.id, start_offset=offset, length=length)
    )
    return record(conn, row)


def remove_range(conn: Connection, name: str, *, offset: int, length: int) -> dict:
    row = _get(conn, name)
    gone = conn.execute(
        delete(unusable_ranges).where(
            unusable_ranges.c.policy_id == row.id,
            unusable_ranges.c.start_offset == offset,
            unusable_ranges.c.length == length,
        )
    ).rowcount
    if not gone:
        raise NotFound(f"policy {name!r} has no range offset {offset} length {length}")
    _refresh_blocks(conn, row.id)
    return record(conn, row)


def _octet(octet: int) -> int:
    if not 0 <= octet <= 255:
        raise InvalidInput(f"an octet is 0 to 255, not {octet}")
    return octet


def add_octet(conn: Connection, name: str, octet: int) -> dict:
    _octet(octet)
    row = _get(conn, name)
    exists = conn.execute(
        select(unusable_octets.c.octet).where(
            unusable_octets.c.policy_id == row.id, unusable_octets.c.octet == octet
        )
    ).first()
    if exists:
        raise Conflict(f"policy {name!r} already makes octet {octet} unusable")
    conn.execute(insert(unusable_octets).values(policy_id=row.id, octet=octet))
    return record(conn, row)


def remove_octet(conn: Connection, name: str, octet: int) -> dict:
    _octet(octet)
    row = _get(conn, name)
    gone = conn.execute(
        delete(unusable_octets).where(
            unusable_octets.c.policy_id == row.id, unusable_octets.c.octet == octet
        )
    ).rowcount
    if not gone:
        raise NotFound(f"policy {name!r} does not make octet {octet} unusable")
    _refresh_blocks(conn, row.id)
    return record(conn, row)
