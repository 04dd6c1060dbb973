"""The clock a store's work reads: the system's, unless the caller passes another.

Time decides whether a hold has ended, when a row was made, how far back
`--since 2h` reaches. A caller (the CLI, melanged, a test) passes its clock to
the `Store` (`Store(url, clock=...)`); the store makes it the current clock
around every transaction it runs and every operation run against it, and the
core reads the time with `utcnow()`. So a test that has to get past a hold
moves its clock forward instead of sleeping through the hold.

Why a context variable and not a `now` argument on every core function: the
code that reads the time sits a few calls deep in functions whose parameters
are the operations' public parameters (melange.params derives what a client
may send from them), and every such read already runs inside `Store.run` or
`operations.run`. Setting the clock there, as `audit.acting` sets who is
acting, passes it to all of them at once and keeps it per thread (melanged
serves many requests at once). Outside any store's work, `utcnow()` is the
system clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Naive UTC, as every DateTime column holds (portable across backends)."""
        ...


class SystemClock:
    """The machine's clock: what every store uses unless given another."""

    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)


SYSTEM = SystemClock()
_current: ContextVar[Clock] = ContextVar("melange_clock", default=SYSTEM)


@contextmanager
def using(clock: Clock) -> Iterator[None]:
    """Make `clock` the one `utcnow()` reads in this thread until the block ends."""
    token = _current.set(clock)
    try:
        yield
    finally:
        _current.reset(token)


def utcnow() -> datetime:
    """Now by the current clock (see `using`), as naive UTC."""
    return _current.get().now()
