"""DNS drift: the names the server answers from its files against the store's.

A backend that serves DNS names says what its files hold (`dns_served`, None
when it keeps no DNS files) and what the store wants (`dns_rendered`); the
comparison is line by line (`ADDRESS NAME`), so a name on the wrong address is
one line missing and one extra. `--fix` rewrites them through the backend
(`dns_repair`). A backend without these methods serves no DNS: no findings.
"""

from __future__ import annotations

from sqlalchemy import Connection

from melange.dhcp_backend import DhcpBackend
from melange.reconcile.findings import finding

DNS_KINDS = ("dns_missing", "dns_extra")


def _lines(names: dict) -> set[str]:
    return {line for lines in names.values() for line in lines}


def dns_findings(conn: Connection, backend: DhcpBackend) -> list[dict]:
    """Names in the files the store does not have, and the store's names they lack."""
    served = getattr(backend, "dns_served", lambda: None)()
    if served is None:
        return []
    have, want = _lines(served), _lines(backend.dns_rendered(conn))  # type: ignore[attr-defined]
    found = []
    for kind, lines in (("dns_extra", have - want), ("dns_missing", want - have)):
        for line in sorted(lines):
            address, name = line.split(" ", 1)
            found.append(finding(kind, name=name, address=address))
    return found
