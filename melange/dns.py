"""DNS names of allocated addresses: a block's domain, and the name each address has.

An allocated address with a hostname, in a block that has a domain (its own
or, for a subnet, its nearest ancestor's), has a DNS name: the hostname inside
that domain, stored lower case in `ip_addresses.dns_name`. A hostname that
already ends in the domain is taken as it is (`vm1.lab.example` in
`lab.example`); any other is relative to it (`vm1`, or `vm1.rack3`, become
`vm1.lab.example` and `vm1.rack3.lab.example`), so every name lies inside its
block's domain and nothing a user types can publish a name elsewhere.

The name is kept only while the address is allocated: a held address has no
name in DNS (it serves nobody; its name is free for the next machine). The
store's unique index makes a name one address's on every backend; the checks
here come first so that a clash is a conflict (4) that says who has the name.

Why one name per address and no aliases: NetBox keeps one `dns_name` per IP
address and phpIPAM one hostname, and neither has been asked for more by the
users melange follows; a machine with two names is two allocations or a
CNAME in the zone that delegates to dnsmasq.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from melange import holds, subnets
from melange.errors import Conflict, InvalidInput
from melange.prepared import Prepared
from melange.records import ip_text

if TYPE_CHECKING:
    from sqlalchemy import Connection

MAX_NAME = 253  # characters of a DNS name in text form, without the final dot


def _holder_statement():
    from sqlalchemy import bindparam, select

    from melange.models import blocks, ip_addresses

    IP = ip_addresses.c
    return (
        select(IP.id, IP.address, blocks.c.version, blocks.c.cidr)
        .join(blocks, blocks.c.id == IP.block_id)
        .where(IP.dns_name == bindparam("name"), IP.dns_version == bindparam("version"))
    )


_HOLDER = Prepared(_holder_statement, "dns.holder")


def effective_domain(conn: Connection, block) -> str | None:
    """The block's domain, else its nearest ancestor's (one query for a subnet)."""
    if block.domain is not None or block.parent_id is None:
        return block.domain
    domain, _ = subnets.nearest(block, subnets.ancestors(conn, block), "domain")
    return domain


def qualified(hostname: str | None, domain: str | None) -> str | None:
    """The DNS name of `hostname` in `domain` (both validated), None without either."""
    if hostname is None or domain is None:
        return None
    if hostname == domain or hostname.endswith("." + domain):
        name = hostname
    else:
        name = f"{hostname}.{domain}"
    if len(name) > MAX_NAME:
        raise InvalidInput(
            f"{hostname}.{domain} is {len(name)} characters long; a DNS name has at most {MAX_NAME}"
        )
    return name


def check_free(
    conn: Connection, name: str | None, version: int, owner_id: int | None = None
) -> None:
    """Conflict (4) when another live address of family `version` has the DNS name `name`."""
    if name is None:
        return
    holder = _HOLDER.first(conn, name=name, version=version)
    if holder is not None and holder.id != owner_id:
        address = ip_text(holder.address, holder.version)
        raise Conflict(f"the name {name} is in use by {address} (block {holder.cidr})")


def name_for(conn: Connection, block, hostname: str | None, owner_id: int | None = None) -> dict:
    """The `dns_name` and `dns_version` columns of an address of `block` with
    `hostname`, the name checked free in the block's family."""
    name = None
    if hostname is not None:
        name = qualified(hostname, effective_domain(conn, block))
        check_free(conn, name, block.version, owner_id)
    return {"dns_name": name, "dns_version": block.version if name is not None else None}


def rename_blocks(conn: Connection, changed: Sequence) -> None:
    """After a domain change: the names of every allocated address in `changed` (the
    block and those below it), computed again from their blocks' domains now.
    The old names are cleared first, so names moving between these blocks never
    clash with themselves; a clash with any other address is a conflict (and the
    caller's transaction, with the domain change, rolls back)."""
    from sqlalchemy import bindparam, select, update

    from melange.models import blocks, ip_addresses

    IP = ip_addresses.c
    ids = [block.id for block in changed]
    rows: list = []
    for start in range(0, len(ids), subnets.PAGE):
        rows += conn.execute(
            select(IP.id, IP.block_id, IP.hostname, blocks.c.version)
            .join(blocks, blocks.c.id == IP.block_id)
            .where(
                IP.block_id.in_(ids[start : start + subnets.PAGE]),
                holds.allocated(IP),
                IP.hostname.is_not(None),
            )
        ).all()
    if not rows:
        return
    domains = {block.id: effective_domain(conn, block) for block in changed}
    row_ids = [row.id for row in rows]
    for start in range(0, len(row_ids), subnets.PAGE):
        conn.execute(
            update(ip_addresses)
            .where(IP.id.in_(row_ids[start : start + subnets.PAGE]))
            .values(dns_name=None, dns_version=None)
        )
    named = [(row, qualified(row.hostname, domains[row.block_id])) for row in rows]
    seen: set[tuple[str, int]] = set()
    for row, name in named:
        if name is None:
            continue
        if (name, row.version) in seen:
            raise Conflict(f"two addresses would be named {name} in the new domain")
        seen.add((name, row.version))
        check_free(conn, name, row.version, row.id)
    update_one = (
        update(ip_addresses)
        .where(IP.id == bindparam("row_id"))
        .values(dns_name=bindparam("name"), dns_version=bindparam("family"))
    )
    values = [
        {"row_id": row.id, "name": name, "family": row.version}
        for row, name in named
        if name is not None
    ]
    if values:
        conn.execute(update_one, values)


def domains_of(rows: Iterable, by_id: dict) -> dict[int, str | None]:
    """The domain in effect for each of `rows`, among blocks already read (`by_id`)."""
    return {row.id: subnets.nearest(row, subnets.chain_in(row, by_id), "domain")[0] for row in rows}
