"""The allocation rules of the contract, written out address by address: the reference
the engine is checked against (tests/test_engine_reference.py,
tests/test_allocation_properties.py).

The engine keeps free ranges and interval/octet exclusions so it never walks a
block; this model does exactly that walk, on blocks small enough to scan. An
address is named by its index in the block (0 is the block's first address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Block:
    version: int
    prefixlen: int
    first: int  # the block's first address, as an integer
    gateway: int | None  # an index into the block
    ranges: tuple[tuple[int, int], ...]  # policy (offset, length); a negative offset counts back
    octets: tuple[int, ...]  # policy octets (only IPv4 honours them)
    with_policy: bool

    @property
    def size(self) -> int:
        return 2 ** ((32 if self.version == 4 else 128) - self.prefixlen)

    def text(self, index: int) -> str:
        cls = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        return str(cls(self.first + index))

    @property
    def cidr(self) -> str:
        return f"{self.text(0)}/{self.prefixlen}"


def allowed(block: Block, index: int) -> bool:
    """Whether the contract lets the block hand out the address at `index` at all."""
    if not 0 <= index < block.size:
        return False
    if block.version == 4 and block.prefixlen < 31 and index in (0, block.size - 1):
        return False  # network and broadcast
    if block.version == 6 and block.prefixlen < 127 and index == 0:
        return False  # the subnet-router anycast address
    if index == block.gateway:
        return False
    if block.with_policy:
        for offset, length in block.ranges:
            start = offset if offset >= 0 else block.size + offset
            if start <= index < start + length:
                return False
        if block.version == 4 and (block.first + index) & 0xFF in block.octets:
            return False
    return True


def forbidden(block: Block) -> set[int]:
    """Indices the block must never hand out."""
    return {i for i in range(block.size) if not allowed(block, i)}


def free(block: Block, taken: set[int] | dict[int, object]) -> list[int]:
    """Every allowed index not in `taken` (allocated or held), ascending: what an
    allocation hands out, lowest first."""
    return [i for i in range(block.size) if i not in taken and allowed(block, i)]


@dataclass
class Model:
    """A block's addresses through allocate, release, restore and expiring holds.

    Each operation returns (the contract's exit code, the indices handed out or None).
    `allocated` and `held` map an index to the index of its MAC in the caller's list.
    """

    block: Block
    forbidden: set[int] = field(init=False)
    allocated: dict[int, int | None] = field(default_factory=dict)
    held: dict[int, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.forbidden = forbidden(self.block)

    def free(self) -> list[int]:
        return free(self.block, self.allocated.keys() | self.held.keys())

    def holder(self, mac: int) -> int | None:
        return next((i for i, m in self.allocated.items() if m == mac), None)

    def allocate(self, mac: int | None, index: int | None, count: int | None):
        if count is not None and (count < 1 or mac is not None or index is not None):
            return 2, None
        if index is not None and not 0 <= index < self.block.size:  # outside the block
            return 2, None
        if count is not None:
            return self._allocate_count(count)
        if mac is not None:
            existing = self.holder(mac)
            if existing is not None:
                if index is not None and index != existing:
                    return 4, None
                return 0, [existing]
        if index is not None:
            if index in self.forbidden or index in self.allocated or index in self.held:
                return 4, None
            self.allocated[index] = mac
            return 0, [index]
        lowest = self.free()[:1]
        if not lowest:
            return 5, None
        self.allocated[lowest[0]] = mac
        return 0, lowest

    def _allocate_count(self, count: int):
        """`--count k`: the k lowest free, or nothing at all (exhausted)."""
        chosen = self.free()[:count]
        if len(chosen) < count:
            return 5, None
        for i in chosen:
            self.allocated[i] = None
        return 0, chosen

    def release(self, index: int, now: bool):
        if index in self.allocated:
            mac = self.allocated.pop(index)
            if not now:
                self.held[index] = mac
            return 0, None
        if index in self.held:
            if not now:
                return 4, None
            del self.held[index]
            return 0, None
        return 3, None

    def restore(self, index: int):
        if index in self.allocated:
            return 4, None
        if index in self.held:
            mac = self.held[index]
            if mac is not None and self.holder(mac) is not None:
                return 4, None
            self.allocated[index] = self.held.pop(index)
            return 0, None
        return 3, None

    def expire(self, index: int) -> bool:
        """The hold on `index` runs out: the address is free again."""
        if index in self.held:
            del self.held[index]
            return True
        return False
