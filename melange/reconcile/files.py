"""File drift: the host lines the DHCP server reads against what the store renders.

The server reads what nobody re-rendered after a change (a cron job that did
not run, a hand edit, a restore). The backend says what it reads and how its
lines pair up; the comparison itself is the same for every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from sqlalchemy import Connection

from melange.dhcp_backend import DhcpBackend
from melange.reconcile.findings import finding

Keys = Callable[[str], tuple[Hashable, Hashable]]


def hosts_findings(conn: Connection, backend: DhcpBackend) -> list[dict]:
    """The hosts file (and the hosts dir's files, which dnsmasq reads too) against
    what the store renders for them (`melange dhcp hosts`)."""
    expected = backend.rendered(conn)
    actual = backend.served()
    if actual is None:
        path = backend.target.hostsfile
        return [finding("hosts_file_missing", path=str(path), lines=len(expected))]
    return compare_hosts(expected, actual, backend.line_keys)


def compare_hosts(expected: list[str], actual: list[str], keys: Keys) -> list[dict]:
    """Missing, extra and different lines; 'different' pairs a file line with the
    store's line for the same IP address (or else the same MAC in that family)."""
    have, want = set(actual), set(expected)
    missing = [line for line in expected if line not in have]
    by_ip: dict[Hashable, str] = {}
    by_mac: dict[Hashable, str] = {}
    for line in missing:
        ip, mac = keys(line)
        by_ip.setdefault(ip, line)
        by_mac.setdefault(mac, line)
    paired: set[str] = set()
    found = []
    for line in dict.fromkeys(actual):
        if line in want:
            continue
        ip, mac = keys(line)
        partner = next(
            (p for p in (by_ip.get(ip), by_mac.get(mac)) if p is not None and p not in paired),
            None,
        )
        if partner is None:
            found.append(finding("hosts_extra", line=line))
        else:
            paired.add(partner)
            found.append(finding("hosts_different", line=line, expected=partner))
    found += [finding("hosts_missing", line=line) for line in missing if line not in paired]
    return found
