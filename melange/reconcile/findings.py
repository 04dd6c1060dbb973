"""What every reconcile check shares: the shape of a finding, its kinds, the network filter."""

from __future__ import annotations

from typing import Any

import netaddr

from melange.models import blocks, ip_addresses

IP = ip_addresses.c
B = blocks.c

# Kinds that --fix repairs in the store (the others in the store need an operator).
STORE_FIXABLE = ("counter_mismatch", "interface_missing", "active_mac_missing")
HOSTS_KINDS = ("hosts_file_missing", "hosts_missing", "hosts_extra", "hosts_different")
LEASE_KINDS = ("lease_unknown_address", "lease_mac_mismatch")


def finding(kind: str, **objects: Any) -> dict:
    """One piece of drift: `kind` first, then what it is about, in a fixed order."""
    return {"kind": kind, **objects}


def blocks_where(query: Any, network: str | None) -> Any:
    """`query` (which joins blocks) narrowed to one network's blocks, when given."""
    return query if network is None else query.where(B.network == network)


def address_text(value: int, version: int) -> str:
    """An address as text even when it does not fit its block's family (a planted row)."""
    if version == 4 and value >= 1 << 32:
        version = 6
    return str(netaddr.IPAddress(value, version))
