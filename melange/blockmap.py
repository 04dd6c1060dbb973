"""A block's map: its address space as a grid of cells, each with what it holds.

What an operator reads at a glance (phpIPAM's subnet map): which addresses are
allocated, held after a release, never handed out (network, broadcast, gateway,
a policy's ranges) or free. A block of up to 256 addresses gets one cell per
address, naming its MAC, hostname and interface; a bigger one one cell per
aligned group (a /24 of an IPv4 /16..../23, otherwise the prefix that gives at
most 256 cells), with counts. `within` narrows a big block's map to one of its
cells, so a /16 is read a /24 at a time.

The cost never grows with the block's addresses beyond one grouped query: the
counts of a /16 holding 60,000 addresses are one GROUP BY on the leading bytes of
the stored address (16 bytes, big-endian: a cell of 2**(8k) addresses is a
common prefix of 16-k bytes), and unusable addresses are counted from the
block's exclusions (melange.exclusions), never enumerated. At most 256 cells
are built, whatever the block's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import netaddr
from sqlalchemy import Connection, LargeBinary, func, select, type_coerce

from melange import blocks as block_ops
from melange import holds, subnets
from melange.clock import utcnow
from melange.errors import InvalidInput
from melange.exclusions import Exclusions
from melange.models import interfaces, ip_addresses
from melange.records import ip_text
from melange.validate import format_mac

MAX_CELLS = 256
STATES = ("allocated", "held", "unusable", "free")


@dataclass(frozen=True)
class Grid:
    """The map's shape: the range it covers and the size of a cell (2**bits addresses)."""

    version: int
    first: int
    last: int
    bits: int  # 0: one cell per address

    @classmethod
    def of(cls, version: int, first: int, last: int) -> Grid:
        """Cells of one address when the range has up to MAX_CELLS of them, else of the
        fewest whole bytes of address that leave at most MAX_CELLS cells."""
        host_bits = (last - first + 1).bit_length() - 1
        bits = 0
        while host_bits - bits > 8:
            bits += 8
        return cls(version, first, last, bits)

    def cidr(self, start: int) -> str:
        """The cell starting at `start`, as text (an address, or a CIDR)."""
        width = 32 if self.version == 4 else 128
        text = ip_text(start, self.version) or ""
        return text if self.bits == 0 else f"{text}/{width - self.bits}"


def block_map(conn: Connection, block: str, within: str | None = None) -> dict[str, Any]:
    """The map of `block` (id, name or CIDR), or of the cell `within` of it: the range,
    the cell size, totals per state, and the cells in address order."""
    row = block_ops.resolve(conn, block)
    first, last = row.first_addr, row.last_addr
    if within is not None:
        first, last = _within(row, within)
    grid = Grid.of(row.version, first, last)
    tree = block_ops.Tree.of([*subnets.ancestors(conn, row), row,
                              *subnets.descendants(conn, row.id)])  # fmt: skip
    leaves = tree.leaves(row)
    rules = block_ops.policy_rules(conn, [r.policy_id for r in tree.by_id.values()])
    exclusions = [block_ops.exclusions_of(leaf, subnets.chain_in(leaf, tree.by_id), rules)
                  for leaf in leaves]  # fmt: skip
    leaf_ids = [leaf.id for leaf in leaves]
    if grid.bits == 0:
        cells = _address_cells(conn, grid, leaf_ids, exclusions)
    else:
        cells = _group_cells(conn, grid, leaf_ids, exclusions)
    totals = {state: 0 for state in STATES}
    for cell in cells:
        for state in STATES:
            totals[state] += cell[state]
    return {
        "block_id": row.id,
        "cidr": row.cidr,
        "range": str(
            netaddr.IPNetwork(f"{ip_text(first, row.version)}/{_prefix(row.version, first, last)}")
        ),  # fmt: skip
        "cell_prefix": (32 if row.version == 4 else 128) - grid.bits,
        "per_address": grid.bits == 0,
        "totals": totals,
        "cells": cells,
    }


def _prefix(version: int, first: int, last: int) -> int:
    width = 32 if version == 4 else 128
    return width - ((last - first + 1).bit_length() - 1)


def _within(row: Any, within: str) -> tuple[int, int]:
    """The range of `within`, a CIDR inside the block (InvalidInput otherwise)."""
    try:
        net = netaddr.IPNetwork(within)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise InvalidInput(f"{within[:60]!r} is not a CIDR") from None
    first, last = int(net.first), int(net.last)
    if net.version != row.version or first < row.first_addr or last > row.last_addr:
        raise InvalidInput(f"{net} is not inside block {row.cidr}")
    return first, last


def _live_rows(leaf_ids: list[int], first: int, last: int, now: Any) -> Any:
    ip = ip_addresses.c
    return (ip.block_id.in_(leaf_ids), ip.address >= first, ip.address <= last,
            holds.live(ip, now))  # fmt: skip


def _address_cells(conn: Connection, grid: Grid, leaf_ids: list[int],
                   exclusions: list[Exclusions]) -> list[dict]:  # fmt: skip
    """One cell per address: at most MAX_CELLS rows read, with their MACs and names."""
    ip = ip_addresses.c
    query = (
        select(ip.address, ip.state, ip.mac, ip.hostname, interfaces.c.vif_id)
        .outerjoin(interfaces, interfaces.c.id == ip.interface_id)
        .where(*_live_rows(leaf_ids, grid.first, grid.last, utcnow()))
    )
    used = {r.address: r for r in conn.execute(query)}
    cells = []
    for address in range(grid.first, grid.last + 1):
        cell = {"start": grid.cidr(address), **{state: 0 for state in STATES}}
        found = used.get(address)
        if found is not None:
            cell[found.state] = 1
            cell.update(mac=format_mac(found.mac), hostname=found.hostname,
                        interface=found.vif_id)  # fmt: skip
        else:
            reason = _reason(exclusions, address)
            if reason is None:
                cell["free"] = 1
            else:
                cell["unusable"] = 1
                cell["reason"] = reason
        cells.append(cell)
    return cells


def _reason(exclusions: list[Exclusions], address: int) -> str | None:
    """Why `address` is never handed out. A parent's space no subnet covers is free,
    as its utilisation counts it (it can still be subnetted)."""
    for excluded in exclusions:
        if excluded.first <= address <= excluded.last:
            return excluded.reason(address)
    return None


def _group_cells(conn: Connection, grid: Grid, leaf_ids: list[int],
                 exclusions: list[Exclusions]) -> list[dict]:  # fmt: skip
    """One cell per 2**bits addresses: live addresses counted per cell and state in
    one grouped query on the stored address's leading bytes."""
    ip = ip_addresses.c
    keep = 16 - grid.bits // 8
    prefix = type_coerce(func.substr(ip.address, 1, keep), LargeBinary)
    query = (
        select(prefix.label("cell"), ip.state, func.count())
        .where(*_live_rows(leaf_ids, grid.first, grid.last, utcnow()))
        .group_by(prefix, ip.state)
    )
    counts: dict[int, dict[str, int]] = {}
    for cell_prefix, state, count in conn.execute(query):
        start = int.from_bytes(bytes(cell_prefix), "big") << grid.bits
        counts.setdefault(start, {})[state] = int(count)
    size = 1 << grid.bits
    cells = []
    for start in range(grid.first, grid.last + 1, size):
        found = counts.get(start, {})
        unusable = sum(_excluded_in(e, start, start + size - 1) for e in exclusions)
        allocated, held = found.get("allocated", 0), found.get("held", 0)
        cells.append({
            "start": grid.cidr(start), "allocated": allocated, "held": held,
            "unusable": unusable, "free": max(0, size - allocated - held - unusable),
        })  # fmt: skip
    return cells


def _excluded_in(excluded: Exclusions, lo: int, hi: int) -> int:
    """How many addresses of [lo, hi] the block never hands out: its rules clipped to
    the cell and counted (melange.exclusions), never enumerated."""
    lo, hi = max(lo, excluded.first), min(hi, excluded.last)
    if lo > hi:
        return 0
    return Exclusions.build(lo, hi, list(excluded.intervals), excluded.octets).count()
