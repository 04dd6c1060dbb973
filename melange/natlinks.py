"""NAT mappings as they are read: the one home of what a mapping shows.

A mapping (`nat_mappings`) joins an inside-global address to an inside-local one.
It shows only while both addresses are allocated: a held address's mappings are
kept (so `ip restore` brings them back) but shown nowhere, and they go with the
address when it is freed (FK cascade). `ip show` reads an address's links here;
melange.nat changes them (and imports melange.addresses, which imports this).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from melange import holds
from melange.prepared import Prepared
from melange.records import ip_text, iso, label

if TYPE_CHECKING:  # imported where a statement is built: melange.lean needs no SQLAlchemy
    from sqlalchemy import Connection, Select


@functools.cache
def _tables() -> tuple[Any, Any, Any, Any, Any]:
    """(mappings' columns, inside-global and inside-local address aliases, their blocks)."""
    from melange.models import blocks, ip_addresses, nat_mappings

    return (
        nat_mappings.c,
        ip_addresses.alias("inside_global"),
        ip_addresses.alias("inside_local"),
        blocks.alias("global_block"),
        blocks.alias("local_block"),
    )


def __getattr__(name: str) -> Any:
    """`natlinks.G`, `.L`, `.GB`, `.LB`, `.N` for the modules that build on these aliases."""
    names = ("N", "G", "L", "GB", "LB")
    if name in names:
        return _tables()[names.index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def joined() -> Select:
    """Every mapping with both addresses and their blocks, in (global, local) order."""
    from sqlalchemy import select

    N, G, L, GB, LB = _tables()
    return (
        select(
            N.created_at,
            G.c.id.label("global_id"),
            G.c.address.label("global_address"),
            G.c.block_id.label("global_block_id"),
            GB.c.version.label("global_version"),
            GB.c.name.label("global_name"),
            GB.c.cidr.label("global_cidr"),
            L.c.id.label("local_id"),
            L.c.address.label("local_address"),
            L.c.block_id.label("local_block_id"),
            LB.c.version.label("local_version"),
            LB.c.name.label("local_name"),
            LB.c.cidr.label("local_cidr"),
        )
        .join(G, G.c.id == N.inside_global_id)
        .join(GB, GB.c.id == G.c.block_id)
        .join(L, L.c.id == N.inside_local_id)
        .join(LB, LB.c.id == L.c.block_id)
        .order_by(GB.c.version, G.c.address, G.c.block_id, LB.c.version, L.c.address, L.c.block_id)
    )


def shown() -> Select:
    """The mappings a listing shows: both addresses allocated."""
    _, G, L, _, _ = _tables()
    return joined().where(holds.allocated(G.c), holds.allocated(L.c))


def record(row) -> dict:
    """A mapping as `nat list` shows it."""
    return {
        "inside_global": ip_text(row.global_address, row.global_version),
        "inside_global_block": label(row.global_name, row.global_cidr),
        "inside_local": ip_text(row.local_address, row.local_version),
        "inside_local_block": label(row.local_name, row.local_cidr),
        "created_at": iso(row.created_at),
    }


def _of_address_statement() -> Select:
    from sqlalchemy import bindparam, or_

    N = _tables()[0]
    return shown().where(
        or_(N.inside_global_id == bindparam("id"), N.inside_local_id == bindparam("id"))
    )


_OF_ADDRESS = Prepared(_of_address_statement, "natlinks.of_address")


def of_address(conn: Connection, row) -> dict[str, list[str]]:
    """An address row's inside globals (what it is the local of) and inside locals
    (what it is the global of), for `ip show`: one query, none for a held address."""
    links: dict[str, list[str]] = {"inside_globals": [], "inside_locals": []}
    if row.state != "allocated":
        return links
    for mapping in _OF_ADDRESS.all(conn, id=row.id):
        if mapping.local_id == row.id:
            links["inside_globals"].append(
                str(ip_text(mapping.global_address, mapping.global_version))
            )
        if mapping.global_id == row.id:
            links["inside_locals"].append(
                str(ip_text(mapping.local_address, mapping.local_version))
            )
    return links
