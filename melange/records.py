"""Turning stored rows into the records commands return (stable snake_case keys).

Records are plain dicts of JSON types, so the CLI, the socket server and the
JSON output all carry the same thing.
"""

from __future__ import annotations

# The C functions socket re-exports: importing socket itself (its enums) cost a direct
# command more than the rest of this module's imports (melange.lean).
from _socket import AF_INET, AF_INET6, inet_ntop
from datetime import datetime

from melange.validate import format_mac


def ip_text(value: int | None, version: int) -> str | None:
    """Canonical text (RFC 5952 for IPv6); inet_ntop is ~10x cheaper than an object."""
    if value is None:
        return None
    if version == 4:
        return inet_ntop(AF_INET, value.to_bytes(4, "big"))
    return inet_ntop(AF_INET6, value.to_bytes(16, "big"))


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, as the contract asks."""
    if moment is None:
        return None
    return moment.replace(microsecond=0).isoformat() + "Z"


def label(name: str | None, cidr: str) -> str:
    """How a message or record names a block: its name, else its CIDR. The one place
    this is decided, so every output names a block the same way."""
    return name or cidr


def block_label(row) -> str:
    """`label` of a block row (columns name and cidr)."""
    return label(row.name, row.cidr)


def address_record(row) -> dict:
    """An address row joined with its block (columns block_*, vif_id); a hold's end is
    the one stored at release, whatever this client's own hold time is."""
    return {
        "address": ip_text(row.address, row.block_version),
        "block_id": row.block_id,
        "block": label(row.block_name, row.block_cidr),
        "network": row.block_network,
        "mac": format_mac(row.mac),
        "hostname": row.hostname,
        "dns_name": row.dns_name,
        "interface": row.vif_id,
        "tenant": row.tenant,
        "state": row.state,
        "allocated_at": iso(row.allocated_at),
        "released_at": iso(row.released_at),
        "held_until": iso(row.held_until),
    }
