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

A request can also be submitted with a function to call with its outcome
(`submit`: the socket's front, melanged.front, whose one thread reads every
connection and must never wait): nobody's thread waits for it, so when such a
request is next in line, a runner thread kept for that leads the lane instead,
or, on SQLite, the submitter itself once it has read what else is waiting
(`lead_here`, which never waits for the write lock: melange.lockwait).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from melange import operations
from melange.errors import MelangeError
from melange.lockwait import LockBusy, no_lock_wait
from melange.operations import Request
from melange.store import Store

log = logging.getLogger("melanged.batching")

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
    """One waiting request; `wake` is set when it is answered or must lead. A submitted
    one has `done` instead, called with its outcome, and no thread waiting."""

    request: Request
    done: Callable[[Any], None] | None = None
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
        if self.done is not None:
            try:
                self.done(outcome)
            except Exception:  # noqa: BLE001  (one caller's hand-off never stops a batch)
                log.exception("answering a batched request failed")
        self.wake.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class _Lane:
    waiting: list[_Entry] = field(default_factory=list)
    busy: bool = False  # a leader is running a transaction


def grouped(name: str) -> bool:
    """Whether operation `name` can join a lane on some backend (read at each call: the
    benchmark's contrast empties the sets)."""
    return name in BATCHED or name in SERVER_BATCHED


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
        self._runners = _Runners()
        self.stats = Stats()
        # Told after each write this melanged commits (melanged.wakeup: the watcher
        # looks at the store at once instead of at its next poll).
        self.committed: Callable[[], None] = _nothing
        # Set by the socket's front (melanged.front): takes back an SQLite lane that a
        # runner led for it (after LockBusy, or behind an HTTP leader), so that under a
        # steady stream of requests the lane goes back to being led in the front's
        # thread instead of staying with the runner for as long as requests keep coming.
        # False when it cannot (stopped, another store): the runner leads on.
        self.reclaim: Callable[[Store, tuple], bool] | None = None

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
            result = operations.run(store, name, params, actor=actor, via=via)
            if operations.OPERATIONS[name].write:
                self.committed()
            return result
        entry = _Entry(Request(name, params, actor, via))
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
            lane.waiting.append(entry)
            leading = not lane.busy
            lane.busy = True
        if not leading:
            entry.wake.wait()  # answered, or made the next leader
        if not entry.answered and self._lead(store, key, lane):
            self._runners.lead(lambda: self._lead_all(store, key, lane))
        return entry.outcome()

    def submit(self, store: Store, name: str, params: dict[str, Any], *, actor: str,
               via: str, done: Callable[[Any], None],
               lead: bool = True) -> tuple | None:  # fmt: skip
        """As `run`, but nobody waits: `done` is called with the request's result or
        exception, from the thread that ran its transaction, once that has committed.
        Only for a request that has a lane (`lane_of`). A request that finds its lane
        idle is led by a runner thread; with `lead=False`, on SQLite, the lane is
        claimed for the caller instead, who gathers more requests into it and then
        calls `lead_here` with the key returned (None: a runner leads, or the lane was
        running already). On a server a leader waits for the block's row, held by
        any other writer of the block, for as long as it is held: never in the
        caller's thread."""
        key = lane_of(store, name, params)
        if key is None:
            raise ValueError(f"{name} has no lane to join")
        entry = _Entry(Request(name, params, actor, via), done=done)
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
            lane.waiting.append(entry)
            idle = not lane.busy
            lane.busy = True
        if not idle:
            return None
        if not lead and store.backend == "sqlite":
            return key  # only SQLite's lock can be asked for without waiting (lockwait)
        self._runners.lead(functools.partial(self._lead_all, store, key, lane))
        return None

    def lead_here(self, store: Store, key: tuple) -> bool:
        """Run the lane claimed by `submit(lead=False)` in this thread, one transaction,
        without waiting for the store's write lock (melange.lockwait): taken by another
        process, the lane goes to a runner thread, which waits. True when the lane is
        still the caller's (requests it submitted meanwhile wait in it: lead again)."""
        with self._lock:
            lane = self._lanes[key]
        try:
            with no_lock_wait():
                again = self._lead(store, key, lane)
        except LockBusy:
            again = False
            self.hand_off(store, key)
        return again

    def hand_off(self, store: Store, key: tuple) -> None:
        """A lane claimed by `submit(lead=False)` led by a runner thread instead."""
        with self._lock:
            lane = self._lanes[key]
        self._runners.lead(functools.partial(self._lead_all, store, key, lane))

    def _lead_all(self, store: Store, key: tuple, lane: _Lane) -> None:
        """A runner's turn: lead the lane until it is empty, a waiting thread leads, or
        (SQLite) the socket's front takes it back."""
        while self._lead(store, key, lane):
            reclaim = self.reclaim
            if store.backend == "sqlite" and reclaim is not None and reclaim(store, key):
                return

    def _lead(self, store: Store, key: tuple, lane: _Lane) -> bool:
        """Run every request waiting in the lane in one transaction and answer each; then
        hand the lane to the first request that arrived meanwhile, if a thread waits for
        it. True when the next one was submitted (no thread waits): the caller leads on,
        or has a runner do it."""
        with self._lock:
            batch, lane.waiting = lane.waiting, []
        submitted_next = counted = requeued = False
        try:
            try:
                outcomes = _outcomes(store, batch)
            except LockBusy:  # nothing ran (lead_here): back in the lane, for a runner
                with self._lock:
                    lane.waiting[:0] = batch
                requeued = counted = True
                batch = []
                raise
            if not all(isinstance(outcome, Exception) for outcome in outcomes):
                self.committed()
            with self._lock:  # counted before anyone hears of it
                self.stats.count(len(batch))
                counted = True
            for entry, outcome in zip(batch, outcomes, strict=True):
                entry.answer(outcome)
        finally:
            for entry in batch:  # a BaseException in the leader: nobody waits forever
                if not entry.answered:
                    entry.answer(MelangeError("internal error: the batch was interrupted"))
            with self._lock:
                if not counted:
                    self.stats.count(len(batch))
                if requeued:
                    pass  # still busy: the caller hands it off
                elif not lane.waiting:
                    lane.busy = False
                    del self._lanes[key]
                elif lane.waiting[0].done is None:
                    lane.waiting[0].wake.set()  # not answered: it leads
                else:
                    submitted_next = True
        return submitted_next


class _Runners:
    """Threads that lead lanes for submitted requests, kept between turns (starting a
    thread costs about as much as a batched request's whole transaction work)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0

    def lead(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._work.put(work)
            if self._idle:
                self._idle -= 1
                return
        threading.Thread(target=self._serve, name="group-commit", daemon=True).start()

    def _serve(self) -> None:
        while True:
            work = self._work.get()
            try:
                work()
            except Exception:  # noqa: BLE001  (a runner outlives any one turn)
                log.exception("a group commit runner failed")
            with self._lock:
                self._idle += 1


def _outcomes(store: Store, batch: list[_Entry]) -> list[Any]:
    """Each request's result or exception. One alone runs exactly as without batching."""
    if len(batch) == 1:
        request = batch[0].request
        try:
            return [operations.run(store, request.name, request.params, actor=request.actor,
                                   via=request.via)]  # fmt: skip
        except LockBusy:
            raise
        except Exception as error:  # noqa: BLE001  (handed to its caller's thread)
            return [error]
    try:
        return operations.run_batch(store, [entry.request for entry in batch])
    except LockBusy:
        raise  # nothing ran: the lane goes to a thread that may wait
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


def _nothing() -> None:
    pass


GROUP = GroupCommit()  # melanged's one set of lanes (socket and HTTP)
