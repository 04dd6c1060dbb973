"""Letting one test have the machine to itself while pytest-xdist runs the others.

Every test of a run holds a shared lock while it runs; a test that must run alone (a
Galera cluster under twelve writers runs out of certification retries when starved of
CPU) takes it exclusively. A second lock, the gate, is held by the test waiting to run
alone, so the others cannot keep it waiting forever: they queue at the gate instead.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLock:
    """The shared/exclusive lock of one test run, in a directory all its workers share."""

    def __init__(self, directory: Path) -> None:
        self.gate = directory / "run-lock.gate"
        self.room = directory / "run-lock.room"

    @contextmanager
    def holding(self, *, alone: bool) -> Iterator[None]:
        room = os.open(self.room, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            gate = os.open(self.gate, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(gate, fcntl.LOCK_EX)
                fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            finally:
                os.close(gate)  # closing releases the gate
            yield
        finally:
            os.close(room)
