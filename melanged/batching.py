"""Group commit: concurrent allocations that reach melanged share one transaction.

Why: a writer's transaction costs a lock, a BEGIN and a COMMIT (a disk flush on a
server) whatever it does; sixteen clients allocating from one block each paid
them in turn, queued on the block's lock, and together got no more than one
client alone. Gathered, the requests that arrive while a transaction runs are
made in the next one: one lock, one commit for all of them, a savepoint each
(melange.operations.run_batch), so each still succeeds or fails on its own.

Leader and followers, no timers: the first request of a lane (one block, or
the whole store on SQLite, which has one writer per file anyway) runs at once,
alone, exactly as it would without batching. Requests arriving while it runs
wait in the lane; when it has committed, the first of them leads the next
transaction, taking every request waiting by then. Nobody is answered before
the commit that holds their result: a follower's thread sleeps until its
leader has committed (or failed) and set its outcome.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from melange import operations
from melange.errors import MelangeError
from melange.operations import Request
from melange.store import Store

# Writes that join a lane: allocations, and releases (on a server all releases of a
# store share one lane; the batch locks their blocks in one order, operations.run_batch).
BATCHED = frozenset({"block.allocate", "ip.release"})
SERVER_BATCHED = frozenset({"block.allocate", "ip.release"})


@dataclass
class Stats:
    """What the lanes did: transactions run, requests served, the largest batch, and how
    many transactions had each number of requests."""

    transactions: int = 0
    requests: int = 0
    largest: int = 0
    sizes: Counter[int] = field(default_factory=Counter)

    def count(self, size: int) -> None:
        self.transactions += 1
        self.requests += size
        self.largest = max(self.largest, size)
        self.sizes[size] += 1

    def snapshot(self) -> dict[str, Any]:
        return {"transactions": self.transactions, "requests": self.requests,
                "largest": self.largest, "sizes": dict(self.sizes)}  # fmt: skip

    def batched(self) -> int:
        """Requests that shared a transaction with another."""
        return self.requests - self.transactions


@dataclass
class _Entry:
    """One waiting request; `wake` is set when it is answered or must lead."""

    request: Request
    wake: threading.Event = field(default_factory=threading.Event)
    answered: bool = False
    result: Any = None
    error: BaseException | None = None

    def answer(self, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            self.error = outcome
        else:
            self.result = outcome
        self.answered = True
        self.wake.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class _Lane:
    waiting: list[_Entry] = field(default_factory=list)
    busy: bool = False  # a leader is running a transaction


def lane_of(store: Store, name: str, params: dict[str, Any]) -> tuple | None:
    """Which lane a request joins, or None to run it on its own: every batched write
    of an SQLite store shares one. On a server, allocations from one block do (as the
    caller named it: two spellings of one block make two lanes, never a wrong one), and
    releases share one lane of their own: an address's block is known only once it is
    read, so their batch reads them first and locks the blocks in order."""
    if store.backend == "sqlite":
        return (store, "") if name in BATCHED else None
    if name not in SERVER_BATCHED:
        return None
    if name == "ip.release":
        return (store, "release", "")
    block = params.get("block")
    return (store, "block", block) if isinstance(block, str) else None


class GroupCommit:
    """The lanes of one melanged, shared by its socket and HTTP servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[tuple, _Lane] = {}
        self.stats = Stats()

    def waiting(self) -> int:
        """Requests queued behind a running transaction, in every lane."""
        with self._lock:
            return sum(len(lane.waiting) for lane in self._lanes.values())

    def running(self) -> int:
        """Lanes whose leader is running a transaction."""
        with self._lock:
            return len(self._lanes)

    def run(self, store: Store, name: str, params: dict[str, Any], *, actor: str,
            via: str) -> Any:  # fmt: skip
        """operations.run, gathered with the concurrent requests of the same lane."""
        key = lane_of(store, name, params)
        if key is None:
            return operations.run(store, name, params, actor=actor, via=via)
        entry = _Entry(Request(name, params, actor, via))
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
            lane.waiting.append(entry)
            leading = not lane.busy
            lane.busy = True
        if not leading:
            entry.wake.wait()  # answered, or made the next leader
        if not entry.answered:
            self._lead(store, key, lane)
        return entry.outcome()

    def _lead(self, store: Store, key: tuple, lane: _Lane) -> None:
        """Run every request waiting in the lane in one transaction, answer each, and
        hand the lane to the first request that arrived meanwhile (if any)."""
        with self._lock:
            batch, lane.waiting = lane.waiting, []
        try:
            outcomes = _outcomes(store, batch)
            for entry, outcome in zip(batch, outcomes, strict=True):
                entry.answer(outcome)
        finally:
            for entry in batch:  # a BaseException in the leader: nobody waits forever
                if not entry.answered:
                    entry.answer(MelangeError("internal error: the batch was interrupted"))
            with self._lock:
                self.stats.count(len(batch))
                if lane.waiting:
                    lane.waiting[0].wake.set()  # not answered: it leads
                else:
                    lane.busy = False
                    del self._lanes[key]


def _outcomes(store: Store, batch: list[_Entry]) -> list[Any]:
    """Each request's result or exception. One alone runs exactly as without batching."""
    if len(batch) == 1:
        request = batch[0].request
        try:
            return [operations.run(store, request.name, request.params, actor=request.actor,
                                   via=request.via)]  # fmt: skip
        except Exception as error:  # noqa: BLE001  (handed to its caller's thread)
            return [error]
    try:
        return operations.run_batch(store, [entry.request for entry in batch])
    except Exception as error:  # noqa: BLE001  (the transaction failed: for every caller)
        return [_copy(error) for _ in batch]


def _copy(error: Exception) -> Exception:
    """One exception object per caller: each thread raises (and adds a traceback to) its
    own. The copy keeps the class, message and exit code."""
    import copy

    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001  (an exception that cannot be copied: shared)
        return error


GROUP = GroupCommit()  # melanged's one set of lanes (socket and HTTP)
