"""The addresses of an import: checked under allocation's rules, inserted as they were.

An exported address keeps its state and times, so it is inserted directly (in
batches) rather than allocated; it still meets the rules `block allocate
--address` applies (inside the block, not excluded by the network, broadcast,
gateway or policies, not in a block with subnets, one active address per MAC),
and each block it lands in is then touched and has its free space rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from melange import audit, holds
from melange import blocks as block_ops
from melange.clock import utcnow
from melange.errors import Conflict, InvalidInput
from melange.exclusions import Exclusions
from melange.models import blocks, interfaces, ip_addresses
from melange.records import ip_text
from melange.transfer_parse import MALFORMED, problem
from melange.validate import format_mac, parse_ip, parse_mac, validate_hostname, validate_name

INSERT_BATCH = 5000
CLASHES_SHOWN = 5


def import_addresses(
    conn: Connection,
    pending: list[tuple[int, int, dict]],
    hold_seconds: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Insert addresses as they were (state, times), then recompute each block's free
    space; the problems found, each with its line (nothing is inserted if there are any).
    `progress(written, total)` follows the inserts, batch by batch, from (0, total)."""
    checker = _Checker.of(conn, hold_seconds)
    errors: list[str] = []
    rows: list[dict] = []
    for line, block_id, entry in pending:
        try:
            rows.append(checker.row(block_id, entry))
        except MALFORMED as error:
            errors.append(problem(line, "address", error))
    errors.extend(_clashes(conn, rows, {b for _, b, _ in pending}, checker.blocks))
    if errors or not rows:
        return errors
    if progress is not None:
        progress(0, len(rows))
    for start in range(0, len(rows), INSERT_BATCH):
        conn.execute(insert(ip_addresses), rows[start : start + INSERT_BATCH])
        if progress is not None:
            progress(min(start + INSERT_BATCH, len(rows)), len(rows))
    _refresh_blocks(conn, rows, checker.blocks)
    return errors


@dataclass
class _Checker:
    """What checking many addresses needs read once: the store's blocks and interfaces,
    each block's exclusions (built when first needed), and what the file listed so far."""

    conn: Connection
    hold_seconds: int
    now: datetime
    blocks: dict[int, Any]  # rows of the blocks table, by id
    parents: set[int]
    vifs: dict[str, int]
    exclusions: dict[int, Exclusions] = field(default_factory=dict)
    seen: set[tuple[int, int]] = field(default_factory=set)
    active_macs: set[tuple[int, int]] = field(default_factory=set)

    @classmethod
    def of(cls, conn: Connection, hold_seconds: int) -> _Checker:
        block_rows = {r.id: r for r in conn.execute(select(blocks)).all()}
        return cls(
            conn=conn,
            hold_seconds=hold_seconds,
            now=utcnow(),
            blocks=block_rows,
            parents={r.parent_id for r in block_rows.values()},
            vifs={vif: i for vif, i in conn.execute(select(interfaces.c.vif_id, interfaces.c.id))},
        )

    def row(self, block_id: int, entry: dict) -> dict:
        """The ip_addresses row for one listed address, after every check it must pass."""
        block = self.blocks[block_id]
        value = self._place(block, block_id, entry["address"])
        state = entry.get("state") or "allocated"
        if state not in ("allocated", "held"):
            raise InvalidInput(f"state must be allocated or held, not {state!r}")
        mac = self._mac(block, block_id, entry, state)
        hostname = validate_hostname(entry["hostname"]) if entry.get("hostname") else None
        tenant = validate_name(entry["tenant"], "tenant") if entry.get("tenant") else None
        vif = entry.get("interface")
        if vif is not None and (not isinstance(vif, str) or vif not in self.vifs):
            raise InvalidInput(f"unknown interface {vif!r}")
        allocated, released, held_until = self._times(entry, state)
        self.seen.add((block_id, value))
        return {
            "block_id": block_id,
            "address": value,
            "mac": mac,
            "active_mac": mac if state == "allocated" else None,
            "hostname": hostname,
            "interface_id": self.vifs.get(vif) if vif is not None else None,
            "tenant": tenant,
            "state": state,
            "allocated_at": allocated,
            "released_at": released,
            "held_until": held_until,
        }

    def _place(self, block, block_id: int, text: str) -> int:
        """The address, if the block may hand it out and the file lists it once there."""
        value = parse_ip(text)
        block_ops.refuse_parent(block, block_id in self.parents)
        block_ops.check_inside(block, value)
        if block_id not in self.exclusions:
            self.exclusions[block_id] = block_ops.exclusions_for(self.conn, block)
        self.exclusions[block_id].refuse(int(value), str(value))
        if (block_id, int(value)) in self.seen:
            raise Conflict(f"{value} is listed twice in block {block.cidr}")
        return int(value)

    def _mac(self, block, block_id: int, entry: dict, state: str) -> int | None:
        """The address's MAC; an allocated one is the only active address of its MAC there."""
        mac = parse_mac(entry["mac"]) if entry.get("mac") else None
        if mac is not None and state == "allocated":
            if (block_id, mac) in self.active_macs:
                raise Conflict(f"MAC {format_mac(mac)} holds two addresses in {block.cidr}")
            self.active_macs.add((block_id, mac))
        return mac

    def _times(self, entry: dict, state: str) -> tuple[datetime, datetime | None, datetime | None]:
        """Allocated, released and hold-end times as exported; a held address the file
        gives no times for was released now and is held for this client's hold time."""
        released = when(entry.get("released_at"))
        held_until = when(entry.get("held_until"))
        allocated = when(entry.get("allocated_at")) or self.now
        if state != "held":
            return allocated, None, None
        if released is None:
            released = self.now
        if held_until is None:
            held_until = holds.ends(released, self.hold_seconds)
        return allocated, released, held_until


def when(text: str | None) -> datetime | None:
    """An exported time (ISO 8601, UTC); naive UTC as the store keeps it."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=None)


def _clashes(conn: Connection, rows: list[dict], block_ids: set[int], block_rows) -> list[str]:
    """Listed addresses a block already has (a NetBox file names existing blocks): the
    first few, as one statement for all the blocks finds them."""
    taken = {
        (r.block_id, r.address)
        for r in conn.execute(
            select(ip_addresses.c.block_id, ip_addresses.c.address).where(
                ip_addresses.c.block_id.in_(block_ids or {-1})
            )
        )
    }
    clash = [r for r in rows if (r["block_id"], r["address"]) in taken]
    return [
        f"{ip_text(r['address'], block_rows[r['block_id']].version)} is already "
        f"allocated in {block_rows[r['block_id']].cidr}"
        for r in clash[:CLASHES_SHOWN]
    ]


def _refresh_blocks(conn: Connection, rows: list[dict], block_rows) -> None:
    """Each block that received addresses: one change (generation) with its new allocated
    count, free space recomputed, and the addresses noted for the audit trail."""
    by_block: dict[int, list[dict]] = {}
    for r in rows:
        by_block.setdefault(r["block_id"], []).append(r)
    for block_id, mine in sorted(by_block.items()):
        allocated = sum(1 for r in mine if r["state"] == "allocated")
        block_ops.touch(conn, block_id, allocated=allocated)
        block_ops.free_space(conn, block_rows[block_id]).rebuild()
        audit.note(block_id, [r["address"] for r in mine])
