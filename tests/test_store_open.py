"""Opening the store: what a command may create, which store it talks to, and how a
store URL that is wrong, or a store that cannot serve, is reported (one line, exit 6,
never a password, never exit 1).
"""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from melange_cli.main import cli
from tests.support.melanged_harness import cli as harness_cli
from tests.support.melanged_harness import env as clean_env
from tests.support.melanged_harness import terminate, wait_until
from tests.support.sql import dump_store

ROOT = Path(__file__).parent.parent
READS = [
    ("block", "list"),
    ("ip", "list"),
    ("policy", "list"),
    ("dhcp", "hosts"),
    ("dhcp", "opts"),
    ("report", "utilization"),
    ("export",),
    ("history",),
    ("db", "current"),
    ("db", "check"),
]


def run(*args: str, env: dict | None = None):
    base = {"MELANGE_DB": None, "MELANGE_SOCKET": None, "MELANGE_CONFIG": None,
            "MELANGE_OUTPUT": None, "MELANGE_DEBUG": None}  # fmt: skip
    return CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, prog_name="melange")


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- reads never create a store that was named by mistake


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_read_on_a_named_store_that_does_not_exist_creates_nothing(tmp_path, args):
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    line = one_error_line(run("--db", str(missing), *args), 6)
    assert line == (
        f"Error: no store at {missing}; a write command or `melange db upgrade` creates it"
    )
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("where", ["env", "config", "url"])
def test_every_way_of_naming_the_store_counts(tmp_path, where):
    missing = tmp_path / "no" / "x.db"
    config = tmp_path / "melange.conf"
    config.write_text(f"[melange]\ndb = {missing}\n")
    argv, env = {
        "env": ([], {"MELANGE_DB": str(missing)}),
        "config": (["--config", str(config)], {}),
        "url": (["--db", f"sqlite:///{missing}"], {}),
    }[where]
    one_error_line(run(*argv, "block", "list", env=env), 6)
    assert not (tmp_path / "no").exists()


def test_a_write_or_db_upgrade_still_creates_a_named_store(tmp_path):
    first = tmp_path / "a" / "x.db"
    assert run("--db", str(first), "block", "create", "10.0.0.0/24").exit_code == 0
    assert first.is_file()
    second = tmp_path / "b" / "y.db"
    assert run("--db", str(second), "db", "upgrade").exit_code == 0
    assert run("--db", str(second), "block", "list").exit_code == 0


def test_the_default_store_is_created_by_any_first_command(tmp_path):
    result = run("block", "list", env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "xdg" / "melange" / "melange.db").is_file()


def test_a_relative_sqlite_url_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_error_line(run("--db", "sqlite:///rel.db", "block", "list"), 6)
    assert run("--db", "sqlite:///rel.db", "block", "create", "10.0.0.0/24").exit_code == 0
    assert (tmp_path / "rel.db").is_file()


# -- one store per command


def test_socket_and_db_on_one_command_line_is_a_usage_error(tmp_path):
    line = one_error_line(
        run("--socket", str(tmp_path / "s"), "--db", str(tmp_path / "x.db"), "block", "list"), 2
    )
    assert "--socket" in line and "--db" in line
    assert not (tmp_path / "x.db").exists()


def test_the_command_line_beats_the_environment_and_the_socket_beats_melange_db(tmp_path):
    store = tmp_path / "x.db"
    assert run("--db", str(store), "block", "create", "10.0.0.0/24").exit_code == 0
    socket = str(tmp_path / "nobody.sock")
    typed_db = run("--db", str(store), "block", "list", env={"MELANGE_SOCKET": socket})
    assert typed_db.exit_code == 0 and "10.0.0.0/24" in typed_db.stdout
    both_env = run("block", "list", env={"MELANGE_SOCKET": socket, "MELANGE_DB": str(store)})
    assert "melanged is not running" in one_error_line(both_env, 6)
    typed_socket = run("--socket", socket, "block", "list", env={"MELANGE_DB": str(store)})
    assert "melanged is not running" in one_error_line(typed_socket, 6)


# -- no subcommand


@pytest.mark.parametrize("argv", [[], ["block"], ["dhcp"]], ids=repr)
def test_a_group_alone_prints_its_help_on_stdout(argv):
    result = run(*argv)
    assert result.exit_code == 2
    assert result.stderr == ""
    assert result.stdout.startswith(" ".join(["Usage: melange", *argv, "[OPTIONS] COMMAND"]))
    assert "\nCommands:\n" in result.stdout
    assert result.stdout == run(*argv, "--help").stdout


# -- malformed store URLs


BAD_URLS = [
    "mysql+pymysql://u@127.0.0.1:notaport/db",
    "mysql+pymysql://u@[::1/db",
    "mysql+pymysql://root@127.0.0.1:99999/db",
    "mysql+pymysql://root@127.0.0.1:3306/db?nosuchargument=1",
    "postgresql+psycopg://postgres@127.0.0.1:5432/db?sslmode=bogus",
    "mysql-pymysql://u@h/db",
    "nosuchdb://u@h/db",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_store_url_is_one_line_exit_6(url):
    line = one_error_line(run("--db", url, "block", "list"), 6)
    assert "internal error" not in line


def test_an_sqlite_url_argument_that_sqlite_ignores_is_refused(tmp_path):
    line = one_error_line(
        run("--db", f"sqlite:///{tmp_path / 'x.db'}?nosuch=1", "db", "upgrade"), 6
    )
    assert "nosuch" in line
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("url", BAD_URLS[:3] + BAD_URLS[5:])
def test_melanged_refuses_a_malformed_url_at_start(url, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "melanged.main", "--foreground", "--db", url,
         "--hostsfile", str(tmp_path / "hosts")],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: "), proc.stderr
    assert not (tmp_path / "hosts").exists()


# -- passwords never leak

# Each password is two pieces around a character a URL parser trips on.
PASSWORDS = ["Pw1x@Zq9k", "Pw1x:Zq9k", "Pw1x/Zq9k", "Pw1x%Zq9k", "Pw1x%40Zq9k", "Pw1x@@Zq9k"]
SHAPES = [
    "mysql-pymysql://u:{pw}@127.0.0.1/db",  # does not parse
    "mysql+pymysql://u:{pw}@127.0.0.1:1/db",  # nobody listens on port 1
    "postgresql+psycopg://u:{pw}@127.0.0.1:1/db",
    "mysql+pymysql://u:{pw}@127.0.0.1:notaport/db",
    "mysql+pymysql://root:{pw}@127.0.0.1:3306/nosuchdb",  # the real server refuses it
    "postgresql+psycopg://postgres@127.0.0.1:1/db?password={pw}",
]


def _leaks(text: str) -> bool:
    return "Pw1x" in text or "Zq9k" in text


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("password", PASSWORDS)
def test_no_password_in_any_error_line(shape, password):
    url = shape.format(pw=password)
    for args in (("block", "list"), ("block", "create", "10.0.0.0/24"), ("db", "upgrade")):
        result = run("--db", url, "-o", "json", *args)
        assert result.exit_code == 6, (url, result.stderr)
        assert not _leaks(result.stderr + result.stdout), result.stderr


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[3], SHAPES[4]])
@pytest.mark.parametrize("password", ["Pw1x@Zq9k", "Pw1x:Zq9k", "Pw1x/Zq9k", "Pw1x%Zq9k"])
def test_no_password_in_melangeds_output_or_log(shape, password, tmp_path):
    url = shape.format(pw=password)
    log = tmp_path / "melanged.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "melanged.main", "--foreground", "--db", url,
         "--hostsfile", str(tmp_path / "hosts"), "--log-file", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        wait_until(
            lambda: proc.poll() is not None or "store unavailable" in _read(log),
            timeout=30, what="melanged to refuse the URL or log the outage",
        )  # fmt: skip
    finally:
        terminate(proc)
    out, err = proc.communicate()
    assert not _leaks(out + err + _read(log)), (err, _read(log))
    assert "Traceback" not in err + _read(log)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


# -- a store that cannot take a write: exit 6, unchanged


@pytest.fixture
def sqlite_store(tmp_path):
    """A store with an allocation, written by processes that have exited (so no WAL
    is left beside it: writes go to the file itself)."""
    store = tmp_path / "store" / "melange.db"
    harness_cli(str(store), "block", "create", "10.0.0.0/22", "--name", "web")
    harness_cli(str(store), "block", "allocate", "web", "--mac", "02:00:00:00:00:01")
    assert sorted(p.name for p in store.parent.iterdir()) == ["melange.db"]
    return store


def test_a_read_only_store_file_is_exit_6_on_a_write(sqlite_store):
    before = dump_store(sqlite_store)
    subprocess.run(["chattr", "+i", str(sqlite_store)], check=True)  # root ignores modes
    try:
        line = one_error_line(run("--db", str(sqlite_store), "block", "allocate", "web"), 6)
        assert "read-only" in line
        listed = run("--db", str(sqlite_store), "ip", "list")
        assert listed.exit_code == 0 and "10.0.0.1" in listed.stdout
    finally:
        subprocess.run(["chattr", "-i", str(sqlite_store)], check=True)
    assert dump_store(sqlite_store) == before


def _open_in(directory: Path) -> list[str]:
    """The files under `directory` this process holds open (its /proc/self/fd)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            held.append(target)
    return held


@pytest.mark.parametrize(
    "args",
    [("block", "allocate", "web"), ("ip", "show", "10.0.0.1"), ("block", "list"),
     ("block", "allocate", "nope")],
)  # fmt: skip
def test_an_in_process_command_leaves_no_store_file_open(sqlite_store, args):
    """A command run in-process (CliRunner, as tests and scripts do) closes the store's
    files when it ends, lean path or full, success or refusal, as a process exit would:
    left to the garbage collector, a read-only mount's umount failed with 'busy'."""
    run("--db", str(sqlite_store), *args)
    assert _open_in(sqlite_store.parent) == []


def test_a_read_only_mount_is_exit_6(sqlite_store, tmp_path):
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    subprocess.run(["mount", "--bind", str(sqlite_store.parent), str(mountpoint)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mountpoint)], check=True)
        gc.disable()  # what the collector would close must already be closed
        for args in (("block", "allocate", "web"), ("block", "list")):
            one_error_line(run("--db", str(mountpoint / "melange.db"), *args), 6)
            # A cursor left open by the PRAGMA the mount refused kept the file open
            # after the connection's close, until garbage collection (umount: busy).
            assert _open_in(mountpoint) == [], args
    finally:
        gc.enable()
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_disk_is_exit_6_and_changes_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    store = disk / "melange.db"
    try:
        assert (
            run("--db", str(store), "block", "create", "10.0.0.0/16", "--name", "big").exit_code
            == 0
        )
        reader = sqlite3.connect(store)  # keeps the WAL and its index in place
        reader.execute("SELECT count(*) FROM blocks").fetchall()
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: the disk is full
        finally:
            os.close(fd)
        before = reader.execute("SELECT count(*) FROM ip_addresses").fetchone()
        line = one_error_line(
            run("--db", str(store), "block", "allocate", "big", "--count", "3000"), 6
        )
        assert "internal error" not in line
        assert reader.execute("SELECT count(*) FROM ip_addresses").fetchone() == before
        filler.unlink()
        assert run("--db", str(store), "block", "allocate", "big").exit_code == 0
        reader.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
