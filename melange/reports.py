"""Reports over the whole store: utilisation per block, and the audit history.

Utilisation reads each block once, the held counts in one grouped query and
the policies in three: cost grows with the number of blocks, never with the
number of addresses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from sqlalchemy import Connection, or_, select

from melange import audit
from melange import blocks as block_ops
from melange.clock import utcnow
from melange.errors import InvalidInput, NotFound
from melange.models import audit_addresses, audit_log, blocks
from melange.names import require_network
from melange.paging import BadCursor, Page
from melange.params import Bounds
from melange.records import ip_text, iso
from melange.validate import is_duration, parse_duration, parse_ip

MAX_HISTORY = 100_000  # rows in one answer (a socket answer is one JSON line)


def utilization(
    conn: Connection,
    *,
    network: str | None = None,
    above: float | None = None,
    page: Page | None = None,
) -> list[dict]:
    """Used, held, free and unusable per block. A parent (a block with subnets) is
    listed too, with `kind: parent`: its counts are those of all the blocks below it,
    the space no subnet covers counted as free.

    `page`: `limit` rows of the report after the cursor's block (by network, family,
    address, id), the `above` filter applied first. Every block of the network is
    still read (a parent's counts are its subnets'); only the answer is a page."""
    if above is not None and not 0 <= above <= 100:
        raise InvalidInput(f"--above is a percentage from 0 to 100, not {above}")
    require_network(conn, network)
    query = select(blocks)
    if network is not None:
        query = query.where(blocks.c.network == network)
    rows = sorted(conn.execute(query).all(), key=_report_key)
    tree = block_ops.Tree.of(rows)
    held = block_ops.held_counts(conn)
    rules = block_ops.policy_rules(conn, [row.policy_id for row in rows])
    after = _report_cursor(page.after) if page is not None and page.after is not None else None
    shown = []
    for row in rows:
        if after is not None and _report_key(row) <= after:
            continue
        counts = tree.usage(row, rules, held)
        if above is not None and counts["percent_used"] <= above:
            continue
        shown.append((_report_key(row), {"block_id": row.id, "cidr": row.cidr, "name": row.name,
                                         "network": row.network, **counts}))  # fmt: skip
        if page is not None and len(shown) > page.limit:
            break
    if page is not None:
        shown = page.rows(shown, lambda pair: pair[0])
    return [record for _, record in shown]


def _report_key(row) -> tuple[str, int, int, int]:
    """The report's order: by network (none first), family, address, id."""
    return (row.network or "", row.version, row.first_addr, row.id)


def _report_cursor(key: tuple) -> tuple[str, int, int, int]:
    """A report cursor's key, checked: what `_report_key` made, or BadCursor."""
    kinds = (str, int, int, int)
    if len(key) != len(kinds) or not all(
        isinstance(value, kind) and not isinstance(value, bool)
        for value, kind in zip(key, kinds, strict=True)
    ):
        raise BadCursor()
    return key


def _since(text: str) -> datetime:
    """An ISO 8601 time (UTC when no zone), or a duration back from now such as 2h."""
    if is_duration(text):
        return utcnow() - timedelta(seconds=parse_duration(text))  # too long: its own error
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # not a time; or, in UTC, before year 1 or after 9999
        raise InvalidInput(
            f"{text[:60]!r} is not a time (ISO 8601, e.g. 2026-11-26T08:00:00Z, "
            "or a duration like 2h)"
        ) from None
    return moment


def history(
    conn: Connection,
    *,
    block: str | None = None,
    address: str | None = None,
    since: str | None = None,
    limit: Annotated[int, Bounds(1, MAX_HISTORY)] = 1000,
    page: Page | None = None,
) -> list[dict]:
    """Changes recorded in the audit trail, oldest first (the newest `limit`).

    With `page` (melange.paging), one page of the whole trail, newest first, instead:
    a client walks back from the newest change as far as it wants, a page at a time.

    `block` matches the changes to that block (by id: a deleted block's id is
    never handed out again) and to its addresses and routes; `address` every
    change that touched the address, however many others it touched.
    """
    a = audit_log.c
    runs = audit_addresses.c
    query = select(audit_log).order_by(a.id.desc())
    query = page.query(query, (a.id,), descending=True) if page is not None else query.limit(limit)
    if block is not None:
        block_id = _history_block_id(conn, block)
        in_runs = select(runs.audit_id).where(runs.block_id == block_id)
        query = query.where(or_(a.block_id == block_id, a.id.in_(in_runs)))
    if address is not None:
        value = int(parse_ip(address))
        in_runs = select(runs.audit_id).where(
            runs.first_addr <= value,
            runs.first_addr >= max(0, value - audit.MAX_RUN + 1),
            runs.last_addr >= value,
        )
        query = query.where(or_(a.address == value, a.id.in_(in_runs)))
    if since is not None:
        query = query.where(a.at >= _since(since))
    rows = conn.execute(query).all()
    rows = list(reversed(rows)) if page is None else page.rows(rows, lambda r: (r.id,))
    return [
        {
            "id": row.id,
            "at": iso(row.at),
            "actor": row.actor,
            "via": row.via,
            "command": row.command,
            "kind": row.kind,
            "subject": row.subject,
            "block_id": row.block_id,
            "address": _address_text(row.address),
            "params": row.params,
            "outcome": row.outcome,
        }
        for row in rows
    ]


def _history_block_id(conn: Connection, ref: str) -> int:
    """The id whose changes `history --block` shows: a block that exists (by id, name
    or CIDR), or the id of a deleted one the trail names (ids are never handed out
    again); an id the store has never known is a typo, not an empty history (3)."""
    if not (ref.isascii() and ref.isdigit()):
        return block_ops.resolve(conn, ref).id
    block_id = int(ref)
    exists = conn.execute(select(blocks.c.id).where(blocks.c.id == block_id)).first()
    named = conn.execute(
        select(audit_log.c.id).where(audit_log.c.block_id == block_id).limit(1)
    ).first()
    if exists is None and named is None:
        raise NotFound(f"no block {ref!r} (none exists, and none with that id ever did)")
    return block_id


def _address_text(value: int | None) -> str | None:
    if value is None:
        return None
    return ip_text(value, 4 if value < 2**32 else 6)
