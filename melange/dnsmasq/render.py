"""Rendering what dnsmasq reads: the hosts file, the opts file and the config,
and the limits of what it reads (option 121's size, an opts line's length).

The core reaches these through the `melange.dhcp_backends` registry (the
Dnsmasq class exposes them), never by name: `melange dhcp hosts/opts/config`
print them and `route add` asks whether a block's routes still fit.

Lines are streamed in a fixed order so equal stores give equal bytes (the
daemon compares bytes before it rewrites a file or signals dnsmasq). Every
field was validated on the way into the store, so no line can carry a
comma, a newline or a tag that dnsmasq would read another way.

The hosts file is the one render that grows with the store (a million lines
is a normal size), so it is streamed in batches, each formatted by one list
comprehension; on SQLite the rows come straight off the driver's cursor, as
SQLAlchemy's Row objects would cost more than the formatting itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import chain, groupby
from operator import itemgetter
from typing import cast

import netaddr
from sqlalchemy import Connection, Select, func, select

from melange import dns_render, holds, hostlines, subnets
from melange.errors import Conflict
from melange.hostlines import FAMILIES, STREAM_BATCH, HostRow, format_batch, host_line
from melange.models import blocks, ip_addresses
from melange.names import require_network
from melange.prepared import translated_error
from melange.records import ip_text

MIN_DHCPV6_PREFIX = 64  # dnsmasq refuses a dhcp-range with a shorter prefix
MAX_OPTION_BYTES = 255  # one DHCP option's length octet
MAX_OPTS_LINE = 1024  # characters dnsmasq reads as one opts-file line (measured, 2.90)


def _hosts_query(network: str | None, version: int | None) -> Select:
    """The hosts query of one family (or both, the version a fourth column), for a
    network or all (melange.hostlines, the one home of the hosts lines)."""
    return cast(Select, hostlines.hosts_query(network, version))


def _family_batches(
    conn: Connection, network: str | None
) -> Iterator[tuple[int, Sequence[HostRow]]]:
    """(version, rows) in file order, a batch at a time: never the whole result in memory.

    SQLite: one statement per family, read off the driver's cursor. Both see
    the snapshot this read transaction took, and sorting each family by two
    keys without a version column costs ~15% less than the single statement.
    MariaDB and PostgreSQL: one statement, since READ COMMITTED gives each
    statement a snapshot of its own, through SQLAlchemy's stream_results,
    which picks the server-side cursor each driver needs (PyMySQL's SSCursor,
    psycopg's named cursor); their drivers would otherwise load the whole
    result on execute.
    """
    if conn.dialect.name == "sqlite":
        if not conn.in_transaction():
            conn.begin()  # as SQLAlchemy's own execute would: one snapshot for both
        for version in FAMILIES:
            for rows in _sqlite_batches(conn, _hosts_query(network, version)):
                yield version, rows
        return
    # Options on the statement, not the connection: Connection.execution_options
    # changes the connection in place, and the store reuses it for the next
    # transaction, whose UPDATEs PostgreSQL would then be asked to DECLARE.
    query = _hosts_query(network, None).execution_options(
        stream_results=True, yield_per=STREAM_BATCH
    )
    with conn.execute(query) as result:  # closed (drained) if the reader stops early
        for partition in result.partitions():
            for version, family in groupby(partition, key=itemgetter(3)):
                yield version, [(mac, raw, hostname) for mac, raw, hostname, _ in family]


def _sqlite_batches(conn: Connection, query: Select) -> Iterator[list[HostRow]]:
    """Plain tuples from sqlite3, in this transaction; errors wrapped as SQLAlchemy's
    (so the store still retries a locked database and reports a lost one)."""
    compiled = query.compile(dialect=conn.dialect).construct_expanded_state()
    statement, params = compiled.statement, compiled.positional_parameters
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # a connection checked out of the pool, in a transaction
    cursor = dbapi.cursor()
    try:
        cursor.execute(statement, params)
        while batch := cursor.fetchmany(STREAM_BATCH):
            yield cast(list[HostRow], batch)  # sqlite3 rows: plain tuples, in a list
    except conn.dialect.loaded_dbapi.Error as error:
        raise translated_error(conn, statement, params, error) from error
    finally:
        cursor.close()


Key = tuple[int, int]  # (block id, address as an integer): one address of the store


def keyed_lines(conn: Connection, network: str | None = None) -> Iterator[tuple[Key, str]]:
    """Every hosts line (without its newline) with the address it is for, in no set
    order: for a reader that keeps them by address (melange.dnsmasq.wanted)."""
    require_network(conn, network)
    for rows in dns_render.batches(conn, _keyed_query(network)):
        for mac, raw, hostname, version, block_id in rows:
            data = bytes(raw)
            yield (block_id, int.from_bytes(data, "big")), host_line(mac, data, hostname,
                                                                     version)[:-1]  # fmt: skip


def keyed_line_at(conn: Connection, network: str | None, key: Key) -> str | None:
    """The hosts line of one address (without its newline), None when it has none."""
    ip = ip_addresses.c
    query = _keyed_query(network).where(ip.block_id == key[0], ip.address == key[1])
    row = conn.execute(query).first()
    if row is None:
        return None
    mac, raw, hostname, version, _ = row
    return host_line(mac, bytes(raw), hostname, version)[:-1]


def _keyed_query(network: str | None) -> Select:
    return _hosts_query(network, None).add_columns(ip_addresses.c.block_id)


def _line_batches(conn: Connection, network: str | None) -> Iterator[list[str]]:
    """The hosts file's lines a batch at a time. The network is checked here, at the
    call, not at the first batch: a caller writing a file must fail before it opens one."""
    require_network(conn, network)
    return (format_batch(rows, version) for version, rows in _family_batches(conn, network))


def hosts_lines(conn: Connection, network: str | None = None) -> Iterator[str]:
    """One `MAC,IP[,HOSTNAME]` line per allocated address that has a MAC, in file order."""
    return chain.from_iterable(_line_batches(conn, network))


def hosts_chunks(conn: Connection, network: str | None = None) -> Iterator[bytes]:
    """The hosts file as UTF-8 chunks of a batch each: one write per ~250 kB."""
    return ("".join(lines).encode() for lines in _line_batches(conn, network))


def _networks(conn: Connection, network: str | None) -> Sequence:
    require_network(conn, network)
    query = (
        select(blocks)
        .where(blocks.c.network.is_not(None))
        .order_by(blocks.c.network, blocks.c.version, blocks.c.first_addr)
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    return conn.execute(query).all()


def block_tag(block) -> str:
    """The dnsmasq tag of one block that serves DHCP: `NET/CIDR`.

    Unique (a network's leaf blocks never overlap, and no network name holds
    a `/`, so it can never be a network's tag either), stable (a block's CIDR
    never changes, unlike an id SQLite may hand out again) and read by
    dnsmasq as one tag (no comma, no leading `!`, no wildcard `*`).
    """
    return f"{block.network}/{block.cidr}"


def _served(conn: Connection, network: str | None) -> tuple[list, dict]:
    """The blocks that serve DHCP (those with a network and no subnets), and every
    block of their networks by id (their ancestors among them)."""
    rows = _networks(conn, network)
    parents = {row.parent_id for row in rows if row.parent_id is not None}
    return [row for row in rows if row.id not in parents], {row.id: row for row in rows}



def classless_line(tag: str, pairs: list[tuple[str, int]]) -> str:
    """The opts-file line of an IPv4 block's classless static routes."""
    text = ",".join(f"{destination},{ip_text(gateway, 4)}" for destination, gateway in pairs)
    return f"tag:{tag},option:classless-static-route,{text}\n"


def classless_size(pairs: list[tuple[str, int]]) -> int:
    """Bytes of option 121 on the wire (RFC 3442: a prefix length, the prefix's
    significant octets, then the router's four)."""
    return sum(1 + (int(destination.rsplit("/", 1)[1]) + 7) // 8 + 4 for destination, _ in pairs)


def check_routes(block, pairs: list[tuple[str, int]]) -> None:
    """Conflict when option 121 of leaf `block`, carrying `pairs`, breaks what dnsmasq
    accepts: 255 bytes on the wire, and an opts-file line of at most 1024 characters
    (longer ones dnsmasq splits and drops as "bad dhcp-option")."""
    size = classless_size(pairs)
    length = len(classless_line(block_tag(block), pairs)) - 1
    if size > MAX_OPTION_BYTES or length > MAX_OPTS_LINE:
        raise Conflict(
            f"too many routes for block {block.cidr}: its classless static routes would "
            f"take {size} bytes (at most {MAX_OPTION_BYTES}) and a {length}-character "
            f"opts line (at most {MAX_OPTS_LINE}), which dnsmasq would drop"
        )


def opts_lines(conn: Connection, network: str | None = None) -> Iterator[str]:
    """Router, DNS servers and classless routes per IPv4 block that serves DHCP, each
    under the block's own tag (`tag:NET/CIDR,...`): one line per (tag, option), and a
    subnet's inherited values rendered as its own."""
    served, by_id = _served(conn, network)
    served = [block for block in served if block.version == 4]
    levels = list(by_id)
    dns_lists = subnets.dns_lists(conn, levels)
    route_lists = subnets.route_lists(conn, levels)
    for block in served:
        chain = subnets.chain_in(block, by_id)
        tag = block_tag(block)
        router = subnets.router(block, chain, route_lists)
        if router is not None:
            yield f"tag:{tag},option:router,{ip_text(router, 4)}\n"
        servers, _ = subnets.nearest_listed(block, chain, dns_lists)
        dns = ",".join(ip_text(address, 4) or "" for address, version in servers if version == 4)
        if dns:
            yield f"tag:{tag},option:dns-server,{dns}\n"
        pairs = subnets.client_routes(block, chain, route_lists)
        if pairs:
            yield classless_line(tag, pairs)


def config_lines(
    conn: Connection,
    network: str | None = None,
    *,
    hostsfile: str = "/var/lib/melange/dnsmasq.hosts",
    optsfile: str = "/var/lib/melange/dnsmasq.opts",
) -> Iterator[str]:
    """The dnsmasq options a network needs: per block that serves DHCP, a static
    dhcp-range setting the block's own tag and a tag-if setting the network's tag
    from it (scripts may still match `tag:NET`); then the files."""
    served, _ = _served(conn, network)
    hosts = 0
    for block in served:
        tag = block_tag(block)
        net = netaddr.IPNetwork(block.cidr)
        if block.version == 6 and net.prefixlen < MIN_DHCPV6_PREFIX:
            yield (
                f"# {tag}: not served: dnsmasq serves DHCPv6 only on a /{MIN_DHCPV6_PREFIX} "
                "or longer prefix (subnet the block to serve it)\n"
            )
            continue
        mask = net.netmask if block.version == 4 else net.prefixlen
        yield f"dhcp-range=set:{tag},{net.network},static,{mask},12h\n"
        yield f"tag-if=set:{block.network},tag:{tag}\n"
        hosts += _count_hosts(conn, block.id)
    yield f"dhcp-hostsfile={hostsfile}\n"
    yield f"dhcp-optsfile={optsfile}\n"
    yield f"dhcp-lease-max={max(1000, hosts * 2)}\n"


def _count_hosts(conn: Connection, block_id: int) -> int:
    return conn.execute(
        select(func.count()).where(
            ip_addresses.c.block_id == block_id, holds.allocated(ip_addresses.c)
        )
    ).scalar_one()


def hosts_text(
    conn: Connection, network: str | None = None, sink: Callable[[bytes], object] | None = None
) -> str | None:
    """The hosts file as text; or, given `sink`, handed to it in UTF-8 chunks as they
    are rendered, so a million lines go to stdout at flat memory."""
    if sink is None:
        return "".join("".join(lines) for lines in _line_batches(conn, network))
    for chunk in hosts_chunks(conn, network):
        sink(chunk)
    return None


def opts_text(conn: Connection, network: str | None = None) -> str:
    return "".join(opts_lines(conn, network))


def config_text(conn: Connection, network: str | None = None) -> str:
    return "".join(config_lines(conn, network))
