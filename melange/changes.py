"""Noticing that what a network renders may have changed, cheaply.

Every change to what a block renders bumps its `generation` (see
`melange.blocks.touch`), and every block creation or deletion counts on the
"blocks" lock row (see `melange.store.lock_named`). So (blocks, sum of ids,
sum of generations, block set changes) changes whenever the rendering may
have; it does not rely on ids only growing (a block deleted and another
created with its id between two polls changes the last figure). A poll
reads one row per block and one lock row, never the addresses.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, func, select

from melange.models import blocks, locks
from melange.prepared import Prepared

Fingerprint = tuple[int, int, int, int]


def _per_block(network: bool) -> Prepared:
    query = select(
        func.count(blocks.c.id),
        func.coalesce(func.sum(blocks.c.id), 0),
        func.coalesce(func.sum(blocks.c.generation), 0),
    )
    if network:
        query = query.where(blocks.c.network == bindparam("network"))
    return Prepared(query)


# Compiled once: melanged polls every few tens of milliseconds, and compiling the
# statements each time was most of a poll's cost.
_EVERY_BLOCK, _NETWORK_BLOCKS = _per_block(False), _per_block(True)
_BLOCK_CHANGES = Prepared(select(locks.c.counter).where(locks.c.name == "blocks"))


def fingerprint(conn: Connection, network: str | None) -> Fingerprint:
    if network is None:
        row = _EVERY_BLOCK.first(conn)
    else:
        row = _NETWORK_BLOCKS.first(conn, network=network)
    assert row is not None  # an aggregate always has its row
    count, ids, generations = row
    changes = _BLOCK_CHANGES.scalar(conn)
    return int(count), int(ids), int(generations), int(changes or 0)
