"""melanged's HTTP API in the test process, for tests that talk to it with a real client.

The server is melanged's own (melanged.http.server.HttpServer: uvicorn on a thread,
with its limits), on a free loopback port, over TLS with a certificate made for
the test by trustme (or plain HTTP, `tls=False`). `tokens` holds a bearer token
for each role; `client(role)` is an httpx client that trusts the test's CA and
sends that role's token (no token for None).

    with HttpDaemon(store_url, tmp_path) as api:
        api.client("admin").post("/v1/blocks", json={"cidr": "10.0.0.0/24"})

`MelangedHttp` runs the real `melanged --foreground --http ...` process instead, for
the tests of the daemon itself (flags, config, signals); `free_port` and
`make_certificate` serve both.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trustme

from melange import operations
from melange.store import Store
from melanged.http.listen import Limits, Listen
from melanged.http.server import STACK, HttpServer

ROLES = ("reader", "writer", "admin")


def make_certificate(workdir: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (and its key), signed by a CA made for
    it, whose certificate is `workdir/ca.pem` (`ca-NAME.pem` for another `name`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = workdir / ("ca.pem" if name == "server" else f"ca-{name}.pem")
    ca.cert_pem.write_to_path(str(ca_file))
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    os.chmod(key, 0o600)
    return cert, key


def free_port() -> int:
    """A loopback port nothing listens on (free when asked; the OS rarely reuses it soon)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_tokens(db_url: str) -> dict[str, str]:
    """A token for each role in the store at `db_url` (created, schema and all, if new)."""
    store = Store(db_url)
    try:
        store.ensure_schema()
        return {role: str(operations.run(store, "token.create",
                                         {"name": f"test-{role}", "role": role})["token"])
                for role in ROLES}  # fmt: skip
    finally:
        store.close()


class HttpDaemon:
    def __init__(self, db_url: str, workdir: Path, *, tls: bool = True,
                 limits: Limits = Limits(), stack: tuple[str, str] = STACK) -> None:  # fmt: skip
        self.db_url = db_url
        self.stack = stack  # the HTTP parser and event loop (melanged.http.server.STACK)
        self.limits = limits
        self.workdir = workdir
        self.tls = tls
        self.ca: trustme.CA | None = None
        self.ca_file = workdir / "ca.pem"
        self.tokens: dict[str, str] = {}
        self.server: HttpServer | None = None
        self.clients: list[httpx.Client] = []

    def certificate(self) -> tuple[Path, Path]:
        return make_certificate(self.workdir)

    def start(self) -> HttpDaemon:
        cert, key = self.certificate() if self.tls else (None, None)
        self.store = Store(self.db_url)
        self.store.ensure_schema()
        for role in ROLES:
            self.tokens[role] = self.make_token(f"test-{role}", role)
        self.server = HttpServer(Listen("127.0.0.1", 0, cert, key), self.store, self.limits,
                                 stack=self.stack)
        self.server.start()
        return self

    def make_token(self, name: str, role: str, **extra: Any) -> str:
        """A new token's secret (created in the store, as `melange token create` does)."""
        record = operations.run(self.store, "token.create", {"name": name, "role": role, **extra})
        return str(record["token"])

    @contextmanager
    def serving(self, db_url: str) -> Iterator[dict[str, str]]:
        """Serve another store (a test's own) for the length of the block, as SIGHUP
        re-points melanged; yields a token of that store for each role. One server can
        so serve a whole session, a store per test."""
        store = Store(db_url)
        store.ensure_schema()
        tokens = {role: str(operations.run(store, "token.create",
                                           {"name": f"test-{role}", "role": role})["token"])
                  for role in ROLES}  # fmt: skip
        assert self.server is not None
        previous = self.server.service.store
        self.server.service.store = store
        try:
            yield tokens
        finally:
            self.server.service.store = previous
            store.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.port}"

    def client(self, role: str | None = None, *, token: str | None = None,
               **options: Any) -> httpx.Client:  # fmt: skip
        """A client of the API sending `role`'s token (or `token`), trusting the test CA."""
        secret = token if token is not None else self.tokens.get(role or "")
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        verify: Any = ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else False
        client = httpx.Client(base_url=self.url, headers=headers, verify=verify,
                              timeout=options.pop("timeout", 30), **options)  # fmt: skip
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.store.close()

    def __enter__(self) -> HttpDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class MelangedHttp:
    """`melanged --foreground --http 127.0.0.1:PORT ...` as a process of its own."""

    def __init__(self, workdir: Path, args: list[str], *, port: int | None = None,
                 tls: bool = False, config: Path | None = None) -> None:  # fmt: skip
        from tests.support import ROOT

        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = port or free_port()
        self.tls = tls
        self.log = workdir / "melanged.log"
        self.argv = [sys.executable, "-m", "melanged.main", "--foreground",
                     "--log-file", str(self.log), *args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
        if config is not None:
            env["MELANGE_CONFIG"] = str(config)
        self.env = {**env, "PYTHONPATH": str(ROOT)}
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        return self.proc

    def url(self, port: int | None = None) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port or self.port}"

    def client(self, token: str | None = None, port: int | None = None) -> httpx.Client:
        verify: Any = False
        if self.tls:
            verify = ssl.create_default_context(cafile=str(self.workdir / "ca.pem"))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url(port), verify=verify, headers=headers, timeout=10)

    def wait_serving(self, port: int | None = None, timeout: float = 20) -> None:
        """Until /v1/health answers on `port` (the started one by default)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"melanged exited {self.proc.returncode}: "
                                   f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                with self.client(port=port) as client:
                    if client.get("/v1/health").status_code == 200:
                        return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"melanged did not serve HTTP: {self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, and the exit status (SIGKILL, and a failing status, if it hangs)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return int(self.proc.returncode)
