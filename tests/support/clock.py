"""A clock a test moves forward, handed to the store instead of sleeping through a hold."""

from __future__ import annotations

from datetime import datetime, timedelta

from melange.clock import SYSTEM


class FakeClock:
    """The system clock plus whatever the test has skipped with `advance`.

    It starts at the real time, so a store it runs beside agrees with processes on the
    real clock (melanged, another client) until the test moves it on; moving it forward
    makes every hold it made or reads end that much sooner, at once.
    """

    def __init__(self) -> None:
        self.skipped = timedelta(0)

    def now(self) -> datetime:
        return SYSTEM.now() + self.skipped

    def advance(self, seconds: float) -> None:
        self.skipped += timedelta(seconds=seconds)
