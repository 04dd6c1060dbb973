"""melanged's socket server inside the test process, for the contract suite's socket channel.

The server is melanged's own (melanged.server.SocketServer, opened by melanged.daemon.Daemon
from the settings `melanged --db URL --socket PATH` resolves); what is saved is a process
start and stop per test. One server serves a whole session (one per xdist worker) and is
pointed at each test's store in turn: the store is built per test by a Daemon of its own,
from that test's config, exactly as a fresh melanged would build it, and closed after.
tests/test_socket.py and the other SocketDaemon users still run the real melanged process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from melanged.daemon import Daemon
from melanged.settings import resolve
from melanged.watcher import fingerprint


class InProcessDaemon:
    """A socket at `socket`, answered by the store of whichever test is running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "run" / "melange.sock"
        self.first: Daemon | None = None  # the one whose open_socket made the server

    @contextmanager
    def serving(self, db_url: str, config: Path) -> Iterator[Path]:
        """Serve `db_url` (with `config`) on the socket for the length of the block."""
        flags = {"db": db_url, "hostsfile": str(self.workdir / "hosts"),
                 "socket": str(self.socket)}  # fmt: skip
        daemon = Daemon(resolve(flags, str(config)))
        # melanged's first watcher pass, made as soon as it serves: it creates the store.
        fingerprint(daemon.store, daemon.settings.network)
        if self.first is None:
            daemon.open_socket()
            self.first = daemon
        self.first.server.store = daemon.store
        try:
            yield self.socket
        finally:
            daemon.store.close()

    def close(self) -> None:
        if self.first is not None:
            self.first.close_socket()
            self.first = None
