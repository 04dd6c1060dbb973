"""The HTTP API's server: uvicorn inside melanged's process, on a thread of its own.

melanged binds the listening socket and loads the TLS certificate itself, in its
main thread, so an address in use or an unreadable key stops it at start with
one clear line; uvicorn then serves on that socket. SIGHUP re-points the store
and reloads the certificate into the same TLS context (new connections use it);
SIGTERM stops accepting, lets the requests in progress finish, and returns.

The stack is uvicorn's httptools protocol on uvloop when both are installed (they
are dependencies): llhttp parses in C and uvloop does TLS in C, where h11 and
asyncio's sslproto do both in Python, about half of the server's CPU time per
request outside the operation itself. h11 on asyncio's loop remains, for a
system without them and for the tests, which run every guard on both.

Limits (melanged.http.listen.Limits), so that no client holds the server: uvicorn
has an idle keep-alive timeout; Guard adds what it lacks, a deadline for a
request's headers from the connection's start, one for a client that stops
reading, and a cap on open connections (uvicorn's `limit_concurrency` counts open
connections too, so it is set just above that cap and never answers 503 first);
and for llhttp, which has none, a bound on a request's headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover  (both are dependencies)
    uvloop = None  # type: ignore[assignment]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from melange.errors import InvalidInput, MelangeError
from melange.store import Store
from melanged.http import auth, problems
from melanged.http.app import Service, build
from melanged.http.listen import Limits, Listen

log = logging.getLogger("melanged.http")
SHUTDOWN_GRACE = 10
CHECK_EVERY = 1.0
DROP_WITHIN = 5.0  # seconds an answer that drops the connection has to be sent


def tls_context(listen: Listen) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 at least), or None for plain HTTP."""
    if listen.tls_cert is None or listen.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_certificate(context, listen)
    return context


def load_certificate(context: ssl.SSLContext, listen: Listen) -> None:
    try:
        context.load_cert_chain(str(listen.tls_cert), str(listen.tls_key))
    except (OSError, ssl.SSLError) as error:
        raise InvalidInput(
            f"cannot load the TLS certificate {listen.tls_cert} with key {listen.tls_key}: "
            f"{getattr(error, 'strerror', None) or error}"
        ) from None


class Guard:
    """What uvicorn's HTTP/1.1 protocols lack, for either parser: a deadline for each
    request's headers from the connection's start (a silent or trickling client is cut
    off, not held), a deadline for a client that stops reading, and a cap on
    connections. Mixed into the protocol classes below, before uvicorn's."""

    limits = Limits()
    _waiting_since: float
    _check: asyncio.TimerHandle | None = None
    _lost = False
    # uvicorn's protocol attributes, as this mixin uses them
    connections: set
    cycle: Any
    flow: Any
    loop: asyncio.AbstractEventLoop
    transport: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            transport.abort()  # type: ignore[attr-defined]  # nothing to say: no TLS close
            return
        super().connection_made(transport)  # type: ignore[misc]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # An answer is written in pieces: without this, Nagle holds the last one
            # back until the client's delayed ACK, 40 ms a request on keep-alive.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._waiting_since = time.monotonic()
        self._check = self.loop.call_later(CHECK_EVERY, self._watch)

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses (a malformed request line or header), answered
        as every other refusal of the API is, a problem document, not uvicorn's plain
        text; then the connection is closed, as uvicorn closes it."""
        refused = InvalidInput(f"malformed HTTP request: {msg}".rstrip("."))
        document = problems.document(400, refused.code, refused.exit_code, refused.message)
        body = json.dumps(document).encode()
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n"
                             b"content-type: " + problems.PROBLEM.encode() + b"\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n"
                             b"connection: close\r\n\r\n" + body)  # fmt: skip
        self.transport.close()

    def on_response_complete(self) -> None:
        self._waiting_since = time.monotonic()
        super().on_response_complete()  # type: ignore[misc]
        if self.transport.is_closing() and self.cycle.more_body:
            # An answer that closes the connection before the request's body was read
            # (413, 408): once it is sent, the connection is dropped. Closed gracefully,
            # uvloop's TLS would read (and discard) the whole rest of the body while it
            # waits for the client's close_notify.
            self._drop_when_sent(time.monotonic() + DROP_WITHIN)

    def _drop_when_sent(self, deadline: float) -> None:
        if self._lost:
            return
        if self.transport.get_write_buffer_size() == 0 or time.monotonic() > deadline:
            self.transport.abort()
        else:
            self.loop.call_later(0.02, self._drop_when_sent, deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._check is not None:
            self._check.cancel()
            self._check = None
        if getattr(self, "transport", None) is not None:
            super().connection_lost(exc)  # type: ignore[misc]

    def _watch(self) -> None:
        """Drop a connection waiting for headers too long, or not reading its answer
        (also one closing: its answer may be what the client does not read). Dropped,
        not closed: a close would first flush what the client does not read, and with
        uvloop the answer goes on being written meanwhile."""
        now = time.monotonic()
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy and self.flow.write_paused:
            stalled = now - getattr(self, "_paused_since", now) > self.limits.send_timeout
        else:
            stalled = not busy and now - self._waiting_since > self.limits.header_timeout
        if stalled:
            self.transport.abort()
            return
        self._check = self.loop.call_later(CHECK_EVERY, self._watch)

    def pause_writing(self) -> None:
        self._paused_since = time.monotonic()
        super().pause_writing()  # type: ignore[misc]


class GuardedProtocol(Guard, H11Protocol):
    """uvicorn's h11 protocol (pure Python), guarded; h11 bounds a request's headers
    itself (`h11_max_incomplete_event_size`)."""


class HeadersTooLarge(Exception):
    """A request's headers beyond Limits.max_header_bytes."""


if HttpToolsProtocol is not None:

    class GuardedFastProtocol(Guard, HttpToolsProtocol):
        """uvicorn's httptools protocol (llhttp, in C: a third of the h11 protocol's
        CPU time a request), guarded, with the bound on a request's headers that
        llhttp lacks: the bytes received while a request's headers are incomplete
        are counted (and the headers' own size once parsed, for a large block that
        arrives at once); beyond `max_header_bytes` the answer is 431 and the
        connection closes."""

        _header_bytes: int | None = 0  # None once the request's headers are complete
        _headers_too_large = False
        _refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # the connection is being dropped
            if self._header_bytes is not None:
                self._header_bytes += len(data)
            super().data_received(data)
            if (self._header_bytes or 0) > self.limits.max_header_bytes:
                self._refuse_headers()

        def on_message_begin(self) -> None:
            self._header_size = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._header_size += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_size += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._header_size > self.limits.max_header_bytes:
                self._headers_too_large = True
                raise HeadersTooLarge  # the parser stops; uvicorn answers (see below)
            self._header_bytes = None
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._header_bytes = 0
            super().on_response_complete()

        def send_400_response(self, msg: str) -> None:
            if self._headers_too_large:
                self._refuse_headers()
            else:
                super().send_400_response(msg)

        def _refuse_headers(self) -> None:
            if not self._refused and not self.transport.is_closing():
                self._refused = True
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     b"content-length: 0\r\nconnection: close\r\n\r\n")
                self._drop_when_sent(time.monotonic() + DROP_WITHIN)
            self._header_bytes = None

else:  # pragma: no cover  (httptools is a dependency; without it, h11 serves)
    GuardedFastProtocol = None  # type: ignore[assignment,misc]


def _handshake_deadline(base: type) -> type:
    """An event loop class whose TLS handshakes must finish within `handshake_timeout`
    (asyncio's default is 60 s, and uvicorn passes none), since a connection still in
    its handshake is not yet the protocol's to count or time out."""

    class HandshakeDeadlineLoop(base):
        def __init__(self, handshake_timeout: float) -> None:
            super().__init__()
            self.handshake_timeout = handshake_timeout

        async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
            return await super().create_server(*args, **kwargs)

    HandshakeDeadlineLoop.__qualname__ = f"HandshakeDeadline{base.__name__}"
    return HandshakeDeadlineLoop


# The server's loops: asyncio's own, and uvloop's (libuv, its TLS in C rather than
# asyncio's sslproto in Python: the larger part of what the fast parser does not save).
LOOPS: dict[str, type] = {"asyncio": _handshake_deadline(asyncio.SelectorEventLoop)}
if uvloop is not None:
    LOOPS["uvloop"] = _handshake_deadline(uvloop.Loop)
PROTOCOLS: dict[str, type] = {"h11": GuardedProtocol}
if GuardedFastProtocol is not None:
    PROTOCOLS["httptools"] = GuardedFastProtocol
# What melanged serves with: the fast pair when installed (setup.cfg requires them).
FAST = "httptools" in PROTOCOLS and "uvloop" in LOOPS
STACK = ("httptools", "uvloop") if FAST else ("h11", "asyncio")


class HttpServer:
    """melanged's HTTP API: `start` in a thread, `stop` gracefully."""

    def __init__(self, listen: Listen, store: Store, limits: Limits = Limits(),
                 on_failure: Callable[[], None] | None = None,
                 stack: tuple[str, str] = STACK) -> None:  # fmt: skip
        self.listen = listen
        self.stack = stack  # (protocol, loop): PROTOCOLS' and LOOPS' keys
        self.limits = limits
        self.on_failure = on_failure
        self.service = Service(store, limits)
        self.context = tls_context(listen)
        self.sock = _bind(listen)
        self.protocol: Any = type("Guarded", (PROTOCOLS[stack[0]],), {"limits": limits})
        config = uvicorn.Config(
            build(self.service), http=self.protocol, lifespan="off", log_config=None,
            access_log=False, server_header=False, proxy_headers=False,
            limit_concurrency=limits.max_connections + 1,
            timeout_keep_alive=limits.idle_timeout,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_graceful_shutdown=SHUTDOWN_GRACE, loop="none", ws="none",
        )  # fmt: skip
        config.load()
        config.ssl = self.context  # ours: SIGHUP reloads its certificate in place
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None
        self.failed = False

    @property
    def serving(self) -> bool:
        return self.thread is not None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self, timeout: float = 10.0) -> None:
        """Serve in a thread; return once it accepts connections."""
        self.thread = threading.Thread(target=self._serve, name="melanged-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise MelangeError(f"the HTTP server on {self._where()} did not start")
            time.sleep(0.01)
        log.info("serving the HTTP API on %s", self._where())

    def _serve(self) -> None:
        """Serve until `stop`. A server that stops by itself (a bug) says so through
        `on_failure`: melanged then stops with status 1, and its supervisor restarts it,
        rather than run on without its API."""
        timeout = self.limits.header_timeout
        try:
            loop = LOOPS[self.stack[1]]
            with asyncio.Runner(loop_factory=lambda: loop(timeout)) as runner:
                runner.run(self.server.serve(sockets=[self.sock]))
        except BaseException:  # noqa: BLE001  (logged, then melanged told to stop)
            log.exception("the HTTP server failed")
        if not self.server.should_exit:
            self.failed = True
            log.error("the HTTP server stopped by itself")
            if self.on_failure is not None:
                self.on_failure()

    def _where(self) -> str:
        scheme = "https" if self.context is not None else "http"
        host = f"[{self.listen.host}]" if ":" in self.listen.host else self.listen.host
        return f"{scheme}://{host}:{self.port}"

    def reload(self, listen: Listen, store: Store, limits: Limits | None = None) -> None:
        """SIGHUP with the same address: the new store, the certificate read again, and
        the new limits for the connections and requests that come from now on (all but
        the TLS handshake's deadline, which is the event loop's: it takes a restart)."""
        if self.context is not None and listen.tls_cert is not None:
            load_certificate(self.context, listen)
        self.listen = listen
        self.service.store = store
        auth.USES.flush()  # written to the old store before the daemon closes it
        if limits is not None and limits != self.limits:
            self.limits = self.service.limits = self.protocol.limits = limits
            config = self.server.config  # uvicorn's protocols read these per connection
            config.limit_concurrency = limits.max_connections + 1
            config.timeout_keep_alive = limits.idle_timeout
            config.h11_max_incomplete_event_size = limits.max_header_bytes

    def stop(self) -> None:
        """Stop accepting, let the requests in progress finish (SHUTDOWN_GRACE at most)."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(SHUTDOWN_GRACE + 5)
        auth.USES.flush()  # the uses of tokens that the last requests recorded
        self.service.close()
        self.sock.close()


def _bind(listen: Listen) -> socket.socket:
    """The listening socket, bound now so that a failure stops melanged in one line."""
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
    except OSError as error:
        raise InvalidInput(
            f"cannot serve HTTP on {listen.host}:{listen.port}: {error.strerror or error}"
        ) from None
    sock.set_inheritable(True)
    return sock
