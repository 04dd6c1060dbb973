"""Noticing that the store changed, cheaply: one aggregate over the blocks of a network.

Every change that alters what a network renders bumps its block's
`generation` (see melange.blocks.touch); creating or deleting a block changes
the count and the sum of ids (ids only grow). So (count, sum of ids, sum of
generations) changes exactly when the rendering may have changed, and a poll
reads one row per block, never the addresses.
"""

from __future__ import annotations

from sqlalchemy import func, select

from melange.models import blocks
from melange.store import Store

Fingerprint = tuple[int, int, int]


def fingerprint(store: Store, network: str | None) -> Fingerprint:
    query = select(
        func.count(blocks.c.id),
        func.coalesce(func.sum(blocks.c.id), 0),
        func.coalesce(func.sum(blocks.c.generation), 0),
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    row = store.read(lambda conn: conn.execute(query).one())
    return int(row[0]), int(row[1]), int(row[2])
