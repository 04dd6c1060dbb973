"""melanged's socket: same results as direct mode, kernel-checked permissions, robustness."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from melange import operations
from melange.errors import MelangeError
from melange.store import Store
from melange_cli import client
from tests.support.realparts import require_root
from tests.support.socket_daemon import SocketDaemon
from tests.support.sql import dump_store, execute_sql

ROOT = Path(__file__).parent.parent


@pytest.fixture
def shared_dir():
    """A directory an unprivileged user can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mlg-sock-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _daemon(shared_dir: Path, config_text: str = "") -> SocketDaemon:
    db = shared_dir / "store.db"
    url = f"sqlite:///{db}"
    operations.run(Store(url), "block.create", {"cidr": "10.90.0.0/16", "name": "b"})
    config = shared_dir / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 48h\n[melanged]\n" + config_text)
    return SocketDaemon(url, shared_dir / "daemon", config)


def _request(path: Path, payload: bytes, timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped reading (too big); its answer may still be there
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
        return b"".join(chunks)


def test_socket_and_directory_modes_and_ownership(shared_dir):
    with _daemon(shared_dir, "socket_group = nogroup\n") as daemon:
        mode = daemon.socket.stat().st_mode & 0o777
        assert mode == 0o660
        assert daemon.socket.parent.stat().st_mode & 0o777 == 0o750
        import grp

        assert grp.getgrgid(daemon.socket.stat().st_gid).gr_name == "nogroup"
        assert grp.getgrgid(daemon.socket.parent.stat().st_gid).gr_name == "nogroup"
    assert not daemon.socket.exists(), "the socket is removed on SIGTERM"


DEMOTED_CLIENT = """
import os, sys
# Everything the socket client needs is imported first: this interpreter's
# files may not be readable by nobody. The kernel records the peer's
# credentials at connect(), which happens after the switch.
import difflib, gettext  # noqa
import melange_cli.main, melange_cli.client, melange_cli.output, melange.errors  # noqa
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
assert os.getuid() == uid and os.geteuid() == uid
melange_cli.main.cli.main(sys.argv[3:], prog_name="melange")
"""


def _as_nobody(socket_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as the unprivileged user nobody (set in the child, as the issue asks)."""
    require_root()
    nobody = pwd.getpwnam("nobody")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = ["--socket", str(socket_path), "-o", "plain", *args]
    return subprocess.run(
        [sys.executable, "-c", DEMOTED_CLIENT, str(nobody.pw_uid), str(nobody.pw_gid), *argv],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip


def test_reader_group_may_read_but_not_write(shared_dir):
    with _daemon(shared_dir, "socket_group = nogroup\nreader_groups = nogroup\n") as daemon:
        operations.run(Store(f"sqlite:///{shared_dir / 'store.db'}"), "block.allocate",
                       {"block": "b", "mac": "02:00:00:00:00:01"})  # fmt: skip
        before = dump_store(shared_dir / "store.db")
        listed = _as_nobody(daemon.socket, "ip", "list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith("10.90.0.1\t")
        writes = (
            ("block", "allocate", "b"),
            ("ip", "release", "10.90.0.1"),
            ("block", "create", "10.91.0.0/24"),
            ("dhcp", "sync", "--hostsfile", "/tmp/x"),
        )
        for args in writes:  # fmt: skip
            denied = _as_nobody(daemon.socket, *args)
            assert denied.returncode == 7, (args, denied.stderr)
            assert denied.stderr.startswith("Error: ") and denied.stderr.count("\n") == 1
            assert "nobody" in denied.stderr
        assert dump_store(shared_dir / "store.db") == before


def test_others_may_not_even_read(shared_dir):
    with _daemon(shared_dir, "socket_group = nogroup\n") as daemon:
        denied = _as_nobody(daemon.socket, "block", "list")
        assert denied.returncode == 7, denied.stderr


def test_admin_users_may_write_and_the_audit_names_the_peer(shared_dir):
    with _daemon(shared_dir, "socket_group = nogroup\nadmin_users = nobody\n") as daemon:
        done = _as_nobody(daemon.socket, "block", "allocate", "b", "--mac", "02:00:00:00:00:09")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "10.90.0.1\n"
    rows = execute_sql(shared_dir / "store.db",
                       "SELECT actor, via, command FROM audit_log ORDER BY id")  # fmt: skip
    assert rows[-1] == ("nobody", "socket", "block.allocate")


def test_thirty_two_concurrent_clients_allocate_without_duplicates(shared_dir):
    with _daemon(shared_dir) as daemon:
        results: list[str] = []
        errors: list[str] = []

        def work(n: int) -> None:
            for i in range(15):
                try:
                    got = client.call(
                        str(daemon.socket),
                        "block.allocate",
                        {"block": "b", "mac": f"02:00:00:{n:02x}:{i:02x}:01"},
                    )
                    results.append(got[0]["address"])  # fmt: skip
                except MelangeError as error:
                    errors.append(error.message)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert errors == []
        assert len(results) == 32 * 15
        assert [a for a, n in Counter(results).items() if n > 1] == []
        listed = client.call(str(daemon.socket), "ip.list", {"block": "b"})
        assert sorted(r["address"] for r in listed) == sorted(results)


def test_abuse_leaves_the_daemon_serving(shared_dir):
    with _daemon(shared_dir) as daemon:
        path = daemon.socket
        big = _request(path, b'{"version": 1, "op": "block.list", "params": {"x": "'
                       + b"a" * (2 << 20) + b'"}}\n')  # fmt: skip
        assert big == b"" or json.loads(big)["error"]["code"] == "invalid_input"
        garbage = json.loads(_request(path, b"\x00\xff\xfe not json at all\n"))
        assert garbage["ok"] is False and garbage["error"]["exit_code"] == 2
        unknown = json.loads(_request(path, b'{"version": 1, "op": "rm -rf", "params": {}}\n'))
        assert "unknown operation" in unknown["error"]["message"]
        for op in (b"[1]", b'{"a": 1}', b"null", b"7"):  # not a name, nor hashable for some
            odd = json.loads(_request(path, b'{"version": 1, "op": ' + op + b', "params": {}}\n'))
            assert odd["error"]["code"] == "invalid_input", odd
            assert "unknown operation" in odd["error"]["message"]
        extra = json.loads(_request(
            path, b'{"version": 1, "op": "block.list", "params": {"evil": 1}}\n'))  # fmt: skip
        assert extra["error"]["code"] == "invalid_input"
        wrong_version = json.loads(_request(path, b'{"version": 99, "op": "block.list"}\n'))
        assert "version" in wrong_version["error"]["message"]
        # A half line then silence: others are served meanwhile, and it is dropped.
        hanging = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hanging.connect(str(path))
        hanging.sendall(b'{"version": 1, "op": "bl')
        abandoned = []
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            abandoned.append(s)
        assert client.call(str(path), "block.allocate", {"block": "b"})[0]["address"]
        for s in abandoned:
            s.close()
        hanging.settimeout(15)
        started = time.monotonic()
        assert hanging.recv(100) == b""  # closed by the daemon after its idle timeout
        assert time.monotonic() - started < 12
        hanging.close()
        assert daemon.alive()
        assert client.call(str(path), "block.show", {"block": "b"})["utilization"]["used"] == 1


def _line_from(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "closed before a whole answer"
        data += chunk
    return json.loads(data)


def test_requests_that_come_late_or_in_pieces_are_answered(shared_dir):
    """melanged reads a new connection before watching it (most peers have written their
    request by then): a peer silent at first, one writing its line in pieces, and one
    sending a second request after the first answer are each answered, batched writes
    (allocations, handled by the front) and others alike."""
    daemon = _daemon(shared_dir)
    with daemon:
        path = str(daemon.socket)
        allocate = b'{"version": 1, "id": 1, "op": "block.allocate", "params": {"block": "b"}}\n'
        show = b'{"version": 1, "id": 2, "op": "block.show", "params": {"block": "b"}}\n'
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as late:
            late.settimeout(10)
            late.connect(path)
            time.sleep(0.3)  # nothing at first
            late.sendall(allocate)
            first = _line_from(late)
            assert first["ok"] and first["result"][0]["address"], first
            time.sleep(0.3)  # a second request on the same connection, later
            late.sendall(allocate)
            second = _line_from(late)
            assert second["ok"] and second["result"][0]["address"] != first["result"][0]["address"]
            late.sendall(show)
            assert _line_from(late)["result"]["utilization"]["used"] == 2
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as pieces:
            pieces.settimeout(10)
            pieces.connect(path)
            for start in range(0, len(allocate), 20):
                pieces.sendall(allocate[start:start + 20])
                time.sleep(0.05)
            assert _line_from(pieces)["ok"]
        assert daemon.alive()


def test_a_stale_socket_is_replaced_and_a_live_one_is_not_stolen(shared_dir):
    first = _daemon(shared_dir)
    first.start()
    try:
        first.proc.kill()  # dies without cleaning up: the socket file stays
        first.proc.wait()
        assert first.socket.exists()
        second = SocketDaemon(first.argv[first.argv.index("--db") + 1], shared_dir / "daemon",
                              shared_dir / "melange.conf")  # fmt: skip
        with second:
            assert client.call(str(second.socket), "block.list", {})[0]["name"] == "b"
            third = SocketDaemon(second.argv[second.argv.index("--db") + 1],
                                 shared_dir / "daemon", shared_dir / "melange.conf")  # fmt: skip
            third.argv += ["--pidfile", str(shared_dir / "third.pid")]
            proc = subprocess.run(third.argv, env=third.env, capture_output=True, text=True,
                                  timeout=30)  # fmt: skip
            assert proc.returncode == 4 and "another melanged" in proc.stderr
            assert client.call(str(second.socket), "block.list", {})
    finally:
        first.stop()


def test_a_client_without_a_daemon_gets_exit_6(shared_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "melange_cli.main", "--socket", str(shared_dir / "none.sock"),
         "block", "list"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 6
    assert proc.stderr == f"Error: melanged is not running at {shared_dir / 'none.sock'}\n"


def test_socket_mode_does_not_import_sqlalchemy(shared_dir):
    with _daemon(shared_dir) as daemon:
        code = (
            "import sys, runpy\n"
            f"sys.argv = ['melange', '--socket', {str(daemon.socket)!r}, '-o', 'plain',"
            " 'block', 'allocate', 'b']\n"
            "try:\n    runpy.run_module('melange_cli.main', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('LOADED' if any(m.startswith('sqlalchemy') for m in sys.modules) else 'CLEAN')\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)  # fmt: skip
        assert proc.stdout.splitlines() == ["10.90.0.1", "CLEAN"], proc.stderr
