"""HTTP/1.1 on one kept-alive connection: what `melange --url` needs, and no more.

Not http.client: it imports the email package to parse headers, about 11 ms of a
remote command's 100 (the goal is a `melange --url` process within 1.5 times a
socket-mode one). What is needed is small: send a request with a Content-Length
body, read the status line, the headers, and a body framed by Content-Length or
chunked transfer coding (or ended by the server's close), all from one socket.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

MAX_LINE = 65536  # a status or header line longer than this is not an HTTP server's
MAX_HEADERS = 100
CHUNK = 256 * 1024


class Closed(ConnectionError):
    """The server closed the connection before its answer began."""


class BadResponse(ValueError):
    """What came back is not an HTTP/1.x response (or ended in the middle)."""


class Connection:
    """One connection to HOST:PORT, TLS when `context` is given, made on first use."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext | None, connect: float, read: float
    ) -> None:
        self.host, self.port, self.context = host, port, context
        self.timeouts = (connect, read)
        default = 443 if context is not None else 80
        shown = f"[{host}]" if ":" in host else host
        self.host_header = shown if port == default else f"{shown}:{port}"
        self.sock: socket.socket | None = None
        self.stream: Any = None  # the socket's buffered reader

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeouts[0])
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.timeouts[1])
        except BaseException:
            sock.close()
            raise
        self.sock, self.stream = sock, sock.makefile("rb")

    def request(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> Response:
        """Send the request; the response with its head read, its body still to read."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None and self.stream is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(head + body if body is not None else head)
        return Response(self.stream, method)

    def close(self) -> None:
        for part in (self.stream, self.sock):
            if part is not None:
                part.close()
        self.sock = self.stream = None


class Response:
    """A response: `status`, `reason`, `headers` (lower-case names); the body read with
    `read` or line by line by iterating."""

    def __init__(self, stream, method: str) -> None:
        self.stream = stream
        self.version, self.status, self.reason, self.headers = _head(stream)
        while 100 <= self.status < 200:  # an interim answer: the real one follows
            self.version, self.status, self.reason, self.headers = _head(stream)
        coding = self.headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in coding
        length = self.headers.get("content-length")
        self.left: int | None = None  # bytes of body left, None: to the end of the stream
        if method == "HEAD" or self.status in (204, 304):
            self.left = 0
        elif not self.chunked and length is not None:
            if not length.strip().isdigit():
                raise BadResponse(f"Content-Length {length[:40]!r}")
            self.left = int(length)
        self.done = self.left == 0
        said = self.headers.get("connection", "").lower()
        keep = "keep-alive" in said if self.version == "HTTP/1.0" else "close" not in said
        self.will_close = not keep or (self.left is None and not self.chunked)

    def getheader(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def isclosed(self) -> bool:
        """Whether the whole body has been read (the connection may take a request)."""
        return self.done

    def read(self, limit: int | None = None) -> bytes:
        """The body, or its first `limit` bytes."""
        parts, size = [], 0
        for part in self._parts():
            parts.append(part)
            size += len(part)
            if limit is not None and size >= limit:
                break
        body = b"".join(parts)
        return body if limit is None else body[:limit]

    def __iter__(self) -> Iterator[bytes]:
        """The body's lines, each with its newline (the last maybe without)."""
        rest = b""
        for part in self._parts():
            rest += part
            *complete, rest = rest.split(b"\n")
            for line in complete:
                yield line + b"\n"
        if rest:
            yield rest

    def _parts(self) -> Iterator[bytes]:
        if self.chunked:
            yield from self._chunks()
        else:
            while self.left is None or self.left > 0:
                part = self.stream.read1(CHUNK if self.left is None else min(CHUNK, self.left))
                if not part:
                    if self.left is None:
                        break
                    raise BadResponse("the body ended before its Content-Length")
                if self.left is not None:
                    self.left -= len(part)
                yield part
        self.done = True

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size_line = _line(self.stream).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadResponse(f"a chunk size {size_line[:40]!r}") from None
            if size == 0:
                while _line(self.stream) not in (b"\r\n", b"\n"):  # trailers
                    pass
                return
            left = size
            while left:
                part = self.stream.read1(min(CHUNK, left))
                if not part:
                    raise BadResponse("the body ended in the middle of a chunk")
                left -= len(part)
                yield part
            _line(self.stream)  # the CRLF after the chunk


def _line(stream) -> bytes:
    line = stream.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadResponse("a line longer than any HTTP server sends")
    if not line:
        raise BadResponse("the connection closed in the middle of the answer")
    return line


def _head(stream) -> tuple[str, int, str, dict[str, str]]:
    """The status line and the headers of a response."""
    first = stream.readline(MAX_LINE + 1)
    if not first:
        raise Closed("the server closed the connection without an answer")
    version, _, rest = first.decode("latin-1").strip().partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
        raise BadResponse(f"not an HTTP response: {first[:40]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(stream)
        if line in (b"\r\n", b"\n"):
            return version, int(code), reason, headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise BadResponse(f"a header line without a colon: {line[:40]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raise BadResponse(f"more than {MAX_HEADERS} headers")
