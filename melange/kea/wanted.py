"""The reservations the store wants in Kea's host database, read whole once and then
only at the addresses the audit trail names as changed (melange.auditfeed).

Why: a pass read every reservation (0.1-0.3 s of CPU at 50,000, more on a server
store) to find the one a new allocation added; the time from commit to a served
lease was mostly that read. `changed` names the Kea keys (subnet id, MAC) the last
read may have changed, for a difference over those only; None after a whole read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from melange.auditfeed import AuditFeed
from melange.kea.render import Reservation, reservations_by_address

if TYPE_CHECKING:
    from sqlalchemy import Connection

Key = tuple[int, int]  # Kea's: (subnet id, MAC)


class WantedReservations:
    def __init__(self, network: str | None) -> None:
        self.network = network
        self.by_address: dict[tuple[int, int], Reservation] = {}
        self.feed = AuditFeed()
        self.changed: set[Key] | None = None

    def read(self, conn: Connection) -> None:
        """Bring `by_address` in step with the store, in the caller's transaction."""
        changed: set[Key] = set()

        def whole() -> None:
            self.by_address = reservations_by_address(conn, self.network)

        def each(block_id: int, address: int) -> None:
            where = (block_id, address)
            old = self.by_address.pop(where, None)
            new = reservations_by_address(conn, self.network, where).get(where)
            for reservation in (old, new):
                if reservation is not None:
                    changed.add((reservation.subnet_id, reservation.mac))
            if new is not None:
                self.by_address[where] = new

        followed = self.feed.follow(conn, time.monotonic(), whole, each)
        self.changed = changed if followed else None
