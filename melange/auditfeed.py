"""Which addresses changed since the last look, read from the audit trail on every backend.

Every change to an address writes its audit row in the change's own transaction,
as its last write, naming the address when it was the only one. So a reader
that keeps what it derives from addresses (melanged's DNS names) need only look
again at the addresses of the rows it has not seen, rather than at every one.

On SQLite writers commit one at a time, so audit ids grow in commit order and
"the ids above the highest seen" is exactly what committed since. On a server
an id is handed out when the row is inserted, and a transaction holding a lower
id may commit after one holding a higher: an id below the highest seen that is
not there yet is a gap, asked for again at each look until it appears or
`GAP_TTL` passes (a rolled-back transaction, or an id a Galera node skips,
leaves one for good; a commit takes milliseconds after its audit row). As a
safety net, and whenever the gaps grow past `MAX_GAPS`, the caller is told to
read everything again (None): at least every `WHOLE_EVERY` seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from melange.models import audit_log

if TYPE_CHECKING:
    from sqlalchemy import Connection

GAP_TTL = 30.0  # seconds an id below the highest seen is looked for
MAX_GAPS = 2000  # gaps beyond which everything is read again
WHOLE_EVERY = 300.0  # seconds between whole reads, whatever the feed says
CHANGES_AT = 1000  # changed rows in one look beyond which everything is read again
START_WINDOW = 1000  # ids below the highest at the start that may still be in flight
LOOKUP = 500  # gap ids in one IN (...)

Changed = list[tuple[int, int]]  # (block id, address) of each change seen


@dataclass
class AuditFeed:
    """The changes since the last `since` (see the module doc). `now` is passed in."""

    high: int | None = None  # the highest audit id seen
    # An empty trail at the start says nothing of where ids will resume (a server's
    # counter outlives deleted rows): the first ids seen then set the floor.
    floor_unknown: bool = False
    gaps: dict[int, float] = field(default_factory=dict)  # id -> when first missed
    whole_at: float = float("-inf")

    def since(self, conn: Connection, now: float) -> Changed | None:
        """Each change's (block id, address) since the last call; None when the caller
        must read everything: the first call, a change naming no single address (a
        block changed, many addresses at once), too many changes or gaps, an expired
        gap, or `WHOLE_EVERY` since the last whole read."""
        if self.high is None:
            self._start(conn, now)
            return None
        rows = self._rows(conn) if now - self.whole_at < WHOLE_EVERY else None
        if rows is None:
            self._whole(conn, now)
            return None
        top = max((row_id for row_id, _, _ in rows), default=self.high)
        seen = {row_id for row_id, _, _ in rows}
        if self.floor_unknown and seen:
            self.high, self.floor_unknown = min(seen) - 1, False
        for row_id in seen:
            self.gaps.pop(row_id, None)
        for missing in range(self.high + 1, top + 1):
            if missing not in seen:
                self.gaps[missing] = now
        self.high = max(self.high, top)
        expired = [g for g, since in self.gaps.items() if now - since >= GAP_TTL]
        for gap in expired:
            del self.gaps[gap]
        if (
            expired
            or len(self.gaps) > MAX_GAPS
            or len(rows) > CHANGES_AT
            or any(block_id is None or address is None for _, block_id, address in rows)
        ):
            self._whole(conn, now)
            return None
        return [(block_id, address) for _, block_id, address in rows]

    def follow(
        self,
        conn: Connection,
        now: float,
        whole: Callable[[], object],
        each: Callable[[int, int], object],
    ) -> bool:
        """Bring a reader's copy in step: `whole()` when everything must be read again,
        else `each(block_id, address)` for every address changed since the last call;
        whether it went address by address. Should either fail half-way, the next call
        reads whole: the feed has moved on, so it starts again."""
        try:
            touched = self.since(conn, now)
            if not touched:
                whole()
                return False
            for block_id, address in set(touched):
                each(block_id, address)
            return True
        except BaseException:
            self.high, self.floor_unknown, self.gaps = None, False, {}
            raise

    def _rows(self, conn: Connection) -> list[tuple] | None:
        """The audit rows above the highest seen, and those of the gaps that appeared;
        None when there are more than CHANGES_AT of the former."""
        a = audit_log.c
        columns = (a.id, a.block_id, a.address)
        newer = conn.execute(
            select(*columns).where(a.id > self.high).order_by(a.id).limit(CHANGES_AT + 1)
        ).all()
        if len(newer) > CHANGES_AT:
            return None
        gaps = sorted(self.gaps)
        found: list = []
        for start in range(0, len(gaps), LOOKUP):
            chunk = gaps[start : start + LOOKUP]
            found += conn.execute(select(*columns).where(a.id.in_(chunk))).all()
        return [tuple(row) for row in [*found, *newer]]

    def _start(self, conn: Connection, now: float) -> None:
        """The highest id now; the ids just below it that are not there may be in flight."""
        a = audit_log.c
        top = conn.execute(select(func.max(a.id))).scalar() or 0
        present = set(
            conn.execute(select(a.id).where(a.id > top - START_WINDOW, a.id <= top)).scalars()
        )
        self.gaps = {i: now for i in range(max(1, top - START_WINDOW + 1), top + 1)
                     if i not in present}  # fmt: skip
        self.high = top
        self.floor_unknown = top == 0
        self.whole_at = now

    def _whole(self, conn: Connection, now: float) -> None:
        """Everything is to be read again: the ids seen so far need not be looked for,
        but the gaps still young may be transactions in flight, so they are kept."""
        a = audit_log.c
        top = conn.execute(select(func.max(a.id))).scalar() or 0
        if self.high is not None and top > self.high:
            present = set(conn.execute(select(a.id).where(a.id > self.high)).scalars())
            if self.floor_unknown and present:
                self.high, self.floor_unknown = min(present) - 1, False
            for missing in range(self.high + 1, top + 1):
                if missing not in present:
                    self.gaps[missing] = now
            if len(self.gaps) > MAX_GAPS:
                self.gaps = dict(sorted(self.gaps.items())[-MAX_GAPS:])
        self.high = max(self.high or 0, top)
        self.whole_at = now
