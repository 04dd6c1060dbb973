"""Abuse of the HTTP API: huge bodies, malformed JSON, wrong types, hundreds of idle
connections, slow clients. After each, the server is up and answers others at once.

Every test runs on each HTTP stack melanged can serve with (melanged.http.server:
httptools on uvloop, what it serves with, and h11 on asyncio's loop): the guards are
the protocol's and the loop's, and must hold on both."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from melanged.http.listen import Limits
from melanged.http.server import STACK
from tests.support.http_daemon import HttpDaemon

HUNDRED_MB = 100 << 20
STACKS = sorted({STACK, ("h11", "asyncio")})
pytestmark = pytest.mark.parametrize("stack", STACKS, ids="-".join, scope="module")


@pytest.fixture(scope="module")
def api(tmp_path_factory, stack):
    workdir: Path = tmp_path_factory.mktemp("http-abuse")
    with HttpDaemon(f"sqlite:///{workdir / 'store.db'}", workdir / "api",
                    stack=stack) as running:  # fmt: skip
        yield running


@pytest.fixture
def strict(tmp_path, stack):
    """Plain HTTP on loopback with short deadlines and a small connection cap."""
    limits = Limits(header_timeout=1.0, body_timeout=1.0, max_connections=100)
    with HttpDaemon(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "api", tls=False,
                    limits=limits, stack=stack) as running:  # fmt: skip
        yield running


def test_the_stack_is_the_one_asked_for(api, stack):
    assert api.server.stack == stack


def answers(api) -> None:
    """The server answers a client of its own promptly."""
    started = time.monotonic()
    response = api.client("reader", timeout=10).get("/v1/blocks")
    assert response.status_code == 200
    assert time.monotonic() - started < 5


def raw(api, *, tls: bool | None = None) -> socket.socket:
    """A bare connection to the server (over TLS when the server has it)."""
    sock = socket.create_connection(("127.0.0.1", api.server.port), timeout=10)
    if api.tls if tls is None else tls:
        context = ssl.create_default_context(cafile=str(api.ca_file))
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def head(api, method: str, path: str, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {api.tokens['admin']}\r\n{extra}\r\n").encode()  # fmt: skip


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def test_a_100_mb_body_announced_is_refused_before_it_is_read(api):
    with raw(api) as sock:
        sock.sendall(head(api, "POST", "/v1/policies",
                          f"Content-Type: application/json\r\nContent-Length: {HUNDRED_MB}\r\n"))
        assert read_status(sock) == 413
    answers(api)


def test_a_100_mb_body_streamed_is_cut_off_at_the_limit(api):
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        chunk = b"x" * (1 << 16)
        while sent < HUNDRED_MB:
            sent += len(chunk)
            yield chunk

    try:
        response = api.client("admin").post("/v1/import", content=body())
        assert response.status_code == 413, response.text
    except httpx.TransportError:
        pass  # the server answered 413 and closed while the client was still sending
    assert sent < 80 << 20  # the server stopped reading at the limit (64 MiB for an import)
    answers(api)


@pytest.mark.parametrize("body", [b"{" * 50_000, b'{"name": ' * 10_000, b"\xff\xfe\x00",
                                  b'{"name": "a", "name": 7}', b"null", b"1e999999"])
def test_malformed_bodies_are_422_and_the_server_goes_on(api, body):
    response = api.client("admin").post("/v1/policies", content=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"
    answers(api)


def test_wrong_types_everywhere_are_422(api):
    client = api.client("admin")
    for value in (None, 1, 1.5, True, [], {}, "x" * 100_000):
        response = client.post("/v1/blocks", json={"cidr": value})
        assert response.status_code in (400, 422), (value, response.text)
        assert response.json()["code"] == "invalid_input"
    answers(api)


def test_500_idle_connections_do_not_stop_others(api):
    idle = [socket.create_connection(("127.0.0.1", api.server.port)) for _ in range(500)]
    time.sleep(0.5)  # every one accepted by now
    try:
        answers(api)
    finally:
        for sock in idle:
            sock.close()
    answers(api)


def test_idle_connections_are_bounded_and_closed(strict):
    idle = [socket.create_connection(("127.0.0.1", strict.server.port)) for _ in range(500)]
    try:
        deadline = time.monotonic() + strict.limits.header_timeout + 5
        closed = 0
        for sock in idle:  # beyond the cap at once, the rest after the header deadline
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += sock.recv(1) == b""
            except (TimeoutError, ConnectionError):
                pass
        assert closed == 500
    finally:
        for sock in idle:
            sock.close()
    answers(strict)


def test_a_client_trickling_its_headers_is_cut_off(strict):
    sock = raw(strict)
    sock.sendall(b"GET /v1/health HTTP/1.1\r\n")
    cut = threading.Event()

    def trickle() -> None:
        try:
            for _ in range(100):
                sock.sendall(b"X")
                time.sleep(0.1)
        except OSError:
            cut.set()

    thread = threading.Thread(target=trickle)
    thread.start()
    answers(strict)  # meanwhile, others are served
    thread.join(timeout=15)
    sock.close()
    assert cut.is_set(), "a client sending a byte every 0.1 s held its connection for 10 s"


def test_a_client_trickling_its_body_gets_408(strict):
    with raw(strict) as sock:
        sock.sendall(head(strict, "POST", "/v1/policies",
                          "Content-Type: application/json\r\nContent-Length: 100\r\n"))
        sock.settimeout(10)
        started = time.monotonic()
        try:
            for _ in range(30):
                sock.sendall(b" ")
                time.sleep(0.1)
        except OSError:
            pass
        assert read_status(sock) == 408
        assert time.monotonic() - started < 5
    answers(strict)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /v1/blocks HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
])  # fmt: skip
def test_a_request_the_parser_refuses_is_a_problem_document(api, request_bytes):
    """uvicorn's own 400 was plain text; every refusal of the API is a problem."""
    with raw(api) as sock:
        sock.sendall(request_bytes)
        data = b""
        while chunk := sock.recv(65536):  # the server closes after its answer
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b"content-type: application/problem+json" in head_part.lower()
    problem = json.loads(body)
    assert (problem["status"], problem["code"], problem["exit_code"]) == (400, "invalid_input", 2)
    assert problem["detail"].startswith("malformed HTTP request")
    answers(api)


def test_too_many_headers_are_refused(api):
    with raw(api) as sock:
        try:
            # The server may refuse and close while the headers are still being sent
            # (past its 64 KiB limit it reads no more): the write fails, as a refusal.
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 100_000)
            status = read_status(sock)
        except OSError:
            status = 0
        assert status in (0, 400, 431)
    answers(api)


def test_headers_beyond_the_limit_are_refused_unread(api):
    """Headers that never end are refused once past max_header_bytes (64 KiB), not
    read on and on: the server closes while the client still has megabytes to send."""
    sent = 0
    status = 0
    with raw(api) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        try:
            while sent < 32 << 20:
                sock.sendall(line)
                sent += len(line)
        except OSError:
            pass
        try:
            status = read_status(sock)
        except OSError:
            pass
    assert sent < 16 << 20
    assert status in (0, 400, 431)
    answers(api)


def test_300_keep_alive_clients_are_all_answered(api):
    """Connections are capped, requests are not refused below the cap (uvicorn's own
    limit counts connections, and must not answer 503 first)."""
    clients = [api.client("reader") for _ in range(300)]
    try:
        assert all(c.get("/v1/health").status_code == 200 for c in clients)
        assert all(c.get("/v1/blocks").status_code == 200 for c in clients)
    finally:
        for client in clients:
            client.close()


def test_a_client_that_stops_reading_loses_the_connection(tmp_path, stack):
    from melange import operations

    with HttpDaemon(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "api", tls=False,
                    limits=Limits(send_timeout=1.0), stack=stack) as api:  # fmt: skip
        operations.run(api.store, "block.create", {"cidr": "10.0.0.0/16", "name": "big"})
        operations.run(api.store, "block.allocate", {"block": "big", "count": 30_000})
        started = time.monotonic()
        whole = len(api.client("reader").get("/v1/export").content)
        making = time.monotonic() - started  # on a loaded machine, seconds
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", api.server.port))
        sock.sendall(head(api, "GET", "/v1/export"))
        # Reading nothing until the server has had time to make the export and to find
        # the client stalled, well past the send deadline.
        time.sleep(2 * making + 3)
        received = 0
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 16):
                received += len(chunk)
        except TimeoutError:
            pytest.fail("the server kept the connection of a client that stopped reading")
        finally:
            sock.close()
        assert received < whole
        answers(api)


def test_a_tls_handshake_never_begun_is_dropped(tmp_path, stack):
    with HttpDaemon(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "api",
                    limits=Limits(header_timeout=1.0), stack=stack) as api:  # fmt: skip
        silent = [socket.create_connection(("127.0.0.1", api.server.port)) for _ in range(20)]
        try:
            for sock in silent:
                sock.settimeout(10)
                assert sock.recv(1) == b""  # closed by the server, not by this timeout
        finally:
            for sock in silent:
                sock.close()
        answers(api)
