"""The hosts file render: the same bytes from SQLite, MariaDB and PostgreSQL, in file order,
across batch boundaries, and streamed (a server-side cursor on the servers), since a real
dnsmasq reads it and melanged compares its bytes before it rewrites the file."""

from __future__ import annotations

import ipaddress

import pytest
from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.pool import NullPool

from melange import hostlines, operations
from melange.dnsmasq import render
from melange.errors import NotFound
from melange.store import Store

MAC_BASE = 0x02 << 40

# Insertion order differs from file order on purpose; net2's 10.0.0.0/24 overlaps net1's,
# so 10.0.0.3 is in both and the older block's line comes first.
RESERVATIONS = [
    ("v6", "2001:db8::ffff:1", "02:00:00:00:00:06", "six-b"),
    ("a", "10.0.0.200", "02:00:00:00:00:01", None),
    ("v6", "2001:db8::2", "02:00:00:00:00:05", None),
    ("b", "10.0.0.3", "02:00:00:00:00:04", "other-net"),
    ("a", "10.0.0.3", "02:00:00:00:00:02", "host-a"),
    ("a", "10.0.0.20", "0a:bb:cc:dd:ee:ff", "db.example.org"),
]
EXPECTED = (
    "02:00:00:00:00:02,10.0.0.3,host-a\n"
    "02:00:00:00:00:04,10.0.0.3,other-net\n"
    "0a:bb:cc:dd:ee:ff,10.0.0.20,db.example.org\n"
    "02:00:00:00:00:01,10.0.0.200\n"
    "02:00:00:00:00:05,[2001:db8::2]\n"
    "02:00:00:00:00:06,[2001:db8::ffff:1],six-b\n"
)


def _render(store: Store, network: str | None = None) -> tuple[str, bytes, list[str]]:
    """The three ways out: the whole text, the chunks a sink gets, the lines sync reads."""
    whole = store.read(lambda conn: render.hosts_text(conn, network))
    chunks: list[bytes] = []
    store.read(lambda conn: render.hosts_text(conn, network, sink=chunks.append))
    lines = store.read(lambda conn: list(render.hosts_lines(conn, network)))
    return whole, b"".join(chunks), lines


def _populated(url: str) -> Store:
    store = Store(url)
    for name, cidr, network in (("a", "10.0.0.0/24", "net1"), ("b", "10.0.0.0/24", "net2"),
                                ("v6", "2001:db8::/64", "net1")):  # fmt: skip
        operations.run(store, "block.create", {"cidr": cidr, "name": name, "network": network})
    for block, address, mac, hostname in RESERVATIONS:
        params = {"block": block, "address": address, "mac": mac, "hostname": hostname}
        operations.run(store, "block.allocate", params)
    operations.run(store, "block.allocate", {"block": "a", "address": "10.0.0.9"})  # no MAC
    held = {"block": "a", "address": "10.0.0.10", "mac": "02:00:00:00:00:09"}
    operations.run(store, "block.allocate", held)
    operations.run(store, "ip.release", {"address": "10.0.0.10", "block": "a"})
    return store


def test_every_backend_renders_the_same_bytes_in_file_order(store_url):
    store = _populated(store_url)
    try:
        whole, chunked, lines = _render(store)
        assert whole == EXPECTED
        assert chunked == EXPECTED.encode()
        assert "".join(lines) == EXPECTED
        net2 = "02:00:00:00:00:04,10.0.0.3,other-net\n"
        assert _render(store, "net2") == (net2, net2.encode(), [net2])
        with pytest.raises(NotFound):  # a typo is never an empty hosts file
            _render(store, "nonet")
    finally:
        store.close()


def _oracle(mac: int, address: bytes, hostname: str | None, version: int) -> str:
    """The line, built another way (ipaddress, int formatting) than the renderer's."""
    if version == 4:
        ip = str(ipaddress.IPv4Address(address[12:]))
    else:
        ip = f"[{ipaddress.IPv6Address(address)}]"
    pairs = f"{mac:012x}"
    mac_text = ":".join(pairs[i : i + 2] for i in range(0, 12, 2))
    return f"{mac_text},{ip}" + (f",{hostname}" if hostname else "") + "\n"


def test_the_inline_line_and_the_general_line_agree_with_an_independent_formatter():
    v4 = int(ipaddress.IPv4Address("192.168.255.7")).to_bytes(16, "big")
    v4_low = int(ipaddress.IPv4Address("0.0.0.1")).to_bytes(16, "big")
    v6 = int(ipaddress.IPv6Address("fe80::1:0:0:abcd")).to_bytes(16, "big")
    v6_zero = bytes(16)
    v4_high = int(ipaddress.IPv4Address("255.0.10.100")).to_bytes(16, "big")
    families = {
        4: [(0xFFFFFFFFFFFF, v4, None), (0, v4_low, None), (0x0123456789AB, v4_high, "h"),
            (0x0123456789AB, v4, ""), (7, v4_high, None)],
        6: [(1, v6, None), (2, v6, "x.example"), (3, v6_zero, None)],
    }  # fmt: skip
    for version, rows in families.items():
        expected = [_oracle(*row, version) for row in rows]
        assert hostlines.format_batch(rows, version) == expected
        assert [hostlines.host_line(*row, version) for row in rows] == expected


def _fill(store: Store, count: int) -> None:
    """`count` addresses in one /16, each with a MAC (as the render benchmark fills one)."""
    operations.run(store, "block.create", {"cidr": "10.60.0.0/16", "name": "big",
                                           "network": "net1"})  # fmt: skip
    operations.run(store, "block.allocate", {"block": "big", "count": count})
    store.write(
        lambda conn: conn.execute(
            text(f"UPDATE ip_addresses SET mac = {MAC_BASE} + id, active_mac = {MAC_BASE} + id")
        )
    )


def test_a_render_longer_than_a_batch_is_whole_ordered_and_chunked_by_line(store_url):
    count = 2 * hostlines.STREAM_BATCH + 100
    store = Store(store_url)
    try:
        _fill(store, count)
        chunks: list[bytes] = []
        store.read(lambda conn: render.hosts_text(conn, sink=chunks.append))
        assert len(chunks) == 3 and all(chunk.endswith(b"\n") for chunk in chunks)
        lines = b"".join(chunks).decode().splitlines()
        assert len(lines) == count
        addresses = [ipaddress.ip_address(line.split(",")[1]) for line in lines]
        assert addresses == sorted(addresses) and len(set(addresses)) == count
        assert addresses[0] == ipaddress.ip_address("10.60.0.1")
        assert all(line.startswith("02:00:00:") for line in lines)
        assert store.read(lambda conn: render.hosts_text(conn)) == "\n".join(lines) + "\n"
    finally:
        store.close()


@pytest.mark.servers_only
def test_a_server_render_reads_through_a_server_side_cursor(store_url):
    """MariaDB's and PostgreSQL's drivers hold a whole ordinary result in memory."""
    store = _populated(store_url)
    seen: list[object] = []

    def watch(conn, cursor, statement, parameters, context, executemany) -> None:
        if "ip_addresses" in statement:
            seen.append(cursor)

    event.listen(store.engine, "before_cursor_execute", watch)
    try:
        assert store.read(lambda conn: render.hosts_text(conn)) == EXPECTED
    finally:
        event.remove(store.engine, "before_cursor_execute", watch)
        store.close()
    assert len(seen) == 1, seen
    cursor = seen[0]
    if store.backend == "postgresql":
        assert cursor.name  # psycopg's named cursor is a DECLAREd server cursor
    else:
        import pymysql.cursors

        assert isinstance(cursor, pymysql.cursors.SSCursor)


@pytest.mark.sqlite_only
def test_a_driver_error_during_a_sqlite_render_reaches_the_store_as_sqlalchemys(backend, tmp_path):
    """The render reads SQLite's own cursor; its errors must still be the ones the store
    retries (a locked database) or reports (exit 6), not a bare sqlite3 exception."""
    engine = create_engine(f"sqlite:///{tmp_path / 'no-tables.db'}", poolclass=NullPool)
    try:
        with engine.connect() as conn, pytest.raises(exc.OperationalError, match="no such table"):
            render.hosts_text(conn)
    finally:
        engine.dispose()


def test_a_render_leaves_its_connection_as_it_found_it(store_url):
    """The store keeps a transaction's connection for the next one: a streamed render's
    options must not stay on it, or PostgreSQL is asked to DECLARE a cursor for an UPDATE."""
    store = _populated(store_url)

    def render_then_update(conn) -> int:
        assert render.hosts_text(conn) == EXPECTED
        options = conn.get_execution_options()
        assert "stream_results" not in options and "yield_per" not in options, options
        return conn.execute(text("UPDATE blocks SET generation = generation + 1")).rowcount

    try:
        assert store.write(render_then_update) == 3
        assert store.write(lambda conn: conn.execute(text("UPDATE blocks SET tenant = NULL")))
    finally:
        store.close()
