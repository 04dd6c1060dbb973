"""What dnsmasq reads and writes on disk: host lines, the hosts dir, the lease file."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from pathlib import Path

import netaddr

from melange.dhcp_backend import Lease
from melange.errors import InvalidInput
from melange.localfiles import read_text
from melange.validate import format_mac, is_decimal, parse_mac


def dir_files(directory: Path | None) -> list[Path]:
    """The files dnsmasq reads from a --dhcp-hostsdir: all but dot-names and names
    ending in ~ (so melange's own temporary files, `.melange-…`, never count)."""
    if directory is None or not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith("~")
    )


def host_lines(paths: Iterable[Path]) -> list[str]:
    """The dhcp-host lines of these files as dnsmasq reads them: stripped, without
    blank lines and comments. A file that is not there has none."""
    lines = []
    for path in paths:
        try:
            text = read_text(path)
        except FileNotFoundError:
            continue
        lines += [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and line[0] != "#"]


def sort_key(line: str) -> tuple[int, bytes]:
    """The order `melange dhcp hosts` prints: IPv4 before IPv6, then by address."""
    address = line.split(",")[1]
    if address.startswith("["):
        return 6, socket.inet_pton(socket.AF_INET6, address[1:-1])
    return 4, socket.inet_pton(socket.AF_INET, address)


def host_keys(line: str) -> tuple[tuple, tuple]:
    """(IP key, MAC key) of a dhcp-host line; without such a field, a key of the line
    itself (which pairs with nothing)."""
    version = address = mac = None
    for field in (f.strip() for f in line.split(",")):
        try:
            if address is None and field.startswith("[") and field.endswith("]"):
                version, address = 6, int(netaddr.IPAddress(field[1:-1], 6))
            elif mac is None and ":" in field and not field.startswith("["):
                mac = parse_mac(field)
            elif address is None and field.count(".") == 3:
                version, address = 4, int(netaddr.IPAddress(field, 4, flags=netaddr.INET_PTON))
        except (InvalidInput, netaddr.AddrFormatError, ValueError):
            continue
    ip_key = ("ip", version, address) if address is not None else ("ip", line)
    mac_key = ("mac", version, mac) if mac is not None else ("mac", line)
    return ip_key, mac_key


def read_leases(path: Path, now: float | None = None) -> list[Lease]:
    """The leases in force, from lines `expiry mac ip hostname client-id`: expired
    lines (dnsmasq drops them lazily) and the `duid` line of DHCPv6 are skipped, and
    so is a line without a readable address."""
    now = time.time() if now is None else now
    leases = []
    for line in read_text(path).splitlines():
        fields = line.split()
        if len(fields) < 3 or not is_decimal(fields[0]):  # also the DHCPv6 `duid` line
            continue
        expires = int(fields[0])
        if expires and expires <= now:
            continue
        lease = _lease(expires, fields)
        if lease is not None:
            leases.append(lease)
    return leases


def _lease(expires: int, fields: list[str]) -> Lease | None:
    """One lease line's fields; for IPv6 the second field is the IAID, not a MAC."""
    try:
        address = netaddr.IPAddress(fields[2], flags=netaddr.INET_PTON if "." in fields[2] else 0)
    except (netaddr.AddrFormatError, ValueError):
        return None
    mac = None
    if address.version == 4:
        try:
            mac = parse_mac(fields[1])
        except InvalidInput:
            pass
    hostname = fields[3] if len(fields) > 3 and fields[3] != "*" else None
    mac_text = format_mac(mac) if mac is not None else None
    if address.version == 4 and mac is None:
        mac_text = fields[1].lower()
    return Lease(expires, address, mac, mac_text, hostname)


def is_mac(text: str | None) -> bool:
    """Whether a lease's MAC is an Ethernet one (all dhcp_release can name)."""
    try:
        return text is not None and parse_mac(text) is not None
    except InvalidInput:
        return False
