"""Running a real melanged beside a real dnsmasq, for the end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT

HOSTS_LINE = re.compile(
    r"^[0-9a-f]{2}(:[0-9a-f]{2}){5},(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\])(,[a-z0-9.-]+)?$"
)


def env() -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    return {**clean, "PYTHONPATH": str(ROOT)}


def cli(db: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "melange_cli.main", "--db", db, "-o", "plain", *args],
        capture_output=True, text=True, env=env(), timeout=60,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


class Melanged:
    """`melanged --foreground` as a subprocess, logging to a file."""

    def __init__(self, db: str, server, workdir: Path, *, network: str | None = None,
                 hostsdir: Path | None = None, extra: tuple[str, ...] = (),
                 netns: str | None = None) -> None:  # fmt: skip
        self.logfile = workdir / "melanged.log"
        self.argv = [
            sys.executable, "-m", "melanged.main", "--foreground", "--db", db,
            "--hostsfile", str(server.hostsfile), "--optsfile", str(server.optsfile),
            "--dnsmasq-pidfile", str(server.pidfile), "--log-file", str(self.logfile),
            "--pidfile", str(workdir / "melanged.pid"), *extra,
        ]  # fmt: skip
        if network:
            self.argv += ["--network", network]
        if hostsdir:
            self.argv += ["--hostsdir", str(hostsdir)]
        if netns:  # beside dnsmasq, as dhcp_release must be
            self.argv = ["ip", "netns", "exec", netns, *self.argv]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Melanged:
        self.proc = subprocess.Popen(self.argv, env=env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 10, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log()[since:]):
            assert self.alive(), f"melanged died: {self.proc.stderr.read()}\n{self.log()}"
            assert time.monotonic() < deadline, f"no {pattern!r} in melanged log:\n{self.log()}"
            time.sleep(0.02)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        return terminate(self.proc)

    def __enter__(self) -> Melanged:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def terminate(proc: subprocess.Popen | None, timeout: float = 15) -> int | None:
    """SIGTERM (SIGKILL if it hangs); the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def served_lines(hostsfile: Path, hostsdir: Path | None = None) -> set[str]:
    """Every reservation dnsmasq would read: the hosts file and the hosts dir's files."""
    files = [hostsfile]
    if hostsdir is not None and hostsdir.is_dir():
        files += [p for p in hostsdir.iterdir() if not p.name.startswith(".")]
    lines: set[str] = set()
    for path in files:
        if path.exists():
            lines.update(line for line in path.read_text().splitlines() if line)
    return lines


def wait_until(predicate, timeout: float = 10, what: str = "condition") -> float:
    """Poll until true; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.01)
    return time.monotonic() - started


def reloads(server, since: int = 0) -> int:
    """How many times dnsmasq re-read its hosts file (start-up and each SIGHUP)."""
    return sum(1 for m in server.log_messages(since) if m == f"read {server.hostsfile}")
