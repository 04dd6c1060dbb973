"""melanged's socket front: one thread reads every connection; group-committed writes are
answered from their lane, without a thread of their own.

Why: with a thread per connection, sixteen clients allocating at once kept
seventeen threads busy in melanged, each taking the GIL for a few microseconds
of socket and JSON work between the batch leader's statements; the leader
waited for the GIL after every statement, and starting a thread per connection
cost about as much as a batched allocation. Here one thread accepts the
connections (the server checks each peer, as before) and waits on all of them
at once (selectors): it reads a request line, checks it as the socket server
does, and submits an allocation or a release to its lane
(melanged.batching.GroupCommit.submit). Anything else (reads, streams,
admin work, a request split over several lines, a peer slow to read its
answer) is handed, with the bytes read so far, to a thread running the socket
server's usual handler, which serves the connection from then on exactly as
before.

On SQLite the front also runs the lane itself, after each round of reads: every
request read in that round in one transaction, answered right after the commit
(`_lead`). A runner thread leading it instead passed the interpreter lock back
and forth with this one at every statement and socket call: about twenty futex
calls per allocation, most of melanged's cost under sixteen clients. It never
waits for SQLite's write lock: held by another process, the lane goes to a
runner thread, which waits, and the front goes on reading (melange.lockwait).
On a server the lane always goes to a runner: a leader there waits for the
block's row, which any other writer may hold.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from melange.errors import MelangeError
from melanged import batching
from melanged.wire import PROTOCOL_VERSION, REQUEST_DEADLINE, Peer, error_response

if TYPE_CHECKING:
    from melange.store import Store

log = logging.getLogger("melanged.socket")
LINE_LIMIT = 65536  # a longer first line goes to the usual handler (its own limits apply)
SWEEP = 1.0  # seconds between checks of the request deadlines
ACCEPTS = 64  # connections accepted at most in a row, before the others are read
_LISTEN = object()  # the selector's mark of the listening socket


Socket = socket.socket  # the Protocol below has an attribute of the module's name


class Served(Protocol):
    """What the front needs of the socket server (melanged.server.SocketServer), named
    here so that the two modules do not import each other."""

    socket: Socket
    store: Store

    def accept_one(self) -> bool: ...

    def checked(self, peer: Peer, request: object) -> tuple[str, dict]: ...

    def leave(self, peer: Peer) -> None: ...

    def serve_in_thread(
        self, request: Socket, peer: Peer, pending: bytes, unsent: bytes = b""
    ) -> None: ...

    def shutdown_request(self, request: Any) -> None: ...


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    peer: Peer
    deadline: float
    pending: bytes = b""
    busy: bool = field(default=False)  # a request of it is in a lane
    watched: bool = field(default=False)  # registered with the selector


class Front:
    """The connections of one socket server, read by one thread (see the module doc)."""

    def __init__(self, server: Served) -> None:

        self.server = server
        self.deadline = REQUEST_DEADLINE
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._inbox: deque[Callable[[], None]] = deque()
        self._woken = False
        self._stopping = False
        self._closed = False
        self._connections: set[_Connection] = set()
        # Lanes this thread claimed and leads after its reads (melanged.batching), and
        # what it does once the next reads are done (connections it answered).
        self._claimed: list[tuple[Store, tuple]] = []
        self._later: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._loop, name="socket-front", daemon=True)
        self._thread.start()
        batching.GROUP.reclaim = self._reclaim

    def _reclaim(self, store: Store, key: tuple) -> bool:
        """Lead lane `key` here again from the next round on (called from a runner that
        led it for this front: melanged.batching); False once stopped, or for a store
        this front does not serve."""
        if store is not self.server.store:
            return False
        return self._call(lambda: self._claimed.append((store, key)))

    def adopt(self, sock: socket.socket, peer: Peer) -> None:
        """A connection admitted by the server: read its requests from now on."""
        sock.setblocking(False)  # from now on: a handed-off one is made blocking again
        conn = _Connection(sock, peer, 0.0)
        if not self._call(lambda: self._watch(conn)):
            self._release(conn)  # stopped

    def listen(self) -> None:
        """Accept the server's connections from now on, in this thread (the server checks
        each peer and hands it to `adopt`)."""
        listening = self.server.socket
        listening.setblocking(False)

        def register() -> None:
            self._selector.register(listening, selectors.EVENT_READ, _LISTEN)

        self._call(register)

    def stop_listening(self) -> None:
        """Accept nothing more; returns once the front has stopped accepting."""
        stopped = threading.Event()

        def unregister() -> None:
            try:
                self._selector.unregister(self.server.socket)
            except (KeyError, ValueError):
                pass
            stopped.set()

        if self._call(unregister):
            stopped.wait(timeout=30)

    def stop(self) -> None:
        """Stop reading; connections still here are closed (their peers see it as a lost
        melanged, as when a handler thread ends with the daemon)."""
        self._call(self._shut)
        self._thread.join(timeout=10)

    def _call(self, work: Callable[[], None]) -> bool:
        """Run `work` in the front's thread: now if this is it, else as soon as it wakes.
        False when the front has stopped (its connections are closed already)."""
        if self._here():
            work()
            return True
        with self._lock:
            if self._closed:
                return False
            self._inbox.append(work)
            if not self._woken:
                self._woken = True
                os.write(self._wake_w, b"x")  # under the lock: never after it is closed
        return True

    def _loop(self) -> None:
        """Read whatever is ready; then see to the connections answered in the last
        round (by now their peers have often read the answer and closed), then lead the
        lanes claimed by this round's requests: all of them in one transaction."""
        next_sweep = time.monotonic() + SWEEP
        while not self._stopping:
            timeout = 0.0 if self._later or self._claimed else SWEEP
            for key, _mask in self._selector.select(timeout=timeout):
                if key.data is None:
                    self._run_inbox()
                elif key.data is _LISTEN:
                    self._accept()
                else:
                    self._readable(key.data)
            later, self._later = self._later, []
            for work in later:
                self._run(work)
            self._lead()
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SWEEP
                for conn in [c for c in self._connections if not c.busy and c.deadline < now]:
                    self._close(conn)  # no whole request within the deadline
        with self._lock:  # nothing more reaches the inbox; what is in it runs below
            self._closed = True
            left, self._inbox = self._inbox, deque()
            os.close(self._wake_r)
            os.close(self._wake_w)
        for item in left:  # lanes taken back among them
            self._run(item)
        for store, lane in self._claimed:  # stopped first: runners answer them
            batching.GROUP.hand_off(store, lane)
        self._claimed = []
        self._selector.close()

    def _accept(self) -> None:
        """Accept, check the peer, adopt (or refuse): every connection waiting, up to
        ACCEPTS, so that their requests join one batch."""
        for _ in range(ACCEPTS):
            if not self.server.accept_one():
                return

    def _lead(self) -> None:
        """Run the claimed lanes here (a lane whose store's write lock another process
        holds goes to a runner thread instead: melanged.batching.lead_here)."""
        claimed, self._claimed = self._claimed, []
        for store, key in claimed:
            try:
                again = batching.GROUP.lead_here(store, key)
            except Exception:  # noqa: BLE001  (one lane never stops the front)
                log.exception("socket front: leading a lane failed")
                continue
            if again:
                self._claimed.append((store, key))

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:  # noqa: BLE001  (one connection never stops the front)
            log.exception("socket front: unexpected error")

    def _run_inbox(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            work, self._inbox = self._inbox, deque()
            self._woken = False
        for item in work:
            self._run(item)

    def _shut(self) -> None:
        self._stopping = True
        for conn in list(self._connections):
            self._close(conn)

    def _watch(self, conn: _Connection) -> None:
        if self._stopping:
            self._release(conn)
            return
        conn.deadline = time.monotonic() + self.deadline
        conn.busy = False
        self._connections.add(conn)
        # Read first: a new peer has usually written its request as it connected, and a
        # peer answered has often closed; the selector is told only when nothing is there
        # (a registration and its removal cost as much as the read).
        self._readable(conn)

    def _wait_for(self, conn: _Connection) -> None:
        """Read the connection again when the selector says it has something."""
        if not conn.watched:
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.watched = True

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if not conn.watched:
            return
        conn.watched = False
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: _Connection) -> None:
        self._forget(conn)
        self._release(conn)

    def _release(self, conn: _Connection) -> None:
        """The connection is done: closed, its slot free (as after a handler thread)."""
        self.server.shutdown_request(conn.sock)
        self.server.leave(conn.peer)

    def _hand_off(self, conn: _Connection) -> None:
        """To a thread running the server's usual handler, with the bytes read so far."""
        self._forget(conn)
        conn.sock.setblocking(True)
        self.server.serve_in_thread(conn.sock, conn.peer, conn.pending)

    def _readable(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            self._wait_for(conn)
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)  # the peer is gone
            return
        conn.pending += chunk
        end = conn.pending.find(b"\n")
        if end < 0:
            if len(conn.pending) > LINE_LIMIT:
                self._hand_off(conn)
            else:
                self._wait_for(conn)  # the rest of the line
            return
        if end != len(conn.pending) - 1:  # more than one request at once: in turn, there
            self._hand_off(conn)
            return
        submitted = self._submit(conn, conn.pending[:end])
        if submitted is None:
            self._hand_off(conn)
            return
        conn.pending = b""
        if isinstance(submitted, dict):  # refused before it ran: answered at once
            self._respond(conn, submitted)
            return
        conn.busy = True
        self._forget(conn)  # nothing more is read until it is answered
        self._connections.add(conn)

    def _submit(self, conn: _Connection, line: bytes) -> dict | Literal[True] | None:
        """Submit a group-committed write to its lane (True), answer a request refused by
        the server's checks (its error response), or None: not for the front."""

        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(request, dict) or request.get("stream") is True:
            return None
        name = request.get("op")
        if not isinstance(name, str) or not batching.grouped(name):
            return None
        request_id = request.get("id")
        server = self.server
        try:
            name, params = server.checked(conn.peer, request)
        except MelangeError as error:
            return error_response(error, request_id)
        if batching.lane_of(server.store, name, params) is None:
            return None

        def done(outcome: Any) -> None:  # after the commit, in whichever thread led
            data = _encoded(_response(conn, request_id, outcome))
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = -1  # the peer is gone (or the front stopped and closed it)
            self._after_reads(lambda: self._answered(conn, data, sent))

        # Claimed, the lane is led by this thread once this round's reads are done
        # (`_lead`), never waiting for SQLite's write lock (melange.lockwait).
        claimed = batching.GROUP.submit(server.store, name, params, actor=conn.peer.user,
                                        via="socket", done=done, lead=False)  # fmt: skip
        if claimed is not None:
            self._claimed.append((server.store, claimed))
        return True

    def _here(self) -> bool:
        """Whether this is the front's own thread."""
        return threading.get_ident() == self._thread.ident

    def _after_reads(self, work: Callable[[], None]) -> None:
        """`work` in the front's thread after its next reads (queued there when this is
        it, else handed over as `_call` does)."""
        if self._here():
            self._later.append(work)
        else:
            self._call(work)

    def _answered(self, conn: _Connection, data: bytes, sent: int) -> None:
        """After the lane's leader wrote the answer: read the next request, or finish the write
        in a handler thread (a peer slow to read), or close (a peer gone)."""
        if self._stopping:
            return  # closed by _shut
        self._connections.discard(conn)
        if sent < 0:
            self._release(conn)
        elif sent == len(data):
            self._watch(conn)
        else:
            conn.sock.setblocking(True)
            self.server.serve_in_thread(conn.sock, conn.peer, b"", unsent=data[sent:])

    def _respond(self, conn: _Connection, response: dict) -> None:
        """Answer at once (a request refused before it ran) and read the next one."""
        data = _encoded(response)
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = -1
        self._forget(conn)
        self._connections.add(conn)
        self._answered(conn, data, sent)


def _response(conn: _Connection, request_id: object, outcome: Any) -> dict:

    if isinstance(outcome, MelangeError):
        return error_response(outcome, request_id)
    if isinstance(outcome, BaseException):
        log.error("internal error serving %s", conn.peer.user, exc_info=outcome)
        failure = MelangeError(f"internal error: {type(outcome).__name__}")
        return error_response(failure, request_id)
    return {"version": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": outcome}


def _encoded(response: dict) -> bytes:
    return json.dumps(response, default=str).encode() + b"\n"
