"""Where melanged serves the HTTP API, and the rule that plain HTTP stays on loopback.

Read by melanged's settings at start and at SIGHUP, before any server code loads:
a token sent in plain HTTP over a network can be read by anyone on the path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from melange.errors import InvalidInput


@dataclass(frozen=True)
class Listen:
    """Where and how to serve: HOST:PORT, and the TLS certificate and key (or neither)."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def parse(cls, text: str, tls_cert: Path | None, tls_key: Path | None,
              insecure: bool = False) -> Listen:  # fmt: skip
        """`HOST:PORT` (`[v6]:PORT` for IPv6), checked: TLS needs both files, and plain
        HTTP is only for a loopback address unless `insecure` says otherwise."""
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise InvalidInput(f"--http takes HOST:PORT, not {text!r:.80}")
        if (tls_cert is None) != (tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key go together")
        if tls_cert is None and not insecure and not loopback(host):
            raise InvalidInput(
                f"refusing plain HTTP on {host} (not a loopback address): give --tls-cert "
                "and --tls-key, or --insecure-http to serve tokens unencrypted"
            )
        return cls(host, int(port), tls_cert, tls_key)


def loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Limits:
    """What one client may take of the server (docs/operations.md, "The HTTP API").

    A TLS handshake must finish, and then a request's headers arrive, each within
    `header_timeout` (of the connection, or of the previous answer), and its body within
    `body_timeout`; an idle keep-alive
    connection is closed after `idle_timeout`; a client that stops reading its
    answer loses the connection after `send_timeout`. At most `max_connections`
    are open at once (more are closed on arrival); the requests on them run on
    the thread pool's threads (40), the others waiting their turn. Bodies:
    `max_body` bytes, an import's `max_import_body`.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: int = 5
    send_timeout: float = 60.0
    max_connections: int = 1024
    max_body: int = 1 << 20
    max_import_body: int = 64 << 20
    max_header_bytes: int = 64 << 10
