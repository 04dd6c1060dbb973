"""Expired holds purged: housekeeping before the drift checks, not drift itself.

Allocation never depends on it (an expired hold is reclaimed by the next
allocation in its block), but a purge keeps `ip list`, reports and the tables
small. Which holds have expired is melange.holds' rule, as everywhere.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from melange import audit, holds
from melange import blocks as block_ops
from melange.addresses import reclaim_expired
from melange.models import blocks
from melange.reconcile.findings import IP, B
from melange.store import Store, lock_block


def purge_expired_holds(store: Store, network: str | None) -> int:
    """Free expired holds, block by block under each block's lock, in one audited write.

    Reuses the allocation's own reclaim, so the addresses go back into the
    free ranges exactly as an allocation would have put them.
    """

    def purge(conn: Connection) -> int:
        with audit.noting():
            return _purge(conn, network)

    return store.write(purge)


def _purge(conn: Connection, network: str | None) -> int:
    query = (
        select(IP.block_id).join(blocks, B.id == IP.block_id).where(holds.expired(IP)).distinct()
    )
    if network is not None:
        query = query.where(B.network == network)
    purged: dict[int, int] = {}
    for block_id in sorted(conn.execute(query).scalars()):
        block = lock_block(conn, block_id)
        freed = reclaim_expired(conn, block, block_ops.free_space(conn, block))
        if freed:
            audit.note(block_id, freed)
            purged[block_id] = len(freed)
    total = sum(purged.values())
    if total:
        actor, via = audit.who()
        audit.record(
            conn, actor=actor, via=via, command="reconcile.purge", params={"network": network},
            result={"purged": total, "blocks": sorted(purged)},
        )  # fmt: skip
    return total
