"""The socket client: one JSON line out, one back. Imports neither SQLAlchemy nor rich."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable
from itertools import count
from typing import Any

from melange.errors import BY_CODE, MelangeError, StoreUnavailable

PROTOCOL_VERSION = 1
TIMEOUT = 300.0
CONNECT_PATIENCE = 10.0
_ids = count(1)


def _connect(sock: socket.socket, path: str) -> None:
    """Connect, waiting out a full listen queue (EAGAIN) for a few seconds."""
    import time

    deadline = time.monotonic() + CONNECT_PATIENCE
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"melanged at {path} is too busy; try again") from None
            time.sleep(0.01)


def _send(sock: socket.socket, data: bytes) -> bool:
    """Write the request, but stop as soon as melanged answers: a refusal (turned away
    at accept, or a request over 1 MiB) is sent while we are still writing, and the
    daemon closes the connection after it. Whatever happens to the write, the answer
    waiting to be read is what the caller gets, never a broken pipe. False when it
    stopped so (an answer is waiting)."""
    import select

    view = memoryview(data)
    while view:
        readable, writable, _ = select.select([sock], [sock], [], TIMEOUT)
        if readable:
            return False  # an answer before the whole request: a refusal, read next
        if not writable:
            raise StoreUnavailable("melanged stopped reading the request") from None
        try:
            view = view[sock.send(view[:65536]) :]
        except (BrokenPipeError, ConnectionResetError):
            return False  # closed after its answer: the reason is waiting to be read
    return True


def call(path: str, operation: str, params: dict[str, Any]) -> Any:
    """Run `operation` in melanged; raise what it raised, with the same exit code."""
    from melange.localfiles import absolute_paths

    request = {"version": PROTOCOL_VERSION, "id": next(_ids), "op": operation,
               "params": absolute_paths(params)}  # fmt: skip
    sock, stream = _open(path, request)
    with sock, stream:
        return _answer(path, _read(path, stream))


def stream(
    path: str, operation: str, params: dict[str, Any], sink: Callable[[Any], object]
) -> None:
    """A streamed read (docs/protocol.md, "Streamed results"): each record, or export
    entity, to `sink` as its chunk line arrives. A daemon that answers in one line (it
    predates streaming) is handled too."""
    request = {"version": PROTOCOL_VERSION, "id": next(_ids), "op": operation,
               "params": params, "stream": True}  # fmt: skip
    sock, lines = _open(path, request)
    with sock, lines:
        first = _answer(path, _read(path, lines), streamed=True)
        if first is not STREAMING:
            if operation == "export":
                from melange.transfer_format import entities

                first = entities(first)
            for item in first:
                sink(item)
            return
        while True:
            response = _read(path, lines)
            if "chunk" in response:
                for item in response["chunk"]:
                    sink(item)
            elif response.get("end"):
                return
            else:
                _answer(path, response)  # a failure after the first chunk: raised
                raise StoreUnavailable(f"melanged at {path} sent an unknown stream line")


UPLOAD_CHUNK = 64 << 10  # characters of the document in one chunk line (well under 1 MiB)
# An upload's answer comes when the import is done: a million addresses take minutes.
UPLOAD_ANSWER_TIMEOUT = 3600.0


def upload(path: str, operation: str, params: dict[str, Any], pieces: Iterable[str]) -> Any:
    """Run `operation` with its document uploaded as it is read (docs/protocol.md,
    "Streamed uploads"): the request line, chunk lines, the end line, then the one
    answer line. An answer that comes before the end (a refusal, a problem in the
    document) stops the writing and is what the caller gets."""
    request = {"version": PROTOCOL_VERSION, "id": next(_ids), "op": operation,
               "params": params, "upload": True}  # fmt: skip
    sock, lines = _open(path, request)
    with sock, lines:
        count = 0
        sending = True
        try:
            for piece in pieces:
                for start in range(0, len(piece), UPLOAD_CHUNK):
                    line = json.dumps({"chunk": piece[start : start + UPLOAD_CHUNK]})
                    sending = _send(sock, line.encode() + b"\n")
                    count += 1
                    if not sending:
                        break
                if not sending:
                    break
            if sending:
                _send(sock, json.dumps({"end": {"chunks": count}}).encode() + b"\n")
            sock.settimeout(UPLOAD_ANSWER_TIMEOUT)
        except OSError as error:
            raise StoreUnavailable(f"lost melanged at {path}: {error}") from None
        return _answer(path, _read(path, lines))


STREAMING = object()  # _answer's value for the first line of a streamed result


def _read(path: str, stream: Any) -> dict[str, Any]:
    """The next response line, decoded; exit 6 when the daemon is gone."""
    try:
        line = stream.readline()
    except OSError as error:
        raise StoreUnavailable(f"lost melanged at {path}: {error}") from None
    if not line:
        raise StoreUnavailable(f"melanged at {path} closed the connection without an answer")
    return json.loads(line)


def _open(path: str, request: dict[str, Any]) -> tuple[socket.socket, Any]:
    """Connect and send the request; the socket and its reading side."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        _connect(sock, path)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        raise StoreUnavailable(f"melanged is not running at {path}") from None
    except PermissionError:
        sock.close()
        from melange.errors import PermissionDenied

        raise PermissionDenied(f"no permission to use melanged's socket at {path}") from None
    try:
        _send(sock, json.dumps(request).encode() + b"\n")
    except OSError as error:
        sock.close()
        raise StoreUnavailable(f"lost melanged at {path}: {error}") from None
    return sock, sock.makefile("rb")


def _answer(path: str, response: dict[str, Any], streamed: bool = False) -> Any:
    """A response's result, or the error it carries raised (same exit code)."""
    if response.get("ok"):
        if streamed and response.get("stream"):
            return STREAMING
        return response.get("result")
    refusal = response.get("error", {})
    if refusal.get("code") == "busy":  # over a limit for now: try again (exit 6), never a bug
        raise StoreUnavailable(refusal.get("message", "melanged is busy; try again"))
    cls = BY_CODE.get(refusal.get("code"), MelangeError)
    raised = cls(refusal.get("message", "melanged refused the request"))
    raised.exit_code = int(refusal.get("exit_code", raised.exit_code))
    raise raised
