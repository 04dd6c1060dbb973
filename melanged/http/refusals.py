"""How many refused requests the audit trail takes from one client, and from all.

Why: a request without a valid token costs its sender nothing, and each refusal
was a row written in a transaction of its own (on SQLite, taking the store's
one writer from the clients that have a right to it). A flood of them filled
the trail and slowed every writer. Each client address has a bucket of
`burst` rows that refills at `per_second`; all clients together share one of
`total_burst` and `total_per_second` (so many addresses buy no more). A
refusal past either is answered all the same (401/403) and counted, not
written; the client's next written refusal carries how many of its refusals
were left out (`suppressed` in the row's outcome), so the trail still says
how many there were. Ordinary use, a script with a stale token retrying, never
comes near the bounds.

The clock is passed in, not read here, so the tests run on a clock of their own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

BURST = 1000  # rows one client's refusals may write at once
PER_SECOND = 50.0  # and then, per second
TOTAL_BURST = 2000  # rows all clients' refusals may write at once
TOTAL_PER_SECOND = 100.0
CLIENTS = 10_000  # client addresses remembered, the least recent forgotten beyond


@dataclass
class _Bucket:
    capacity: float
    per_second: float
    level: float
    at: float

    def take(self, now: float) -> bool:
        """One token if there is one, after refilling for the time since the last look."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.per_second)
        self.at = max(self.at, now)
        if self.level < 1.0:
            return False
        self.level -= 1.0
        return True


@dataclass
class _Client:
    bucket: _Bucket
    suppressed: int = 0


@dataclass
class RefusalBudget:
    """Which refusals are written to the audit trail (see the module doc)."""

    burst: int = BURST
    per_second: float = PER_SECOND
    total_burst: int = TOTAL_BURST
    total_per_second: float = TOTAL_PER_SECOND
    clients: int = CLIENTS
    _total: _Bucket | None = None
    _known: OrderedDict[str, _Client] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, client: str, now: float) -> int | None:
        """None when this refusal from `client` is not to be written (it is counted);
        otherwise how many of the client's refusals were left out since its last
        written one (0 in ordinary use)."""
        with self._lock:
            entry = self._known.get(client)
            if entry is None:
                entry = _Client(_Bucket(self.burst, self.per_second, float(self.burst), now))
                self._known[client] = entry
                if len(self._known) > self.clients:
                    self._known.popitem(last=False)
            else:
                self._known.move_to_end(client)
            if self._total is None:
                total = float(self.total_burst)
                self._total = _Bucket(self.total_burst, self.total_per_second, total, now)
            # The client's own bucket first: a client over its bound takes nothing of
            # what all the others share.
            if not entry.bucket.take(now):
                entry.suppressed += 1
                return None
            if not self._total.take(now):
                entry.bucket.level += 1.0  # not written: the client keeps its token
                entry.suppressed += 1
                return None
            suppressed, entry.suppressed = entry.suppressed, 0
            return suppressed
