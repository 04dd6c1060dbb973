"""Finding and repairing drift between the store, the DHCP server's files and its leases.

`melange reconcile` is a nightly cron job. The store is the truth; what can
drift from it is (1) the store's own derived data (counters, references, the
uniqueness guard of a MAC), after a bug, a hand edit or a bad import
(`integrity`), (2) the host file the server reads, when nobody re-rendered it
(`files`), and (3) the leases the server handed out, which outlive a moved or
released reservation and keep its address from the new owner until they
expire (`leases`).

Every finding is a dict with a `kind` and the objects involved, so a script
can act on it and a person can read it. `--fix` repairs what has one right
answer (counters, dangling references, the hosts file, stale leases:
`repair`) and leaves the rest to an operator: an address in use where a
policy now forbids it, or a MAC active twice, belongs to a machine somebody
must look at. Expired holds are purged first (`purge`).

The server's side (what it reads, its leases, reloading it, releasing a
lease) is the DHCP backend's, found in the registry (melange.dhcp_backend).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection

from melange import dhcp_backend
from melange.dhcp_backend import DhcpBackend
from melange.names import require_network
from melange.reconcile.files import hosts_findings
from melange.reconcile.integrity import store_findings
from melange.reconcile.leases import lease_findings
from melange.reconcile.names import dns_findings
from melange.reconcile.purge import purge_expired_holds
from melange.reconcile.repair import repair
from melange.store import Store


def reconcile(
    store: Store,
    *,
    hostsfile: str | None = None,
    leasefile: str | None = None,
    fix: bool = False,
    dnsmasq_pidfile: str | None = None,
    release_interface: str | None = None,
    network: str | None = None,
    hostsdir: str | None = None,
    backend: str = dhcp_backend.DEFAULT,
    backend_option: list[str] | tuple[str, ...] = (),
    dns_hostsdir: str | None = None,
    addn_hosts: str | None = None,
) -> dict:
    """`melange reconcile`: purge expired holds, find drift and, with `fix`, repair it.

    Returns {"purged": N, "findings": [...], "fix": bool, "actions": {...},
    "remaining": [...]}: `findings` as found, `remaining` after a re-check
    (the same list without `fix`). The CLI exits 8 while `remaining` is not empty.
    """
    if network is not None:
        store.read(lambda conn: require_network(conn, network))
    target = dhcp_backend.Target(
        hostsfile=Path(hostsfile) if hostsfile else None,
        pidfile=Path(dnsmasq_pidfile) if dnsmasq_pidfile else None,
        network=network,
        hostsdir=Path(hostsdir) if hostsdir else None,
        release_interface=release_interface,
        leasefile=Path(leasefile) if leasefile else None,
        options=dhcp_backend.parse_options(backend_option),
        dns_hostsdir=Path(dns_hostsdir) if dns_hostsdir else None,
        addn_hosts=Path(addn_hosts) if addn_hosts else None,
    )
    server = dhcp_backend.load(backend, target)
    server.check_target(releasing=fix)
    purged = purge_expired_holds(store, network)
    found = check(store, server)
    result = {"purged": purged, "findings": found, "fix": fix, "actions": {}, "remaining": found}
    if fix and found:
        result["actions"] = repair(store, found, server)
        result["remaining"] = check(store, server)
    return result


def check(store: Store, backend: DhcpBackend) -> list[dict]:
    """Every finding, from one read transaction (one consistent view of the store)."""
    target = backend.target

    def read(conn: Connection) -> list[dict]:
        found = store_findings(conn, target.network)
        if dhcp_backend.reads_hosts(target):
            found += hosts_findings(conn, backend)
        if target.leasefile is not None:
            found += lease_findings(conn, backend.leases(), target.network)
        if target.dns_hostsdir is not None or target.addn_hosts is not None:
            found += dns_findings(conn, backend)
        return found

    return store.read(read)
