"""The tree of blocks and subnets: what a subnet inherits from its ancestors.

A subnet is part of its parent. It takes its gateway, DNS servers and policy
from the nearest ancestor that has them unless it has its own, and its routes
from every ancestor (a route of a nearer block replaces one to the same
destination). These functions only walk rows; the queries that fetch a
chain (one statement, whatever its depth) are here too, so allocation,
rendering, `block show` and the reports share one definition of "inherited".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from melange.prepared import Prepared, is_lean

if TYPE_CHECKING:
    from sqlalchemy import Connection

DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}
PAGE = 1000  # block ids per IN (...) lookup: well under every backend's parameter limit


def _ancestors_statement():
    """The parent, grandparent, … of a block, nearest first, as one recursive query."""
    from sqlalchemy import bindparam, literal, select

    from melange.models import blocks

    B = blocks.c
    chain = (
        select(B.id, B.parent_id, literal(1).label("depth"))
        .where(B.id == bindparam("parent_id"))
        .cte("chain", recursive=True)
    )
    up = blocks.alias("up")
    chain = chain.union_all(
        select(up.c.id, up.c.parent_id, chain.c.depth + 1).where(up.c.id == chain.c.parent_id)
    )
    return select(blocks).join(chain, chain.c.id == B.id).order_by(chain.c.depth)


def _descendants_statement():
    """Every block below a block (subnets, their subnets, …), as one recursive query."""
    from sqlalchemy import bindparam, select

    from melange.models import blocks

    B = blocks.c
    tree = select(B.id).where(B.parent_id == bindparam("block_id")).cte("tree", recursive=True)
    down = blocks.alias("down")
    tree = tree.union_all(select(down.c.id).where(down.c.parent_id == tree.c.id))
    return select(blocks).join(tree, tree.c.id == B.id).order_by(B.first_addr, B.id)


_ANCESTORS = Prepared(_ancestors_statement, "subnets.ancestors")
_DESCENDANTS = Prepared(_descendants_statement, "subnets.descendants")


def ancestors(conn: Connection, block) -> list:
    """The block's ancestors, nearest first: no query for a top-level block, one for a subnet."""
    if block.parent_id is None:
        return []
    return _ANCESTORS.all(conn, parent_id=block.parent_id)


def descendants(conn: Connection, block_id: int) -> list:
    """Every block below `block_id`, in address order (one query)."""
    return _DESCENDANTS.all(conn, block_id=block_id)


def chain_in(block, by_id: dict[int, Any]) -> list:
    """The ancestors of `block` among rows already read (a report's or a render's)."""
    chain = []
    parent_id = block.parent_id
    while parent_id is not None and parent_id in by_id:
        parent = by_id[parent_id]
        chain.append(parent)
        parent_id = parent.parent_id
    return chain


def nearest(block, chain: Sequence, column: str) -> tuple[Any, Any]:
    """(value, source) of `column`: the block's own value (source None), else the nearest
    ancestor's that is set (source that ancestor), else (None, None)."""
    own = getattr(block, column)
    if own is not None:
        return own, None
    for ancestor in chain:
        value = getattr(ancestor, column)
        if value is not None:
            return value, ancestor
    return None, None


def nearest_listed(block, chain: Sequence, lists: dict[int, list]) -> tuple[list, Any]:
    """(items, source) of a per-block list such as DNS servers: the block's own when it
    has any, else those of the nearest ancestor that has any."""
    if lists.get(block.id):
        return lists[block.id], None
    for ancestor in chain:
        if lists.get(ancestor.id):
            return lists[ancestor.id], ancestor
    return [], None


def merged_routes(block, chain: Sequence, lists: dict[int, list]) -> dict[str, tuple[int, Any]]:
    """destination -> (gateway, source) over the chain: each ancestor's routes, a nearer
    block's route replacing a farther one's to the same destination (source None: own)."""
    merged: dict[str, tuple[int, Any]] = {}
    for level in reversed([block, *chain]):
        source = None if level is block else level
        for destination, gateway in lists.get(level.id, ()):
            merged[destination] = (gateway, source)
    return merged


def router(block, chain: Sequence, lists: dict[int, list]) -> int | None:
    """The default router a DHCP client of `block` is given: walking from the block up,
    the first level with a route to the default destination or a gateway decides, and
    at one level a default route replaces the gateway (the guide's "default routes")."""
    default = DEFAULT_ROUTE[block.version]
    for level in (block, *chain):
        for destination, gateway in lists.get(level.id, ()):
            if destination == default:
                return gateway
        if level.gateway is not None:
            return level.gateway
    return None


def client_routes(block, chain: Sequence, lists: dict[int, list]) -> list[tuple[str, int]]:
    """Option 121's (destination, gateway) pairs for `block`, whichever DHCP server gets
    them: its routes and its ancestors' (each destination once, the nearest block's),
    then the default route exactly once, through the block's router: a client given
    option 121 ignores option 3 (RFC 3442). Empty when the block has no route but a
    default one (option 3 says it all)."""
    default = DEFAULT_ROUTE[block.version]
    pairs = [
        (destination, gateway)
        for destination, (gateway, _) in merged_routes(block, chain, lists).items()
        if destination != default
    ]
    if not pairs:
        return []
    gateway = router(block, chain, lists)
    if gateway is not None:
        pairs.append((default, gateway))
    return pairs


def _per_block(conn: Connection, block_ids: Iterable[int], table: str, one: Prepared) -> dict:
    """Rows of a per-block table for several blocks, grouped by block in its order: one
    query a page of blocks, whatever their number; on a lean connection, `one` (the
    rows of one block) for each."""
    ids = sorted(set(block_ids))
    found: dict[int, list[tuple]] = {}
    if is_lean(conn):
        for block_id in ids:
            rows = one.all(conn, block_id=block_id)
            if rows:
                found[block_id] = [tuple(row) for row in rows]
        return found
    from sqlalchemy import select

    key, columns, order = _PER_BLOCK[table]()
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        for block_id, *values in conn.execute(
            select(key, *columns).where(key.in_(page)).order_by(key, order)
        ):
            found.setdefault(block_id, []).append(tuple(values))
    return found


def _dns_columns() -> tuple:
    from melange.models import block_dns_servers

    d = block_dns_servers.c
    return d.block_id, (d.address, d.version), d.position


def _route_columns() -> tuple:
    from melange.models import routes

    r = routes.c
    return r.block_id, (r.destination, r.gateway), r.id


_PER_BLOCK = {"dns": _dns_columns, "routes": _route_columns}  # key, columns, order


def _of_one_block(table: str):
    """The statement of one block's rows of a per-block table, in its order."""
    from sqlalchemy import bindparam, select

    key, columns, order = _PER_BLOCK[table]()
    return select(*columns).where(key == bindparam("block_id")).order_by(order)


_DNS_OF = Prepared(lambda: _of_one_block("dns"), "subnets.dns_of_block")
_ROUTES_OF = Prepared(lambda: _of_one_block("routes"), "subnets.routes_of_block")


def dns_lists(conn: Connection, block_ids: Iterable[int]) -> dict[int, list[tuple[int, int]]]:
    """(address, version) of the DNS servers of several blocks, in order."""
    return _per_block(conn, block_ids, "dns", _DNS_OF)


def route_lists(conn: Connection, block_ids: Iterable[int]) -> dict[int, list[tuple[str, int]]]:
    """(destination, gateway) of the routes of several blocks, in the order added."""
    return _per_block(conn, block_ids, "routes", _ROUTES_OF)
