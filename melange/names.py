"""Filters that name a network or a device: valid, and naming something that exists.

A typo in a filter must not look like an empty answer: `dhcp hosts --network
typo > hostsfile` printed nothing and exited 0, and a cron job wiped every
reservation. So every operation that takes a network or device filter asks
here first, and a name that matches nothing is "not found" (exit 3).

A network exists while some block has it: blocks are what make a network
(an interface can only be created in a network that has blocks), and a
network whose last block is gone has nothing left to render. A device exists
while some interface has it. Blocks and interfaces are resolved by their own
modules (`blocks.resolve`, `interfaces`), which raise the same error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from melange.errors import NotFound
from melange.prepared import Prepared
from melange.validate import validate_name, validate_network

if TYPE_CHECKING:  # imported where a statement is built: melange.lean needs no SQLAlchemy
    from sqlalchemy import Connection


def _network_statement():
    from sqlalchemy import bindparam, select

    from melange.models import blocks

    return select(blocks.c.id).where(blocks.c.network == bindparam("network")).limit(1)


_NETWORK = Prepared(_network_statement, "names.network")  # named: it runs lean


def require_network(conn: Connection, network: str | None) -> None:
    """A network filter: None (no filter), or a valid name some block has (2, 3)."""
    if network is None:
        return
    validate_network(network)
    if _NETWORK.first(conn, network=network) is None:
        raise NotFound(f"no network {network!r} (no block has it; see `melange block list`)")


def require_device(conn: Connection, device: str | None) -> None:
    """A device filter: None (no filter), or a valid name some interface has (2, 3)."""
    from sqlalchemy import select

    from melange.models import interfaces

    if device is None:
        return
    validate_name(device, "device")
    found = conn.execute(
        select(interfaces.c.id).where(interfaces.c.device == device).limit(1)
    ).first()
    if found is None:
        raise NotFound(f"no device {device!r} (no interface has it)")
