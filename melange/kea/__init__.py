"""The Kea backend: reservations in Kea's host database, subnets in a config fragment.

What Kea 2.2 does (Debian 12, measured): it reads reservations from its
MySQL/PostgreSQL host database at each exchange, so a committed row is served
in ~0.1 s at any size with no reload, while a `config-set`/`config-reload` is a
full reconfiguration (1.1 s at 50k inline reservations, no DHCP meanwhile). So
reservations go to the host database, by difference, in batched transactions,
and Kea is told to `config-reload` only when the fragment (subnets and their
options) changed. Stale leases are dropped with `lease4-del` (the `lease_cmds`
hook) when `release` is set.

Target options (melanged's `kea_*` settings): `host_db` (URL of Kea's host
database, required), `config` (the fragment file to keep), `control_socket`
(kea-dhcp4's Unix socket), `release` (lease4-del the leases of removed or
moved reservations).

Reached only through the `melange.dhcp_backends` registry.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import netaddr
from sqlalchemy import Connection

from melange.dhcp_backend import Lease, SyncResult, Target
from melange.errors import InvalidInput, StoreUnavailable
from melange.filesync import write_if_changed
from melange.kea import control, hostdb, render
from melange.kea.wanted import WantedReservations
from melange.store import Store

log = logging.getLogger("melange.kea")
TRUE = {"1", "true", "yes", "on"}
FRAGMENT_MODE = 0o640


class Kea:
    name = "kea"

    # -- renders and limits, for the core (no target needed)

    hosts_text = staticmethod(render.hosts_text)
    opts_text = staticmethod(render.opts_text)
    config_text = staticmethod(render.config_text)
    check_routes = staticmethod(render.check_routes)

    def __init__(self, target: Target) -> None:
        self.target = target
        options = target.options
        url = options.get("host_db")
        if not url:
            raise InvalidInput("the kea backend needs Kea's host database (kea_host_db URL)")
        self.db = hostdb.HostDatabase(str(url), target.network)
        self.config = Path(options["config"]) if options.get("config") else None
        socket = options.get("control_socket")
        self.socket = Path(socket) if socket else None
        self.release_leases = str(options.get("release", "")).lower() in TRUE or (
            options.get("release") is True
        )
        if self.release_leases and self.socket is None:
            raise InvalidInput("kea_release needs Kea's control socket (kea_control_socket)")
        self.known: set[render.Reservation] | None = None
        self.wanted = WantedReservations(target.network)
        self.checked = False
        self.reload_due = False  # the fragment changed and Kea has not read it yet
        self.transactions = 0  # committed by the last pass (for the log and the benchmarks)
        try:
            self._check()
        except hostdb.SchemaUnsupported:
            raise
        except StoreUnavailable as error:  # unreachable now: checked again at the first pass
            log.warning("%s", error.message)

    def _check(self) -> None:
        if not self.checked:
            self.db.check_schema()
            self.checked = True

    # -- one pass

    def sync(self, store: Store, *, force_reload: bool = False) -> SyncResult:
        """The fragment first (a new subnet's reservations are useless until Kea has
        it), then the host database by difference, then the stale leases."""
        self._check()
        result = SyncResult()
        if self.config is not None:
            text = store.read(lambda conn: render.fragment(
                conn, self.target.network, hostdb.stanza(self.db.url)))  # fmt: skip
            # It holds the host database's password: Kea runs as root (or as the file's
            # group, given by the operator), nobody else reads it.
            result.opts_changed = write_if_changed(self.config, [text], mode=FRAGMENT_MODE)
        if result.opts_changed or force_reload:
            self.reload_due = self.socket is not None
        if self.reload_due:
            result.reloaded = self._reload()
        store.read(self.wanted.read)
        want = list(self.wanted.by_address.values())
        keys = self.wanted.changed
        try:
            if self.known is None or keys is None:  # Kea's rows read again: all of them
                if self.known is None:
                    self.known = self.db.owned()
                changes = hostdb.difference(self.known, want)
            else:  # only the keys the store's changes touched
                changes = hostdb.difference(
                    {r for r in self.known if (r.subnet_id, r.mac) in keys},
                    [r for r in want if (r.subnet_id, r.mac) in keys],
                )
            started = time.monotonic()
            transactions = self.transactions = self.db.apply(changes)
        except BaseException:
            self.known = None  # read Kea's rows again: a batch may have committed
            raise
        if changes:
            log.info("kea host database: -%d ~%d +%d in %d transaction(s), %.3f s",
                     len(changes.delete), len(changes.update), len(changes.insert),
                     transactions, time.monotonic() - started)  # fmt: skip
        previous, self.known = self.known, set(want)
        result.lines = len(want)
        result.hosts_changed = bool(changes)
        result.added_only = bool(changes) and not (changes.delete or changes.update)
        result.added = len(changes.insert) + len(changes.update)
        result.removed = len(changes.delete) + len(changes.update)
        result.server_running = None
        if self.release_leases and (changes.delete or changes.update):
            try:
                result.released = self._forget(changes, previous, want)
            except StoreUnavailable as error:  # the rows are written: the pass stands
                log.warning("stale leases not released: %s", error.message)
        return result

    def _reload(self) -> bool:
        """`config-reload`; a Kea that does not answer is asked again at the next pass
        (and reads the file anyway when it starts): reservations go on meanwhile."""
        assert self.socket is not None
        try:
            control.reload(self.socket)
        except StoreUnavailable as error:
            log.warning("Kea did not reload its configuration (will retry): %s", error.message)
            return False
        self.reload_due = False
        return True

    def _forget(self, changes: hostdb.Changes, previous: set[render.Reservation],
                want: list[render.Reservation]) -> list[str]:  # fmt: skip
        """lease4-del each address a removed or moved reservation had, unless the same
        MAC still holds it."""
        assert self.socket is not None
        kept = {(r.mac, r.address) for r in want}
        before = {(r.subnet_id, r.mac): r for r in previous}
        old = [*changes.delete, *(before[(r.subnet_id, r.mac)] for r in changes.update)]
        released = []
        for r in old:
            if (r.mac, r.address) in kept:
                continue
            address = str(netaddr.IPAddress(r.address, 4))
            if control.forget_lease(self.socket, address):
                released.append(address)
        return released

    # -- reconcile

    def check_target(self, *, releasing: bool) -> None:
        self._check()
        if releasing and self.release_leases and self.socket is not None:
            control.command(self.socket, "version-get")

    def rendered(self, conn: Connection) -> list[str]:
        return [render.reservation_line(r) for r in render.reservations(conn, self.target.network)]

    def served(self) -> list[str] | None:
        return sorted(render.reservation_line(r) for r in self.db.owned())

    def line_keys(self, line: str) -> tuple[tuple, tuple]:
        r = render.parse_line(line)
        return (r.subnet_id, r.address), (r.subnet_id, r.mac)

    def leases(self, now: float | None = None) -> list[Lease]:
        """Kea's leases in force, through its control socket (lease_cmds)."""
        if self.socket is None:
            return []
        now = time.time() if now is None else now
        found = []
        for lease in control.leases(self.socket):
            expires = int(lease.get("cltt", 0)) + int(lease.get("valid-lft", 0))
            if lease.get("state", 0) != 0 or (expires and expires < now):
                continue
            mac_text = lease.get("hw-address") or None
            mac = int(mac_text.replace(":", ""), 16) if mac_text else None
            found.append(Lease(expires, netaddr.IPAddress(lease["ip-address"]), mac,
                               mac_text, lease.get("hostname") or None))  # fmt: skip
        return found

    def settle(self, after: SyncResult) -> None:
        """Nothing to wait for: Kea reads committed rows at the next exchange."""

    def release(self, leases: list[tuple[str, str | None]]) -> list[str]:
        if self.socket is None:
            return []
        return [a for a, _ in leases if ":" not in a and control.forget_lease(self.socket, a)]
