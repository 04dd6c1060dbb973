"""melanged's HTTP API in the test process, for tests that talk to it with a real client.

The server is melanged's own (melanged.http.server.HttpServer: uvicorn on a thread,
with its limits), on a free loopback port, over TLS with a certificate made for
the test by trustme (or plain HTTP, `tls=False`). `tokens` holds a bearer token
for each role; `client(role)` is an httpx client that trusts the test's CA and
sends that role's token (no token for None).

    with HttpDaemon(store_url, tmp_path) as api:
        api.client("admin").post("/v1/blocks", json={"cidr": "10.0.0.0/24"})
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import trustme

from melange import operations
from melange.store import Store
from melanged.http.listen import Limits, Listen
from melanged.http.server import HttpServer

ROLES = ("reader", "writer", "admin")


class HttpDaemon:
    def __init__(self, db_url: str, workdir: Path, *, tls: bool = True,
                 limits: Limits = Limits()) -> None:  # fmt: skip
        self.db_url = db_url
        self.limits = limits
        self.workdir = workdir
        self.tls = tls
        self.ca: trustme.CA | None = None
        self.ca_file = workdir / "ca.pem"
        self.tokens: dict[str, str] = {}
        self.server: HttpServer | None = None
        self.clients: list[httpx.Client] = []

    def certificate(self) -> tuple[Path, Path]:
        """A certificate for 127.0.0.1 and localhost, signed by the test's own CA."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        issued = self.ca.issue_cert("127.0.0.1", "localhost")
        cert, key = self.workdir / "server.pem", self.workdir / "server.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(str(cert), append=True)
        issued.private_key_pem.write_to_path(str(key))
        os.chmod(key, 0o600)
        return cert, key

    def start(self) -> HttpDaemon:
        cert, key = self.certificate() if self.tls else (None, None)
        self.store = Store(self.db_url)
        self.store.ensure_schema()
        for role in ROLES:
            self.tokens[role] = self.make_token(f"test-{role}", role)
        self.server = HttpServer(Listen("127.0.0.1", 0, cert, key), self.store, self.limits)
        self.server.start()
        return self

    def make_token(self, name: str, role: str, **extra: Any) -> str:
        """A new token's secret (created in the store, as `melange token create` does)."""
        record = operations.run(self.store, "token.create", {"name": name, "role": role, **extra})
        return str(record["token"])

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
