"""The files melanged (as root) opens, creates and signals: never through a link or a
directory another user planted, never a FIFO or device, never a process that is not
dnsmasq; new stores private; leftovers of a killed render cleaned; and melanged as an
unprivileged user, signalling a dnsmasq that runs as that user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from melange import operations
from melange.store import Store
from tests.support.localusers import as_user, env, melange, shared_dir
from tests.support.melanged_harness import terminate, wait_until
from tests.support.realparts import Dnsmasq, NetnsPair
from tests.support.signals import untouched

PRECIOUS = "root's own data\n"


@pytest.fixture(scope="module")
def mallory(users):
    return users.user("mallory")


@pytest.fixture
def sticky():
    """A world-writable sticky directory, like /tmp, owned by root."""
    path = shared_dir("mlg-sticky-", 0o1777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def precious(tmp_path):
    """A root-owned 0600 file that must survive every attack unchanged."""
    path = tmp_path / "precious"
    path.write_text(PRECIOUS)
    path.chmod(0o600)
    return path


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    operations.run(Store(url), "block.create", {"cidr": "10.90.0.0/24", "name": "b"})
    return url


def _plant(user, link: Path, target: Path) -> None:
    """`ln -s target link`, done by `user` (so the link is theirs)."""
    subprocess.run(as_user(user, ["ln", "-s", str(target), str(link)]), check=True)
    assert os.lstat(link).st_uid == user.uid


def _melanged(url: str, tmp_path: Path, *extra: str, timeout: float = 60):
    argv = [sys.executable, "-m", "melanged.main", "--foreground", "--db", url,
            "--hostsfile", str(tmp_path / "hosts"), *extra]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=timeout)


def _refused(proc, *words: str) -> None:
    assert proc.returncode == 4, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.mark.parametrize("option", ["--pidfile", "--log-file"])
def test_a_planted_link_never_makes_root_clobber_a_file(
    sqlite_url, tmp_path, sticky, mallory, precious, option
):
    link = sticky / "melanged.file"
    _plant(mallory, link, precious)
    _refused(_melanged(sqlite_url, tmp_path, option, str(link)), "symbolic link")
    assert precious.read_text() == PRECIOUS
    assert precious.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("option", ["--pidfile", "--log-file"])
def test_a_directory_where_a_file_belongs_is_one_error_line(sqlite_url, tmp_path, option):
    directory = tmp_path / "a-directory"
    directory.mkdir()
    _refused(_melanged(sqlite_url, tmp_path, option, str(directory)), "is a directory")


@pytest.mark.parametrize(
    "option", ["--optsfile", "--hostsfile", "--pidfile", "--log-file", "--socket"]
)
def test_no_file_is_written_through_a_parent_directory_linked_by_another_user(
    sqlite_url, tmp_path, sticky, mallory, option
):
    inside = tmp_path / "root-only"
    inside.mkdir(mode=0o700)
    _plant(mallory, sticky / "conf", inside)
    proc = _melanged(sqlite_url, tmp_path, option, str(sticky / "conf" / "file"))
    _refused(proc, "symbolic link owned by")
    assert list(inside.iterdir()) == []


def test_a_directory_others_may_write_is_refused(sqlite_url, tmp_path):
    open_dir = shared_dir("mlg-open-", 0o777)
    try:
        proc = _melanged(sqlite_url, tmp_path, "--hostsfile", str(open_dir / "hosts"))
        _refused(proc, "writable by others")
        assert list(open_dir.iterdir()) == []
    finally:
        subprocess.run(["rm", "-rf", str(open_dir)], check=False)


def test_a_fifo_as_hostsfile_is_refused_not_hung_on(sqlite_url, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = melange(None, "--db", sqlite_url, "dhcp", "sync", "--hostsfile", str(fifo), timeout=30)
    _refused(proc, "not a regular file")
    for option in ("--hostsfile", "--optsfile"):
        _refused(_melanged(sqlite_url, tmp_path, option, str(fifo)), "not a regular file")
    for option in ("--hostsfile", "--leasefile"):
        proc = melange(None, "--db", sqlite_url, "reconcile", option, str(fifo), timeout=30)
        _refused(proc, "not a regular file")


def test_melanged_never_signals_a_process_that_is_not_dnsmasq(sqlite_url, tmp_path, root_sleep):
    """The configured pidfile names a root `sleep` (a stale pidfile, a reused pid): the
    render is written, the sleep lives, the log says dnsmasq is not running."""
    pidfile = tmp_path / "dnsmasq.pid"
    pidfile.write_text(f"{root_sleep.pid}\n")
    operations.run(Store(sqlite_url), "block.allocate",
                   {"block": "b", "mac": "02:00:00:00:00:01"})  # fmt: skip
    log = tmp_path / "melanged.log"
    argv = [sys.executable, "-m", "melanged.main", "--foreground", "--db", sqlite_url,
            "--hostsfile", str(tmp_path / "hosts"), "--dnsmasq-pidfile", str(pidfile),
            "--log-file", str(log)]  # fmt: skip
    daemon = subprocess.Popen(argv, env=env(), stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: log.exists() and "dnsmasq is not running" in log.read_text(),
                   timeout=30, what="the first render")  # fmt: skip
        assert "02:00:00:00:00:01" in (tmp_path / "hosts").read_text()
        assert untouched(root_sleep), "melanged signalled a process that is not dnsmasq"
    finally:
        terminate(daemon)


def test_dhcp_sync_never_signals_a_process_that_is_not_dnsmasq(sqlite_url, tmp_path, root_sleep):
    """A pidfile holding a root sleep's pid: files written, no signal. /proc/PID/stat
    (whose first field is the pid) is no pidfile at all: refused."""
    stale = tmp_path / "stale.pid"
    stale.write_text(f"{root_sleep.pid}\n")
    sync = ("dhcp", "sync", "--hostsfile", str(tmp_path / "hosts"), "--dnsmasq-pidfile")
    operations.run(Store(sqlite_url), "block.allocate",
                   {"block": "b", "mac": "02:00:00:00:00:01"})  # fmt: skip
    proc = melange(None, "--db", sqlite_url, "-o", "json", *sync, str(stale))
    assert proc.returncode == 0, proc.stderr
    assert '"reloaded": false' in proc.stdout and '"hosts_changed": true' in proc.stdout
    operations.run(Store(sqlite_url), "block.allocate",
                   {"block": "b", "mac": "02:00:00:00:00:02"})  # fmt: skip
    _refused(melange(None, "--db", sqlite_url, *sync, f"/proc/{root_sleep.pid}/stat"), "larger")
    assert untouched(root_sleep), "dhcp sync signalled a process that is not dnsmasq"


def test_a_killed_renders_temp_files_are_removed_at_start(sqlite_url, tmp_path):
    hostsdir = tmp_path / "hosts.d"
    hostsdir.mkdir()
    left = [tmp_path / ".hosts.k3x_9abz", tmp_path / ".opts.0a1b2c3d",
            hostsdir / ".melange-1764000000000000000-1.zz09yy87"]  # fmt: skip
    kept = [tmp_path / ".hosts.bak", tmp_path / "notes.abcdefgh", hostsdir / ".melange-x"]
    for path in left + kept:
        path.write_text("x" * 4096)
    log = tmp_path / "melanged.log"
    argv = [sys.executable, "-m", "melanged.main", "--foreground", "--db", sqlite_url,
            "--hostsfile", str(tmp_path / "hosts"), "--optsfile", str(tmp_path / "opts"),
            "--hostsdir", str(hostsdir), "--log-file", str(log)]  # fmt: skip
    daemon = subprocess.Popen(argv, env=env(), stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "hosts").exists(), timeout=30, what="the first render")
        assert [p for p in left if p.exists()] == []
        assert [p for p in kept if not p.exists()] == []
        assert "interrupted render" in log.read_text()
    finally:
        terminate(daemon)


def test_a_new_sqlite_store_and_its_directory_are_private(tmp_path):
    db = tmp_path / "new" / "deeper" / "store.db"
    proc = melange(None, "--db", str(db), "block", "create", "10.1.0.0/24")
    assert proc.returncode == 0, proc.stderr
    assert db.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert db.parent.stat().st_mode & 0o777 == 0o700
    for extra in db.parent.iterdir():  # -wal, -shm: never more open than the store
        assert extra.stat().st_mode & 0o077 == 0, extra


class DnsmasqAs(Dnsmasq):
    """The test dnsmasq, dropping to `user` (and its group) instead of staying root."""

    def __init__(self, user: str, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.user = user

    @property
    def argv(self) -> list[str]:
        drop = [f"--user={self.user}", f"--group={self.user}"]
        return [part for a in super().argv for part in (drop if a == "--user=root" else [a])]


def test_melanged_runs_as_an_unprivileged_user_beside_its_dnsmasq(users, tmp_path):
    """melanged as a plain user renders and SIGHUPs a dnsmasq that dropped to that user
    (the only one such a melanged may signal; no capability needed)."""
    runner = users.user("runner")
    top = shared_dir("mlg-unpriv-")
    work = top / "work"
    work.mkdir()
    os.chown(work, runner.uid, runner.gid)
    url = f"sqlite:///{work / 'store.db'}"
    as_runner = {"cwd": str(work)}
    try:
        made = melange(runner, "--db", url, "block", "create", "10.77.0.0/24", "--name", "b",
                       "--network", "net1", **as_runner)  # fmt: skip
        assert made.returncode == 0, made.stderr
        with NetnsPair("10.77.0.0/24") as pair, DnsmasqAs(runner.name, pair, work) as server:
            log = work / "melanged.log"
            argv = as_user(runner, [
                sys.executable, "-m", "melanged.main", "--foreground", "--db", url,
                "--hostsfile", str(server.hostsfile), "--optsfile", str(server.optsfile),
                "--dnsmasq-pidfile", str(server.pidfile), "--log-file", str(log),
                "--pidfile", str(work / "melanged.pid"),
            ], clear_groups=True)  # fmt: skip
            daemon = subprocess.Popen(argv, env=env(), stderr=subprocess.PIPE, text=True,
                                      cwd=str(work))  # fmt: skip
            try:
                wait_until(lambda: log.exists() and "watching" in log.read_text(),
                           timeout=30, what="melanged to start")  # fmt: skip
                mark = server.log_mark()
                added = melange(runner, "--db", url, "block", "allocate", "b", "--mac",
                                "02:00:00:00:00:07", **as_runner)  # fmt: skip
                assert added.returncode == 0, added.stderr
                wait_until(lambda: "reload sent: yes" in log.read_text(), timeout=30,
                           what=f"melanged's reload: {log.read_text()}")  # fmt: skip
                server.wait_for_read(since=mark, timeout=30)
                assert "02:00:00:00:00:07" in server.hostsfile.read_text()
                assert server.hostsfile.stat().st_uid == runner.uid
                assert daemon.poll() is None, daemon.stderr.read()
            finally:
                assert terminate(daemon) == 0, log.read_text()
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_relative_paths_mean_where_melanged_was_started(sqlite_url, tmp_path):
    """A detached melanged works in /: its relative paths are made absolute first."""
    name = f"mlg-rel-{os.getpid()}.hosts"
    pidfile = tmp_path / "melanged.pid"
    argv = [sys.executable, "-m", "melanged.main", "--db", sqlite_url, "--hostsfile", name,
            "--pidfile", str(pidfile), "--log-file", str(tmp_path / "melanged.log")]  # fmt: skip
    try:
        started = subprocess.run(argv, env=env(), cwd=tmp_path, capture_output=True, timeout=60)
        assert started.returncode == 0, started.stderr
        wait_until(lambda: (tmp_path / name).exists() or Path("/", name).exists(), timeout=30,
                   what="the first render")  # fmt: skip
        assert (tmp_path / name).exists()
    finally:
        wait_until(pidfile.exists, timeout=30, what="the pidfile")
        os.kill(int(pidfile.read_text()), 15)
        wait_until(lambda: not pidfile.exists(), timeout=30, what="melanged to stop")
        Path("/", name).unlink(missing_ok=True)
