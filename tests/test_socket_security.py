"""melanged (as root) gives a socket peer no more than its role: no root file or signal
powers for a non-root admin, no lock-out by a reader, roles from the peer's real groups.

Every test uses real users (useradd), real processes switched with setpriv, real
root-owned 0600 files and a real root process as the would-be signal target.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import execute_sql
from localusers import as_user, env, melange, shared_dir
from socket_daemon import SocketDaemon
from support.signals import untouched

from melange import operations
from melange.store import Store

SECRET = "02:00:00:00:00:99,10.9.9.9,root-only-secret"


@pytest.fixture(scope="module")
def people(users):
    readers = users.group("readers")
    return {
        "admin": users.user("admin"),
        "reader": users.user("reader", groups=[readers]),
        "crowd": [users.user(f"crowd{n}", groups=[readers]) for n in range(4)],
        "stranger": users.user("strange"),
        "readers": readers,
    }


@pytest.fixture(scope="module")
def daemon(people):
    """One root melanged for the module: an admin by name, a reader group, a stranger."""
    top = shared_dir("mlg-secsock-")
    url = f"sqlite:///{top / 'store.db'}"
    operations.run(Store(url), "block.create", {"cidr": "10.90.0.0/16", "name": "b"})
    config = top / "melange.conf"
    config.write_text(
        f"[melanged]\nadmin_users = {people['admin'].name}\nreader_groups = {people['readers']}\n"
    )
    with SocketDaemon(url, top / "daemon", config) as running:
        os.chmod(running.socket.parent, 0o755)  # reachable by all: the roles are tested
        os.chmod(running.socket, 0o666)
        running.top = top
        yield running
    subprocess.run(["rm", "-rf", str(top)], check=False)


@pytest.fixture
def secret(tmp_path):
    """A root-owned 0600 file nobody but root may read or write."""
    path = tmp_path / "shadow-like"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def _sock(daemon, user, *args, **kw):
    return melange(user, "--socket", str(daemon.socket), *args, **kw)


def _one_error_line(proc, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr


# -- host-local operations


@pytest.mark.parametrize("option", ["--hostsfile", "--leasefile"])
def test_admin_cannot_read_a_root_file_through_reconcile(daemon, people, secret, option):
    proc = _sock(daemon, people["admin"], "reconcile", option, str(secret))
    _one_error_line(proc, 7)
    assert "root-only-secret" not in proc.stdout + proc.stderr
    assert "host" in proc.stderr


def test_admin_cannot_read_melangeds_environment(daemon, people):
    proc = _sock(daemon, people["admin"], "reconcile", "--hostsfile", "/proc/self/environ")
    _one_error_line(proc, 7)
    assert "PATH=" not in proc.stdout + proc.stderr


def test_admin_cannot_create_root_directories_through_dhcp_sync(daemon, people):
    deep = daemon.top / "any" / "dir" / "deep"
    proc = _sock(daemon, people["admin"], "dhcp", "sync", "--hostsfile", str(deep / "x"))
    _one_error_line(proc, 7)
    assert not (daemon.top / "any").exists()


def test_admin_cannot_replace_a_root_file_through_dhcp_sync(daemon, people, secret, tmp_path):
    for args in (("--hostsfile", str(secret)),
                 ("--hostsfile", str(tmp_path / "h"), "--optsfile", str(secret))):  # fmt: skip
        proc = _sock(daemon, people["admin"], "dhcp", "sync", *args)
        _one_error_line(proc, 7)
    assert not (tmp_path / "h").exists()
    assert secret.read_text() == SECRET + "\n"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_admin_cannot_signal_a_root_process(daemon, people, tmp_path, root_sleep):
    planted = tmp_path / "planted.pid"
    planted.write_text(f"{root_sleep.pid}\n")
    for pidfile in (f"/proc/{root_sleep.pid}/stat", str(planted)):
        proc = _sock(daemon, people["admin"], "dhcp", "sync", "--hostsfile",
                     str(tmp_path / "h"), "--dnsmasq-pidfile", pidfile)  # fmt: skip
        _one_error_line(proc, 7)
        proc = _sock(daemon, people["admin"], "reconcile", "--fix", "--dnsmasq-pidfile", pidfile)
        _one_error_line(proc, 7)
    assert untouched(root_sleep), "the root sleep was signalled"


def test_release_interface_is_host_local_too(daemon, people):
    proc = _sock(daemon, people["admin"], "reconcile", "--release-interface", "lo")
    _one_error_line(proc, 7)


def test_admin_still_runs_store_only_reconcile_and_root_runs_host_local(daemon, people):
    plain = _sock(daemon, people["admin"], "reconcile")
    assert plain.returncode == 0, plain.stderr
    target = daemon.top / "by-root" / "hosts"
    done = _sock(daemon, None, "dhcp", "sync", "--hostsfile", str(target))
    assert done.returncode == 0, done.stderr
    assert target.exists()


def test_relative_paths_are_the_clients(daemon, tmp_path):
    """A relative path means the caller's directory, never melanged's."""
    work = tmp_path / "cwd"
    work.mkdir()
    stray = Path(f"rel-{os.getpid()}.hosts")
    try:
        done = _sock(daemon, None, "dhcp", "sync", "--hostsfile", stray.name, cwd=str(work))
        assert done.returncode == 0, done.stderr
        assert (work / stray.name).exists()
    finally:
        for place in (Path.cwd(), Path("/")):
            (place / stray).unlink(missing_ok=True)


def test_a_raw_relative_path_is_refused(daemon):
    request = {"version": 1, "id": 1, "op": "dhcp.sync", "params": {"hostsfile": "x/hosts"}}
    answer = _raw(daemon.socket, json.dumps(request).encode() + b"\n")
    assert answer["error"]["code"] == "invalid_input", answer
    assert "absolute" in answer["error"]["message"]


def test_fifo_and_devices_are_refused_not_hung_on(daemon, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        for args in (("reconcile", "--hostsfile", str(path)),
                     ("dhcp", "sync", "--hostsfile", str(path))):  # fmt: skip
            proc = _sock(daemon, None, *args, timeout=30)
            _one_error_line(proc, 4)
            assert "not a regular file" in proc.stderr
    assert daemon.alive()
    assert _sock(daemon, None, "block", "list").returncode == 0


def test_host_local_calls_are_audited(daemon, people, tmp_path):
    hosts = tmp_path / "audited.hosts"
    assert _sock(daemon, None, "dhcp", "sync", "--hostsfile", str(hosts)).returncode == 0
    added = _sock(daemon, people["admin"], "block", "allocate", "b", "--mac", "02:00:00:00:0a:01")
    assert added.returncode == 0, added.stderr
    fixed = _sock(daemon, None, "reconcile", "--fix", "--hostsfile", str(hosts))
    assert fixed.returncode == 0, fixed.stderr
    rows = execute_sql(daemon.top / "store.db",
                       "SELECT actor, via, command, params FROM audit_log ORDER BY id")  # fmt: skip
    sync = [r for r in rows if r[2] == "dhcp.sync" and str(hosts) in r[3]]
    seen = [r for r in rows if r[2] == "reconcile.fix" and str(hosts) in r[3]]
    assert [r[:2] for r in sync] == [("root", "socket")]
    assert [r[:2] for r in seen] == [("root", "socket")]


# -- roles from the peer's real groups


def test_roles_come_from_the_peers_groups_not_etc_group(daemon, people):
    reader = people["reader"]
    allowed = _sock(daemon, reader, "block", "list")
    assert allowed.returncode == 0, allowed.stderr
    dropped = _sock(daemon, reader, "block", "list", clear_groups=True)
    _one_error_line(dropped, 7)


def test_a_peer_without_a_role_is_turned_away_before_sending_anything(daemon, people):
    code = textwrap.dedent(f"""
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect({str(daemon.socket)!r})
        sys.stdout.write(s.recv(4096).decode())
    """)
    proc = subprocess.run(as_user(people["stranger"], [sys.executable, "-c", code]),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["error"]["code"] == "permission_denied"
    assert people["stranger"].name in answer["error"]["message"]


# -- slots


TRICKLER = """
import json, os, socket, sys, time
path, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
held, busy = [], 0
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    held.append(s)
print("connected", flush=True)
closed = 0
end = time.monotonic() + seconds
while held and time.monotonic() < end:
    for s in list(held):
        try:
            data = s.recv(4096)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        if data is not None:
            if b'"busy"' in data:
                busy += 1
            else:
                closed += 1
            held.remove(s)
            s.close()
            continue
        try:
            s.send(b" ")
        except OSError:
            pass
    time.sleep(0.5)
print(json.dumps({"busy": busy, "closed": closed, "open": len(held)}), flush=True)
"""


def test_trickling_readers_cannot_lock_root_or_admins_out(daemon, people):
    """Four readers hold 400 connections sending a byte now and then: each user's limit
    and the slots kept for admins turn many away, the rest are closed at the request
    deadline, and root and the admin are served meanwhile."""
    tricklers = []
    try:
        for reader in people["crowd"]:
            argv = [sys.executable, "-c", TRICKLER, str(daemon.socket), "100", "25"]
            trickler = subprocess.Popen(as_user(reader, argv), stdout=subprocess.PIPE, text=True)
            tricklers.append(trickler)
            assert trickler.stdout.readline().strip() == "connected"
        root = _sock(daemon, None, "block", "allocate", "b")
        assert root.returncode == 0, root.stderr
        admin = _sock(daemon, people["admin"], "block", "list")
        assert admin.returncode == 0, admin.stderr
        more = _sock(daemon, people["reader"], "block", "list")
        _one_error_line(more, 6)
        assert "busy" in more.stderr
        reports = [json.loads(t.stdout.readline()) for t in tricklers]
        assert sum(r["busy"] for r in reports) >= 100
        assert [r["open"] for r in reports] == [0] * 4, "connections outlived the deadline"
    finally:
        for trickler in tricklers:
            trickler.kill()
            trickler.wait()
    after = _sock(daemon, people["reader"], "block", "list")
    assert after.returncode == 0, after.stderr


def _raw(path: Path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        return json.loads(s.makefile("rb").readline())


# -- the socket path


def test_a_socket_path_that_is_a_file_is_never_removed(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    Store(url)
    precious = tmp_path / "run" / "melange.sock"
    precious.parent.mkdir()
    precious.write_text("not a socket\n")
    argv = [sys.executable, "-m", "melanged.main", "--foreground", "--db", url,
            "--hostsfile", str(tmp_path / "hosts"), "--socket", str(precious)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=60)
    _one_error_line(proc, 4)
    assert "not a socket" in proc.stderr
    assert precious.read_text() == "not a socket\n"


# -- the audit actor


def test_the_direct_audit_actor_is_the_kernels_uid_not_logname(tmp_path):
    db = tmp_path / "store.db"
    spoof = {"LOGNAME": "mallory", "USER": "mallory"}
    made = melange(None, "--db", str(db), "block", "create", "10.1.0.0/24", extra_env=spoof)
    assert made.returncode == 0, made.stderr
    assert execute_sql(db, "SELECT actor FROM audit_log") == [("root",)]


def test_every_path_or_interface_parameter_is_host_local():
    """A later operation taking a file, directory or interface is host-local by name:
    the rule cannot be forgotten for it."""
    from melange.localfiles import HOST_LOCAL_PARAMS

    for name in operations.OPERATIONS:
        for param in operations.parameters(name):
            if param.endswith(("file", "dir", "path")) or param.startswith("release_"):
                assert param in HOST_LOCAL_PARAMS, (name, param)
