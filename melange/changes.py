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

from sqlalchemy import Connection, func, select

from melange.models import blocks, locks

Fingerprint = tuple[int, int, int, int]


def fingerprint(conn: Connection, network: str | None) -> Fingerprint:
    per_block = select(
        func.count(blocks.c.id),
        func.coalesce(func.sum(blocks.c.id), 0),
        func.coalesce(func.sum(blocks.c.generation), 0),
    )
    if network is not None:
        per_block = per_block.where(blocks.c.network == network)
    count, ids, generations = conn.execute(per_block).one()
    changes = conn.execute(select(locks.c.counter).where(locks.c.name == "blocks")).scalar()
    return int(count), int(ids), int(generations), int(changes or 0)
