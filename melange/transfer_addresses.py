"""The addresses of an import: checked under allocation's rules, inserted as they were.

An exported address keeps its state and times, so it is inserted directly (in
batches) rather than allocated; it still meets the rules `block allocate
--address` applies (inside the block, not excluded by the network, broadcast,
gateway or policies, not in a block with subnets, one active address per MAC,
one address per DNS name), and each block it lands in is then touched and has
its free space rebuilt. An allocated address with a hostname in a block with a
domain gets its DNS name as an allocation would give it (melange.dns).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from melange import audit, dns, holds
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
LOOKUP = 500  # values in one IN (...) of a batch's check


def import_addresses(
    conn: Connection,
    pending: Iterable[tuple[int, int, dict]],
    hold_seconds: int,
    errors: list[str],
    progress: Callable[[int, int], None] | None = None,
    total: int = 0,
) -> int:
    """Insert addresses as they were (state, times), a batch at a time as they are read,
    then recompute each block's free space; how many were listed. Each problem goes to
    `errors` with its line (the caller then rolls everything back). Whether an address
    or an active MAC is listed twice is asked of the store, which holds the batches
    written so far: nothing grows with the file but the runs of addresses noted for
    the audit trail. `progress(written, total)` follows the batches from (0, total)."""
    checker = _Checker.of(conn, hold_seconds)
    batch = _Batch(conn, checker, errors)
    if progress is not None:
        progress(0, total)
    read = 0
    for line, block_id, entry in pending:
        read += 1
        try:
            batch.add(line, checker.row(block_id, entry))
        except MALFORMED as error:
            errors.append(problem(line, "address", error))
        if len(batch.rows) >= INSERT_BATCH:
            batch.write()
            if progress is not None:
                progress(read, max(total, read))
    batch.write()
    if progress is not None:
        progress(read, max(total, read))
    if not errors:
        _refresh_blocks(conn, batch, checker.blocks)
    return batch.written


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
    domains: dict[int, str | None] = field(default_factory=dict)
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
        name = self._name(block, hostname) if state == "allocated" else None
        self.seen.add((block_id, value))
        return {  # the batch's own repeats are caught here, earlier batches' in the store
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
            "dns_name": name,
            "dns_version": block.version if name is not None else None,
        }

    def _name(self, block, hostname: str | None) -> str | None:
        """The DNS name an allocated address with `hostname` has in `block`, if any."""
        if block.id not in self.domains:
            self.domains.update(dns.domains_of([block], self.blocks))
        return dns.qualified(hostname, self.domains[block.id])

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


@dataclass
class _Batch:
    """Rows checked but not yet written. Before a batch goes in, the store is asked
    which of its addresses and active MACs a block already has: one written earlier by
    this import (an id above the store's highest before it) was listed twice in the
    file; an older one is taken already (a NetBox file names existing blocks)."""

    conn: Connection
    checker: _Checker
    errors: list[str]
    rows: list[tuple[int, dict]] = field(default_factory=list)
    written: int = 0
    clashes: int = 0
    allocated: dict[int, int] = field(default_factory=dict)
    runs: dict[int, Runs] = field(default_factory=dict)
    before: int | None = None
    names: set[tuple[str, int]] = field(default_factory=set)  # this batch's DNS names
    holders: dict[tuple[str, int], str] = field(default_factory=dict)  # the store's

    def add(self, line: int, row: dict) -> None:
        self.rows.append((line, row))

    def write(self) -> None:
        if not self.rows:
            return
        if self.before is None:
            top = self.conn.execute(select(func.max(ip_addresses.c.id))).scalar()
            self.before = top or 0
        rows = self._unrepeated()
        if rows and not self.errors:
            self.conn.execute(insert(ip_addresses), rows)
        for row in rows:
            block_id = row["block_id"]
            self.runs.setdefault(block_id, Runs()).add(row["address"])
            if row["state"] == "allocated":
                self.allocated[block_id] = self.allocated.get(block_id, 0) + 1
        self.written += len(rows)
        self.rows = []
        self.names.clear()
        self.checker.seen.clear()
        self.checker.active_macs.clear()

    def _unrepeated(self) -> list[dict]:
        """The batch's rows but those whose address or active MAC the store has in
        their block, each of those a problem of its line."""
        by_block: dict[int, list[tuple[int, dict]]] = {}
        self.holders = self._holders([row for _, row in self.rows])
        for line, row in self.rows:
            by_block.setdefault(row["block_id"], []).append((line, row))
        kept: list[dict] = []
        for block_id, rows in sorted(by_block.items()):
            block = self.checker.blocks[block_id]
            taken = self._taken(block_id, [row["address"] for _, row in rows])
            macs = self._active_macs(block_id, [r["active_mac"] for _, r in rows])
            for line, row in rows:
                if not self._name_free(line, row, block):
                    continue
                found = taken.get(row["address"])
                if found is not None and found > (self.before or 0):
                    text = ip_text(row["address"], block.version)
                    self.errors.append(f"line {line}: {text} is listed twice in block "
                                       f"{block.cidr}")  # fmt: skip
                elif found is not None:
                    self.clashes += 1
                    if self.clashes <= CLASHES_SHOWN:
                        text = ip_text(row["address"], block.version)
                        self.errors.append(f"{text} is already allocated in {block.cidr}")
                elif row["active_mac"] is not None and row["active_mac"] in macs:
                    mac = format_mac(row["active_mac"])
                    self.errors.append(f"line {line}: MAC {mac} holds two addresses in "
                                       f"{block.cidr}")  # fmt: skip
                else:
                    kept.append(row)
        return kept

    def _name_free(self, line: int, row: dict, block) -> bool:
        """Whether the row's DNS name (if it has one) is no other address's, in the store
        (earlier batches included) or earlier in this batch; if not, a problem of its line."""
        name = row["dns_name"]
        if name is None:
            return True
        key = (name, row["dns_version"])
        if key in self.names:
            self.errors.append(f"line {line}: the name {name} is listed twice")
            return False
        self.names.add(key)
        holder = self.holders.get(key)
        if holder is not None:
            self.errors.append(f"line {line}: the name {name} is in use by {holder}")
            return False
        return True

    def _holders(self, rows: list[dict]) -> dict[tuple[str, int], str]:
        """Which of the rows' DNS names the store has already: (name, family) -> the
        address that has it (and its block), a few hundred names per query."""
        ip, b = ip_addresses.c, blocks.c
        wanted = sorted({row["dns_name"] for row in rows if row["dns_name"] is not None})
        found: dict[tuple[str, int], str] = {}
        for start in range(0, len(wanted), LOOKUP):
            query = (
                select(ip.dns_name, ip.dns_version, ip.address, b.cidr)
                .join(blocks, b.id == ip.block_id)
                .where(ip.dns_name.in_(wanted[start : start + LOOKUP]))
            )
            for name, version, address, cidr in self.conn.execute(query):
                found[(name, version)] = f"{ip_text(address, version)} (block {cidr})"
        return found

    def _taken(self, block_id: int, values: list[int]) -> dict[int, int]:
        """Those of `values` the block has (address -> row id): one range read."""
        ip = ip_addresses.c
        query = select(ip.address, ip.id).where(
            ip.block_id == block_id, ip.address >= min(values), ip.address <= max(values)
        )
        wanted = set(values)
        return {a: i for a, i in self.conn.execute(query) if a in wanted}

    def _active_macs(self, block_id: int, macs: list[int | None]) -> set[int]:
        """Those of `macs` active on an address of the block already."""
        ip = ip_addresses.c
        given = sorted({m for m in macs if m is not None})
        found: set[int] = set()
        for start in range(0, len(given), LOOKUP):
            query = select(ip.active_mac).where(
                ip.block_id == block_id, ip.active_mac.in_(given[start : start + LOOKUP])
            )
            found.update(self.conn.execute(query).scalars())
        return found


class Runs:
    """Addresses as sorted, disjoint (first, last) runs: what the audit trail keeps of
    them, made as they come (a sorted file only ever extends the last run)."""

    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.lasts: list[int] = []

    def add(self, value: int) -> None:
        firsts, lasts = self.firsts, self.lasts
        if lasts and lasts[-1] + 1 == value:
            lasts[-1] = value
            return
        at = bisect_left(firsts, value)
        joins_left = at > 0 and lasts[at - 1] + 1 >= value
        joins_right = at < len(firsts) and firsts[at] - 1 <= value
        if joins_left and joins_right:
            lasts[at - 1] = max(lasts[at], value)
            del firsts[at], lasts[at]
        elif joins_left:
            lasts[at - 1] = max(lasts[at - 1], value)
        elif joins_right:
            firsts[at] = min(firsts[at], value)
        else:
            firsts.insert(at, value)
            lasts.insert(at, value)

    def spans(self) -> list[tuple[int, int]]:
        """The runs cut to audit.MAX_RUN addresses at most, as audit.runs cuts them."""
        found: list[tuple[int, int]] = []
        for first, last in zip(self.firsts, self.lasts, strict=True):
            while last - first >= audit.MAX_RUN:
                found.append((first, first + audit.MAX_RUN - 1))
                first += audit.MAX_RUN
            found.append((first, last))
        return found


def _refresh_blocks(conn: Connection, batch: _Batch, block_rows) -> None:
    """Each block that received addresses: one change (generation) with its new allocated
    count, free space recomputed, and the addresses noted for the audit trail."""
    for block_id, runs in sorted(batch.runs.items()):
        block_ops.touch(conn, block_id, allocated=batch.allocated.get(block_id, 0))
        block_ops.free_space(conn, block_rows[block_id]).rebuild()
        audit.note_runs(block_id, runs.spans())
