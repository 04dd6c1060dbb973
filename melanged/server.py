"""melanged's Unix socket: every melange command, for peers the kernel identifies.

Protocol (docs/protocol.md): one JSON object per line each way. The request
is validated (size, JSON, version, operation, parameter names and types)
before anything touches the store; who the peer is comes from SO_PEERCRED,
never from the request; the operation itself is melange.operations, the same
code the CLI runs.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from melange import operations
from melange.errors import Conflict, InvalidInput, MelangeError, PermissionDenied
from melange.store import Store

log = logging.getLogger("melanged.socket")
PROTOCOL_VERSION = 1
MAX_REQUEST = 1 << 20
IDLE_TIMEOUT = 10.0
MAX_CLIENTS = 256
READ_ONLY = {name for name, op in operations.OPERATIONS.items() if not op.write}
READ_ONLY.discard("dhcp.sync")  # writes files and signals dnsmasq


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str
    groups: frozenset[str]


@dataclass
class Access:
    """Who may change things and who may only read; root may always change."""

    admin_users: set[str] = field(default_factory=set)
    admin_groups: set[str] = field(default_factory=set)
    reader_groups: set[str] = field(default_factory=set)

    @classmethod
    def from_config(cls, section: dict[str, str]) -> Access:
        def names(key: str) -> set[str]:
            return {n.strip() for n in section.get(key, "").split(",") if n.strip()}

        return cls(names("admin_users"), names("admin_groups"), names("reader_groups"))

    def may(self, peer: Peer, operation: str) -> bool:
        admin = (
            peer.uid == 0
            or peer.uid == os.getuid()
            or peer.user in self.admin_users
            or bool(peer.groups & self.admin_groups)
        )
        if admin:
            return True
        return operation in READ_ONLY and bool(peer.groups & self.reader_groups)


def peer_of(conn: socket.socket) -> Peer:
    """The connecting process's credentials, from the kernel."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    try:
        user = pwd.getpwuid(uid).pw_name
        gids = os.getgrouplist(user, gid)
    except KeyError:
        user, gids = str(uid), [gid]
    groups = set()
    for g in gids:
        try:
            groups.add(grp.getgrgid(g).gr_name)
        except KeyError:
            groups.add(str(g))
    return Peer(pid, uid, gid, user, frozenset(groups))


def validate(request: object) -> tuple[str, dict]:
    """Check a decoded request's shape; (operation, params) or InvalidInput."""
    if not isinstance(request, dict):
        raise InvalidInput("a request is a JSON object")
    if request.get("version") != PROTOCOL_VERSION:
        raise InvalidInput(f"unsupported protocol version {request.get('version')!r}")
    name = request.get("op")
    if not isinstance(name, str) or name not in operations.OPERATIONS:
        raise InvalidInput(f"unknown operation {name!r}")
    params = request.get("params", {})
    operations.validate(name, params)
    return name, params


def error_response(error: MelangeError, request_id=None) -> dict:
    return {
        "version": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "error": {"code": error.code, "message": error.message, "exit_code": error.exit_code},
    }


class _Handler(socketserver.StreamRequestHandler):
    timeout = IDLE_TIMEOUT

    def handle(self) -> None:
        server: SocketServer = self.server  # type: ignore[assignment]
        if not server.slots.acquire(blocking=False):
            self._send(error_response(MelangeError("melanged is busy; try again")))
            return
        try:
            peer = peer_of(self.request)
            while True:
                try:
                    line = self.rfile.readline(MAX_REQUEST + 1)
                except (TimeoutError, OSError):
                    return  # idle or gone: drop it
                if not line:
                    return
                if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
                    if len(line) > MAX_REQUEST:
                        self._send(error_response(InvalidInput("request larger than 1 MiB")))
                    return
                self._send(server.answer(peer, line))
        finally:
            server.slots.release()

    def _send(self, response: dict) -> None:
        try:
            self.wfile.write(json.dumps(response, default=str).encode() + b"\n")
            self.wfile.flush()
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
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        try:
            gid = grp.getgrnam(group).gr_gid if group else -1
        except KeyError:
            raise InvalidInput(f"socket_group {group!r} does not exist") from None
        _prepare(self.path, gid)
        super().__init__(str(self.path), _Handler)
        os.chown(self.path, -1, gid)
        os.chmod(self.path, 0o660)

    def answer(self, peer: Peer, line: bytes) -> dict:
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
            name, params = validate(request)
            if not self.access.may(peer, name):
                raise PermissionDenied(
                    f"user {peer.user} may not run {name} through melanged "
                    "(see admin_users, admin_groups, reader_groups)"
                )
            result = operations.run(self.store, name, params, actor=peer.user, via="socket")
            return {"version": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}
        except MelangeError as error:
            return error_response(error, request_id)
        except Exception as error:  # noqa: BLE001  (a bug: reported, the daemon goes on)
            log.exception("internal error serving %s", peer.user)
            return error_response(
                MelangeError(f"internal error: {type(error).__name__}"), request_id
            )

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)


def _prepare(path: Path, gid: int) -> None:
    """Create the directory (0750, the socket's group); replace a stale socket,
    never steal a live one."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o750)
        os.chown(path.parent, -1, gid)
        os.chmod(path.parent, 0o750)
    if not path.exists() and not path.is_symlink():
        return
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
