"""melanged's Unix socket: every melange command, for peers the kernel identifies.

Protocol (docs/protocol.md): one JSON object per line each way (a large result
streams as several lines, an import's file is uploaded as several). The request
is validated (size, JSON, version, operation, parameter names and types)
before anything touches the store; who the peer is comes from SO_PEERCRED and
SO_PEERGROUPS, never from the request, and is settled at accept, before a byte
is read: a peer without a role is turned away at once, and per-user limits
keep readers and writers from taking every slot. What a role may run is the
operation's declaration (melange.operations: reader < writer < admin); the
host-local ones (no HTTP route) need an admin, and with files, pidfiles or
interfaces root or melanged's own user. The operation itself is
melange.operations, the same code the CLI runs.
"""

from __future__ import annotations

import functools
import grp
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from melange import operations, streaming
from melange.audit import user_name
from melange.errors import Conflict, InvalidInput, MelangeError, PermissionDenied
from melange.localfiles import (
    HOST_LOCAL_PARAMS,
    PATH_PARAMS,
    check_directory,
    host_local,
    prepare_directory,
)
from melange.operations import Role
from melange.store import Store
from melanged.batching import GROUP
from melanged.wire import PROTOCOL_VERSION, REQUEST_DEADLINE, Peer, error_response

log = logging.getLogger("melanged.socket")
# What socketserver's types say a request is; a stream server's is always the socket.
Request = socket.socket | tuple[bytes, socket.socket]
MAX_REQUEST = 1 << 20
CHUNK = 1000  # records in one line of a streamed result
SEND_TIMEOUT = 60.0  # a peer that stops reading its answer loses its slot
MAX_CLIENTS = 256  # connections served at once (root and melanged's user: beyond this)
RESERVED = 32  # of those, kept for admins: readers and writers never fill the daemon
PER_USER = 64  # connections one user (other than root) may hold at once
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13+
ROLE_KEYS = "admin_users, admin_groups, writer_users, writer_groups, reader_groups"


@dataclass
class Access:
    """Each peer's role (reader < writer < admin, melange.operations.ROLES); root and
    melanged's own user are always admins. What a role may run is the declaration's."""

    admin_users: set[str] = field(default_factory=set)
    admin_groups: set[str] = field(default_factory=set)
    reader_groups: set[str] = field(default_factory=set)
    writer_users: set[str] = field(default_factory=set)
    writer_groups: set[str] = field(default_factory=set)

    @classmethod
    def from_config(cls, section: dict[str, str]) -> Access:
        def names(key: str) -> set[str]:
            return {n.strip() for n in section.get(key, "").split(",") if n.strip()}

        return cls(
            names("admin_users"),
            names("admin_groups"),
            names("reader_groups"),
            names("writer_users"),
            names("writer_groups"),
        )

    def role(self, peer: Peer) -> Role | None:
        """The peer's highest role, or None (no business with this daemon)."""
        if (
            peer.privileged
            or peer.user in self.admin_users
            or bool(peer.groups & self.admin_groups)
        ):
            return "admin"
        if peer.user in self.writer_users or peer.groups & self.writer_groups:
            return "writer"
        if peer.groups & self.reader_groups:
            return "reader"
        return None

    def may(self, peer: Peer, operation: str) -> bool:
        """The declaration decides: the operation's role or a higher one; a host-local
        operation (no HTTP route: files, pidfiles, the schema) needs an admin here."""
        return may(self.role(peer), operation)


def may(role: str | None, operation: str) -> bool:
    """Whether a socket peer holding `role` may run `operation` (docs/protocol.md)."""
    declared = operations.OPERATIONS[operation]
    return declared.allows(role) and (declared.http is not None or role == "admin")


def peer_of(conn: socket.socket) -> Peer:
    """The connecting process's credentials, from the kernel, as they were at connect().

    Groups are the peer's gid and its supplementary groups as the process
    had them (SO_PEERGROUPS), not what /etc/group lists for the user: a
    process that dropped a group has no rights through it."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    user = user_name(uid)
    groups = frozenset(group_name(g) for g in {gid, *_peer_groups(conn, pid, uid)})
    return Peer(pid, uid, gid, user, groups)


@functools.cache
def group_name(gid: int) -> str:
    """A gid's group name, or the number when it has none. Kept, as user names are
    (melange.audit.user_name): reading the group database at each connection cost
    15-18 us, about a fifteenth of melanged's work for a batched allocation. SIGHUP
    forgets both (`forget_names`)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def forget_names() -> None:
    """Read user and group names afresh from now on (a group renamed or removed)."""
    group_name.cache_clear()
    user_name.cache_clear()


def _peer_groups(conn: socket.socket, pid: int, uid: int) -> list[int]:
    """Supplementary gids of the peer: from the kernel's record of the connection, or
    (more than 256 groups) from /proc/PID/status of the peer, if it is still that user."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        return list(struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:
        pass
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if int(fields.get("Uid", "-1 -1").split()[1]) != uid:
        return []  # the pid is another process by now
    return [int(g) for g in fields.get("Groups", "").split()]


def validate(request: object) -> tuple[str, dict]:
    """Check a decoded request's shape; (operation, params) or InvalidInput."""
    if not isinstance(request, dict):
        raise InvalidInput("a request is a JSON object")
    if request.get("version") != PROTOCOL_VERSION:
        raise InvalidInput(f"unsupported protocol version {request.get('version')!r}")
    name = request.get("op")
    if not isinstance(name, str) or name not in operations.OPERATIONS:
        raise InvalidInput(f"unknown operation {name!r}")
    return name, operations.validate(name, request.get("params", {}))


def busy_response(message: str) -> dict:
    """What a peer over its limits gets: a documented code, exit 6 (try again)."""
    return {
        "version": PROTOCOL_VERSION,
        "id": None,
        "ok": False,
        "error": {"code": "busy", "message": message, "exit_code": 6},
    }


@dataclass(frozen=True)
class Streamed:
    """A checked request whose result streams (melange.streaming): run by the handler,
    which writes its lines as the records come."""

    name: str
    params: dict
    request_id: object


@dataclass(frozen=True)
class Upload:
    """A checked request whose document follows it in chunk lines (docs/protocol.md,
    "Streamed uploads"): run by the handler, which reads the lines as the import takes
    them."""

    name: str
    params: dict
    request_id: object


# The operations that take a document, and its parameter, which an upload fills.
UPLOADED = {"import": "text"}


class TooLarge(Exception):
    """A line over MAX_REQUEST: refused with invalid_input, the connection closed."""


class PeerGone(Exception):
    """A streamed result's reader went away (not an OSError: nothing on the way maps it)."""


class _Handler(socketserver.BaseRequestHandler):
    """One admitted connection: requests read against a deadline, answered in turn."""

    def setup(self) -> None:
        # Set by SocketServer.serve_in_thread: the peer, what the front already read of the
        # connection, and the rest of an answer it could not finish writing.
        self.peer, self.pending, unsent = self.client_address
        if unsent:
            self._send_raw(unsent)

    def handle(self) -> None:
        server: SocketServer = self.server  # type: ignore[assignment]
        while True:
            line = self._read_line(time.monotonic() + REQUEST_DEADLINE)
            if line is None:
                return
            response = server.answer(self.peer, line)
            if isinstance(response, Streamed):
                if not self._stream(server, response):
                    return
            elif isinstance(response, Upload):
                if not self._upload(server, response):
                    return
            else:
                self._send(response)

    def _read_line(self, deadline: float) -> bytes | None:
        """One request line, whole within the deadline (a byte now and then does not
        extend it); None when the peer is gone, too slow or over the size limit."""
        try:
            return self._next_line(deadline)
        except TooLarge:
            self._send(error_response(InvalidInput("request larger than 1 MiB")))
            return None

    def _next_line(self, deadline: float) -> bytes | None:
        """_read_line's line; TooLarge past MAX_REQUEST."""
        conn: socket.socket = self.request
        while b"\n" not in self.pending:
            if len(self.pending) > MAX_REQUEST:
                raise TooLarge()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            conn.settimeout(remaining)
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        if len(line) > MAX_REQUEST:
            raise TooLarge()
        return line

    def _upload(self, server: SocketServer, upload: Upload) -> bool:
        """A streamed upload (docs/protocol.md): the chunk lines handed to the operation
        as it reads them, each within REQUEST_DEADLINE, then one answer line. False (the
        connection is closed) when the answer comes before the end line: the rest of the
        upload is never read, and the client, reading the answer, stops writing."""
        ended = False

        def pieces() -> Iterator[str]:
            nonlocal ended
            count = 0
            while True:
                try:
                    line = self._next_line(time.monotonic() + REQUEST_DEADLINE)
                except TooLarge:
                    raise InvalidInput("an upload line is larger than 1 MiB") from None
                if line is None:
                    raise InvalidInput("the upload stopped before its end line (nothing done)")
                piece = _upload_line(line, count)
                if piece is None:
                    ended = True
                    return
                count += 1
                yield piece

        params = {**upload.params, "chunks": pieces()}
        try:
            result = operations.run(server.store, upload.name, params, actor=self.peer.user,
                                    via="socket")  # fmt: skip
            response = {"version": PROTOCOL_VERSION, "id": upload.request_id, "ok": True,
                        "result": result}  # fmt: skip
        except MelangeError as error:
            response = error_response(error, upload.request_id)
        except Exception as error:  # noqa: BLE001  (a bug: reported, the daemon goes on)
            log.exception("internal error serving an upload of %s", self.peer.user)
            failure = MelangeError(f"internal error: {type(error).__name__}")
            response = error_response(failure, upload.request_id)
        self._send(response)
        return ended

    def _stream(self, server: SocketServer, streamed: Streamed) -> bool:
        """A streamed result (docs/protocol.md): a head line, chunk lines of up to CHUNK
        records as they are read, an end line; a failure before the first chunk is the
        usual error line, after it an error line ends the stream. False when the peer
        went away (the read stops there)."""
        chunk: list = []
        head = {"version": PROTOCOL_VERSION, "id": streamed.request_id, "ok": True,
                "stream": True}  # fmt: skip
        started = False

        def flush() -> None:
            nonlocal started
            if not started:
                self._send_line(head)
                started = True
            self._send_line({"chunk": chunk})
            chunk.clear()

        def sink(item: object) -> None:
            chunk.append(item)
            if len(chunk) >= CHUNK:
                flush()

        try:
            streaming.produce(server.store, streamed.name, streamed.params, sink,
                              actor=self.peer.user, via="socket")  # fmt: skip
            flush()
            self._send_line({"end": True})
        except PeerGone:
            return False
        except MelangeError as error:
            self._send(error_response(error, streamed.request_id))
        except Exception as error:  # noqa: BLE001  (a bug: reported, the daemon goes on)
            log.exception("internal error streaming to %s", self.peer.user)
            failure = MelangeError(f"internal error: {type(error).__name__}")
            self._send(error_response(failure, streamed.request_id))
        return True

    def _send_line(self, response: dict) -> None:
        """One line of a streamed result; PeerGone when the peer stopped reading."""
        try:
            self.request.settimeout(SEND_TIMEOUT)
            self.request.sendall(json.dumps(response, default=str).encode() + b"\n")
        except OSError:
            raise PeerGone() from None

    def _send(self, response: dict) -> None:
        self._send_raw(json.dumps(response, default=str).encode() + b"\n")

    def _send_raw(self, data: bytes) -> None:
        try:
            self.request.settimeout(SEND_TIMEOUT)
            self.request.sendall(data)
        except OSError:
            pass


class SocketServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = socket.SOMAXCONN  # bursts of clients queue instead of failing

    def __init__(self, path: Path, store: Store, access: Access, group: str | None = None):
        self.path = Path(path)
        self.store = store
        self.access = access
        self.lock = threading.Lock()
        self.serving = 0  # connections of users other than root and melanged's
        self.by_uid: Counter[int] = Counter()
        try:
            gid = grp.getgrnam(group).gr_gid if group else -1
        except KeyError:
            raise InvalidInput(f"socket_group {group!r} does not exist") from None
        _prepare(self.path, gid)
        super().__init__(str(self.path), _Handler)
        os.chown(self.path, -1, gid)
        os.chmod(self.path, 0o660)
        from melanged.front import Front

        self._serving = threading.Event()
        self.front = Front(self)  # reads the connections; hands most to handler threads

    def process_request(self, request: Request, client_address: object) -> None:
        """At accept, before reading a byte: who is it, and is there a slot for them?
        Refusals are one non-blocking line and a close, in the accepting thread."""
        assert isinstance(request, socket.socket)  # see Request
        try:
            peer = peer_of(request)
        except OSError:
            self.shutdown_request(request)
            return
        role = self.access.role(peer)
        refusal = None
        if role is None:
            refusal = error_response(PermissionDenied(
                f"user {peer.user} may not use melanged (see {ROLE_KEYS})"))  # fmt: skip
        elif not self._admit(peer, role):
            refusal = busy_response(
                f"melanged is busy (or {peer.user} holds {PER_USER} connections); try again"
            )
        if refusal is not None:
            _send_now(request, refusal)
            self.shutdown_request(request)
            return
        try:
            self.front.adopt(request, peer)
        except BaseException:
            self._leave(peer)  # not adopted: the slot is free again
            raise

    def serve_in_thread(self, request: socket.socket, peer: Peer, pending: bytes,
                        unsent: bytes = b"") -> None:  # fmt: skip
        """Serve the connection from a thread of its own (the usual handler), from what the
        front read of it; its slot is freed when the handler ends."""
        try:
            super().process_request(request, (peer, pending, unsent))
        except BaseException:
            self.shutdown_request(request)
            self._leave(peer)
            raise

    def _admit(self, peer: Peer, role: str) -> bool:
        """root and melanged's user always; others within their own limit, readers
        only while the slots kept for admins stay free."""
        if peer.privileged:
            return True
        limit = MAX_CLIENTS if role == "admin" else MAX_CLIENTS - RESERVED
        with self.lock:
            if self.serving >= limit or self.by_uid[peer.uid] >= PER_USER:
                return False
            self.serving += 1
            self.by_uid[peer.uid] += 1
        return True

    def process_request_thread(self, request: Request, address: tuple) -> None:
        try:
            super().process_request_thread(request, address)
        finally:
            self._leave(address[0])

    def leave(self, peer: Peer) -> None:
        """A connection of `peer` has ended (the front's, or a handler thread's)."""
        self._leave(peer)

    def _leave(self, peer: Peer) -> None:
        if peer.privileged:
            return
        with self.lock:
            self.serving -= 1
            self.by_uid[peer.uid] -= 1
            if not self.by_uid[peer.uid]:
                del self.by_uid[peer.uid]

    def checked(self, peer: Peer, request: object) -> tuple[str, dict]:
        """A decoded request checked for this peer before anything runs: (operation,
        params), or the MelangeError that refuses it."""
        name, params = validate(request)
        if not self.access.may(peer, name):
            raise PermissionDenied(
                f"user {peer.user} may not run {name} through melanged "
                f"(it needs {_needed(name)}; see {ROLE_KEYS})"
            )
        check_host_local(peer, name, params)
        return name, params

    def answer(self, peer: Peer, line: bytes) -> dict | Streamed | Upload:
        request_id = None
        try:
            try:
                request = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                raise InvalidInput("the request is not valid JSON") from None
            except RecursionError:
                raise InvalidInput("the request is nested too deeply") from None
            if isinstance(request, dict):
                request_id = request.get("id")
            name, params = self.checked(peer, request)
            if request.get("upload") is True:
                if name not in UPLOADED or UPLOADED[name] in params:
                    raise InvalidInput(f"{name} takes no upload (or its document twice)")
                return Upload(name, params, request_id)
            if request.get("stream") is True and name in streaming.STREAMED:
                return Streamed(name, params, request_id)
            result = GROUP.run(self.store, name, params, actor=peer.user, via="socket")
            return {"version": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}
        except MelangeError as error:
            return error_response(error, request_id)
        except Exception as error:  # noqa: BLE001  (a bug: reported, the daemon goes on)
            log.exception("internal error serving %s", peer.user)
            return error_response(
                MelangeError(f"internal error: {type(error).__name__}"), request_id
            )

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """The front accepts the connections itself (melanged.front: no thread between
        accept and the first read); this waits until `shutdown`."""
        self._serving.clear()
        self.front.listen()
        self._serving.wait()

    def accept_one(self) -> bool:
        """Accept a waiting connection (from the front's thread): checked, then adopted by
        the front or turned away (process_request). False when none was waiting (or the
        accept failed): socketserver's own step of serve_forever, which does not say."""
        try:
            request, client_address = self.get_request()
        except OSError:
            return False
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        except BaseException:
            self.shutdown_request(request)
            raise
        return True

    def shutdown(self) -> None:
        """No connection is accepted after this returns."""
        self.front.stop_listening()
        self._serving.set()

    def close(self) -> None:
        self.shutdown()
        self.front.stop()
        self.server_close()
        self.path.unlink(missing_ok=True)


def _upload_line(line: bytes, count: int) -> str | None:
    """The text of one upload line, or None for its end line (which counts the chunks,
    so a client that lost some is told from a whole one)."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("an upload line is not valid JSON") from None
    if isinstance(value, dict) and isinstance(value.get("chunk"), str) and len(value) == 1:
        return value["chunk"]
    end = value.get("end") if isinstance(value, dict) else None
    if isinstance(end, dict) and end.get("chunks") == count and len(value) == 1:
        return None
    raise InvalidInput("an upload line is neither {\"chunk\": text} nor its end line")


def _needed(name: str) -> str:
    """The least role `may` lets run `name`, in words."""
    role = next(role for role in operations.ROLES if may(role, name))
    return f"the {role} role" if role == "admin" else f"the {role} role or a higher one"


def check_host_local(peer: Peer, name: str, params: dict) -> None:
    """Files, pidfiles and interfaces of this host are acted on for root and melanged's
    own user only, with absolute paths: melanged runs as root, and must not open,
    create, replace or signal for a peer what that peer could not itself."""
    if not host_local(name, params):
        return
    if not peer.privileged:
        log.warning("refused %s for %s (uid %d): host-local", name, peer.user, peer.uid)
        raise PermissionDenied(
            f"{name} with files, pidfiles or interfaces acts on this host as melanged's "
            f"user; user {peer.user} may not run it through the socket "
            "(run melange directly, with your own rights)"
        )
    for key in sorted(PATH_PARAMS & set(params)):
        value = params[key]
        if value not in (None, "") and (not isinstance(value, str) or not os.path.isabs(value)):
            raise InvalidInput(f"{key} must be an absolute path through the socket, not {value!r}")
    shown = {k: params[k] for k in sorted(HOST_LOCAL_PARAMS & set(params)) if params[k]}
    log.info("%s (uid %d) runs %s on this host: %s", peer.user, peer.uid, name, shown)


def _send_now(conn: socket.socket, response: dict) -> None:
    """A short answer that never blocks the accepting thread."""
    try:
        conn.send(json.dumps(response).encode() + b"\n", socket.MSG_DONTWAIT)
    except OSError:
        pass


def _prepare(path: Path, gid: int) -> None:
    """Create the directory (0750, the socket's group); replace a stale socket,
    never steal a live one, never remove anything that is not a socket."""
    if not path.parent.exists():
        prepare_directory(path.parent, 0o750)
        os.chown(path.parent, -1, gid)
        os.chmod(path.parent, 0o750)
    else:
        check_directory(path.parent)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise Conflict(f"{path} exists and is not a socket; not removing it (choose another path)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # stale: left by a daemon that died
        return
    finally:
        probe.close()
    raise Conflict(f"another melanged is serving {path}")


def serve_in_background(server: SocketServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="socket", daemon=True)
    thread.start()
    return thread
