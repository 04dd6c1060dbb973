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
    outcomes: dict[int, Any] = {}
    left: list[int] = []
    by_block: dict[str, list[tuple[Asked, Any]]] = {}
    for one in asked:
        p = one.params
        try:
            request = addresses.parse_request(
                p.get("mac"), None, None, p.get("hostname"), p.get("tenant")
            )
        except MelangeError as error:
            outcomes[one.at] = error
            continue
        by_block.setdefault(p["block"], []).append((one, request))
    for ref, group in by_block.items():
        _in_block(conn, ref, group, outcomes, left)
    return Grouped(outcomes, sorted(left))


def _in_block(
    conn: Connection,
    ref: str,
    group: list[tuple[Asked, Any]],
    outcomes: dict[int, Any],
    left: list[int],
) -> None:
    """The requests of one block reference: checks, then every write at once."""
    try:
        block = block_ops.resolve(conn, ref, for_update=True)
        block_ops.refuse_parent(block, block.has_subnets)
    except MelangeError as error:
        for one, _ in group:  # each its own: every caller's thread raises the one it gets
            outcomes[one.at] = copy.copy(error)
        return
    ready = _checked(conn, block, group, outcomes, left)
    chosen = _chosen(conn, block, ready, outcomes)
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
        outcomes[one.at] = result
    addresses.insert_many(conn, rows)
    block_ops.touch(conn, block.id, allocated=len(rows))
    audit.record_many(conn, entries)


def _checked(
    conn: Connection,
    block: Any,
    group: list[tuple[Asked, Any]],
    outcomes: dict[int, Any],
    left: list[int],
) -> list[tuple[Asked, Any, dict | None]]:
    """The requests that can be done together, with their DNS name columns; the rest
    failed (in `outcomes`) or left for the one-by-one path (in `left`)."""
    macs = [request.mac for _, request in group if request.mac is not None]
    holding = addresses.active_macs(conn, block.id, macs) if macs else set()
    seen_macs: set[int] = set()
    seen_names: set[str] = set()
    domain: list[str | None] = []  # the block's domain, read once when a hostname needs it
    ready = []
    for one, request in group:
        if request.mac is not None:
            if request.mac in holding or request.mac in seen_macs:
                left.append(one.at)
                continue
            seen_macs.add(request.mac)
        named = None
        if request.hostname is not None:
            try:
                if not domain:
                    domain.append(dns.effective_domain(conn, block))
                name = dns.qualified(request.hostname, domain[0])
                if name is not None and name in seen_names:
                    left.append(one.at)
                    continue
                dns.check_free(conn, name, block.version)
            except MelangeError as error:
                outcomes[one.at] = error
                continue
            if name is not None:
                seen_names.add(name)
                named = {"dns_name": name, "dns_version": block.version}
        ready.append((one, request, named))
    return ready


def _chosen(
    conn: Connection,
    block: Any,
    ready: list[tuple[Asked, Any, dict | None]],
    outcomes: dict[int, Any],
) -> list[tuple[tuple[Asked, Any, dict | None], int]]:
    """Each ready request with the address its block's generator picks for it, claimed
    in the block's free space; a request refused (an exhausted block, an unusable
    address) gets its error in `outcomes`."""
    if not ready:
        return []
    space = block_ops.free_space(conn, block)
    addresses.reclaim_expired(conn, block, space)
    generator = generators.load(block.generator)
    if isinstance(generator, generators.LowestFree):
        try:  # the lowest free addresses for all of them, in one search
            return list(zip(ready, space.take_lowest(len(ready)), strict=True))
        except Exhausted:
            pass  # fewer than asked: one by one, until the block runs out
    info = block_ops.block_info(block)
    chosen = []
    for item in ready:
        _one, request, _ = item
        try:
            asked = generators.Request(count=1, mac=request.mac, tenant=request.tenant)
            (value,) = generator.choose(info, asked, space)
        except MelangeError as error:
            outcomes[item[0].at] = error
            continue
        chosen.append((item, value))
    return chosen
