"""Coalescing bursts of changes into few renders (consul-template's `wait`, leading edge).

A change that comes `min_wait` or more after the last render renders at once,
so a lone allocation reaches DHCP and DNS in milliseconds even when lone
changes follow each other every few hundred milliseconds. Changes that keep
coming sooner are gathered: the next render waits until nothing changed for
`min_wait`, but never longer than `max_wait` after the first change it
gathers. So renders (and the reloads they may cost the DHCP server) are never
closer than `min_wait` apart but for the last of a burst, and no change waits
more than `max_wait` (plus a poll).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Quiescence:
    min_wait: float = 0.2
    max_wait: float = 2.0
    first_pending: float | None = None
    last_change: float | None = None
    last_render: float = float("-inf")

    def changed(self, now: float) -> None:
        if self.first_pending is None:
            self.first_pending = now
        self.last_change = now

    def due(self, now: float) -> bool:
        """Whether the gathered changes should be rendered now."""
        at = self.due_at()
        return at is not None and now >= at

    def due_at(self) -> float | None:
        """When the gathered changes fall due, or None when none are pending: the first
        change once a render is min_wait old (leading edge); otherwise min_wait of quiet,
        or max_wait after the first change gathered, whichever comes first. Also how
        long the watcher may wait for a wake-up before it must look again."""
        if self.first_pending is None or self.last_change is None:
            return None
        if self.first_pending - self.last_render >= self.min_wait:
            return self.first_pending
        return min(self.last_change + self.min_wait, self.first_pending + self.max_wait)

    def rendered(self, now: float) -> None:
        self.first_pending = None
        self.last_change = None
        self.last_render = now
