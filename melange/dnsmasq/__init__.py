"""The dnsmasq backend: hosts file, opts file, hosts dir, SIGHUP, leases and dhcp_release.

What dnsmasq does (measured on 2.90): SIGHUP re-reads every file, in time
quadratic in the number of host lines, serving no DHCP meanwhile; a new file
in --dhcp-hostsdir is read by inotify in ~0.1 s at any size, but removals need
SIGHUP. So additions go to the hosts dir when one is configured, and only a
removal or change rewrites the hosts file and reloads.

Reached only through the `melange.dhcp_backends` registry (melange.dhcp_backend),
never imported by name: the process is in `process`, the files it reads in
`files`, what melange writes into them (and their limits) in `render`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import Connection

from melange.dhcp_backend import Lease, SyncResult, Target
from melange.dnsmasq import files, names, process, render
from melange.dnsmasq.wanted import WantedHosts
from melange.errors import InvalidInput, NotFound
from melange.filesync import write_if_changed
from melange.store import Store

log = logging.getLogger("melange.dnsmasq")
INOTIFY_WAIT = 0.3  # dnsmasq reads a new hosts-dir file in about 0.1 s (at any size)
RELEASE_WAIT = 5.0  # seconds to wait for dnsmasq to drop released leases from its file


class Dnsmasq:
    name = "dnsmasq"

    # -- renders and limits, for the core (no target needed)

    hosts_text = staticmethod(render.hosts_text)
    opts_text = staticmethod(render.opts_text)
    config_text = staticmethod(render.config_text)
    check_routes = staticmethod(render.check_routes)
    fold_at = names.FOLD_AT  # small DNS files before a fold (melange.dnsmasq.names)

    def __init__(self, target: Target) -> None:
        self.target = target
        self.known: set[str] | None = None  # lines dnsmasq has (file + hosts dir)
        self._removed: set[str] = set()
        self._sequence = 0
        self.names: names.DnsFiles | None = None  # DNS names (melange.dnsmasq.names)
        self.store_names = names.StoreNames(target.network)
        self.wanted = WantedHosts(target.network)
        if target.dns_hostsdir is not None or target.addn_hosts is not None:
            self.names = names.DnsFiles(target.dns_hostsdir, target.addn_hosts)

    @property
    def hostsfile(self) -> Path:
        if self.target.hostsfile is None:
            raise InvalidInput("no hosts file to write (dnsmasq --dhcp-hostsfile)")
        return self.target.hostsfile

    # -- what dnsmasq has now

    def served(self) -> list[str] | None:
        """The hosts file's lines and the hosts dir's, as dnsmasq reads them."""
        if not self.hostsfile.exists():
            return None
        return files.host_lines([self.hostsfile, *files.dir_files(self.target.hostsdir)])

    def rendered(self, conn: Connection) -> list[str]:
        """`melange dhcp hosts` for the target's network, a line each."""
        return [line.rstrip("\n") for line in render.hosts_lines(conn, self.target.network)]

    def line_keys(self, line: str) -> tuple[tuple, tuple]:
        return files.host_keys(line)

    # -- one pass

    def sync(self, store: Store, *, force_reload: bool = False) -> SyncResult:
        """Render, write what changed, reload only when a removal or change needs it.

        DNS names first: a new name's small file is the cheapest change of the pass and
        the one a client waits for (the DHCP render reads every host). When the DHCP
        part then needs a reload anyway, the small files are folded into it."""
        target = self.target
        wanted = self._wanted_names(store)
        plan = self._plan_names(wanted, force_reload)
        if target.hostsdir is None and not target.release_interface:
            result = store.read(self._stream)
        else:
            result = self._diff(store)
        if target.optsfile is not None:
            optsfile = target.optsfile
            opts = store.read(lambda conn: render.opts_text(conn, target.network))
            result.opts_changed = write_if_changed(optsfile, [opts])
        needs_reload = (
            force_reload or result.opts_changed or (result.hosts_changed and not result.added_only)
        )
        if plan is not None:
            result.dns_changed = plan.changed
            if needs_reload and not plan.fold:
                plan = self._plan_names(wanted, True)  # a fold, if small files are waiting
                assert plan is not None
                result.dns_changed = result.dns_changed or plan.changed
            result.dns_folded, result.dns_names = plan.fold, plan.names
        needs_reload = needs_reload or (plan is not None and plan.needs_reload)
        if needs_reload:
            result.server_running, result.reloaded = self._reload()
        elif target.pidfile is not None:
            result.server_running = process.pid(target.pidfile) is not None
        if plan is not None and plan.needs_reload and self.names is not None:
            if result.reloaded:
                process.after_reload(target.pidfile)
            self.names.after_fold(result.reloaded)
        if self._removed and result.reloaded and target.release_interface:
            result.released = self._release_removed(target.release_interface)
        self._removed = set()
        return result

    def _wanted_names(self, store: Store) -> names.Wanted | None:
        """The names the store wants dnsmasq to answer; None without DNS files."""
        return None if self.names is None else store.read(self.store_names.read)

    def _plan_names(self, wanted: names.Wanted | None, reloading: bool) -> names.Plan | None:
        """The DNS names' files brought in step: small files now, or a fold whose small
        files go once the reload that reads it is over (melange.dnsmasq.names)."""
        if self.names is None or wanted is None:
            return None
        pidfile = self.target.pidfile
        can_reload = pidfile is not None and process.pid(pidfile) is not None
        # The first pass of this process folds, as a pass that reloads anyway: every
        # name as a small file would cost dnsmasq a pass over its cache each when it
        # (re)starts, and a dnsmasq that is not running reads the folded file then.
        first = self.names.folded is None
        plan = self.names.plan(wanted, reloading=reloading or first, can_reload=can_reload,
                               changed=self.store_names.changed)  # fmt: skip
        self.names.apply(plan, wanted)
        return plan

    # -- DNS names (reconcile; melange.reconcile.names)

    def dns_served(self) -> names.Names | None:
        """The names dnsmasq reads from the DNS files; None without DNS files."""
        return None if self.names is None else self.names.served()

    def dns_rendered(self, conn: Connection) -> names.Names:
        return names.rendered(conn, self.target.network)

    def dns_repair(self, store: Store) -> bool:
        """The DNS files rewritten from the store, whatever they hold: folded and
        reloaded when there is an addn-hosts file, else the small files redone."""
        if self.names is None:
            return False
        self.names = names.DnsFiles(self.target.dns_hostsdir, self.target.addn_hosts)
        wanted = store.read(lambda conn: names.rendered(conn, self.target.network))
        fold = self.target.addn_hosts is not None
        plan = self.names.plan(wanted, reloading=fold, can_reload=fold)
        if fold:
            plan = names.Plan(fold=True, names=len(wanted))
        self.names.apply(plan, wanted)
        if plan.fold:
            _, reloaded = self._reload()
            if reloaded:
                process.after_reload(self.target.pidfile)
            self.names.after_fold(reloaded)
        return plan.changed

    def _stream(self, conn: Connection) -> SyncResult:
        """The hosts file straight from the query to disk: memory stays flat at any size."""
        counted = _Counter(render.hosts_lines(conn, self.target.network))
        changed = write_if_changed(self.hostsfile, counted)
        return SyncResult(hosts_changed=changed, lines=counted.count)

    def _diff(self, store: Store) -> SyncResult:
        """Compare line sets: additions can go to the hosts dir, removals can be released.
        The store's lines are followed through the audit trail (melange.dnsmasq.wanted):
        a pass after one allocation looks at that address only, at any size."""
        hostsdir = self.target.hostsdir
        store.read(self.wanted.read)
        delta = self.wanted.delta
        if self.known is None or delta is None:
            if self.known is None:
                self.known = set(files.host_lines([self.hostsfile, *files.dir_files(hostsdir)]))
            lines = self.wanted.lines
            added, removed = lines - self.known, self.known - lines
        else:
            added, removed = delta[0] - self.known, delta[1] & self.known
        result = SyncResult(lines=len(self.wanted.count), added=len(added), removed=len(removed))
        try:
            if added or removed or not self.hostsfile.exists():
                result.hosts_changed = True
                if hostsdir is not None and not removed and self.hostsfile.exists():
                    self._add_to_dir(hostsdir, sorted(added, key=files.sort_key))
                    result.added_only = True
                else:
                    self._rewrite(sorted(self.wanted.count, key=files.sort_key))
        except BaseException:
            self.known = None  # the files read again next pass, against every line
            raise
        self.known -= removed
        self.known |= added
        self._removed = removed
        return result

    def _rewrite(self, ordered: list[str]) -> None:
        """The whole set into the hosts file; the hosts dir emptied (read again on SIGHUP)."""
        write_if_changed(self.hostsfile, (f"{line}\n" for line in ordered))
        for path in files.dir_files(self.target.hostsdir):
            path.unlink(missing_ok=True)

    def _add_to_dir(self, directory: Path, ordered: list[str]) -> None:
        """New reservations as a new file, which dnsmasq reads by inotify, without reload."""
        self._sequence = max(self._sequence, len(files.dir_files(directory))) + 1
        name = directory / f"melange-{time.time_ns()}-{self._sequence}"
        write_if_changed(name, (f"{line}\n" for line in ordered))

    def _reload(self) -> tuple[bool | None, bool]:
        if self.target.pidfile is None:
            return None, False
        running, reloaded = process.reload(self.target.pidfile)
        if not running:
            log.warning("dnsmasq is not running (pidfile %s); files written", self.target.pidfile)
        return running, reloaded

    def _release_removed(self, interface: str) -> list[str]:
        """Tell dnsmasq to forget leases of removed reservations (after its reload)."""
        process.after_reload(self.target.pidfile)
        released = []
        for line in sorted(self._removed, key=files.sort_key):
            mac, address = line.split(",")[:2]
            if address.startswith("["):
                continue  # dhcp_release speaks DHCPv4 only
            process.release(interface, address, mac)
            released.append(address)
        return released

    # -- leases (reconcile)

    def check_target(self, *, releasing: bool) -> None:
        """A release interface dhcp_release can take (and dhcp_release, when it will
        run), then the lease file: all before anything changes."""
        if self.target.release_interface is not None:
            process.check_release(self.target.release_interface, needed=releasing)
        leasefile = self.target.leasefile
        if leasefile is not None and not leasefile.exists():
            raise NotFound(f"no lease file {leasefile} (dnsmasq --dhcp-leasefile)")

    def leases(self, now: float | None = None) -> list[Lease]:
        if self.target.leasefile is None:
            return []
        return files.read_leases(self.target.leasefile, now)

    def settle(self, after: SyncResult) -> None:
        """A new hosts-dir file is read by inotify; a reload is over once dnsmasq idles."""
        if after.added_only:
            time.sleep(INOTIFY_WAIT)
        if after.reloaded:
            process.after_reload(self.target.pidfile)

    def release(self, leases: list[tuple[str, str | None]]) -> list[str]:
        """`dhcp_release IFACE IP MAC` for each IPv4 lease with an Ethernet MAC (all
        dhcp_release speaks), then the lease file watched until dnsmasq dropped them."""
        interface = self.target.release_interface
        if not interface:
            return []
        stale = [(a, mac) for a, mac in leases if ":" not in a and mac and files.is_mac(mac)]
        for address, mac in stale:
            process.release(interface, address, mac)
        self._wait_dropped(set(stale))
        return [address for address, _ in stale]

    def _wait_dropped(self, pairs: set[tuple[str, str]]) -> None:
        """dhcp_release gets no answer: watch dnsmasq rewrite its lease file instead."""
        deadline = time.monotonic() + RELEASE_WAIT
        while pairs and time.monotonic() < deadline:
            current = {(str(lease.address), lease.mac_text) for lease in self.leases()}
            if not pairs & current:
                return
            time.sleep(0.05)


class _Counter:
    """Passes lines through, counting them."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = lines
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.count += 1
            yield line
