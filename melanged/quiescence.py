"""Coalescing bursts of changes into few renders (consul-template's `wait`, leading edge).

A change after a quiet spell renders at once, so a lone allocation reaches
DHCP in milliseconds. Changes that keep coming are gathered: the next render
waits until nothing changed for `min_wait`, but never longer than `max_wait`
after the first change it gathers.
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
        if self.first_pending is None or self.last_change is None:
            return False
        if self.first_pending - self.last_render > self.max_wait:
            return True  # leading edge: the first change after a quiet spell
        quiet = now - self.last_change >= self.min_wait
        return quiet or now - self.first_pending >= self.max_wait

    def rendered(self, now: float) -> None:
        self.first_pending = None
        self.last_change = None
        self.last_render = now
