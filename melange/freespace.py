"""The free space of one block, kept as ranges in the store.

Finding the lowest free address is one indexed lookup of the first free range,
whatever the number of addresses already allocated: the cost of an allocation
depends on how many addresses it asks for, never on how full the block is.

Invariant: every address that is neither allocated, held, nor excluded lies
in a free range. Free ranges may still contain excluded addresses (an
exclusion is checked when an address is picked); a range found to hold only
excluded addresses is dropped, and `rebuild` restores the exact space when
exclusions shrink (a policy or gateway change).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from melange.errors import Conflict, Exhausted
from melange.exclusions import Exclusions
from melange.prepared import Prepared

if TYPE_CHECKING:
    from sqlalchemy import Connection


def _statements() -> dict:
    """The free-range statements, built on first use (melange.lean imports no SQLAlchemy)."""
    from sqlalchemy import bindparam, delete, insert, select, update

    from melange.models import free_ranges

    fr = free_ranges.c
    in_block = fr.block_id == bindparam("block_id")
    return {
        "range_from": select(fr.first_addr, fr.last_addr)
        .where(in_block, fr.last_addr >= bindparam("address"))
        .order_by(fr.last_addr)
        .limit(1),
        "ending_at": select(fr.first_addr).where(in_block, fr.last_addr == bindparam("address")),
        "starting_at": select(fr.last_addr).where(in_block, fr.first_addr == bindparam("address")),
        "reset": update(free_ranges)
        .where(in_block, fr.first_addr == bindparam("lo"))
        .values(first_addr=bindparam("first"), last_addr=bindparam("last")),
        "drop": delete(free_ranges).where(in_block, fr.first_addr == bindparam("first")),
        "add": insert(free_ranges).values(
            block_id=bindparam("block_id"),
            first_addr=bindparam("first"),
            last_addr=bindparam("last"),
        ),
    }


def _prepared(key: str) -> Prepared:
    return Prepared(lambda: _statements()[key], f"freespace.{key}")


_RANGE_FROM = _prepared("range_from")
_ENDING_AT = _prepared("ending_at")
_STARTING_AT = _prepared("starting_at")
_RESET = _prepared("reset")
_DROP = _prepared("drop")
_ADD = _prepared("add")


class FreeSpace:
    """Free ranges of one block; the caller holds the block's lock."""

    def __init__(
        self, conn: Connection, block_id: int, exclusions: Exclusions, version: int
    ) -> None:
        self.conn = conn
        self.block_id = block_id
        self.exclusions = exclusions
        self.version = version

    def _range_from(self, address: int) -> tuple[int, int] | None:
        """The first free range that ends at or after `address`."""
        row = _RANGE_FROM.first(self.conn, block_id=self.block_id, address=address)
        return (row[0], row[1]) if row else None

    def take_lowest(self, count: int) -> list[int]:
        """Claim the `count` lowest free, allowed addresses: all of them or none."""
        taken: list[int] = []
        changes: list[tuple[tuple[int, int], list[tuple[int, int]]]] = []
        cursor = self.exclusions.first
        while len(taken) < count:
            found = self._range_from(cursor)
            if found is None:
                raise Exhausted(self._exhausted_message(count, len(taken)))
            lo, hi = found
            picked: list[int] = []
            candidate = self.exclusions.next_allowed(max(lo, cursor))
            while candidate is not None and candidate <= hi and len(taken) + len(picked) < count:
                picked.append(candidate)
                candidate = self.exclusions.next_allowed(candidate + 1)
            changes.append(((lo, hi), self._remainder(lo, hi, picked)))
            taken.extend(picked)
            cursor = hi + 1
            if cursor > self.exclusions.last:
                if len(taken) < count:
                    raise Exhausted(self._exhausted_message(count, len(taken)))
                break
        for (lo, hi), pieces in changes:
            self._replace(lo, hi, pieces)
        return taken

    def _exhausted_message(self, count: int, found: int) -> str:
        if count == 1:
            return "no free address left in the block"
        return f"the block has only {found} free addresses, fewer than the {count} asked for"

    def _remainder(self, lo: int, hi: int, picked: list[int]) -> list[tuple[int, int]]:
        """What is left of [lo, hi] once `picked` (sorted) are taken, minus dead pieces."""
        pieces: list[tuple[int, int]] = []
        start = lo
        for address in picked:
            if address > start:
                pieces.append((start, address - 1))
            start = address + 1
        if start <= hi:
            pieces.append((start, hi))
        return [p for p in pieces if self._has_allowed(p)]

    def _has_allowed(self, piece: tuple[int, int]) -> bool:
        candidate = self.exclusions.next_allowed(piece[0])
        return candidate is not None and candidate <= piece[1]

    def _replace(self, lo: int, hi: int, pieces: list[tuple[int, int]]) -> None:
        """Swap the range [lo, hi] for `pieces` (each inside it)."""
        if not pieces:
            _DROP.send(self.conn, block_id=self.block_id, first=lo)
            return
        (first, last), *rest = pieces
        _RESET.send(self.conn, block_id=self.block_id, lo=lo, first=first, last=last)
        for first, last in rest:
            _ADD.send(self.conn, block_id=self.block_id, first=first, last=last)

    def claim(self, address: int) -> None:
        """Claim one given address; Conflict when it is not free."""
        found = self._range_from(address)
        if found is None or found[0] > address:
            raise Conflict(f"{self._label(address)} is already allocated or held")
        lo, hi = found
        self._replace(lo, hi, self._remainder(lo, hi, [address]))

    def is_free(self, address: int) -> bool:
        found = self._range_from(address)
        return found is not None and found[0] <= address

    def _label(self, address: int) -> str:
        import netaddr

        return str(netaddr.IPAddress(address, self.version))

    def give_back(self, addresses: Iterable[int]) -> None:
        """Return freed addresses, merging with neighbouring ranges."""
        for address in sorted(set(addresses)):
            self._give_back_one(address)

    def _give_back_one(self, address: int) -> None:
        conn, block_id = self.conn, self.block_id
        left = _ENDING_AT.scalar(conn, block_id=block_id, address=address - 1)
        right = _STARTING_AT.scalar(conn, block_id=block_id, address=address + 1)
        if right is not None:
            _DROP.send(conn, block_id=block_id, first=address + 1)
        new_last = right if right is not None else address
        if left is not None:
            _RESET.send(conn, block_id=block_id, lo=left, first=left, last=new_last)
        else:
            _ADD.send(conn, block_id=block_id, first=address, last=new_last)

    def rebuild(self) -> None:
        """Recompute the free ranges from the block's addresses (after exclusions shrink)."""
        from sqlalchemy import delete, insert, select

        from melange.models import free_ranges, ip_addresses

        conn = self.conn
        conn.execute(delete(free_ranges).where(free_ranges.c.block_id == self.block_id))
        rows = conn.execute(
            select(ip_addresses.c.address)
            .where(ip_addresses.c.block_id == self.block_id)
            .order_by(ip_addresses.c.address)
        )
        batch: list[dict] = []
        start = self.exclusions.first
        for (address,) in rows:
            if address > start:
                batch.append(self._row(start, address - 1))
            start = address + 1
            if len(batch) >= 1000:
                conn.execute(insert(free_ranges), batch)
                batch = []
        if start <= self.exclusions.last:
            batch.append(self._row(start, self.exclusions.last))
        if batch:
            conn.execute(insert(free_ranges), batch)

    def _row(self, lo: int, hi: int) -> dict:
        return {"block_id": self.block_id, "first_addr": lo, "last_addr": hi}
