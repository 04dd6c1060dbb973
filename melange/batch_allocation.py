"""Single allocations of a group commit's batch done together, block by block.

Why: melanged gathers concurrent allocations into one transaction
(melange.operations.run_batch). Run one by one, each request repeats the work
that is the same for all of them: the block's row and lock, its free space and
expired holds, the MAC lookup, the insert, the block's counter, the audit row,
its savepoint; on a server each of those statements is a round trip, made while
the block's other writers wait. Here a batch's plain single allocations
(`block.allocate` with a block and at most a MAC, hostname and tenant) of one
block share those statements: one lock, one MAC lookup per 16 MACs, one free
space search, one executemany each for the rows and the audit rows.

The outcome is the one the same requests would have one by one in some order: each
request's checks run in the order the one-by-one path runs them, and every
request whose outcome depends on another in the batch is left for that path, to
run after this one (`Grouped.left`): a MAC that already holds an address in the
block (an idempotent repeat, or a hostname change), a MAC or DNS name asked for
twice in the batch. Everything that can refuse a request is decided before the
first write, so a refused request writes nothing. A constraint the store raises
anyway (a race this cannot see) ends the attempt; its retry runs every request
one by one (run_batch's careful path).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from melange import addresses, audit, dns, generators
from melange import blocks as block_ops
from melange.clock import utcnow
from melange.errors import Exhausted, MelangeError

if TYPE_CHECKING:
    from sqlalchemy import Connection

# The parameters a request may carry and still be done together with others.
TOGETHER = frozenset({"block", "mac", "hostname", "tenant"})


class Asked(NamedTuple):
    """One caller's allocation: its place in the batch, parameters and who asks."""

    at: int  # its place in the batch
    params: dict[str, Any]
    actor: str
    via: str


_Ready = tuple[Asked, Any, dict]  # a request, its parsed form, its DNS name columns


class Grouped(NamedTuple):
    """What `allocate_together` did: outcomes (a list of one record, or the MelangeError)
    by index, and the indexes left for the one-by-one path."""

    outcomes: dict[int, Any]
    left: list[int]


def can_join(name: str, params: dict[str, Any]) -> bool:
    """Whether a request is a plain single allocation (see the module's docstring)."""
    if name != "block.allocate" or not isinstance(params.get("block"), str):
        return False
    return all(key in TOGETHER or value is None for key, value in params.items())


def allocate_together(conn: Connection, asked: Sequence[Asked]) -> Grouped:
    """Allocate an address for each request, block by block, in the caller's
    transaction; see `Grouped`."""
    batch = _Batch(conn)
    by_block: dict[str, list[tuple[Asked, Any]]] = {}
    for one in asked:
        p = one.params
        try:
            request = addresses.parse_request(
                p.get("mac"), None, None, p.get("hostname"), p.get("tenant")
            )
        except MelangeError as error:
            batch.outcomes[one.at] = error
            continue
        by_block.setdefault(p["block"], []).append((one, request))
    for ref, group in by_block.items():
        batch.in_block(ref, group)
    return Grouped(batch.outcomes, sorted(batch.left))


class _Batch:
    """The work of `allocate_together`: each request's outcome as it is decided, and the
    requests left for the one-by-one path."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.outcomes: dict[int, Any] = {}
        self.left: list[int] = []

    def in_block(self, ref: str, group: list[tuple[Asked, Any]]) -> None:
        """The requests of one block reference: checks, then every write at once."""
        conn = self.conn
        try:
            block = block_ops.resolve(conn, ref, for_update=True)
            block_ops.refuse_parent(block, block.has_subnets)
        except MelangeError as error:
            for one, _ in group:  # each its own: every caller's thread raises the one it gets
                self.outcomes[one.at] = copy.copy(error)
            return
        chosen = self._chosen(block, self._checked(block, group))
        if not chosen:
            return
        now = utcnow()
        rows, entries = [], []
        for (one, request, named), value in chosen:
            row = addresses.address_row(block.id, value, request, None, now, named)
            result = addresses.new_records([row], block, None)
            rows.append(row)
            entry, _ = audit.entry(one.actor, one.via, "block.allocate", one.params, result,
                                   {block.id: [(value, value)]})  # fmt: skip
            entries.append(entry)
            self.outcomes[one.at] = result
        addresses.insert_many(conn, rows)
        block_ops.touch(conn, block.id, allocated=len(rows))
        audit.record_many(conn, entries)

    def _checked(self, block: Any, group: list[tuple[Asked, Any]]) -> list[_Ready]:
        """The requests that can be done together, with their DNS name columns; the
        others failed or are left for the one-by-one path."""
        macs = [request.mac for _, request in group if request.mac is not None]
        holding = addresses.active_macs(self.conn, block.id, macs) if macs else set()
        seen_macs: set[int] = set()
        seen_names: set[str] = set()
        ready = []
        for one, request in group:
            if request.mac is not None:
                if request.mac in holding or request.mac in seen_macs:
                    self.left.append(one.at)
                    continue
                seen_macs.add(request.mac)
            try:
                named = dns.name_for(self.conn, block, request.hostname)
            except MelangeError as error:
                self.outcomes[one.at] = error
                continue
            name = named["dns_name"]
            if name is not None:
                if name in seen_names:
                    self.left.append(one.at)
                    continue
                seen_names.add(name)
            ready.append((one, request, named))
        return ready

    def _chosen(self, block: Any, ready: list[_Ready]) -> list[tuple[_Ready, int]]:
        """Each ready request with the address its block's generator picks for it,
        claimed in the block's free space; a request refused (an exhausted block, an
        unusable address) gets its error as its outcome."""
        if not ready:
            return []
        space = block_ops.free_space(self.conn, block)
        addresses.reclaim_expired(self.conn, block, space)
        generator = generators.load(block.generator)
        if isinstance(generator, generators.LowestFree):
            try:  # the lowest free addresses for all of them, in one search
                return list(zip(ready, space.take_lowest(len(ready)), strict=True))
            except Exhausted:
                pass  # fewer than asked: one by one, until the block runs out
        info = block_ops.block_info(block)
        chosen = []
        for item in ready:
            one, request, _ = item
            try:
                asked = generators.Request(count=1, mac=request.mac, tenant=request.tenant)
                (value,) = generator.choose(info, asked, space)
            except MelangeError as error:
                self.outcomes[one.at] = error
                continue
            chosen.append((item, value))
        return chosen
