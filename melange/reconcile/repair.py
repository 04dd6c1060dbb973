"""`reconcile --fix`: repair what has one right answer, in the order the server needs it.

The host file first (the backend's own `sync` pass: atomic replace, a reload
only when needed), then, once the server has taken that in, the release of
stale leases: the address is free the moment its new reservation is loaded.
A host file rewritten but not reloaded (no pidfile, the server down) releases
nothing: the server still has the old reservations, so a release would change
nothing. Last the store, in one write transaction with an audit row
describing the whole repair.
"""

from __future__ import annotations

from dataclasses import replace

import netaddr
from sqlalchemy import Connection, and_, func, select, update

from melange import audit, holds
from melange.dhcp_backend import DhcpBackend, SyncResult, reads_hosts
from melange.models import blocks, ip_addresses
from melange.reconcile.findings import HOSTS_KINDS, IP, LEASE_KINDS, STORE_FIXABLE, B
from melange.reconcile.integrity import counter_findings, duplicate_mac_findings, interface_findings
from melange.reconcile.leases import lease_findings
from melange.reconcile.names import DNS_KINDS
from melange.store import Store, lock_block


def repair(store: Store, found: list[dict], backend: DhcpBackend) -> dict:
    """Fix the findings that have one right answer; what was done, as `actions`."""
    target = backend.target
    kinds = {f["kind"] for f in found}
    actions: dict = {}
    synced = SyncResult()
    if reads_hosts(target) and kinds & set(HOSTS_KINDS):
        synced = rerender_hosts(store, backend)
        actions.update(hosts_rewritten=synced.hosts_changed, added_only=synced.added_only,
                       reloaded=synced.reloaded)  # fmt: skip
    if kinds & set(DNS_KINDS):
        actions["dns_rewritten"] = backend.dns_repair(store)  # type: ignore[attr-defined]
    unloaded = synced.hosts_changed and not (synced.reloaded or synced.added_only)
    if (
        target.leasefile is not None
        and target.release_interface
        and kinds & set(LEASE_KINDS)
        and not unloaded
    ):
        actions["released"] = release_stale_leases(store, backend, after=synced)
    if kinds & set(STORE_FIXABLE) or actions:
        actions["store"] = store.write(lambda conn: repair_store(conn, backend, actions))
    return actions


def rerender_hosts(store: Store, backend: DhcpBackend) -> SyncResult:
    """`dhcp sync`'s pass, without its own releases (stale leases are released next,
    from the lease file): with a hosts dir, additions alone go there as a new file and
    anything else rewrites the file, empties the dir and reloads."""
    return type(backend)(replace(backend.target, release_interface=None)).sync(store)


def release_stale_leases(store: Store, backend: DhcpBackend, *, after: SyncResult) -> list[str]:
    """Once the server has taken in the re-render, release each lease the store does
    not give that MAC. The stale set is read again just before (the store may have
    moved on)."""
    backend.settle(after)
    network = backend.target.network
    stale = store.read(lambda conn: lease_findings(conn, backend.leases(), network))
    return backend.release([(f["address"], f["mac"]) for f in stale])


def repair_store(conn: Connection, backend: DhcpBackend, actions: dict) -> list[dict]:
    """Counters recounted, dangling interface references cleared and MAC guards restored,
    under the blocks' locks (taken in id order), with one audit row for the repair."""
    network = backend.target.network
    counters = counter_findings(conn, network)
    dangling = interface_findings(conn, network)
    unguarded = [
        f for f in duplicate_mac_findings(conn, network) if f["kind"] == "active_mac_missing"
    ]
    for block_id in sorted({f["block_id"] for f in (*counters, *dangling, *unguarded)}):
        lock_block(conn, block_id)
    fixed = [_recount(conn, f) for f in counters]
    fixed += [_unlink(conn, f) for f in dangling]
    fixed += [_guard(conn, f) for f in unguarded]
    target = backend.target
    actor, via = audit.who()
    audit.record(
        conn, actor=actor, via=via, command="reconcile.fix",
        params={"network": network, "hostsfile": target.hostsfile,
                "hostsdir": target.hostsdir, "leasefile": target.leasefile},
        result={**actions, "store": [{"kind": f["kind"], "block_id": f["block_id"]}
                                     for f in fixed]},
    )  # fmt: skip
    return fixed


def _recount(conn: Connection, f: dict) -> dict:
    actual = conn.execute(
        select(func.count()).where(IP.block_id == f["block_id"], holds.allocated(IP))
    ).scalar()
    conn.execute(update(blocks).where(B.id == f["block_id"]).values(allocated_count=actual))
    return {**f, "actual": actual}


def _unlink(conn: Connection, f: dict) -> dict:
    conn.execute(
        update(ip_addresses)
        .where(
            IP.block_id == f["block_id"],
            IP.address == int(netaddr.IPAddress(f["address"])),
            IP.interface_id == f["interface_id"],
        )
        .values(interface_id=None)
    )
    return f


def _guard(conn: Connection, f: dict) -> dict:
    conn.execute(
        update(ip_addresses)
        .where(
            and_(
                IP.block_id == f["block_id"],
                IP.address == int(netaddr.IPAddress(f["address"])),
                holds.allocated(IP),
                IP.active_mac.is_(None),
            )
        )
        .values(active_mac=IP.mac)
    )
    return f
