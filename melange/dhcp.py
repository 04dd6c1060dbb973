"""Rendering what dnsmasq reads: the hosts file, the opts file and the config.

Lines are streamed in a fixed order so equal stores give equal bytes (the
daemon compares bytes before it rewrites a file or signals dnsmasq). Every
field was validated on the way into the store, so no line can carry a
comma, a newline or a tag that dnsmasq would read another way.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import netaddr
from sqlalchemy import Connection, LargeBinary, select, type_coerce

from melange.models import block_dns_servers, blocks, ip_addresses, routes
from melange.records import ip_text

STREAM_BATCH = 10_000


def hosts_lines(conn: Connection, network: str | None = None) -> Iterator[str]:
    """One `MAC,IP[,HOSTNAME]` line per allocated address that has a MAC.

    The hot path of a full render: addresses come as raw bytes (no int round
    trip) and MACs are formatted by bytes.hex, a million lines in a few seconds.
    """
    ip = ip_addresses.c
    query = (
        select(ip.mac, type_coerce(ip.address, LargeBinary), ip.hostname, blocks.c.version)
        .join(blocks, blocks.c.id == ip.block_id)
        .where(ip.state == "allocated", ip.mac.is_not(None))
        .order_by(blocks.c.version, ip.address, ip.block_id)
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    result = conn.execution_options(yield_per=STREAM_BATCH).execute(query)
    ntop, v4, v6 = socket.inet_ntop, socket.AF_INET, socket.AF_INET6
    for mac, raw, hostname, version in result:
        raw = bytes(raw)
        shown = ntop(v4, raw[12:]) if version == 4 else f"[{ntop(v6, raw)}]"
        line = f"{mac.to_bytes(6, 'big').hex(':')},{shown}"
        yield f"{line},{hostname}\n" if hostname else f"{line}\n"


def _networks(conn: Connection, network: str | None) -> list:
    query = (
        select(blocks)
        .where(blocks.c.network.is_not(None))
        .order_by(blocks.c.network, blocks.c.version, blocks.c.first_addr)
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    return conn.execute(query).all()


def opts_lines(conn: Connection, network: str | None = None) -> Iterator[str]:
    """Router, DNS servers and classless routes per network, as `tag:NET,...` lines."""
    for block in _networks(conn, network):
        if block.version != 4:
            continue
        tag = f"tag:{block.network}"
        if block.gateway is not None:
            yield f"{tag},option:router,{ip_text(block.gateway, 4)}\n"
        dns = [
            ip_text(a, v)
            for a, v in conn.execute(
                select(block_dns_servers.c.address, block_dns_servers.c.version)
                .where(block_dns_servers.c.block_id == block.id)
                .order_by(block_dns_servers.c.position)
            )
            if v == 4
        ]
        if dns:
            yield f"{tag},option:dns-server,{','.join(dns)}\n"
        static = conn.execute(
            select(routes.c.destination, routes.c.gateway)
            .where(routes.c.block_id == block.id)
            .order_by(routes.c.id)
        ).all()
        if static:
            pairs = [f"{dest},{ip_text(gw, 4)}" for dest, gw in static]
            if block.gateway is not None:
                # Option 121 replaces the router option, so the default route goes in too.
                pairs.append(f"0.0.0.0/0,{ip_text(block.gateway, 4)}")
            yield f"{tag},option:classless-static-route,{','.join(pairs)}\n"


def config_lines(
    conn: Connection,
    network: str | None = None,
    *,
    hostsfile: str = "/var/lib/melange/dnsmasq.hosts",
    optsfile: str = "/var/lib/melange/dnsmasq.opts",
) -> Iterator[str]:
    """The dnsmasq options a network needs: tagged static dhcp-range lines and the files."""
    leaves = [b for b in _networks(conn, network)]
    parents = {b.parent_id for b in leaves if b.parent_id is not None}
    hosts = 0
    for block in leaves:
        if block.id in parents:
            continue
        net = netaddr.IPNetwork(block.cidr)
        if block.version == 4:
            yield f"dhcp-range=set:{block.network},{net.network},static,{net.netmask},12h\n"
        else:
            yield f"dhcp-range=set:{block.network},{net.network},static,{net.prefixlen},12h\n"
        hosts += _count_hosts(conn, block.id)
    yield f"dhcp-hostsfile={hostsfile}\n"
    yield f"dhcp-optsfile={optsfile}\n"
    yield f"dhcp-lease-max={max(1000, hosts * 2)}\n"


def _count_hosts(conn: Connection, block_id: int) -> int:
    from sqlalchemy import func

    return conn.execute(
        select(func.count()).where(
            ip_addresses.c.block_id == block_id, ip_addresses.c.state == "allocated"
        )
    ).scalar()


def hosts_text(conn: Connection, network: str | None = None, sink=None) -> str | None:
    """The hosts file as text, or streamed into `sink(chunk)` (flat memory at any size)."""
    if sink is None:
        return "".join(hosts_lines(conn, network))
    batch: list[str] = []
    for line in hosts_lines(conn, network):
        batch.append(line)
        if len(batch) >= 4096:
            sink("".join(batch))
            batch = []
    sink("".join(batch))
    return None


def opts_text(conn: Connection, network: str | None = None) -> str:
    return "".join(opts_lines(conn, network))


def config_text(conn: Connection, network: str | None = None) -> str:
    return "".join(config_lines(conn, network))
