"""melanged's loop: watch the store, coalesce, sync the DHCP backend, act on signals.

Signal handlers only record the signal; the loop acts on it between passes,
so a SIGTERM never interrupts a file write half-way.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from melange import dhcp_backend
from melange.errors import Conflict, MelangeError, NotFound, StoreUnavailable
from melange.filesync import remove_leftovers
from melange.lean import sqlite_path
from melange.localfiles import open_regular, prepare_directory
from melange.store import Store
from melanged import batching
from melanged.quiescence import Quiescence
from melanged.settings import DaemonSettings, backend_options
from melanged.wakeup import Wakeup
from melanged.watcher import fingerprint

if TYPE_CHECKING:
    from melanged.http.server import HttpServer
    from melanged.server import Access

log = logging.getLogger("melanged")
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
WAKE_GAP = 0.02  # seconds between two looks at the store that commits woke (melanged.wakeup)
RECHECK, RECHECKS = 0.002, 5  # looks again after a wake-up that found nothing new


class PidFile:
    """A pidfile held with flock: a second daemon on it fails, a stale one is reclaimed.

    Opened without following a link, in a directory nobody else controls, and
    only when it is a regular file: a link planted in /run or /tmp by another
    user would otherwise have root truncate whatever it points at."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> PidFile:
        prepare_directory(self.path.parent)
        fd = open_regular(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Conflict(
                f"melanged is already running (pid {other}, pidfile {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def check(self) -> None:
        """Fail now, before detaching, if another daemon holds the pidfile."""
        with self:
            pass

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


class Daemon:
    def __init__(self, settings: DaemonSettings, reload_settings=None) -> None:
        self.settings = settings
        self.reload_settings = reload_settings
        self.signals: list[int] = []
        self._setup()

    def _setup(self) -> None:
        self.store, self.backend = _build(self.settings)
        self.quiet = Quiescence(self.settings.wait_min, self.settings.wait_max)
        self.wakeup = _wakeup(self.settings)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        s = self.settings
        for path in (s.hostsfile, s.optsfile, s.hostsdir, s.dns_hostsdir, s.addn_hosts):
            if path is not None:
                for left in remove_leftovers(path):
                    log.info("removed %s, left by an interrupted render", left)

    def _access(self) -> Access:
        from melanged.server import Access

        s = self.settings
        return Access.from_config(
            {"admin_users": s.admin_users, "admin_groups": s.admin_groups,
             "reader_groups": s.reader_groups,
             "writer_users": s.writer_users, "writer_groups": s.writer_groups}
        )  # fmt: skip

    def open_socket(self) -> None:
        """Serve melange commands on the socket, beside the watcher."""
        from melanged.server import SocketServer, serve_in_background

        s = self.settings
        if s.socket is None:
            return
        self.server = SocketServer(s.socket, self.store, self._access(), s.socket_group)
        serve_in_background(self.server)
        log.info("serving melange commands on %s", s.socket)

    def close_socket(self) -> None:
        server = getattr(self, "server", None)  # set only while serving
        if server is not None:
            server.close()
            del self.server

    def prepare_http(self) -> HttpServer | None:
        """Bind the HTTP API's address and load its certificate, not serving yet: before
        melanged detaches, so that a failure is an `Error:` line on the terminal."""
        from melanged.http.server import HttpServer
        from melanged.settings import listen

        if self.settings.http is None:
            return None
        if getattr(self, "http", None) is None:
            self.http: HttpServer = HttpServer(listen(self.settings), self.store,
                                               limits=self.settings.http_limits,
                                               on_failure=self._http_failed)  # fmt: skip
        return self.http

    def open_http(self) -> None:
        """Serve the HTTP API (melanged.http), beside the socket and the watcher."""
        server = self.prepare_http()
        if server is not None and not server.serving:
            server.start()

    def close_http(self) -> None:
        """Stop the HTTP API gracefully: the requests in progress finish first."""
        server = getattr(self, "http", None)  # set only while serving
        if server is not None:
            server.stop()
            del self.http

    def _refresh_http(self, before: DaemonSettings) -> None:
        """SIGHUP: the same address re-pointed at the new store, its certificate read
        again; an address changed, added or dropped: the new one bound first, and only
        then the old one closed, so a new address that cannot be served (in use, a
        certificate that does not load) leaves the old one serving the new store."""
        from melanged.http.server import HttpServer
        from melanged.settings import listen

        s = self.settings
        server = getattr(self, "http", None)
        try:
            if server is not None and s.http == before.http:
                server.reload(listen(s), self.store, s.http_limits)
                return
            replacement = (HttpServer(listen(s), self.store, limits=s.http_limits,
                                      on_failure=self._http_failed)
                           if s.http is not None else None)  # fmt: skip
        except MelangeError as error:
            log.error("cannot serve HTTP on %s: %s", s.http, error.message)
            if server is not None:
                server.service.store = self.store
            return
        self.close_http()
        if replacement is not None:
            self.http = replacement
            replacement.start()

    def _http_failed(self) -> None:
        """The HTTP server stopped by itself: stop as on SIGTERM (run returns 1)."""
        self.signals.append(signal.SIGTERM)

    def _record(self, signum: int, _frame) -> None:
        self.signals.append(signum)
        self.wakeup.poke()  # taken at once, not after the watcher's wait

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._record)

    def run(self) -> int:
        """Serve the socket and follow the store until SIGTERM; then clean up."""
        self.install_signal_handlers()
        try:
            # The HTTP address is bound before the socket serves: a client that finds
            # the socket answering finds the port accepting too (and a port that cannot
            # be bound stops melanged before any part has served).
            self.prepare_http()
            self.open_socket()
            self.open_http()
            status = self._loop()
            server = getattr(self, "http", None)
            return 1 if server is not None and server.failed else status
        finally:
            self.close_http()
            self.close_socket()
            self.wakeup.close()

    def _serve_only(self) -> int:
        """No DHCP work (no hostsfile): serve until SIGTERM, re-read the config on SIGHUP."""
        log.info("melanged %s serving %s, no DHCP work", os.getpid(), _safe(self.settings.db_url))
        while True:
            taken = self._take_signals("")
            if taken == "exit":
                return 0
            if taken == "reread" and self.backend is not None:
                return self._loop()  # a hostsfile configured now: DHCP work too
            time.sleep(0.05)

    def _take_signals(self, note: str) -> str | None:
        """The pending signals: "exit" for SIGTERM or SIGINT; "reread" once a SIGHUP has
        re-read the configuration; None when there were none."""
        taken = None
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("signal %s: exiting", signal.Signals(signum).name)
                return "exit"
            log.info("SIGHUP: re-reading configuration%s", note)
            self._reconfigure()
            taken = "reread"
        return taken

    def _loop(self) -> int:
        """Render at once, then whenever the store changes."""
        if self.backend is None:
            return self._serve_only()
        log.info("melanged %s watching %s (network %s) -> %s", os.getpid(),
                 _safe(self.settings.db_url), self.settings.network or "all",
                 self.settings.hostsfile)  # fmt: skip
        seen = None
        healthy: bool | None = None
        backoff = BACKOFF_START
        force = woken = False
        rechecks = 0
        self.quiet.changed(time.monotonic())
        while True:
            taken = self._take_signals(", full re-render")
            if taken == "exit":
                return 0
            if taken == "reread":
                seen, force = None, True
                self.quiet.changed(time.monotonic())
            try:
                current = fingerprint(self.store, self.settings.network)
                if healthy is False:
                    log.info("store is reachable again")
                healthy = True
                now = time.monotonic()
                rechecks = _rechecks(woken, current != seen, rechecks)
                if current != seen:
                    self.quiet.changed(now)
                    seen = current
                if force or self.quiet.due(now):
                    result = self.backend.sync(self.store, force_reload=force)
                    self.quiet.rendered(time.monotonic())
                    force = False
                    _log_result(result, self.backend.name)
                backoff = BACKOFF_START
                wait = self._next_look(time.monotonic())
                woken = self.wakeup.wait(min(wait, RECHECK) if rechecks else wait, gap=WAKE_GAP)
            except Exception as error:  # noqa: BLE001  (a daemon outlives any one pass)
                message = error.message if isinstance(error, MelangeError) else repr(error)
                if not isinstance(error, MelangeError):
                    log.exception("unexpected error in a pass; retrying")
                if healthy is not False:
                    log.error("%s, keeping the last files: %s", _trouble(error), message)
                healthy = False
                seen = None  # re-render once it is back
                self.quiet.changed(time.monotonic())
                _sleep_unless_signalled(self, backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)

    def _next_look(self, now: float) -> float:
        """Seconds until the watcher must look at the store again, unless woken: the
        poll, or sooner when gathered changes fall due (melanged.quiescence)."""
        due = self.quiet.due_at()
        wait = self.settings.poll_interval
        return wait if due is None else max(0.0, min(wait, due - now))

    def _reconfigure(self) -> None:
        """SIGHUP: the configuration again, for every part: the store, the backend, and
        the socket's store and roles (a role taken away is gone from the next request).
        A configuration that cannot be used leaves the running one in place."""
        if self.reload_settings is None:
            return
        try:
            settings = self.reload_settings()
            store, backend = _build(settings)
        except MelangeError as error:
            log.error("keeping the old configuration: %s", error.message)
            return
        before, old_store, old_wakeup = self.settings, self.store, self.wakeup
        self.settings, self.store, self.backend = settings, store, backend
        self.quiet = Quiescence(settings.wait_min, settings.wait_max)
        self.wakeup = _wakeup(settings)
        old_wakeup.close()
        self._remove_leftovers()
        from melanged.server import forget_names

        forget_names()  # a group renamed or removed counts from the next connection
        self._refresh_socket(before)
        self._refresh_http(before)
        old_store.close()
        # After the work, not before: a client (a test) waiting for it may rely on it.
        log.info("configuration re-read: every part serves it")

    def _refresh_socket(self, before: DaemonSettings) -> None:
        """The same socket re-pointed at the new store and roles; a socket moved, added
        or dropped by the new configuration closed and opened again."""
        s = self.settings
        server = getattr(self, "server", None)
        same = (s.socket, s.socket_group) == (before.socket, before.socket_group)
        if server is not None and same:
            server.access = self._access()
            server.store = self.store
            return
        self.close_socket()
        try:
            self.open_socket()
        except (MelangeError, OSError) as error:
            message = error.message if isinstance(error, MelangeError) else str(error)
            log.error("cannot serve the socket %s: %s", s.socket, message)


def _build(settings: DaemonSettings) -> tuple[Store, dhcp_backend.DhcpBackend | None]:
    """The store and the DHCP backend `settings` name (both checked before any is used);
    no backend without a hostsfile (melanged serving the HTTP API alone)."""
    store = Store(settings.db_url, release_hold=settings.release_hold, recheck_schema=True)
    if settings.hostsfile is None:
        return store, None
    target = dhcp_backend.Target(
        hostsfile=settings.hostsfile,
        optsfile=settings.optsfile,
        pidfile=settings.dnsmasq_pidfile,
        network=settings.network,
        hostsdir=settings.hostsdir,
        release_interface=settings.release_interface,
        options=backend_options(settings),
        dns_hostsdir=settings.dns_hostsdir,
        addn_hosts=settings.addn_hosts,
    )
    try:
        return store, dhcp_backend.load(settings.backend, target)
    except BaseException:
        store.close()
        raise


def _rechecks(woken: bool, changed: bool, left: int) -> int:
    """Looks still to make RECHECK apart after a wake-up that found nothing new: SQLite
    appends a commit to its WAL (the inotify event) before it syncs it, and only then
    makes it visible, so the first look can come too soon. Each look after it spends one."""
    if changed:
        return 0
    if woken:
        return RECHECKS
    return max(0, left - 1)


def _wakeup(settings: DaemonSettings) -> Wakeup:
    """What ends the watcher's wait between polls (melanged.wakeup): commits to the
    store's SQLite file, and the writes this melanged commits for its clients."""
    wakeup = Wakeup(sqlite_path(settings.db_url))
    batching.GROUP.committed = wakeup.poke
    return wakeup


def _trouble(error: Exception) -> str:
    """What a failed pass was about: the store, a network no block has (never rendered
    empty: dnsmasq keeps the files it has, as in an outage), or (refused paths) the files."""
    if isinstance(error, NotFound):
        return "nothing to render"
    if isinstance(error, MelangeError) and not isinstance(error, StoreUnavailable):
        return "render refused"
    return "store unavailable"


def _sleep_unless_signalled(daemon: Daemon, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not daemon.signals:
        time.sleep(0.05)


def _log_result(result: dhcp_backend.SyncResult, server: str) -> None:
    if result.hosts_changed or result.opts_changed:
        how = "hosts dir (no reload)" if result.added_only else "hosts file"
        delta = f" (+{result.added} -{result.removed})" if result.added or result.removed else ""
        log.info(
            "rendered %d hosts%s via %s; reload sent: %s%s",
            result.lines, delta, how,
            "yes" if result.reloaded else "no",
            "" if result.server_running is not False else f" ({server} is not running)",
        )  # fmt: skip
    if result.released:
        log.info("released stale leases: %s", ", ".join(result.released))
    if result.dns_changed:
        log.info("DNS: %d names%s", result.dns_names,
                 " folded into the addn-hosts file" if result.dns_folded else "")  # fmt: skip


def _safe(url: str) -> str:
    from melange.urls import safe_url

    return safe_url(url)
