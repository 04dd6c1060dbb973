"""A real MariaDB Galera cluster on 127.0.0.1, for the Galera tests and benchmark.

Each node is a `mariadbd` of its own: own datadir, socket, client port, group
communication (gcomm) port, IST port and rsync SST port, all picked free at
run time so a run never clashes with the MariaDB on 3306 or another run. The
first node bootstraps the cluster (--wsrep-new-cluster) on a freshly installed
datadir; the others start on empty datadirs and receive the first node's data
by rsync SST, as a new node in production does.

Everything the nodes start lives under one temporary directory, and every
mariadbd leads a process group of its own (its SST scripts and rsync daemons
included) with the kernel told to kill it if this process dies: `stop()` kills
the nodes and removes the directory, and even a killed test run leaves no
server running (the next run removes its directory).

This module does not import pytest: the benchmark uses it too. A missing
package or a cluster that will not form raises `GaleraUnavailable`; the tests
turn that into a failure in CI (a skip only on a developer machine).

Typical use::

    with GaleraCluster() as cluster:
        cluster.create_database("melange")
        urls = cluster.urls("melange")      # one SQLAlchemy URL per node
        cluster.nodes[2].kill()             # SIGKILL, as a crash would
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.processes import pid_alive

MARIADBD = "/usr/sbin/mariadbd"
SERVER_USER = "mysql"
PROVIDERS = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORKDIR_PREFIX = "melange-galera-"
_STALE_WORKDIR = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-")
PR_SET_PDEATHSIG = 1

# Failure detection a little quicker than Galera's defaults (suspect 5 s, inactive
# 15 s), so a killed node leaves the view in seconds; still well above the stalls a
# busy 2-CPU machine shows. gcache is small: a test writes far less than 16 MB.
PROVIDER_OPTIONS = (
    "gcache.size=16M",
    "evs.keepalive_period=PT0.5S",
    "evs.inactive_check_period=PT0.5S",
    "evs.suspect_timeout=PT3S",
    "evs.inactive_timeout=PT6S",
    "evs.install_timeout=PT6S",
)


class GaleraUnavailable(Exception):
    """A package is missing or the cluster did not form; the message says which."""


def missing_packages() -> list[str]:
    """Debian packages the cluster needs that are not installed."""
    missing = []
    if not Path(MARIADBD).exists() or shutil.which("mariadb-install-db") is None:
        missing.append("mariadb-server")
    if not any(Path(p).exists() for p in PROVIDERS):
        missing.append("galera-4")
    if shutil.which("rsync", path=SBIN_PATH) is None:
        missing.append("rsync")
    if shutil.which("wsrep_sst_rsync", path=SBIN_PATH) is None:
        missing.append("mariadb-server (wsrep_sst_rsync)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            missing.append(f"mariadb-server (its user {SERVER_USER!r})")
    return missing


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1, below the kernel's ephemeral range.

    A port the kernel handed out for binding port 0 lies in the ephemeral range,
    where a node that starts first may take it as the source port of a connection
    to its peers before the node it was meant for listens on it ("Address already
    in use", seen when clusters were started back to back)."""
    low = _ephemeral_low()
    rng = random.Random()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            port = rng.randrange(max(1024, low - 12000), low)
            s = stack.enter_context(socket.socket())
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
        return ports


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _die_with_parent() -> None:
    """In the child before exec: its own process group, SIGKILL when the test run dies."""
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return True


def remove_stale_workdirs() -> None:
    """Remove the work directories of runs whose process no longer exists."""
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{WORKDIR_PREFIX}*"):
        m = _STALE_WORKDIR.match(path.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


class GaleraNode:
    """One mariadbd of the cluster; `index` counts from 1."""

    def __init__(self, cluster: GaleraCluster, index: int, ports: list[int]) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"node{index}"
        self.port, self.gcomm_port, self.ist_port, self.sst_port = ports
        self.dir = cluster.workdir / self.name
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.cnf = self.dir / "my.cnf"
        self.log = self.dir / "mariadbd.err"
        self.proc: subprocess.Popen | None = None

    def url(self, database: str | None = "melange") -> str:
        """SQLAlchemy URL of this node (and `database`), as melange's --db takes it."""
        path = f"/{database}" if database else ""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}{path}"

    def write_cnf(self, cluster_address: str) -> None:
        """The node's configuration: MariaDB's Galera requirements plus private paths/ports."""
        options = ";".join(
            (f"base_port={self.gcomm_port}", f"gmcast.listen_addr=tcp://127.0.0.1:{self.gcomm_port}",
             f"ist.recv_addr=127.0.0.1:{self.ist_port}", *PROVIDER_OPTIONS)
        )  # fmt: skip
        self.cnf.write_text(
            "[mysqld]\n"
            f"datadir={self.datadir}\n"
            f"socket={self.socket}\n"
            f"pid-file={self.dir / 'mariadbd.pid'}\n"
            # Not /tmp: temporary tables there are named by pid, which another server's
            # bootstrap (another test run, another pid namespace) may share.
            f"tmpdir={self.dir}\n"
            f"log-error={self.log}\n"
            f"port={self.port}\n"
            "bind-address=127.0.0.1\n"
            f"user={self.cluster.user}\n"
            "skip-log-bin\n"
            "performance_schema=OFF\n"
            "innodb_buffer_pool_size=32M\n"
            "innodb_log_file_size=16M\n"
            # Durability comes from the other nodes; Galera's usual setting.
            "innodb_flush_log_at_trx_commit=2\n"
            "\n[galera]\n"
            "wsrep_on=ON\n"
            f"wsrep_provider={self.cluster.provider}\n"
            f"wsrep_cluster_name={self.cluster.name}\n"
            f"wsrep_cluster_address={cluster_address}\n"
            f"wsrep_node_name={self.name}\n"
            "wsrep_node_address=127.0.0.1\n"
            f"wsrep_node_incoming_address=127.0.0.1:{self.port}\n"
            f'wsrep_provider_options="{options}"\n'
            "wsrep_sst_method=rsync\n"
            f"wsrep_sst_receive_address=127.0.0.1:{self.sst_port}\n"
            "binlog_format=ROW\n"
            "default_storage_engine=InnoDB\n"
            "innodb_autoinc_lock_mode=2\n"
        )

    def install(self) -> None:
        """A fresh system datadir (only the bootstrapping node; the others get SST)."""
        proc = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}",
             f"--user={self.cluster.user}", f"--tmpdir={self.dir}",
             "--auth-root-authentication-method=normal", "--skip-test-db",
             "--innodb-log-file-size=16M"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": SBIN_PATH},
        )  # fmt: skip
        if proc.returncode != 0:
            raise GaleraUnavailable(f"mariadb-install-db failed: {proc.stderr.strip()[-2000:]}")

    def start(self, *, new_cluster: bool = False) -> None:
        """Start mariadbd in the background (the cluster's start/restart wait for it)."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        argv = [MARIADBD, f"--defaults-file={self.cnf}"]
        if new_cluster:
            argv.append("--wsrep-new-cluster")
        with open(self.dir / "mariadbd.out", "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent, env={**os.environ, "PATH": SBIN_PATH},
                **self.cluster.popen_user,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (mariadbd and any SST script): a crash."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def connect(self, timeout: float = 3):
        """A pymysql connection (autocommit) to this node."""
        import pymysql

        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", connect_timeout=timeout,
            read_timeout=30, autocommit=True,
        )  # fmt: skip

    def status(self) -> dict[str, str]:
        """This node's wsrep_% status variables."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_%'")
                return {name: value for name, value in cur.fetchall()}
        finally:
            conn.close()

    def ready(self, size: int) -> bool:
        """Answers, is Synced, and sees a primary cluster of `size` nodes."""
        try:
            status = self.status()
        except Exception:  # noqa: BLE001  (not up yet: any client error means "not yet")
            return False
        return (
            status.get("wsrep_local_state_comment") == "Synced"
            and status.get("wsrep_cluster_status") == "Primary"
            and status.get("wsrep_ready") == "ON"
            and status.get("wsrep_cluster_size") == str(size)
        )

    def log_tail(self, chars: int = 1500) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return text[-chars:]


class GaleraCluster:
    """`size` nodes on 127.0.0.1; `start()` returns once all are Synced in one view."""

    def __init__(self, size: int = 3, name: str = "melange_test") -> None:
        self.size = size
        self.name = name
        self.provider = next((p for p in PROVIDERS if Path(p).exists()), PROVIDERS[0])
        # As root, the nodes run as `mysql`, as packaged servers do: rsync's SST daemon,
        # started as root, would drop to `nobody` and could not write the joiner's datadir.
        self.user = SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.popen_user: dict = (
            {"user": SERVER_USER, "group": SERVER_USER} if os.geteuid() == 0 else {}
        )
        self.workdir: Path = Path()
        self.nodes: list[GaleraNode] = []
        self.startup_seconds: float | None = None

    def start(self, timeout: float = 90) -> GaleraCluster:
        """Install, bootstrap node 1, join the others by rsync SST; stop() on any failure."""
        missing = missing_packages()
        if missing:
            raise GaleraUnavailable(f"missing Debian package(s): {', '.join(missing)}")
        started = time.monotonic()
        remove_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
        try:
            ports = free_ports(4 * self.size)
            self.nodes = [
                GaleraNode(self, i + 1, ports[4 * i : 4 * i + 4]) for i in range(self.size)
            ]
            address = "gcomm://" + ",".join(f"127.0.0.1:{n.gcomm_port}" for n in self.nodes)
            for node in self.nodes:
                node.dir.mkdir(parents=True)
                node.datadir.mkdir()
                node.write_cnf(address)
            if self.popen_user:
                for path in (self.workdir, *self.workdir.rglob("*")):
                    shutil.chown(path, SERVER_USER, SERVER_USER)
            first = self.nodes[0]
            first.install()
            first.start(new_cluster=True)
            self._wait([first], 1, started + timeout)
            # The joiners come up together; a second joiner waits for a free donor.
            for node in self.nodes[1:]:
                node.start()
            self._wait(self.nodes, self.size, started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait(self, nodes: list[GaleraNode], size: int, deadline: float) -> None:
        pending = list(nodes)
        while pending:
            for node in list(pending):
                if not node.alive():
                    raise GaleraUnavailable(
                        f"{node.name} exited with status {node.proc.returncode}:\n{node.log_tail()}"
                    )
                if node.ready(size):
                    pending.remove(node)
            if pending and time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in pending)
                raise GaleraUnavailable(
                    f"Galera nodes {', '.join(n.name for n in pending)} not Synced in a "
                    f"cluster of {size} in time:\n{logs}"
                )
            if pending:
                time.sleep(0.2)

    def restart(self, node: GaleraNode, timeout: float = 60) -> None:
        """Start a stopped node again; it rejoins (IST or SST) and is Synced on return."""
        node.start()
        self._wait([n for n in self.nodes if n.alive()], self.size, time.monotonic() + timeout)

    def stop(self) -> None:
        """Kill every node and remove the work directory; safe to call twice."""
        for node in self.nodes:
            node.kill()
        if self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> GaleraCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def live(self) -> list[GaleraNode]:
        return [n for n in self.nodes if n.alive()]

    def urls(self, database: str | None = "melange") -> list[str]:
        return [node.url(database) for node in self.nodes]

    def create_database(self, name: str) -> None:
        """A database (replicated to every node, like any DDL)."""
        self._execute(f"CREATE DATABASE IF NOT EXISTS {name}")

    def drop_database(self, name: str) -> None:
        self._execute(f"DROP DATABASE IF EXISTS {name}")

    def _execute(self, statement: str) -> None:
        conn = self.live[0].connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def wait_in_step(self, timeout: float = 30) -> int:
        """Wait until every live node has applied the same last write set; its seqno.

        Galera replicates synchronously but applies asynchronously: a node can be a
        moment behind the one that committed. Call this once writes have stopped.
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = {n.name: int(n.status()["wsrep_last_committed"]) for n in self.live}
            if len(set(seen.values())) == 1:
                return next(iter(seen.values()))
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes did not converge: {seen}")
            time.sleep(0.1)
