"""The DNS names dnsmasq answers: one small file a name in --hostsdir, folded into --addn-hosts.

What dnsmasq 2.90 does (measured): a new file in --hostsdir is answered within
milliseconds at 50,000 names, by inotify, with no reload; a file replaced by
rename replaces that file's records; a deleted file's records are gone at
once. --addn-hosts is read only at start and at SIGHUP (58 ms at 50,000
names). Rewriting one big file inside the hosts dir took 17 s of CPU with no
answers meanwhile, so the big file is never in the hosts dir. A name in both
(same address) is answered once: dnsmasq drops the duplicate.

So every addition, rename and release is a small file (named after the DNS
name, which only holds letters, digits, hyphens and dots: never a dot-name
dnsmasq would skip) written or deleted; the set is folded into the
addn-hosts file, and the small files removed, only (1) at a SIGHUP that is
sent anyway (a DHCP reload), (2) when a name must lose a record the folded
file holds (only a reload takes one away), or (3) when the small files pass
`FOLD_AT`, or (4) when one pass would add more than `FOLD_BURST` (a bulk
allocation). A fold writes the whole file first, reloads, waits for dnsmasq to
have read it, and only then deletes the small files: no name stops
resolving on the way.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType

from sqlalchemy import Connection

from melange import dns_render
from melange.auditfeed import AuditFeed
from melange.dnsmasq.files import dir_files
from melange.filesync import write_if_changed
from melange.localfiles import read_text

log = logging.getLogger("melange.dnsmasq")
FOLD_AT = 1000  # small files before a fold (see docs/performance.md, "DNS")
# New small files in one pass beyond which a fold is cheaper for dnsmasq: each new
# file costs it a pass over its whole cache, a reload one read of every name.
FOLD_BURST = 8

Names = dict[str, frozenset[str]]  # DNS name -> its hosts lines ("ADDRESS NAME")
Wanted = Mapping[str, frozenset[str]]  # the same, read-only (StoreNames.read)


def parse(text: str) -> Names:
    """The names of a hosts file: each `ADDRESS NAME…` line as one line per name."""
    found: dict[str, set[str]] = {}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        for name in fields[1:]:
            found.setdefault(name.lower(), set()).add(f"{fields[0]} {name.lower()}")
    return {name: frozenset(lines) for name, lines in found.items()}


def rendered(conn: Connection, network: str | None) -> Names:
    """What the store says dnsmasq should answer (melange.dns_render)."""
    found: dict[str, set[str]] = {}
    for name, line in dns_render.name_lines(conn, network):
        found.setdefault(name, set()).add(line.rstrip("\n"))
    return {name: frozenset(lines) for name, lines in found.items()}


class StoreNames:
    """The store's names for one network, read whole once and then only where the
    audit trail says an address changed (melange.auditfeed, on every backend).

    Anything the feed cannot vouch for (a block changed, several addresses at once,
    no audit row at all, an id that went missing) reads every name again.
    `changed` says which names the last read may have changed (None: any)."""

    def __init__(self, network: str | None) -> None:
        self.network = network
        self.wanted: dict[str, frozenset[str]] = {}
        self.by_address: dict[tuple[int, int], tuple[str, str]] = {}
        self.feed = AuditFeed()
        self.changed: set[str] | None = None

    def read(self, conn: Connection) -> Wanted:
        """The names, in the caller's transaction: a read-only view that the next read
        changes (a copy of 50,000 names cost 1 ms a pass; DnsFiles keeps its own copy
        of what it folds)."""
        self.changed = set()
        self.feed.follow(conn, time.monotonic(), partial(self._whole, conn),
                         partial(self._refresh, conn))  # fmt: skip
        return MappingProxyType(self.wanted)

    def _whole(self, conn: Connection) -> None:
        found: dict[str, set[str]] = {}
        self.by_address = {}
        for name, line, block_id, address in dns_render.name_rows(conn, self.network):
            found.setdefault(name, set()).add(line)
            self.by_address[block_id, address] = (name, line)
        self.wanted = {name: frozenset(lines) for name, lines in found.items()}
        self.changed = None

    def _refresh(self, conn: Connection, block_id: int, address: int) -> None:
        assert self.changed is not None
        old = self.by_address.pop((block_id, address), None)
        if old is not None:
            name, line = old
            self.changed.add(name)
            left = self.wanted.get(name, frozenset()) - {line}
            if left:
                self.wanted[name] = left
            else:
                self.wanted.pop(name, None)
        for name, line in dns_render.name_at(conn, self.network, block_id, address):
            self.changed.add(name)
            self.wanted[name] = self.wanted.get(name, frozenset()) | {line}
            self.by_address[block_id, address] = (name, line)


def _line_key(line: str) -> tuple[int, bytes]:
    address = line.split(" ", 1)[0]
    if ":" in address:
        return 6, socket.inet_pton(socket.AF_INET6, address)
    return 4, socket.inet_pton(socket.AF_INET, address)


def ordered(lines: Iterable[str]) -> list[str]:
    """Lines in `dns hosts` order: IPv4 before IPv6, by address."""
    return sorted(lines, key=_line_key)


@dataclass
class Plan:
    """What one pass does to the DNS files."""

    fold: bool = False
    write: dict[str, frozenset[str]] = field(default_factory=dict)  # small files to (re)write
    delete: list[str] = field(default_factory=list)  # small files to delete
    names: int = 0
    # Set by DnsFiles.apply: the fold changed the addn-hosts file; small files wait for a
    # reload to be removed. A fold that did neither needs no reload.
    rewrote: bool = False
    small_waiting: bool = False

    @property
    def changed(self) -> bool:
        return self.rewrote or bool(self.write) or bool(self.delete)

    @property
    def needs_reload(self) -> bool:
        """Whether dnsmasq must reload to read this pass's DNS files."""
        return self.fold and (self.rewrote or self.small_waiting)


class DnsFiles:
    """The hosts dir and the addn-hosts file of one dnsmasq, and what they hold."""

    def __init__(self, hostsdir: Path | None, addn_hosts: Path | None) -> None:
        self.hostsdir = hostsdir
        self.addn_hosts = addn_hosts
        self.folded: Names | None = None  # None: not read yet
        self.small: Names = {}

    def served(self) -> Names:
        """What dnsmasq reads now, from the files: the folded file and the small ones."""
        folded = self._read_folded()
        small = self._read_small()
        merged = {name: set(lines) for name, lines in folded.items()}
        for name, lines in small.items():
            merged.setdefault(name, set()).update(lines)
        return {name: frozenset(lines) for name, lines in merged.items()}

    def _read_folded(self) -> Names:
        if self.addn_hosts is None:
            return {}
        try:
            return parse(read_text(self.addn_hosts))
        except FileNotFoundError:
            return {}

    def _read_small(self) -> Names:
        small: dict[str, frozenset[str]] = {}
        for path in dir_files(self.hostsdir):
            small[path.name] = frozenset(line for lines in parse(read_text(path)).values()
                                         for line in lines)  # fmt: skip
        return small

    def plan(
        self, wanted: Wanted, *, reloading: bool, can_reload: bool, changed: set[str] | None = None
    ) -> Plan:
        """Compare what the store wants with what the files hold: for the names in
        `changed` only, when the caller knows the others are as they were."""
        if self.folded is None:
            self.folded, self.small = self._read_folded(), self._read_small()
            changed = None
        folded = self.folded
        if changed is None:
            changed = set(wanted) | set(folded) | set(self.small)
        empty: frozenset[str] = frozenset()
        plan = Plan(names=len(wanted))
        if self.addn_hosts is not None:
            missing_file = not self.addn_hosts.exists()
            must_remove = any(folded.get(n, empty) - wanted.get(n, empty) for n in changed)
            differs = any(folded.get(n, empty) != wanted.get(n, empty) for n in changed)
            if self.hostsdir is None or missing_file or (must_remove and can_reload):
                plan.fold = True
            elif reloading and (self.small or differs):
                plan.fold = True
        if plan.fold:
            return plan
        for name in sorted(changed):
            extra = wanted.get(name, empty) - folded.get(name, empty)
            if extra and self.small.get(name) != extra:
                plan.write[name] = extra
            elif not extra and name in self.small:
                plan.delete.append(name)
        growing = len(self.small) + len(plan.write) - len(plan.delete) > FOLD_AT
        burst = len(plan.write) > FOLD_BURST
        if self.addn_hosts is not None and can_reload and (growing or burst):
            return Plan(fold=True, names=len(wanted))
        return plan

    def apply(self, plan: Plan, wanted: Wanted) -> None:
        """The small files written and deleted, or (a fold) the whole addn-hosts file
        written; a fold's small files are removed by `after_fold`, once dnsmasq read it."""
        if plan.fold:
            assert self.addn_hosts is not None
            every = [line for name in sorted(wanted) for line in ordered(wanted[name])]
            plan.rewrote = write_if_changed(self.addn_hosts, (f"{line}\n" for line in every))
            plan.small_waiting = bool(self.small)
            self.folded = dict(wanted)
            return
        assert self.hostsdir is not None or not (plan.write or plan.delete)
        for name, lines in sorted(plan.write.items()):
            assert self.hostsdir is not None
            write_if_changed(self.hostsdir / name, (f"{line}\n" for line in ordered(lines)))
            self.small[name] = lines
        for name in plan.delete:
            assert self.hostsdir is not None
            (self.hostsdir / name).unlink(missing_ok=True)
            self.small.pop(name, None)

    def after_fold(self, reloaded: bool) -> None:
        """The small files, now in the folded file dnsmasq has read, removed. Without a
        reload those the store still wants stay (dnsmasq reads the folded file only at its
        next start or reload), and any other goes: its records are wrong now."""
        if not reloaded:
            log.warning("DNS names folded into %s; dnsmasq reads it at its next reload",
                        self.addn_hosts)  # fmt: skip
            folded = self.folded or {}
            for name, lines in list(self.small.items()):
                if not lines <= folded.get(name, frozenset()):
                    if self.hostsdir is not None:
                        (self.hostsdir / name).unlink(missing_ok=True)
                    del self.small[name]
            return
        for path in dir_files(self.hostsdir):
            path.unlink(missing_ok=True)
        self.small = {}
