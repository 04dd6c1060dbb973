"""`melange dns hosts/config`: the names of allocated addresses, as dnsmasq reads them.

`hosts` is a hosts-format file, `ADDRESS NAME` a line (A or AAAA; dnsmasq
derives the PTR from the same line), ordered by name, then IPv4 before IPv6,
then address, so equal stores give equal bytes. Every name was validated on
its way into the store (melange.validate, melange.dns): labels of letters,
digits and hyphens only, so no line can carry a second name, a comment or
a second line. It is streamed like `dhcp hosts`: a batch of rows at a time.

`config` prints the dnsmasq lines a deployment needs: `local=/DOMAIN/` per
domain (answered here, never forwarded), `domain=DOMAIN,CIDR` per block that
has one (its DHCP clients' domain; dnsmasq's `,local` suffix is left out, as
it refuses it for an IPv4 prefix other than /8, /16 or /24), then the files
melanged keeps: `addn-hosts=` (the folded file) and `hostsdir=` (one small
file a name).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Connection, LargeBinary, Select, select, type_coerce

from melange import holds
from melange.dns import domains_of
from melange.models import blocks, ip_addresses
from melange.names import require_network
from melange.prepared import translated_error

STREAM_BATCH = 8192
DEFAULT_ADDN_HOSTS = "/var/lib/melange/dns.hosts"
DEFAULT_HOSTSDIR = "/var/lib/melange/dns.d"
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def _names_query(network: str | None) -> Select:
    IP = ip_addresses.c
    query = (
        select(IP.dns_name, type_coerce(IP.address, LargeBinary), blocks.c.version)
        .join(blocks, blocks.c.id == IP.block_id)
        .where(IP.dns_name.is_not(None), holds.allocated(IP))
        .order_by(IP.dns_name, blocks.c.version, IP.address)
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    return query


def host_line(name: str, raw: bytes, version: int) -> str:
    """One `ADDRESS NAME` line of a hosts file."""
    data = raw[12:] if version == 4 else raw
    return f"{socket.inet_ntop(_FAMILY[version], data)} {name}\n"


def name_lines(conn: Connection, network: str | None = None) -> Iterator[tuple[str, str]]:
    """(name, hosts line) of every named allocated address, in file order."""
    require_network(conn, network)
    return _name_lines(conn, network)


def _name_lines(conn: Connection, network: str | None) -> Iterator[tuple[str, str]]:
    for rows in batches(conn, _names_query(network)):
        for name, raw, version in rows:
            yield name, host_line(name, bytes(raw), version)


def batches(conn: Connection, query: Select) -> Iterator[Sequence[tuple]]:
    """The rows a batch at a time. SQLite: plain tuples off the driver's cursor (a
    render's rows through SQLAlchemy cost ten times their formatting), errors wrapped
    as SQLAlchemy's; the servers: a server-side cursor (stream_results)."""
    if conn.dialect.name != "sqlite":
        streamed = query.execution_options(stream_results=True, yield_per=STREAM_BATCH)
        with conn.execute(streamed) as result:
            yield from result.partitions()
        return
    if not conn.in_transaction():
        conn.begin()
    compiled = query.compile(dialect=conn.dialect).construct_expanded_state()
    statement, params = compiled.statement, compiled.positional_parameters
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # checked out, in a transaction
    cursor = dbapi.cursor()
    try:
        cursor.execute(statement, params)
        while batch := cursor.fetchmany(STREAM_BATCH):
            yield batch
    except conn.dialect.loaded_dbapi.Error as error:
        raise translated_error(conn, statement, params, error) from error
    finally:
        cursor.close()


def _rows_query(network: str | None) -> Select:
    return _names_query(network).add_columns(ip_addresses.c.block_id)


def name_rows(conn: Connection, network: str | None) -> Iterator[tuple[str, str, int, int]]:
    """(name, line without its newline, block id, address) of every named address."""
    for rows in batches(conn, _rows_query(network)):
        for name, raw, version, block_id in rows:
            data = bytes(raw)
            line = host_line(name, data, version)[:-1]
            yield name, line, block_id, int.from_bytes(data, "big")


def name_at(
    conn: Connection, network: str | None, block_id: int, address: int
) -> list[tuple[str, str]]:
    """(name, line without its newline) of one address, when it has a name."""
    query = _names_query(network).where(
        ip_addresses.c.block_id == block_id, ip_addresses.c.address == address
    )
    return [(name, host_line(name, bytes(raw), version)[:-1])
            for name, raw, version in conn.execute(query)]  # fmt: skip


def _chunks(conn: Connection, network: str | None) -> Iterator[bytes]:
    batch: list[str] = []
    for _, line in name_lines(conn, network):
        batch.append(line)
        if len(batch) >= STREAM_BATCH:
            yield "".join(batch).encode()
            batch = []
    if batch:
        yield "".join(batch).encode()


def hosts_text(
    conn: Connection, network: str | None = None, sink: Callable[[bytes], object] | None = None
) -> str | None:
    """The hosts file of the names (of one network); given `sink`, handed to it in
    UTF-8 chunks as they are rendered, at flat memory whatever the size."""
    if sink is None:
        return "".join(line for _, line in name_lines(conn, network))
    for chunk in _chunks(conn, network):
        sink(chunk)
    return None


def config_lines(
    conn: Connection,
    network: str | None = None,
    *,
    addn_hosts: str = DEFAULT_ADDN_HOSTS,
    hostsdir: str = DEFAULT_HOSTSDIR,
) -> Iterator[str]:
    """The dnsmasq lines for the names of one network's blocks (or of every block)."""
    require_network(conn, network)
    rows = conn.execute(select(blocks).order_by(blocks.c.version, blocks.c.first_addr)).all()
    by_id = {row.id: row for row in rows}
    parents = {row.parent_id for row in rows if row.parent_id is not None}
    domains = domains_of(rows, by_id)
    served = [
        row
        for row in rows
        if row.id not in parents
        and domains[row.id] is not None
        and (network is None or row.network == network)
    ]
    for domain in sorted({str(domains[row.id]) for row in served}):
        yield f"local=/{domain}/\n"
    for row in served:
        yield f"domain={domains[row.id]},{row.cidr}\n"
    yield f"addn-hosts={addn_hosts}\n"
    yield f"hostsdir={hostsdir}\n"


def config_text(conn: Connection, network: str | None = None) -> str:
    """`melange dns config`: the dnsmasq lines a deployment's DNS needs."""
    return "".join(config_lines(conn, network))
