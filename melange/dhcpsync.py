"""`melange dhcp sync`: one pass of a DHCP backend, for cron or a host without melanged.

A backend renders what its server reads, writes it atomically only when it
changed, and tells the server (melange.dhcp_backend); melanged runs the same
pass whenever the store changes. The backend is found by name in the
`melange.dhcp_backends` entry points; `dnsmasq` is the one melange ships.
"""

from __future__ import annotations

from pathlib import Path

from melange import audit, dhcp_backend
from melange.store import Store
from melange.validate import validate_network


def sync(
    store: Store,
    *,
    hostsfile: str,
    optsfile: str | None = None,
    dnsmasq_pidfile: str | None = None,
    network: str | None = None,
    hostsdir: str | None = None,
    release_interface: str | None = None,
    backend: str = dhcp_backend.DEFAULT,
    dns_hostsdir: str | None = None,
    addn_hosts: str | None = None,
) -> dict:
    """One pass of `backend`. It writes files and may signal the server, so it leaves
    an audit row (who, which files, what changed), like every change to the store does.
    With `dns_hostsdir` or `addn_hosts`, the DNS names' files too, as melanged keeps
    them (a one-shot pass folds every name into the addn-hosts file)."""
    if network is not None:
        validate_network(network)
    target = dhcp_backend.Target(
        hostsfile=Path(hostsfile),
        optsfile=Path(optsfile) if optsfile else None,
        pidfile=Path(dnsmasq_pidfile) if dnsmasq_pidfile else None,
        network=network,
        hostsdir=Path(hostsdir) if hostsdir else None,
        release_interface=release_interface,
        dns_hostsdir=Path(dns_hostsdir) if dns_hostsdir else None,
        addn_hosts=Path(addn_hosts) if addn_hosts else None,
    )
    result = dhcp_backend.load(backend, target).sync(store).as_dict()
    params = {"hostsfile": hostsfile, "optsfile": optsfile, "dnsmasq_pidfile": dnsmasq_pidfile,
              "network": network, "hostsdir": hostsdir, "release_interface": release_interface,
              "backend": backend, "dns_hostsdir": dns_hostsdir,
              "addn_hosts": addn_hosts}  # fmt: skip
    actor, via = audit.who()
    store.write(
        lambda conn: audit.record(
            conn, actor=actor, via=via, command="dhcp.sync", params=params, result=result
        )
    )
    return result
