"""SIGHUP re-reads melanged's configuration for every part it serves: the socket's
roles and its store change with the watcher's, without a restart (a role taken away
is refused from then on), and a configuration that cannot be used keeps the old one."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from melange import operations
from melange.store import Store
from tests.support.localusers import melange, shared_dir
from tests.support.socket_daemon import SocketDaemon

DEADLINE = 15.0


@pytest.fixture
def top():
    path = shared_dir("mlg-sighup-")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _store(top, name: str, cidr: str) -> str:
    url = f"sqlite:///{top / name}"
    operations.run(Store(url), "block.create", {"cidr": cidr, "name": name})
    return url


def _config(top, url: str, readers: str = "") -> None:
    (top / "melange.conf").write_text(
        f"[melange]\ndb = {url}\n[melanged]\nreader_groups = {readers}\n"
    )


def _until(check, what: str):
    """Poll `check` until it returns something true (melanged acts on SIGHUP between
    passes, a poll interval away); that value."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"melanged never {what}")


def _serving(daemon: SocketDaemon, user=None) -> subprocess.CompletedProcess:
    return melange(user, "--socket", str(daemon.socket), "block", "list")


def _hangup(daemon: SocketDaemon) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)


def test_sighup_points_the_socket_at_the_new_store(top):
    first = _store(top, "first.db", "10.1.0.0/24")
    second = _store(top, "second.db", "10.2.0.0/24")
    _config(top, first)
    with SocketDaemon(None, top / "daemon", top / "melange.conf") as daemon:
        assert "10.1.0.0/24" in _serving(daemon).stdout
        _config(top, second)
        _hangup(daemon)
        listed = _until(lambda: "10.2.0.0/24" in _serving(daemon).stdout, "served the new store")
        assert listed
        assert "10.1.0.0/24" not in _serving(daemon).stdout
        # A configuration that cannot be used: the running one stays, and says so.
        _config(top, "nosuch://x")
        _hangup(daemon)
        _until(lambda: "keeping the old configuration" in daemon.log.read_text(), "logged")
        assert "10.2.0.0/24" in _serving(daemon).stdout
        assert daemon.alive()


def test_sighup_gives_and_takes_away_a_role_on_the_socket(top, users):
    readers = users.group("hupread")
    reader = users.user("hupreader", groups=[readers])
    url = _store(top, "store.db", "10.3.0.0/24")
    _config(top, url)
    with SocketDaemon(None, top / "daemon", top / "melange.conf") as daemon:
        os.chmod(daemon.socket.parent, 0o755)  # reachable by all: the roles are tested
        os.chmod(daemon.socket, 0o666)
        refused = _serving(daemon, reader)
        assert refused.returncode == 7, refused.stderr
        _config(top, url, readers=readers)
        _hangup(daemon)
        _until(lambda: _serving(daemon, reader).returncode == 0, "gave the role")
        assert "10.3.0.0/24" in _serving(daemon, reader).stdout
        _config(top, url)
        _hangup(daemon)
        _until(lambda: _serving(daemon, reader).returncode == 7, "took the role away")
        assert daemon.alive()


def test_sighup_reads_group_names_afresh(top, users):
    """melanged keeps the names of the groups it has seen (reading the group database at
    every connection was a fifteenth of a batched allocation's work); SIGHUP forgets
    them: a group renamed away from the configured name gives no role from then on."""
    readers = users.group("hupname")
    reader = users.user("hupnamer", groups=[readers])
    url = _store(top, "store.db", "10.4.0.0/24")
    _config(top, url, readers=readers)
    with SocketDaemon(None, top / "daemon", top / "melange.conf") as daemon:
        os.chmod(daemon.socket.parent, 0o755)
        os.chmod(daemon.socket, 0o666)
        assert _serving(daemon, reader).returncode == 0
        renamed = readers[:-1] + "x"
        subprocess.run(["groupmod", "-n", renamed, readers], check=True, capture_output=True)
        users.groups[users.groups.index(readers)] = renamed  # removed at the end
        _hangup(daemon)
        _until(lambda: _serving(daemon, reader).returncode == 7, "read the new group name")
        assert daemon.alive()
