"""dnsmasq's hosts-file lines (`MAC,IP[,HOSTNAME]`): their format, and their rows read
a batch at a time.

The one home of the line format, for the dnsmasq backend's render
(melange.dnsmasq.render) and for `melange dhcp hosts` on the lean path
(melange.lean), which must not import the backend (it imports the store, and
so SQLAlchemy): here only named statements, built when first compiled, so the
lean path runs them from the shipped SQL and streams the rows off sqlite3's
cursor as the full path does.
"""

from __future__ import annotations

import functools
from _socket import AF_INET, AF_INET6, inet_ntop  # socket's C module: no enums to import
from collections.abc import Iterator, Sequence
from typing import Any

from melange.names import require_network
from melange.prepared import Prepared

STREAM_BATCH = 8192  # rows per fetch: ~250 kB of text, so memory stays flat at any size
FAMILIES = (4, 6)  # file order: every IPv4 line, then every IPv6 line
_OCTETS = tuple(str(n) for n in range(256))  # an IPv4 octet's decimal text

HostRow = tuple[int, bytes, str | None]  # mac, 16-byte big-endian address, hostname


def host_line(mac: int, address: bytes, hostname: str | None, version: int) -> str:
    """One `MAC,IP[,HOSTNAME]` line: IPv6 in brackets, as dnsmasq reads it."""
    if version == 4:
        shown = inet_ntop(AF_INET, address[12:])
    else:
        shown = f"[{inet_ntop(AF_INET6, address)}]"
    if hostname:
        return f"{mac.to_bytes(6, 'big').hex(':')},{shown},{hostname}\n"
    return f"{mac.to_bytes(6, 'big').hex(':')},{shown}\n"


def format_batch(rows: Sequence[HostRow], version: int) -> list[str]:
    """A batch of one family's lines. The common line (IPv4, no hostname) is built
    inline, its octets looked up as text: about half the time that inet_ntop on a
    slice and a call per line took. The rest go through host_line."""
    line = host_line
    if version != 4:
        return [line(mac, raw, hostname, version) for mac, raw, hostname in rows]
    o = _OCTETS
    return [
        (
            f"{mac.to_bytes(6, 'big').hex(':')},"  # one string built, as for a single f-string
            f"{o[raw[12]]}.{o[raw[13]]}.{o[raw[14]]}.{o[raw[15]]}\n"
        )
        if not hostname
        else line(mac, raw, hostname, 4)
        for mac, raw, hostname in rows
    ]


def hosts_query(network: Any, version: Any) -> Any:
    """Allocated addresses with a MAC, by address (then block): those of one family,
    or of both with the version as a fourth column and IPv4 first. `network` and
    `version`: a value, a bind parameter, or None for no filter."""
    from sqlalchemy import LargeBinary, select, type_coerce

    from melange import holds
    from melange.models import blocks, ip_addresses

    ip = ip_addresses.c
    query = (
        select(ip.mac, type_coerce(ip.address, LargeBinary), ip.hostname)
        .join(blocks, blocks.c.id == ip.block_id)
        .where(holds.allocated(ip), ip.mac.is_not(None))
    )
    if version is None:
        query = query.add_columns(blocks.c.version)
        query = query.order_by(blocks.c.version, ip.address, ip.block_id)
    else:
        query = query.where(blocks.c.version == version).order_by(ip.address, ip.block_id)
    if network is not None:
        query = query.where(blocks.c.network == network)
    return query


def _family_statement(with_network: bool) -> Any:
    from sqlalchemy import bindparam

    return hosts_query(bindparam("network") if with_network else None, bindparam("version"))


_FAMILY = {
    with_network: Prepared(functools.partial(_family_statement, with_network),
                           f"hostlines.family{'.network' if with_network else ''}")
    for with_network in (False, True)
}  # fmt: skip


def lean_batches(conn: Any, network: str | None) -> Iterator[list[str]]:
    """The hosts file's lines a batch at a time, on a lean connection (melange.lean):
    each family's rows off the driver's cursor as they come, in the read transaction the
    caller holds.
    The network is checked here, at the call, as the full path checks it."""
    require_network(conn, network)
    return _lean_lines(conn, network)


def _lean_lines(conn: Any, network: str | None) -> Iterator[list[str]]:
    statement = _FAMILY[network is not None]
    for version in FAMILIES:
        params: dict[str, Any] = {"version": version}
        if network is not None:
            params["network"] = network
        _form, cursor = conn.execute_shipped(statement.name, params, stream=True)
        try:
            while batch := cursor.fetchmany(STREAM_BATCH):
                yield format_batch(batch, version)
        finally:
            cursor.close()
