"""Finding and repairing drift between the store, dnsmasq's files and its leases.

`melange reconcile` is a nightly cron job. The store is the truth; what can
drift from it is (1) the store's own derived data (counters, references, the
uniqueness guard of a MAC), after a bug, a hand edit or a bad import,
(2) the hosts file dnsmasq reads, when nobody re-rendered it, and (3) the
leases dnsmasq handed out, which outlive a moved or released reservation and
keep its address from the new owner until they expire.

Every finding is a dict with a `kind` and the objects involved, so a script
can act on it and a person can read it. `--fix` repairs what has one right
answer (counters, dangling references, the hosts file, stale leases) and
leaves the rest to an operator: an address in use where a policy now forbids
it, or a MAC active twice, belongs to a machine somebody must look at.

Expired holds are purged first. That is housekeeping, not drift: allocation
never depends on it (an expired hold is reclaimed by the next allocation in
its block), but a purge keeps `ip list`, reports and the tables small.
"""

from __future__ import annotations

import bisect
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import netaddr
from sqlalchemy import Connection, and_, func, select, update

from melange import audit, dhcp, holds, subnets
from melange import blocks as block_ops
from melange.addresses import reclaim_expired
from melange.errors import InvalidInput, NotFound
from melange.localfiles import program_pid, read_text
from melange.models import blocks, interfaces, ip_addresses
from melange.names import require_network
from melange.records import block_label, iso
from melange.store import Store, lock_block, utcnow
from melange.validate import format_mac, is_decimal, parse_mac

IP = ip_addresses.c
B = blocks.c
IN_BATCH = 500  # addresses per IN (...) lookup: well under every backend's parameter limit
RELEASE_WAIT = 5.0  # seconds to wait for dnsmasq to drop released leases from its file
INOTIFY_WAIT = 0.3  # dnsmasq reads a new hosts-dir file in about 0.1 s (at any size)
_IFACE = re.compile(r"^[A-Za-z0-9_.:@][A-Za-z0-9_.:@-]{0,14}$")  # Linux IFNAMSIZ is 16

# Kinds that --fix repairs in the store (the others in the store need an operator).
STORE_FIXABLE = ("counter_mismatch", "interface_missing", "active_mac_missing")
HOSTS_KINDS = ("hosts_file_missing", "hosts_missing", "hosts_extra", "hosts_different")
LEASE_KINDS = ("lease_unknown_address", "lease_mac_mismatch")


def finding(kind: str, **objects) -> dict:
    """One piece of drift: `kind` first, then what it is about, in a fixed order."""
    return {"kind": kind, **objects}


@dataclass(frozen=True)
class Sources:
    """What reconcile compares the store with (each optional), and which network."""

    hostsfile: Path | None = None
    leasefile: Path | None = None
    network: str | None = None
    hostsdir: Path | None = None  # dnsmasq --dhcp-hostsdir, where melanged adds new lines


# -- the operation


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
) -> dict:
    """`melange reconcile`: purge expired holds, find drift and, with `fix`, repair it.

    Returns {"purged": N, "findings": [...], "fix": bool, "actions": {...},
    "remaining": [...]}: `findings` as found, `remaining` after a re-check
    (the same list without `fix`). The CLI exits 8 while `remaining` is not empty.
    """
    if network is not None:
        store.read(lambda conn: require_network(conn, network))
    if release_interface is not None:
        _check_release_interface(release_interface, needed=fix)
    sources = Sources(
        hostsfile=Path(hostsfile) if hostsfile else None,
        leasefile=Path(leasefile) if leasefile else None,
        network=network,
        hostsdir=Path(hostsdir) if hostsdir else None,
    )
    if sources.leasefile is not None and not sources.leasefile.exists():
        raise NotFound(f"no lease file {sources.leasefile} (dnsmasq --dhcp-leasefile)")
    purged = purge_expired_holds(store, network)
    found = check(store, sources)
    result = {"purged": purged, "findings": found, "fix": fix, "actions": {}, "remaining": found}
    if fix and found:
        pidfile = Path(dnsmasq_pidfile) if dnsmasq_pidfile else None
        actions = repair(store, found, sources, pidfile, release_interface)
        result["actions"] = actions
        result["remaining"] = check(store, sources)
    return result


def _check_release_interface(name: str, *, needed: bool) -> None:
    """An interface name dhcp_release can take, and (when it will run) dhcp_release
    itself: both checked before anything changes."""
    if not _IFACE.fullmatch(name):
        raise InvalidInput(f"{name!r} is not a network interface name")
    if needed and shutil.which("dhcp_release") is None:
        raise InvalidInput(
            "--release-interface needs dhcp_release (Debian package dnsmasq-utils), "
            "which is not installed"
        )


def check(store: Store, sources: Sources) -> list[dict]:
    """Every finding, from one read transaction (one consistent view of the store)."""

    def read(conn: Connection) -> list[dict]:
        found = store_findings(conn, sources.network)
        if sources.hostsfile is not None:
            found += hosts_findings(conn, sources.hostsfile, sources.network, sources.hostsdir)
        if sources.leasefile is not None:
            found += lease_findings(conn, read_leases(sources.leasefile), sources.network)
        return found

    return store.read(read)


# -- expired holds


def purge_expired_holds(store: Store, network: str | None) -> int:
    """Free expired holds, block by block under each block's lock, in one audited write.

    Reuses the allocation's own reclaim, so the addresses go back into the
    free ranges exactly as an allocation would have put them.
    """

    def purge(conn: Connection) -> int:
        with audit.noting():
            return _purge(conn)

    def _purge(conn: Connection) -> int:
        now = utcnow()
        query = (
            select(IP.block_id)
            .join(blocks, B.id == IP.block_id)
            .where(holds.expired(IP, now))
            .distinct()
        )
        if network is not None:
            query = query.where(B.network == network)
        purged: dict[int, int] = {}
        for block_id in sorted(conn.execute(query).scalars()):
            block = lock_block(conn, block_id)
            freed = reclaim_expired(conn, block, block_ops.free_space(conn, block))
            if freed:
                audit.note(block_id, freed)
                purged[block_id] = len(freed)
        total = sum(purged.values())
        if total:
            audit.record(
                conn, actor=audit.who()[0], via=audit.who()[1], command="reconcile.purge",
                params={"network": network},
                result={"purged": total, "blocks": sorted(purged)},
            )  # fmt: skip
        return total

    return store.write(purge)


# -- the store's own integrity


def store_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """Addresses outside their block or forbidden there, MACs active twice, missing
    MAC guards, dangling interface references and wrong allocated counters.

    Interfaces without addresses are not drift: `ip release` of an
    interface's address leaves exactly that, on purpose.
    """
    return [
        *placement_findings(conn, network),
        *duplicate_mac_findings(conn, network),
        *interface_findings(conn, network),
        *counter_findings(conn, network),
    ]


def _blocks_where(query, network: str | None):
    return query if network is None else query.where(B.network == network)


def _address_text(value: int, version: int) -> str:
    """An address as text even when it does not fit its block's family (a planted row)."""
    if version == 4 and value >= 1 << 32:
        version = 6
    return str(netaddr.IPAddress(value, version))


def placement_findings(conn: Connection, network: str | None = None) -> Iterator[dict]:
    """Addresses outside their block, and ones its network/broadcast/gateway/policy forbid.

    One streamed pass over the addresses, with each block's exclusions built
    once (intervals and octet rules, never expanded).
    """
    block_rows = {row.id: row for row in conn.execute(_blocks_where(select(blocks), network))}
    if not block_rows:
        return
    rules = block_ops.policy_rules(conn, [row.policy_id for row in block_rows.values()])
    exclusions = {
        bid: block_ops.exclusions_of(row, subnets.chain_in(row, block_rows), rules)
        for bid, row in block_rows.items()
    }
    query = _blocks_where(
        select(IP.block_id, IP.address, IP.mac, IP.state)
        .join(blocks, B.id == IP.block_id)
        .order_by(IP.block_id, IP.address),
        network,
    )
    for block_id, address, mac, state in conn.execute(query.execution_options(yield_per=10_000)):
        block = block_rows[block_id]
        shown = {
            "address": _address_text(address, block.version),
            "block": block_label(block),
            "block_id": block_id,
            "mac": format_mac(mac),
            "state": state,
        }
        if not block.first_addr <= address <= block.last_addr:
            yield finding("address_outside_block", **shown, cidr=block.cidr)
            continue
        reason = exclusions[block_id].reason(address)
        if reason:
            yield finding("address_excluded", **shown, reason=reason)


def duplicate_mac_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """A MAC allocated twice in one block (dnsmasq would serve only one of the
    addresses), and allocated rows whose `active_mac` guard is missing (the next
    `allocate --mac` would not see them and hand out a second address)."""
    twice = conn.execute(
        _blocks_where(
            select(IP.block_id, IP.mac)
            .join(blocks, B.id == IP.block_id)
            .where(IP.state == "allocated", IP.mac.is_not(None))
            .group_by(IP.block_id, IP.mac)
            .having(func.count() > 1)
            .order_by(IP.block_id, IP.mac),
            network,
        )
    ).all()
    found = []
    for block_id, mac in twice:
        rows = conn.execute(
            select(IP.address, B.version, B.name, B.cidr)
            .join(blocks, B.id == IP.block_id)
            .where(IP.block_id == block_id, IP.mac == mac, IP.state == "allocated")
            .order_by(IP.address)
        ).all()
        found.append(
            finding(
                "mac_duplicate",
                mac=format_mac(mac),
                block=rows[0].name or rows[0].cidr,
                block_id=block_id,
                addresses=[_address_text(r.address, r.version) for r in rows],
            )
        )
    duplicated = {(block_id, mac) for block_id, mac in twice}
    unguarded = conn.execute(
        _blocks_where(
            select(IP.block_id, IP.address, IP.mac, B.version, B.name, B.cidr)
            .join(blocks, B.id == IP.block_id)
            .where(IP.state == "allocated", IP.mac.is_not(None), IP.active_mac.is_(None))
            .order_by(IP.block_id, IP.address),
            network,
        )
    )
    for row in unguarded:
        if (row.block_id, row.mac) not in duplicated:  # reported above; no single fix
            found.append(
                finding(
                    "active_mac_missing",
                    address=_address_text(row.address, row.version),
                    block=row.name or row.cidr,
                    block_id=row.block_id,
                    mac=format_mac(row.mac),
                )
            )
    return found


def interface_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """Addresses whose interface no longer exists (the foreign key would have cleared
    the reference; a store written around it did not)."""
    query = _blocks_where(
        select(IP.block_id, IP.address, IP.interface_id, B.version, B.name, B.cidr)
        .join(blocks, B.id == IP.block_id)
        .outerjoin(interfaces, interfaces.c.id == IP.interface_id)
        .where(IP.interface_id.is_not(None), interfaces.c.id.is_(None))
        .order_by(IP.block_id, IP.address),
        network,
    )
    return [
        finding(
            "interface_missing",
            address=_address_text(row.address, row.version),
            block=row.name or row.cidr,
            block_id=row.block_id,
            interface_id=row.interface_id,
        )
        for row in conn.execute(query)
    ]


def _allocated_counts():
    return (
        select(IP.block_id, func.count().label("n"))
        .where(IP.state == "allocated")
        .group_by(IP.block_id)
        .subquery()
    )


def counter_findings(conn: Connection, network: str | None = None) -> list[dict]:
    """Blocks whose `allocated_count` (kept so utilisation never counts rows) is wrong."""
    counted = _allocated_counts()
    actual = func.coalesce(counted.c.n, 0)
    query = _blocks_where(
        select(B.id, B.name, B.cidr, B.allocated_count, actual.label("actual"))
        .outerjoin(counted, counted.c.block_id == B.id)
        .where(B.allocated_count != actual)
        .order_by(B.id),
        network,
    )
    return [
        finding(
            "counter_mismatch",
            block=row.name or row.cidr,
            block_id=row.id,
            allocated_count=row.allocated_count,
            actual=row.actual,
        )
        for row in conn.execute(query)
    ]


# -- the hosts file


def hosts_findings(
    conn: Connection, path: Path, network: str | None = None, hostsdir: Path | None = None
) -> list[dict]:
    """The hosts file (and the hosts dir's files, which dnsmasq reads too) against
    what the store renders for them (`melange dhcp hosts`)."""
    expected = [line.rstrip("\n") for line in dhcp.hosts_lines(conn, network)]
    try:
        text = _read(path)
    except FileNotFoundError:
        return [finding("hosts_file_missing", path=str(path), lines=len(expected))]
    texts = [text, *(_read(p) for p in _dir_files(hostsdir))]
    actual = [line.strip() for text in texts for line in text.splitlines()]
    return compare_hosts(expected, [line for line in actual if line and line[0] != "#"])


def _dir_files(directory: Path | None) -> list[Path]:
    """The files dnsmasq reads from a hosts dir: all but dot-names and names ending in ~."""
    if directory is None or not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith("~")
    )


def _read(path: Path) -> str:
    """A regular file's text: never a FIFO, a device or something huge."""
    return read_text(path)


def compare_hosts(expected: list[str], actual: list[str]) -> list[dict]:
    """Missing, extra and different lines; 'different' pairs a file line with the
    store's line for the same IP address (or else the same MAC in that family)."""
    have, want = set(actual), set(expected)
    missing = [line for line in expected if line not in have]
    by_ip: dict[tuple, str] = {}
    by_mac: dict[tuple, str] = {}
    for line in missing:
        ip, mac = _host_keys(line)
        by_ip.setdefault(ip, line)
        by_mac.setdefault(mac, line)
    paired: set[str] = set()
    found = []
    for line in dict.fromkeys(actual):
        if line in want:
            continue
        ip, mac = _host_keys(line)
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


def _host_keys(line: str) -> tuple[tuple, tuple]:
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


# -- dnsmasq's leases


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file: `expiry mac ip hostname client-id`."""

    expires: int  # seconds since the epoch; 0 = never
    address: netaddr.IPAddress
    mac: int | None  # None for IPv6 lines (that field is the IAID) or a non-Ethernet address
    mac_text: str | None
    hostname: str | None


def read_leases(path: Path, now: float | None = None) -> list[Lease]:
    """The leases in force: expired lines (dnsmasq drops them lazily) and the `duid`
    line of DHCPv6 are skipped, and so is a line without a readable address."""
    now = time.time() if now is None else now
    leases = []
    for line in _read(path).splitlines():
        fields = line.split()
        if len(fields) < 3 or not is_decimal(fields[0]):  # also the DHCPv6 `duid` line
            continue
        expires = int(fields[0])
        if expires and expires <= now:
            continue
        try:
            address = netaddr.IPAddress(
                fields[2], flags=netaddr.INET_PTON if "." in fields[2] else 0
            )
        except (netaddr.AddrFormatError, ValueError):
            continue
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
        leases.append(Lease(expires, address, mac, mac_text, hostname))
    return leases


def _merged_blocks(conn: Connection, network: str | None) -> dict[int, list[tuple[int, int]]]:
    """The blocks' address space per family as sorted disjoint intervals (for bisection)."""
    rows = conn.execute(
        _blocks_where(select(B.version, B.first_addr, B.last_addr), network).order_by(
            B.version, B.first_addr
        )
    ).all()
    merged: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for version, first, last in rows:
        spans = merged[version]
        if spans and first <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], last))
        else:
            spans.append((first, last))
    return merged


def _inside(spans: list[tuple[int, int]], value: int) -> bool:
    i = bisect.bisect_right(spans, (value, float("inf"))) - 1
    return i >= 0 and spans[i][1] >= value


def _owners(
    conn: Connection, addresses: Iterable[int], network: str | None
) -> dict[tuple[int, int], set[int | None]]:
    """MACs the store allocates each address to, by (family, address)."""
    values = sorted(set(addresses))
    owners: dict[tuple[int, int], set[int | None]] = {}
    for start in range(0, len(values), IN_BATCH):
        query = _blocks_where(
            select(B.version, IP.address, IP.mac)
            .join(blocks, B.id == IP.block_id)
            .where(IP.state == "allocated", IP.address.in_(values[start : start + IN_BATCH])),
            network,
        )
        for version, address, mac in conn.execute(query):
            owners.setdefault((version, address), set()).add(mac)
    return owners


def lease_findings(conn: Connection, leases: list[Lease], network: str | None = None) -> list[dict]:
    """Leases for addresses of the (network's) blocks that the store does not allocate,
    and leases whose MAC is not the one the address is allocated to.

    Addresses outside every block are left alone: dnsmasq may serve ranges
    melange does not manage, and their leases are none of its business.
    """
    spans = _merged_blocks(conn, network)
    managed = [
        lease for lease in leases if _inside(spans[lease.address.version], int(lease.address))
    ]
    owners = _owners(conn, (int(lease.address) for lease in managed), network)
    found = []
    for lease in managed:
        macs = owners.get((lease.address.version, int(lease.address)))
        shown = {
            "address": str(lease.address),
            "mac": lease.mac_text,
            "hostname": lease.hostname,
            "expires": _expiry_text(lease.expires),
        }
        if not macs:
            found.append(finding("lease_unknown_address", **shown))
        elif lease.address.version == 4 and lease.mac not in macs:
            expected = ",".join(sorted(format_mac(m) or "" for m in macs))
            found.append(
                finding(
                    "lease_mac_mismatch",
                    address=shown["address"],
                    mac=shown["mac"],
                    expected_mac=expected or None,
                    hostname=shown["hostname"],
                    expires=shown["expires"],
                )
            )
    return found


def _expiry_text(expires: int) -> str | None:
    if not expires:
        return None
    return iso(datetime.fromtimestamp(expires, UTC).replace(tzinfo=None))


# -- repairs


def repair(
    store: Store,
    found: list[dict],
    sources: Sources,
    pidfile: Path | None,
    release_interface: str | None,
) -> dict:
    """Fix what has one right answer, in the order dnsmasq needs it.

    The hosts file first (reloading dnsmasq once it is idle), then, after that
    reload, `dhcp_release` of stale leases: the address is free the moment its
    new reservation is loaded. A hosts file rewritten but not reloaded (no
    pidfile, dnsmasq down) releases nothing: dnsmasq still has the old
    reservations, so a release would change nothing. Last the store, in one
    write transaction with an audit row describing the whole repair.
    """
    kinds = {f["kind"] for f in found}
    actions: dict = {}
    if sources.hostsfile is not None and kinds & set(HOSTS_KINDS):
        actions.update(rerender_hosts(store, sources, pidfile))
    unloaded = actions.get("hosts_rewritten") and not (
        actions.get("reloaded") or actions.get("added_only")
    )
    if (
        sources.leasefile is not None
        and release_interface
        and kinds & set(LEASE_KINDS)
        and not unloaded
    ):
        actions["released"] = release_stale_leases(
            store, sources, release_interface, pidfile, after=actions
        )
    if kinds & set(STORE_FIXABLE) or actions:
        actions["store"] = store.write(lambda conn: repair_store(conn, sources, actions))
    return actions


def rerender_hosts(store: Store, sources: Sources, pidfile: Path | None) -> dict:
    """`dhcp sync`'s pass: atomic replace, SIGHUP (when idle) only if the bytes changed;
    with a hosts dir, additions alone go there as a new file (read by inotify, no reload)
    and anything else rewrites the file, empties the dir and reloads."""
    from melange.dhcpsync import Target
    from melange.dnsmasq import Dnsmasq

    assert sources.hostsfile is not None
    target = Target(
        hostsfile=sources.hostsfile,
        pidfile=pidfile,
        network=sources.network,
        hostsdir=sources.hostsdir,
    )
    result = Dnsmasq(target).sync(store)
    return {
        "hosts_rewritten": result.hosts_changed,
        "added_only": result.added_only,
        "reloaded": result.reloaded,
    }


def release_stale_leases(
    store: Store,
    sources: Sources,
    interface: str,
    pidfile: Path | None,
    *,
    after: dict,
) -> list[str]:
    """`dhcp_release IFACE IP MAC` for each lease the store does not give that MAC.

    The stale set is read again just before (the store may have moved on),
    only IPv4 leases with an Ethernet MAC qualify (dhcp_release speaks
    DHCPv4), and the lease file is watched until dnsmasq has dropped them.
    """
    from melange.dnsmasq import wait_idle

    assert sources.leasefile is not None
    pid = program_pid(pidfile, "dnsmasq") if pidfile is not None else None
    if after.get("added_only"):
        time.sleep(INOTIFY_WAIT)  # dnsmasq reads a new hosts-dir file by inotify
    if after.get("reloaded") and pid is not None:
        time.sleep(0.05)  # let the SIGHUP land before asking whether dnsmasq is idle
        wait_idle(pid)
    stale = [
        (f["address"], f["mac"])
        for f in store.read(
            lambda conn: lease_findings(conn, read_leases(sources.leasefile), sources.network)
        )
        if ":" not in f["address"] and _is_mac(f["mac"])
    ]
    for address, mac in stale:
        subprocess.run(
            ["dhcp_release", interface, address, mac],
            check=False, capture_output=True, timeout=10,
        )  # fmt: skip
    _wait_dropped(sources.leasefile, set(stale))
    return [address for address, _ in stale]


def _is_mac(text: str | None) -> bool:
    try:
        return text is not None and parse_mac(text) is not None
    except InvalidInput:
        return False


def _wait_dropped(leasefile: Path, pairs: set[tuple[str, str]]) -> None:
    """dhcp_release gets no answer: watch dnsmasq rewrite its lease file instead."""
    deadline = time.monotonic() + RELEASE_WAIT
    while pairs and time.monotonic() < deadline:
        current = {(str(lease.address), lease.mac_text) for lease in read_leases(leasefile)}
        if not pairs & current:
            return
        time.sleep(0.05)


def repair_store(conn: Connection, sources: Sources, actions: dict) -> list[dict]:
    """Counters recounted, dangling interface references cleared and MAC guards restored,
    under the blocks' locks (taken in id order), with one audit row for the repair."""
    network = sources.network
    counters = counter_findings(conn, network)
    dangling = interface_findings(conn, network)
    unguarded = [
        f for f in duplicate_mac_findings(conn, network) if f["kind"] == "active_mac_missing"
    ]
    for block_id in sorted({f["block_id"] for f in (*counters, *dangling, *unguarded)}):
        lock_block(conn, block_id)
    fixed = []
    for f in counters:
        actual = conn.execute(
            select(func.count()).where(IP.block_id == f["block_id"], IP.state == "allocated")
        ).scalar()
        conn.execute(update(blocks).where(B.id == f["block_id"]).values(allocated_count=actual))
        fixed.append({**f, "actual": actual})
    for f in dangling:
        conn.execute(
            update(ip_addresses)
            .where(
                IP.block_id == f["block_id"],
                IP.address == int(netaddr.IPAddress(f["address"])),
                IP.interface_id == f["interface_id"],
            )
            .values(interface_id=None)
        )
        fixed.append(f)
    for f in unguarded:
        conn.execute(
            update(ip_addresses)
            .where(
                and_(
                    IP.block_id == f["block_id"],
                    IP.address == int(netaddr.IPAddress(f["address"])),
                    IP.state == "allocated",
                    IP.active_mac.is_(None),
                )
            )
            .values(active_mac=IP.mac)
        )
        fixed.append(f)
    audit.record(
        conn, actor=audit.who()[0], via=audit.who()[1], command="reconcile.fix",
        params={"network": network, "hostsfile": sources.hostsfile,
                "hostsdir": sources.hostsdir, "leasefile": sources.leasefile},
        result={**actions, "store": [{"kind": f["kind"], "block_id": f["block_id"]}
                                     for f in fixed]},
    )  # fmt: skip
    return fixed
