"""Addresses a block never hands out, as intervals and octet rules.

Network, broadcast, gateway and policy ranges are a handful of intervals;
an octet rule is periodic. Neither is ever expanded address by address, so
a rule on a /8 costs the same as on a /24.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from melange.errors import Conflict


@dataclass(frozen=True)
class Exclusions:
    first: int
    last: int
    intervals: tuple[tuple[int, int, str], ...] = ()
    octets: frozenset[int] = frozenset()
    _starts: tuple[int, ...] = field(default=(), compare=False)
    _allowed_octets: tuple[int, ...] = field(default=(), compare=False)

    @classmethod
    def build(
        cls,
        first: int,
        last: int,
        intervals: list[tuple[int, int, str]],
        octets: set[int] | frozenset[int] = frozenset(),
    ) -> Exclusions:
        """Clip, sort and merge the intervals so lookups are a bisection."""
        clipped = sorted(
            (max(lo, first), min(hi, last), why)
            for lo, hi, why in intervals
            if hi >= first and lo <= last
        )
        # Disjoint pieces, each keeping the reason of the interval it came from,
        # so `reason` names the right rule for every excluded address.
        merged: list[tuple[int, int, str]] = []
        for lo, hi, why in clipped:
            if merged and lo <= merged[-1][1]:
                lo = merged[-1][1] + 1
            if lo <= hi:
                merged.append((lo, hi, why))
        allowed = tuple(o for o in range(256) if o not in octets) if octets else ()
        return cls(
            first,
            last,
            tuple(merged),
            frozenset(octets),
            tuple(lo for lo, _, _ in merged),
            allowed,
        )

    def reason(self, address: int) -> str | None:
        """Why `address` is never handed out, or None when it may be."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and self.intervals[i][1] >= address:
            return self.intervals[i][2]
        if self.octets and (address & 0xFF) in self.octets:
            return f"its last octet {address & 0xFF} is unusable by policy"
        return None

    def refuse(self, address: int, shown: str) -> None:
        """Conflict when `address` (printed as `shown`) is one the block never hands
        out: the check of `allocate --address` and of every imported address."""
        reason = self.reason(address)
        if reason:
            raise Conflict(f"{shown} cannot be allocated: {reason}")

    def next_allowed(self, address: int) -> int | None:
        """The lowest address >= `address` inside the block that may be handed out."""
        x = max(address, self.first)
        while x <= self.last:
            i = bisect.bisect_right(self._starts, x) - 1
            if i >= 0 and self.intervals[i][1] >= x:
                x = self.intervals[i][1] + 1
                continue
            if self.octets and (x & 0xFF) in self.octets:
                if not self._allowed_octets:
                    return None
                j = bisect.bisect_left(self._allowed_octets, x & 0xFF)
                if j < len(self._allowed_octets):
                    x = (x & ~0xFF) | self._allowed_octets[j]
                else:
                    x = (((x >> 8) + 1) << 8) | self._allowed_octets[0]
                continue
            return x
        return None

    def count(self) -> int:
        """How many addresses of the block are excluded, without enumerating them."""
        total = sum(hi - lo + 1 for lo, hi, _ in self.intervals)
        if not self.octets:
            return total
        octet_hits = sum(_octet_count(self.first, self.last, o) for o in self.octets)
        overlap = sum(_octet_count(lo, hi, o) for lo, hi, _ in self.intervals for o in self.octets)
        return total + octet_hits - overlap


def _octet_count(lo: int, hi: int, octet: int) -> int:
    """Addresses x in [lo, hi] with x & 0xff == octet."""

    def upto(n: int) -> int:  # count in [0, n]
        if n < 0:
            return 0
        return (n >> 8) + (1 if (n & 0xFF) >= octet else 0)

    return upto(hi) - upto(lo - 1)
