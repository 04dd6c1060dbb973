"""NAT mappings: an address's inside-global and inside-local addresses (Melange v1.0's
`ip_addresses/{address}/inside_globals` and `inside_locals`).

Both addresses are allocated ones (held ones are not: restore them first), of any
blocks; typically a public block's address mapped to a private one. A mapping is
unique: adding it again changes nothing (idempotent); its reverse is a conflict.
An address may have several. What a mapping shows, and when, is melange.natlinks'.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, delete, insert, or_, select

from melange import addresses, natlinks
from melange import blocks as block_ops
from melange.audit import note
from melange.clock import utcnow
from melange.errors import Conflict, InvalidInput, NotFound
from melange.models import nat_mappings
from melange.records import ip_text
from melange.store import lock_block
from melange.validate import parse_ip

N = nat_mappings.c


def _found_locked(conn: Connection, wanted: list[tuple[str, str | None]]) -> list:
    """The live rows of the (address, block) pairs, read again after locking their
    blocks in id order (two writers each locking the same two blocks never deadlock)."""
    for address, _ in wanted:
        parse_ip(address)  # every usage error (2) before any lookup (3)
    rows = [addresses.find(conn, address, block) for address, block in wanted]
    for block_id in sorted({row.block_id for row in rows}):
        lock_block(conn, block_id)
    for row in rows:
        note(row.block_id, [row.address])
    pairs = zip(wanted, rows, strict=True)
    return [addresses.find(conn, address, str(row.block_id)) for (address, _), row in pairs]


def _pair(conn: Connection, inside_global: str, inside_local: str, global_block, local_block):
    """The two rows of a mapping, found and locked; one address cannot be both."""
    g, lo = _found_locked(conn, [(inside_global, global_block), (inside_local, local_block)])
    if g.id == lo.id:
        text = ip_text(g.address, g.block_version)
        raise InvalidInput(f"{text} cannot be mapped to itself")
    return g, lo


def _mapping(g_id: int, l_id: int):
    return and_(N.inside_global_id == g_id, N.inside_local_id == l_id)


def _read(conn: Connection, g_id: int, l_id: int) -> dict:
    """One mapping's record, whatever the state of its addresses."""
    query = natlinks.joined().where(_mapping(g_id, l_id))
    return natlinks.record(conn.execute(query).one())


def add(
    conn: Connection,
    inside_global: str,
    inside_local: str,
    *,
    global_block: str | None = None,
    local_block: str | None = None,
) -> dict:
    """Map INSIDE_GLOBAL (in GLOBAL_BLOCK) to INSIDE_LOCAL (in LOCAL_BLOCK)."""
    g, lo = _pair(conn, inside_global, inside_local, global_block, local_block)
    for row in (g, lo):
        if row.state != "allocated":
            text = ip_text(row.address, row.block_version)
            raise Conflict(f"{text} is released (held); restore it before mapping it")
    if conn.execute(select(N.created_at).where(_mapping(lo.id, g.id))).first() is not None:
        raise Conflict(
            f"{ip_text(lo.address, lo.block_version)} is already the inside global of "
            f"{ip_text(g.address, g.block_version)}; a pair maps one way"
        )
    if conn.execute(select(N.created_at).where(_mapping(g.id, lo.id))).first() is None:
        conn.execute(
            insert(nat_mappings).values(
                inside_global_id=g.id, inside_local_id=lo.id, created_at=utcnow()
            )
        )
    return _read(conn, g.id, lo.id)


def remove(
    conn: Connection,
    inside_global: str,
    inside_local: str,
    *,
    global_block: str | None = None,
    local_block: str | None = None,
) -> dict:
    """Delete a mapping (also while an address is held, so a restore does not bring it
    back); a mapping that does not exist is not found (3)."""
    g, lo = _pair(conn, inside_global, inside_local, global_block, local_block)
    if conn.execute(select(N.created_at).where(_mapping(g.id, lo.id))).first() is None:
        raise NotFound(
            f"{ip_text(g.address, g.block_version)} is not mapped to "
            f"{ip_text(lo.address, lo.block_version)}"
        )
    result = _read(conn, g.id, lo.id)
    conn.execute(delete(nat_mappings).where(_mapping(g.id, lo.id)))
    return result


def list_mappings(
    conn: Connection, *, address: str | None = None, block: str | None = None
) -> list[dict]:
    """The mappings shown (both addresses allocated), by inside global then inside local;
    with `address`, those it is either side of (NotFound when no block has it allocated
    or held: a mistyped address is not an empty answer); with `block`, those with a side
    in it."""
    query = natlinks.shown()
    G, L = natlinks.G.c, natlinks.L.c  # noqa: N806  (the aliases' columns, as elsewhere)
    if address is not None:
        value = parse_ip(address)
        query = query.where(
            or_(
                and_(G.address == int(value), natlinks.GB.c.version == value.version),
                and_(L.address == int(value), natlinks.LB.c.version == value.version),
            )
        )
    if block is not None:
        block_id = block_ops.resolve(conn, block).id
        query = query.where(or_(G.block_id == block_id, L.block_id == block_id))
    found = [natlinks.record(row) for row in conn.execute(query)]
    if not found and address is not None and not addresses.in_use(conn, address):
        raise NotFound(f"{ip_text(int(value), value.version)} is not allocated")
    return found
