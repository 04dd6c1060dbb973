"""Write transactions that do not wait for SQLite's write lock, for a thread that must
never block.

Why: melanged's socket front reads every connection in one thread; running a group
commit's batch there, instead of handing it to a runner thread, saves the two threads
passing the interpreter lock to each other at every statement and socket call (most of
melanged's cost per allocation under sixteen clients). But a write lock held by
another process (a direct-mode import, say) would then stop every connection for as
long as it is held. Inside `no_lock_wait`, a write transaction on SQLite asks for the
lock once, without the busy timeout, and raises `LockBusy` when it is taken; the caller
hands its work to a thread that may wait (melanged.batching).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from melange.lean import SQLITE_BUSY_TIMEOUT_MS

_WAITING: ContextVar[bool] = ContextVar("melange_lock_wait", default=True)


class LockBusy(Exception):
    """The store's write lock is held elsewhere and the caller asked not to wait. Not a
    MelangeError: it never reaches a user (its caller runs the work elsewhere)."""


@contextmanager
def no_lock_wait() -> Iterator[None]:
    """Write transactions begun inside raise LockBusy instead of waiting for SQLite's
    write lock (other backends wait as before: their locks are per row and block)."""
    token = _WAITING.set(False)
    try:
        yield
    finally:
        _WAITING.reset(token)


def begin_write(raw: Any) -> None:
    """BEGIN IMMEDIATE on a melange SQLite connection: waiting for the lock up to the
    busy timeout, or, inside `no_lock_wait`, not at all (LockBusy)."""
    if _WAITING.get():
        raw.execute("BEGIN IMMEDIATE")
        return
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        _wait_again(raw, quietly=True)  # the error is what the caller hears of
        if getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:  # or BUSY_*
            raise LockBusy(str(error)) from None
        raise
    _wait_again(raw)


def _wait_again(raw: Any, *, quietly: bool = False) -> None:
    """The connection's busy timeout back, for every later caller."""
    try:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    except sqlite3.Error:
        if not quietly:
            raise
