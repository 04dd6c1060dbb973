"""Real Kea for the tests: a host database made with kea-admin, kea-dhcp4 in a network
namespace (its control socket, lease_cmds loaded), and melanged keeping it in step.

kea-dhcp4 runs inside the server namespace, where 127.0.0.1 is the namespace's own
loopback: it reaches MariaDB and PostgreSQL through their Unix sockets, and so do the
URLs given to melange (the same URL is rendered into Kea's `hosts-databases`)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from melange.kea import control
from tests.support.melanged_harness import env, terminate
from tests.support.realparts import NetnsPair, missing_capability

HOOKS = "/usr/lib/x86_64-linux-gnu/kea/hooks"
MYSQL_SOCKET = "/run/mysqld/mysqld.sock"
PG_SOCKET_DIR = "/var/run/postgresql"
_counter = itertools.count()


def find_kea() -> str:
    path = shutil.which("kea-dhcp4", path="/usr/sbin:/usr/bin")
    if path is None or shutil.which("kea-admin", path="/usr/sbin:/usr/bin") is None:
        missing_capability("kea-dhcp4/kea-admin not found (Debian kea-dhcp4-server, kea-admin)")
    assert path is not None
    return path


def lease_cmds() -> str:
    for base in (HOOKS, "/usr/lib/kea/hooks", "/usr/lib64/kea/hooks"):
        if os.path.exists(f"{base}/libdhcp_lease_cmds.so"):
            return f"{base}/libdhcp_lease_cmds.so"
    missing_capability("Kea's lease_cmds hook not found")
    raise AssertionError("unreachable")


def _sql(kind: str, statement: str, database: str | None = None) -> None:
    if kind == "mysql":
        argv = ["mysql", "-h", "127.0.0.1", "-u", "root", "-e", statement]
    else:
        argv = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                "-q", "-c", statement]  # fmt: skip
    if database:
        argv.append(database)
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


class HostDb:
    """A new database with Kea's schema made as an operator would (`kea-admin db-init`),
    in the background: MariaDB's takes tens of seconds (thousands of statements), so a
    test module starts both kinds at once and waits for each when it needs it."""

    def __init__(self, kind: str) -> None:
        find_kea()
        self.kind = kind
        self.name = f"kea_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
        _sql(kind, f"CREATE DATABASE {self.name}")
        engine, user = ("mysql", "root") if kind == "mysql" else ("pgsql", "postgres")
        self.proc = subprocess.Popen(
            ["kea-admin", "db-init", engine, "-h", "127.0.0.1", "-u", user, "-p", "",
             "-n", self.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        if kind == "mysql":
            self.url = f"mysql+pymysql://root@localhost/{self.name}?unix_socket={MYSQL_SOCKET}"
        else:
            self.url = f"postgresql+psycopg://postgres@/{self.name}?host={PG_SOCKET_DIR}"

    def ready(self, timeout: float = 300) -> HostDb:
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out
        return self

    def drop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        drop_host_db(self.kind, self.name)


def drop_host_db(kind: str, name: str) -> None:
    force = " WITH (FORCE)" if kind == "postgresql" else ""  # an in-process pool may hold one
    _sql(kind, f"DROP DATABASE IF EXISTS {name}{force}")


def host_rows(kind: str, name: str) -> set[tuple[str, str, int]]:
    """(MAC, IPv4, subnet id) of every row of Kea's hosts table."""
    query = ("SELECT dhcp_identifier, ipv4_address, dhcp4_subnet_id FROM hosts")
    if kind == "mysql":
        argv = ["mysql", "-h", "127.0.0.1", "-u", "root", "-N", "-B", name, "-e",
                query.replace("dhcp_identifier,", "HEX(dhcp_identifier),")]  # fmt: skip
    else:
        argv = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-At", "-F", "\t", name, "-c",
                query.replace("dhcp_identifier,", "encode(dhcp_identifier, 'hex'),")]  # fmt: skip
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout
    rows = set()
    for line in out.splitlines():
        mac, address, sid = line.split("\t")
        octets = int(address).to_bytes(4, "big")
        rows.add((bytes.fromhex(mac).hex(":"), ".".join(map(str, octets)), int(sid)))
    return rows


class KeaServer:
    """kea-dhcp4 on the server side of `pair`, its configuration including `fragment`
    (melange's file) as its last member, a memfile lease database that is not kept."""

    def __init__(self, pair: NetnsPair, workdir: Path, fragment: Path) -> None:
        self.pair = pair
        self.workdir = workdir
        self.fragment = fragment
        self.config = workdir / "kea-dhcp4.conf"
        self.socket = workdir / "kea.sock"
        self.logfile = workdir / "kea.log"
        self.proc: subprocess.Popen | None = None

    def head(self) -> dict:
        """The Dhcp4 members the operator writes (melange's fragment comes after)."""
        return {
            "interfaces-config": {"interfaces": [self.pair.server_if]},
            "control-socket": {"socket-type": "unix", "socket-name": str(self.socket)},
            "lease-database": {"type": "memfile", "persist": False},
            "hooks-libraries": [{"library": lease_cmds()}],
            "valid-lifetime": 600,
            "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                         "output_options": [{"output": str(self.logfile)}]}],
        }  # fmt: skip

    def config_text(self) -> str:
        body = json.dumps(self.head(), indent=2)[1:-1].rstrip()
        return f'{{"Dhcp4": {{{body},\n<?include "{self.fragment}"?>\n}}}}\n'

    def check(self, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`kea-dhcp4 -t`: Kea's own check of the configuration (and the fragment)."""
        argv = self.pair.netns_argv(self.pair.server_ns,
                                    [find_kea(), "-t", str(config or self.config)])
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def start(self, timeout: float = 30) -> KeaServer:
        self.config.write_text(self.config_text())
        run = self.workdir / "run"
        run.mkdir(exist_ok=True)
        kea_env = {**os.environ, "KEA_PIDFILE_DIR": str(run), "KEA_LOCKFILE_DIR": str(run)}
        self.socket.unlink(missing_ok=True)
        with open(self.workdir / "kea.err", "ab") as errors:
            self.proc = subprocess.Popen(
                self.pair.netns_argv(self.pair.server_ns, [find_kea(), "-c", str(self.config)]),
                env=kea_env, stdout=subprocess.DEVNULL, stderr=errors,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"kea-dhcp4 exited:\n{self.diagnostics()}"
            try:
                if control.command(self.socket, "version-get").get("result") == 0:
                    return self
            except Exception:  # noqa: BLE001  (not up yet)
                pass
            assert time.monotonic() < deadline, f"kea-dhcp4 did not answer:\n{self.diagnostics()}"
            time.sleep(0.1)

    def command(self, name: str, arguments: dict | None = None) -> dict:
        return control.command(self.socket, name, arguments)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        terminate(self.proc)

    def diagnostics(self) -> str:
        parts = []
        for path in (self.workdir / "kea.err", self.logfile):
            if path.exists():
                parts.append(path.read_text()[-4000:])
        return "\n".join(parts)

    def log_count(self, word: str) -> int:
        return self.logfile.read_text().count(word) if self.logfile.exists() else 0


class KeaMelanged:
    """`melanged --foreground --backend kea` as a subprocess, logging to a file."""

    def __init__(self, db: str, host_db: str, workdir: Path, *, fragment: Path,
                 socket: Path | None = None, release: bool = False,
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.logfile = workdir / "melanged.log"
        self.argv = [
            sys.executable, "-m", "melanged.main", "--foreground", "--db", db,
            "--backend", "kea", "--kea-host-db", host_db, "--kea-config", str(fragment),
            "--hostsfile", str(workdir / "unused.hosts"),
            "--log-file", str(self.logfile), "--pidfile", str(workdir / "melanged.pid"),
            *extra,
        ]  # fmt: skip
        if socket is not None:
            self.argv += ["--kea-control-socket", str(socket)]
        if release:
            self.argv.append("--kea-release")
        self.proc: subprocess.Popen | None = None

    def start(self) -> KeaMelanged:
        self.proc = subprocess.Popen(self.argv, env=env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        return self

    def run_once(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv, env=env(), capture_output=True, text=True, timeout=60)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        return terminate(self.proc)

    def __enter__(self) -> KeaMelanged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
