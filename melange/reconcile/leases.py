"""Lease drift: leases the DHCP server handed out that the store no longer backs.

A lease outlives a moved or released reservation and keeps its address from
the new owner until it expires. The backend reads the leases; which of them
are stale is decided here, against the store.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from melange import holds
from melange.dhcp_backend import Lease
from melange.models import blocks
from melange.reconcile.findings import IP, B, blocks_where, finding
from melange.records import iso
from melange.validate import format_mac

IN_BATCH = 500  # addresses per IN (...) lookup: well under every backend's parameter limit


def lease_findings(conn: Connection, leases: list[Lease], network: str | None = None) -> list[dict]:
    """Leases for addresses of the (network's) blocks that the store does not allocate,
    and leases whose MAC is not the one the address is allocated to.

    Addresses outside every block are left alone: the server may serve ranges
    melange does not manage, and their leases are none of its business.
    """
    spans = _merged_blocks(conn, network)
    managed = [
        lease for lease in leases if _inside(spans[lease.address.version], int(lease.address))
    ]
    owners = _owners(conn, (int(lease.address) for lease in managed), network)
    found = []
    for lease in managed:
        macs = owners.get((lease.address.version, int(lease.address)))
        if not macs:
            found.append(finding("lease_unknown_address", **_shown(lease)))
        elif lease.address.version == 4 and lease.mac not in macs:
            shown = _shown(lease)
            expected = ",".join(sorted(format_mac(m) or "" for m in macs))
            found.append(
                finding(
                    "lease_mac_mismatch",
                    address=shown["address"],
                    mac=shown["mac"],
                    expected_mac=expected or None,
                    hostname=shown["hostname"],
                    expires=shown["expires"],
                )
            )
    return found


def _shown(lease: Lease) -> dict:
    return {
        "address": str(lease.address),
        "mac": lease.mac_text,
        "hostname": lease.hostname,
        "expires": _expiry_text(lease.expires),
    }


def _merged_blocks(conn: Connection, network: str | None) -> dict[int, list[tuple[int, int]]]:
    """The blocks' address space per family as sorted disjoint intervals (for bisection)."""
    rows = conn.execute(
        blocks_where(select(B.version, B.first_addr, B.last_addr), network).order_by(
            B.version, B.first_addr
        )
    ).all()
    merged: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for version, first, last in rows:
        spans = merged[version]
        if spans and first <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], last))
        else:
            spans.append((first, last))
    return merged


def _inside(spans: list[tuple[int, int]], value: int) -> bool:
    i = bisect.bisect_right(spans, (value, float("inf"))) - 1
    return i >= 0 and spans[i][1] >= value


def _owners(
    conn: Connection, addresses: Iterable[int], network: str | None
) -> dict[tuple[int, int], set[int | None]]:
    """MACs the store allocates each address to, by (family, address)."""
    values = sorted(set(addresses))
    owners: dict[tuple[int, int], set[int | None]] = {}
    for start in range(0, len(values), IN_BATCH):
        query = blocks_where(
            select(B.version, IP.address, IP.mac)
            .join(blocks, B.id == IP.block_id)
            .where(holds.allocated(IP), IP.address.in_(values[start : start + IN_BATCH])),
            network,
        )
        for version, address, mac in conn.execute(query):
            owners.setdefault((version, address), set()).add(mac)
    return owners


def _expiry_text(expires: int) -> str | None:
    if not expires:
        return None
    return iso(datetime.fromtimestamp(expires, UTC).replace(tzinfo=None))
