"""The dnsmasq backend: hosts file, opts file, hosts dir, SIGHUP and dhcp_release.

What dnsmasq does (measured on 2.90): SIGHUP re-reads every file, in time
quadratic in the number of host lines, serving no DHCP meanwhile; a new file
in --dhcp-hostsdir is read by inotify in ~0.1 s at any size, but removals need
SIGHUP. So additions go to the hosts dir when one is configured, and only a
removal or change rewrites the hosts file and reloads.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from melange import dhcp
from melange.dhcpsync import SyncResult, Target
from melange.filesync import write_if_changed
from melange.localfiles import program_pid, read_text
from melange.store import Store

log = logging.getLogger("melange.dnsmasq")
IDLE_TIMEOUT = 60.0


class Dnsmasq:
    name = "dnsmasq"

    def __init__(self, target: Target) -> None:
        self.target = target
        self.known: set[str] | None = None  # lines dnsmasq has (file + hosts dir)
        self._removed: set[str] = set()
        self._sequence = 0

    # -- what dnsmasq has now

    def _on_disk(self) -> set[str]:
        lines: set[str] = set()
        files = [self.target.hostsfile, *self._dir_files()]
        for path in files:
            try:
                lines.update(line for line in read_text(path).splitlines() if line)
            except FileNotFoundError:
                continue
        return lines

    def _dir_files(self) -> list[Path]:
        directory = self.target.hostsdir
        if directory is None or not directory.is_dir():
            return []
        return sorted(
            p for p in directory.iterdir() if p.name.startswith("melange-") and p.is_file()
        )

    # -- one pass

    def sync(self, store: Store, *, force_reload: bool = False) -> SyncResult:
        """Render, write what changed, reload only when a removal or change needs it."""
        target = self.target
        if target.hostsdir is None and not target.release_interface:
            result = store.read(self._stream)
        else:
            result = self._diff(store)
        if target.optsfile is not None:
            opts = store.read(lambda conn: dhcp.opts_text(conn, target.network))
            result.opts_changed = write_if_changed(target.optsfile, [opts])
        needs_reload = (
            force_reload or result.opts_changed or (result.hosts_changed and not result.added_only)
        )
        if needs_reload:
            result.server_running, result.reloaded = self._reload()
        elif target.pidfile is not None:
            result.server_running = self._pid() is not None
        if self._removed and result.reloaded and target.release_interface:
            result.released = self._release(self._removed)
        self._removed = set()
        return result

    def _stream(self, conn) -> SyncResult:
        """The hosts file straight from the query to disk: memory stays flat at any size."""
        counted = _Counter(dhcp.hosts_lines(conn, self.target.network))
        changed = write_if_changed(self.target.hostsfile, counted)
        return SyncResult(hosts_changed=changed, lines=counted.count)

    def _diff(self, store: Store) -> SyncResult:
        """Compare line sets: additions can go to the hosts dir, removals can be released."""
        target = self.target
        if self.known is None:
            self.known = self._on_disk()
        lines = store.read(self._lines)
        added, removed = lines - self.known, self.known - lines
        result = SyncResult(lines=len(lines), added=len(added), removed=len(removed))
        if added or removed or not target.hostsfile.exists():
            result.hosts_changed = True
            if target.hostsdir is not None and not removed and target.hostsfile.exists():
                self._add_to_dir(sorted(added, key=_sort_key))
                result.added_only = True
            else:
                self._rewrite(sorted(lines, key=_sort_key))
        self.known = lines
        self._removed = removed
        return result

    def _lines(self, conn) -> set[str]:
        return {line.rstrip("\n") for line in dhcp.hosts_lines(conn, self.target.network)}

    def _rewrite(self, ordered: list[str]) -> None:
        """The whole set into the hosts file; the hosts dir emptied (read again on SIGHUP)."""
        write_if_changed(self.target.hostsfile, (f"{line}\n" for line in ordered))
        for path in self._dir_files():
            path.unlink(missing_ok=True)

    def _add_to_dir(self, ordered: list[str]) -> None:
        """New reservations as a new file, which dnsmasq reads by inotify, without reload."""
        directory = self.target.hostsdir
        assert directory is not None
        self._sequence = max(self._sequence, len(self._dir_files())) + 1
        name = directory / f"melange-{time.time_ns()}-{self._sequence}"
        write_if_changed(name, (f"{line}\n" for line in ordered))

    # -- the process

    def _pid(self) -> int | None:
        """dnsmasq's pid, only when the pidfile names a running dnsmasq."""
        if self.target.pidfile is None:
            return None
        return program_pid(self.target.pidfile, "dnsmasq")

    def _reload(self) -> tuple[bool | None, bool]:
        """SIGHUP once dnsmasq is idle, so at most one reload is ever in flight."""
        if self.target.pidfile is None:
            return None, False
        pid = self._pid()
        if pid is None:
            log.warning("dnsmasq is not running (pidfile %s); files written", self.target.pidfile)
            return False, False
        wait_idle(pid)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return False, False
        return True, True

    def _release(self, removed: set[str]) -> list[str]:
        """Tell dnsmasq to forget leases of removed reservations (after its reload)."""
        pid = self._pid()
        if pid is not None:
            time.sleep(0.05)
            wait_idle(pid)
        released = []
        for line in sorted(removed, key=_sort_key):
            mac, address = line.split(",")[:2]
            if address.startswith("["):
                continue  # dhcp_release speaks DHCPv4 only
            subprocess.run(
                ["dhcp_release", self.target.release_interface, address, mac],
                check=False, capture_output=True, timeout=10,
            )  # fmt: skip
            released.append(address)
        return released


def wait_idle(pid: int, timeout: float = IDLE_TIMEOUT) -> bool:
    """Wait until the process sleeps and uses no CPU (dnsmasq has finished a reload)."""
    deadline = time.monotonic() + timeout
    last = _cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now = _cpu(pid)
        if now is None:
            return False
        if last is not None and now[0] in "SI" and now[1] == last[1]:
            return True
        last = now
    return False


def _cpu(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None
    return fields[0], int(fields[11]) + int(fields[12])


def _sort_key(line: str) -> tuple[int, bytes]:
    """The order `melange dhcp hosts` prints: IPv4 before IPv6, then by address."""
    address = line.split(",")[1]
    if address.startswith("["):
        return 6, socket.inet_pton(socket.AF_INET6, address[1:-1])
    return 4, socket.inet_pton(socket.AF_INET, address)


class _Counter:
    """Passes lines through, counting them."""

    def __init__(self, lines) -> None:
        self.lines = lines
        self.count = 0

    def __iter__(self):
        for line in self.lines:
            self.count += 1
            yield line
