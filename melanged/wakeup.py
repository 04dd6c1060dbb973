"""What ends melanged's wait between two looks at the store before its poll is due.

melanged looks at the store every `poll_interval` (20 ms), so a change waits for
half a poll on average before its pass starts: 10 ms of the 30 ms from an
allocation's commit to its name answering in DNS. Two kinds of commit can be
heard at once instead:

- a commit to an SQLite store, from any process: SQLite appends it to the
  `-wal` file (or, outside WAL mode, writes the database file), and inotify on
  the file's directory says so. A read writes neither (SQLite's `-shm` index is
  a shared mapping, which inotify does not see), so melanged's own reads do not
  wake it;
- a commit melanged makes itself for a client of its socket or HTTP API, on any
  backend: the group commit (melanged.batching) calls `poke` once it is durable.

A server backend's commits from other processes are still found by the poll.
A wake-up only starts a look at the store (its fingerprint); whether a pass
follows is the quiescence rule's choice (melanged.quiescence), as after a poll.
"""

from __future__ import annotations

import logging
import os
import select
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("melanged")

try:  # Linux only; elsewhere the poll alone finds every change
    from inotify_simple import INotify, flags
except (ImportError, OSError):  # pragma: no cover
    INotify = None

# A commit appends to the -wal file (IN_MODIFY); a first commit creates it; a
# checkpoint or a commit outside WAL mode writes the database file itself. Not
# IN_CLOSE_WRITE: SQLite opens its files read-write, so every reader's close
# would be one.
WATCHED = ("MODIFY", "CREATE", "MOVED_TO")


class Wakeup:
    """A wait of at most `timeout` seconds that a commit (or `poke`) ends early."""

    def __init__(self, sqlite_file: Path | None = None) -> None:
        self._read_end, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._inotify: Any = None  # an inotify_simple.INotify while watching
        self._names: frozenset[str] = frozenset()
        self._last = float("-inf")  # when a wake-up last ended a wait
        if sqlite_file is not None and INotify is not None:
            self._watch(sqlite_file)

    def _watch(self, sqlite_file: Path) -> None:
        """inotify on the store's directory, for the database file and its -wal; a link
        is followed first, since SQLite puts the -wal beside the file it names."""
        sqlite_file = Path(os.path.realpath(sqlite_file))
        mask = 0
        for name in WATCHED:
            mask |= getattr(flags, name)
        try:
            inotify = INotify()
        except OSError as error:  # out of inotify instances: the poll still runs
            log.warning("cannot watch %s for commits (%s); polling only", sqlite_file, error)
            return
        try:
            inotify.add_watch(str(sqlite_file.parent), mask)
        except OSError as error:
            inotify.close()
            log.warning("cannot watch %s for commits (%s); polling only", sqlite_file, error)
            return
        self._inotify = inotify
        self._names = frozenset({sqlite_file.name, sqlite_file.name + "-wal"})

    @property
    def watching(self) -> bool:
        """Whether commits by other processes to the store's file are heard."""
        return self._inotify is not None

    def poke(self) -> None:
        """End the current (or next) wait: melanged has just committed a change.
        Safe from any thread; pokes before a wait are merged into one wake-up."""
        write_end = self._write_end
        if write_end < 0:
            return  # closed: melanged is stopping or has a new store
        try:
            os.write(write_end, b"!")
        except OSError:
            pass  # the pipe is full: a wake-up is pending anyway

    def wait(self, timeout: float, *, gap: float = 0.0) -> bool:
        """Wait up to `timeout` seconds; True if a commit or a poke ended the wait.

        A wake-up less than `gap` seconds after the last one that ended a wait ends
        this one only `gap` after that (or at the timeout, if sooner). So a lone
        commit is looked at at once, and a stream of them costs one look per `gap`
        besides the polls, not one per commit: each look is a query, on the GIL that
        melanged's socket and HTTP servers share with the watcher."""
        deadline = time.monotonic() + timeout
        if not self._woken(timeout):
            return False
        now = time.monotonic()
        due = self._last + gap
        if due > now:
            time.sleep(min(due, deadline) - now)
            if due > deadline:
                return False
        self._last = time.monotonic()
        return True

    def _woken(self, timeout: float) -> bool:
        """Whether a poke or a commit came within `timeout` seconds (both drained). The
        events of other files of the store's directory (melanged's own hosts files, a
        lease file) are read and the wait goes on."""
        if self._read_end < 0:
            raise ValueError("wait on a closed Wakeup")
        fds = [self._read_end]
        if self._inotify is not None:
            fds.append(self._inotify.fileno())
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            woken = False
            if self._read_end in ready:
                _drain(self._read_end)
                woken = True
            if self._inotify is not None and self._inotify.fileno() in ready:
                woken = self._committed() or woken
            if woken:
                return True

    def _committed(self) -> bool:
        """Whether the pending inotify events name the store's files (not another file
        of the same directory, as a journal of another store)."""
        assert self._inotify is not None
        return any(event.name in self._names for event in self._inotify.read(timeout=0))

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        write_end, self._write_end = self._write_end, -1
        for fd in (self._read_end, write_end):
            if fd >= 0:
                os.close(fd)
        self._read_end = -1


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
