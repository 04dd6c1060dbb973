"""MAC address ranges, from which interfaces without a given MAC get one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Row, and_, delete, func, insert, select

from melange.clock import utcnow
from melange.errors import Conflict, Exhausted, NotFound
from melange.models import allocated_macs, mac_ranges
from melange.paging import Page
from melange.records import iso
from melange.store import insert_one, lock_named
from melange.subnets import PAGE
from melange.validate import format_mac, parse_mac_cidr

M = mac_ranges.c
A = allocated_macs.c


def records(conn: Connection, rows: Sequence[Row]) -> list[dict]:
    """The records of `rows` (MAC ranges), their MACs in use counted in one query."""
    used: dict[int, int] = {row.id: 0 for row in rows}
    ids = list(used)
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        for range_id, count in conn.execute(
            select(A.mac_range_id, func.count())
            .where(A.mac_range_id.in_(page))
            .group_by(A.mac_range_id)
        ):
            used[range_id] = count
    return [
        {
            "id": row.id,
            "cidr": row.cidr,
            "first": format_mac(row.first_mac),
            "last": format_mac(row.last_mac),
            "size": row.last_mac - row.first_mac + 1,
            "allocated": used[row.id],
            "created_at": iso(row.created_at),
        }
        for row in rows
    ]


def record(conn: Connection, row: Row) -> dict:
    return records(conn, [row])[0]


def create(conn: Connection, cidr: str) -> dict:
    first, last, canonical = parse_mac_cidr(cidr)
    lock_named(conn, "mac_ranges")
    clash = conn.execute(
        select(mac_ranges).where(M.first_mac <= last, M.last_mac >= first).limit(1)
    ).first()
    if clash is not None:
        raise Conflict(f"{canonical} overlaps MAC range {clash.id} ({clash.cidr})")
    new_id = insert_one(
        conn,
        insert(mac_ranges).values(
            cidr=canonical, first_mac=first, last_mac=last, created_at=utcnow()
        ),
    )
    return record(conn, conn.execute(select(mac_ranges).where(M.id == new_id)).one())


def list_ranges(conn: Connection, *, page: Page | None = None) -> list[dict]:
    """MAC ranges by first MAC (they never overlap); `page` reads one page of them."""
    query = select(mac_ranges).order_by(M.first_mac)
    if page is None:
        return records(conn, conn.execute(query).all())
    rows = conn.execute(page.query(query, (M.first_mac,))).all()
    return records(conn, page.rows(rows, lambda r: (r.first_mac,)))


def delete_range(conn: Connection, range_id: int) -> dict:
    row = conn.execute(select(mac_ranges).where(M.id == range_id)).first()
    if row is None:
        raise NotFound(f"no MAC range {range_id}")
    result = record(conn, row)
    if result["allocated"]:
        raise Conflict(
            f"MAC range {range_id} has {result['allocated']} MACs given to interfaces; "
            "delete those interfaces first"
        )
    conn.execute(delete(mac_ranges).where(M.id == range_id))
    return result


def _first_free(conn: Connection, row) -> int | None:
    """Lowest unallocated MAC of a range: one indexed gap query, not a scan in Python."""
    taken_first = conn.execute(
        select(A.id).where(A.mac_range_id == row.id, A.mac == row.first_mac)
    ).first()
    if taken_first is None:
        return row.first_mac
    nxt = allocated_macs.alias("nxt")
    candidate = conn.execute(
        select(func.min(A.mac + 1)).where(
            A.mac_range_id == row.id,
            A.mac < row.last_mac,
            ~select(nxt.c.id).where(and_(nxt.c.mac == A.mac + 1)).exists(),
        )
    ).scalar()
    return candidate


def next_free(conn: Connection) -> tuple[int, int]:
    """(range id, MAC): the next free MAC of the first range that has one."""
    lock_named(conn, "mac_ranges")
    for row in conn.execute(select(mac_ranges).order_by(M.id)).all():
        mac = _first_free(conn, row)
        if mac is not None:
            return row.id, mac
    raise Exhausted("no free MAC address left in any MAC range; create one with `mac-range create`")


def assign(conn: Connection, mac: int, interface_id: int, range_id: int | None = None) -> None:
    """Record that an interface holds `mac`, when it lies in one of the ranges."""
    if range_id is None:
        row = range_of(conn, mac)
        if row is None:
            return
        range_id = row.id
    conn.execute(
        insert(allocated_macs).values(mac_range_id=range_id, mac=mac, interface_id=interface_id)
    )


def range_of(conn: Connection, mac: int):
    return conn.execute(select(mac_ranges).where(M.first_mac <= mac, M.last_mac >= mac)).first()
