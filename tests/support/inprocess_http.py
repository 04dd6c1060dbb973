"""melanged's HTTP API inside the test process, for the contract suite's channel "http".

As tests/support/inprocess_daemon.py does for the socket: the server is melanged's own
(melanged.http.server.HttpServer, opened by melanged.daemon.Daemon from the settings
`melanged --db URL --http 127.0.0.1:0 --tls-cert … --tls-key …` resolves), over TLS
with a certificate the test's own CA (trustme) signed. One server serves a whole
session (one per xdist worker) and is pointed at each test's store in turn; each
store gets an admin token of its own, which the CLI reads from a token file.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from melange import tokens
from melanged.daemon import Daemon
from melanged.settings import resolve
from tests.support.http_daemon import make_certificate


@dataclass(frozen=True)
class Endpoint:
    """What `melange --url` needs: the URL, the token file, the CA to trust."""

    url: str
    token_file: Path
    ca_file: Path


class InProcessHttp:
    """An HTTPS API on a loopback port, answered by the store of whichever test runs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cert, self.key = make_certificate(workdir)
        self.ca_file = workdir / "ca.pem"
        self.first: Daemon | None = None  # the one whose open_http made the server

    @contextmanager
    def serving(self, db_url: str, config: Path, token_file: Path) -> Iterator[Endpoint]:
        """Serve `db_url` (with `config`) for the length of the block, writing an admin
        token for it to `token_file`."""
        flags = {"db": db_url, "http": "127.0.0.1:0", "tls_cert": str(self.cert),
                 "tls_key": str(self.key)}  # fmt: skip
        daemon = Daemon(resolve(flags, str(config)))
        try:
            daemon.store.ensure_schema()  # what melanged's first pass does: create the store
            # Not through operations.run: the token is the harness's, not in the audit trail.
            # Named afresh: a server database is emptied between tests, its tokens not.
            name = f"contract-{secrets.token_hex(4)}"
            record = daemon.store.run(
                lambda conn: tokens.create(conn, name, role="admin"), write=True
            )
            token_file.write_text(record["token"] + "\n")
            if self.first is None:
                daemon.open_http()
                self.first = daemon
            self.first.http.service.store = daemon.store
            url = f"https://127.0.0.1:{self.first.http.port}"
            yield Endpoint(url, token_file, self.ca_file)
        finally:
            from melanged.http.auth import USES

            USES.flush()  # a token's use recorded late must not reopen a closed store
            daemon.store.close()

    def close(self) -> None:
        if self.first is not None:
            self.first.close_http()
            self.first = None
