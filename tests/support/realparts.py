"""Helpers for tests that need real parts: root, network namespaces, dnsmasq, udhcpc.

Rules for a missing capability (not root, no dnsmasq, no namespaces, ...): on a developer
machine the test is skipped with a message saying what is missing; in CI (environment
variable ``CI`` set to anything but ``""``, ``0``, ``false`` or ``no``) the test fails,
so that a broken CI image can never turn the real-dnsmasq tests into silent skips.

Typical use::

    from tests.support.realparts import Dnsmasq, NetnsPair, require_root, udhcpc_lease

    def test_reservation(tmp_path):
        require_root()
        with NetnsPair("10.77.0.0/24") as pair, Dnsmasq(pair, tmp_path) as dnsmasq:
            dnsmasq.write_hosts("02:00:00:00:00:01,10.77.0.5,vm1\\n")
            dnsmasq.reload()
            assert udhcpc_lease(pair, "02:00:00:00:00:01")["ip"] == "10.77.0.5"

The fixtures ``netns_pair`` and ``dnsmasq_server`` at the end of this module do the same;
tests/conftest.py makes them available to every test by importing them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.processes import pid_alive

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_SUBNET = "10.77.0.0/24"
DEFAULT_NETWORK = "net1"

_counter = itertools.count()

# "Nov 26 08:02:45 dnsmasq[7580]: " or "... dnsmasq-dhcp[7580]: "
_LOG_PREFIX = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d dnsmasq(?:-[\w]+)?\[\d+\]: ")
_PROBLEM = re.compile(
    r"\b(bad|duplicate|cannot|can't|failed|failure|error|illegal|invalid|unknown|missing)\b"
    r"|\bat line \d+",
    re.IGNORECASE,
)
_NETNS_NAME = re.compile(r"^mlg-(\d+)-\d+-[sc]$")


# ---------------------------------------------------------------------------
# Capabilities: fail in CI, skip elsewhere


def in_ci() -> bool:
    """True when the environment says we run in CI (``CI`` set and not false-ish)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_capability(reason: str) -> None:
    """Fail the current test in CI, skip it elsewhere; never returns."""
    if in_ci():
        pytest.fail(
            f"{reason} (CI is set: a missing capability is a failure here, not a skip; "
            "run 'make system-deps' as root)",
            pytrace=False,
        )
    pytest.skip(f"{reason}; skipped on this developer machine (it would fail in CI)")


def require_root() -> None:
    """The test needs root (network namespaces, veth pairs, dnsmasq on port 67)."""
    if os.geteuid() != 0:
        missing_capability("needs root for network namespaces and dnsmasq, not running as root")


def _find_program(name: str, package: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)
    if path is None:
        missing_capability(f"{name} not found (Debian package {package})")
    return path


def find_ip() -> str:
    """Path of iproute2's ``ip``."""
    return _find_program("ip", "iproute2")


def find_dnsmasq() -> str:
    """Path of the dnsmasq binary (``/usr/sbin/dnsmasq`` on Debian)."""
    return _find_program("dnsmasq", "dnsmasq-base")


def find_dhcp_release() -> str:
    """Path of ``dhcp_release`` (dnsmasq-utils)."""
    return _find_program("dhcp_release", "dnsmasq-utils")


def find_udhcpc() -> list[str]:
    """argv prefix that runs busybox's udhcpc: ``[udhcpc]`` or ``[busybox, udhcpc]``."""
    search = os.environ.get("PATH", "") + ":" + SBIN_PATH
    path = shutil.which("udhcpc", path=search)
    if path is not None:
        return [path]
    busybox = shutil.which("busybox", path=search)
    if busybox is not None:
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout
        if "udhcpc" in applets.split():
            return [busybox, "udhcpc"]
    missing_capability("udhcpc not found (Debian package udhcpc)")
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# Network namespaces


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([find_ip(), *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc

    return True


def _netns_names() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _delete_netns(name: str) -> None:
    """Kill what still runs in namespace ``name`` (ours by construction), then delete it."""
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    for pid in pids:  # reap the ones that are our own children
        with contextlib.suppress(ChildProcessError, ValueError):
            os.waitpid(int(pid), 0)
    _ip("netns", "delete", name, check=False)


def cleanup_stale_namespaces() -> None:
    """Delete ``mlg-<pid>-…`` namespaces left behind by test processes that no longer exist."""
    for name in _netns_names():
        m = _NETNS_NAME.match(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            _delete_netns(name)


class NetnsPair:
    """Two network namespaces joined by a veth pair.

    The server side (``server_ns``/``server_if``) gets the first host address of ``subnet``
    (``10.77.0.1/24`` by default), the client side (``client_ns``/``client_if``) no address.
    Both links and both loopbacks are up. Use as a context manager: the namespaces (and
    anything still running in them) are removed on exit, even after a failure.
    """

    server_if = "veth-s"
    client_if = "veth-c"

    def __init__(self, subnet: str = DEFAULT_SUBNET) -> None:
        self.subnet = ipaddress.IPv4Network(subnet)
        self.server_ip = str(next(self.subnet.hosts()))
        self.network_address = str(self.subnet.network_address)
        self.netmask = str(self.subnet.netmask)
        self.prefixlen = self.subnet.prefixlen
        base = f"mlg-{os.getpid()}-{next(_counter)}"
        self.server_ns = f"{base}-s"
        self.client_ns = f"{base}-c"
        self._created: list[str] = []

    # -- lifecycle
    def create(self) -> NetnsPair:
        require_root()
        cleanup_stale_namespaces()
        try:
            for ns in (self.server_ns, self.client_ns):
                proc = _ip("netns", "add", ns, check=False)
                if proc.returncode != 0:
                    missing_capability(
                        f"cannot create network namespace {ns}: {proc.stderr.strip()}"
                    )
                self._created.append(ns)
            _ip(
                "-n", self.server_ns, "link", "add", self.server_if, "type", "veth",
                "peer", "name", self.client_if, "netns", self.client_ns,
            )  # fmt: skip
            _ip("-n", self.server_ns, "addr", "add",
                f"{self.server_ip}/{self.prefixlen}", "dev", self.server_if)  # fmt: skip
            for ns, ifname in ((self.server_ns, self.server_if), (self.client_ns, self.client_if)):
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", ifname, "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        while self._created:
            _delete_netns(self._created.pop())

    def __enter__(self) -> NetnsPair:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- running things inside
    def netns_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """argv that runs ``argv`` inside namespace ``ns`` (``ip netns exec`` execs it)."""
        return [find_ip(), "netns", "exec", ns, *map(str, argv)]

    def run_in(
        self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30, **kw
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in namespace ``ns``; captures text output; raises on failure."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        proc = subprocess.run(self.netns_argv(ns, argv), timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            )
        return proc

    def run_server(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess[str]:
        return self.run_in(self.server_ns, argv, **kw)

    def run_client(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess[str]:
        return self.run_in(self.client_ns, argv, **kw)

    def set_client_mac(self, mac: str) -> None:
        """Give the client interface ``mac`` (link down, set, up)."""
        for args in (("down",), ("address", mac), ("up",)):
            _ip("-n", self.client_ns, "link", "set", self.client_if, *args)


# ---------------------------------------------------------------------------
# dnsmasq


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)


class Dnsmasq:
    """A real dnsmasq serving DHCP (no DNS) on the server side of a :class:`NetnsPair`.

    Started with the recipe from the dnsmasq notes::

        dnsmasq -k --conf-file=/dev/null --port=0 --no-resolv --no-hosts --user=root
          --interface=IF --bind-interfaces
          --dhcp-range=set:NET/CIDR,NETADDR,static,MASK,10m --tag-if=set:NET,tag:NET/CIDR
          --dhcp-hostsfile=H --dhcp-optsfile=O --dhcp-leasefile=L --pid-file=P
          --log-dhcp --log-facility=LOGFILE

    Files live in ``workdir`` unless given: ``hosts``, ``opts``, ``leases``,
    ``dnsmasq.pid``, ``dnsmasq.log`` (and ``dnsmasq.out``, its stdout/stderr). Missing
    default hosts/opts files are created empty. ``start()`` (or ``with``) returns once the
    pid file exists, the process is alive and the hosts and opts files have been read.
    """

    def __init__(
        self,
        pair: NetnsPair,
        workdir: str | os.PathLike[str],
        *,
        network: str = DEFAULT_NETWORK,
        lease_time: str = "10m",
        hostsfile: str | os.PathLike[str] | None = None,
        optsfile: str | os.PathLike[str] | None = None,
        leasefile: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        config_lines: Sequence[str] | None = None,
    ) -> None:
        self.pair = pair
        # The ranges and tag-if lines of `melange dhcp config`, as options; by default
        # those melange prints for one block covering the pair's subnet in `network`.
        self.config_lines = list(config_lines) if config_lines is not None else None
        self.workdir = Path(workdir).absolute()
        self.network = network
        self.lease_time = lease_time
        self.hostsfile = Path(hostsfile).absolute() if hostsfile else self.workdir / "hosts"
        self.optsfile = Path(optsfile).absolute() if optsfile else self.workdir / "opts"
        self.leasefile = Path(leasefile).absolute() if leasefile else self.workdir / "leases"
        self.pidfile = self.workdir / "dnsmasq.pid"
        self.logfile = self.workdir / "dnsmasq.log"
        self.outfile = self.workdir / "dnsmasq.out"
        self.extra_args = list(extra_args)
        self._create_hosts = hostsfile is None
        self._create_opts = optsfile is None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def argv(self) -> list[str]:
        p = self.pair
        return [
            find_dnsmasq(), "-k", "--conf-file=/dev/null", "--port=0", "--no-resolv",
            "--no-hosts", "--user=root", f"--interface={p.server_if}", "--bind-interfaces",
            *self.range_args(),
            f"--dhcp-hostsfile={self.hostsfile}", f"--dhcp-optsfile={self.optsfile}",
            f"--dhcp-leasefile={self.leasefile}", f"--pid-file={self.pidfile}",
            "--log-dhcp", f"--log-facility={self.logfile}", *self.extra_args,
        ]  # fmt: skip

    def range_args(self) -> list[str]:
        """dhcp-range and tag-if options: the block's own tag, and the network's set from it."""
        if self.config_lines is not None:
            return [f"--{line.strip()}" for line in self.config_lines
                    if line.startswith(("dhcp-range=", "tag-if="))]  # fmt: skip
        p = self.pair
        tag = f"{self.network}/{p.subnet}"
        return [
            f"--dhcp-range=set:{tag},{p.network_address},static,{p.netmask},{self.lease_time}",
            f"--tag-if=set:{self.network},tag:{tag}",
        ]

    # -- lifecycle
    def start(self, timeout: float = 10.0, *, wait_read: bool = True) -> Dnsmasq:
        """Start dnsmasq; with ``wait_read``, also wait until it has read hosts and opts."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._create_hosts and not self.hostsfile.exists():
            self.hostsfile.write_text("")
        if self._create_opts and not self.optsfile.exists():
            self.optsfile.write_text("")
        for f in (self.pidfile, self.logfile):
            f.unlink(missing_ok=True)
        with open(self.outfile, "wb") as out:
            self.proc = subprocess.Popen(
                self.pair.netns_argv(self.pair.server_ns, self.argv),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"dnsmasq exited with {self.proc.returncode}: "
                                       f"{self._diagnostics()}")  # fmt: skip
                pid = self._read_pidfile()
                if pid is not None and pid_alive(pid):
                    self.pid = pid
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dnsmasq wrote no pid file: {self._diagnostics()}")
                time.sleep(0.01)
            if wait_read:
                remaining = max(deadline - time.monotonic(), 0.1)
                self.wait_for_read(since=0, timeout=remaining)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``); returns dnsmasq's exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pid is not None and self.pid != self.proc.pid and pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return self.proc.returncode

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        return self.pid is not None and pid_alive(self.pid)

    # -- signals and files
    def sighup(self) -> int:
        """Send SIGHUP; returns the log mark to pass as ``since`` to :meth:`wait_for_log`."""
        mark = self.log_mark()
        assert self.pid is not None, "dnsmasq is not running"
        os.kill(self.pid, signal.SIGHUP)
        return mark

    def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP and wait until dnsmasq has re-read the hosts and opts files."""
        self.wait_for_read(since=self.sighup(), timeout=timeout)

    def write_hosts(self, text: str) -> None:
        """Replace the hosts file atomically (temp file + rename); no signal."""
        _write_atomic(self.hostsfile, text)

    def write_opts(self, text: str) -> None:
        _write_atomic(self.optsfile, text)

    def lease_text(self) -> str:
        return self.leasefile.read_text() if self.leasefile.exists() else ""

    def dhcp_release(self, ip: str, mac: str) -> None:
        """Run ``dhcp_release IF IP MAC`` in dnsmasq's namespace (no acknowledgement)."""
        self.pair.run_server([find_dhcp_release(), self.pair.server_if, ip, mac])

    # -- log
    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current length of the log; pass as ``since`` to look only at newer lines."""
        return len(self.log_text())

    def log_messages(self, since: int = 0) -> list[str]:
        """Log lines after ``since`` without the "Mon DD HH:MM:SS dnsmasq[PID]: " prefix."""
        return [_LOG_PREFIX.sub("", line) for line in self.log_text()[since:].splitlines()]

    def wait_for_log(self, pattern: str, timeout: float = 5.0, *, since: int = 0) -> re.Match:
        """Wait until a log line after ``since`` matches the regex ``pattern``."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), since)
            if m:
                return m
            if not self.alive():
                raise AssertionError(
                    f"dnsmasq died while waiting for {pattern!r}: {self._diagnostics()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line matching {pattern!r} within {timeout}s; log:\n"
                    + self.log_text()[since:][-4000:]
                )
            time.sleep(0.01)

    def wait_for_read(self, since: int = 0, timeout: float = 5.0) -> None:
        """Wait until both the hosts file and the opts file were (re)read after ``since``."""
        for f in (self.hostsfile, self.optsfile):
            self.wait_for_log(
                rf"(?:\bread|cannot read|failed to read) {re.escape(str(f))}(?:$|:)",
                timeout, since=since,
            )  # fmt: skip

    # -- internals
    def _read_pidfile(self) -> int | None:
        try:
            text = self.pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _diagnostics(self) -> str:
        out = self.outfile.read_text(errors="replace") if self.outfile.exists() else ""
        return f"output: {out.strip()!r}; log:\n{self.log_text()[-4000:]}"


def dnsmasq_check_hostsfile(
    path: str | os.PathLike[str], pair: NetnsPair | None = None, timeout: float = 5.0
) -> list[str]:
    """Let a real dnsmasq read ``path`` as ``--dhcp-hostsfile``; return its complaints.

    Returns the log messages (without the syslog-style prefix) that report problems, e.g.
    ``bad DHCP host name at line 2 of /…/hosts``, ``bad hex constant at line 3 …``,
    ``duplicate dhcp-host IP address 10.77.0.5 at line 4 …``; ``[]`` for a clean file.
    Uses ``pair`` (which must have no dnsmasq running) or a fresh :class:`NetnsPair`.
    Note that dnsmasq silently accepts some wrong lines (see tests/test_realparts.py).
    """
    path = Path(path).absolute()
    with contextlib.ExitStack() as stack:
        if pair is None:
            pair = stack.enter_context(NetnsPair())
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="mlg-dnsmasq-"))
        server = Dnsmasq(pair, workdir, hostsfile=path)
        stack.callback(server.stop)
        server.start(timeout=timeout)
        messages = server.log_messages()
    read_line = f"read {path}"
    return [m for m in messages if m != read_line and _PROBLEM.search(m)]


# ---------------------------------------------------------------------------
# udhcpc

LEASE_KEYS = ("ip", "router", "dns", "hostname", "subnet", "mask", "lease", "serverid",
              "staticroutes")  # fmt: skip


def udhcpc_lease(
    pair: NetnsPair,
    mac: str,
    timeout: float = 10,
    *,
    tries: int = 3,
    wait: int = 1,
    extra_args: Sequence[str] = (),
) -> dict[str, str | None] | None:
    """One DHCP exchange with busybox udhcpc from the client side of ``pair``.

    Sets the client interface's MAC to ``mac``, runs ``udhcpc -i IF -n -q -f -t TRIES
    -T WAIT -s SCRIPT`` and returns what the script saw on ``bound``: a dict with the keys
    ``ip router dns hostname subnet`` (plus ``mask lease serverid``), ``None`` for options
    the server did not send. Returns ``None`` when no lease was obtained (after about
    ``tries * wait`` seconds) or udhcpc did not finish within ``timeout``. The address is
    not configured on the interface. udhcpc does not release the lease on exit.
    """
    udhcpc = find_udhcpc()
    pair.set_client_mac(mac)
    with tempfile.TemporaryDirectory(prefix="mlg-udhcpc-") as tmp:
        out = Path(tmp, "lease.json")
        script = Path(tmp, "script")
        dump = (
            "import json, os, sys; "
            f"json.dump({{k: os.environ.get(k) for k in {LEASE_KEYS!r}}}, open(sys.argv[1], 'w'))"
        )
        script.write_text(
            "#!/bin/sh\n"
            '[ "$1" = bound ] || exit 0\n'
            f"exec {shlex.quote(sys.executable)} -c {shlex.quote(dump)} {shlex.quote(str(out))}\n"
        )
        script.chmod(0o755)
        argv = [*udhcpc, "-i", pair.client_if, "-n", "-q", "-f",
                "-t", str(tries), "-T", str(wait), "-s", str(script), *extra_args]  # fmt: skip
        try:
            pair.run_client(argv, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if not out.exists():
            return None
        return json.loads(out.read_text())


# ---------------------------------------------------------------------------
# pytest fixtures


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """A :class:`NetnsPair` on 10.77.0.0/24 (server 10.77.0.1); needs root."""
    require_root()
    with NetnsPair() as pair:
        yield pair


@pytest.fixture
def dnsmasq_server(netns_pair: NetnsPair, tmp_path: Path) -> Iterator[Dnsmasq]:
    """A running :class:`Dnsmasq` on ``netns_pair``, network tag ``net1``, empty hosts and
    opts files in ``tmp_path / "dnsmasq"``."""
    with Dnsmasq(netns_pair, tmp_path / "dnsmasq") as server:
        yield server
