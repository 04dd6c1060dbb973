"""The dnsmasq process: its pidfile, SIGHUP once it is idle, and `dhcp_release`.

A reload makes dnsmasq re-read every file, in time quadratic in the number of
host lines, serving no DHCP meanwhile: a second SIGHUP during one would start
it over, so a reload waits until dnsmasq is idle (sleeping, its CPU time
unchanged). `dhcp_release` (dnsmasq-utils) gets no answer from dnsmasq; the
lease file dnsmasq rewrites is the only sign a release was taken in.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from melange.errors import InvalidInput
from melange.localfiles import program_pid

IDLE_TIMEOUT = 60.0
SIGHUP_LANDS = 0.05  # seconds for a SIGHUP to land before asking whether dnsmasq is idle
_IFACE = re.compile(r"^[A-Za-z0-9_.:@][A-Za-z0-9_.:@-]{0,14}$")  # Linux IFNAMSIZ is 16


def pid(pidfile: Path | None) -> int | None:
    """dnsmasq's pid, only when the pidfile names a running dnsmasq."""
    return None if pidfile is None else program_pid(pidfile, "dnsmasq")


def reload(pidfile: Path) -> tuple[bool, bool]:
    """SIGHUP once dnsmasq is idle, so at most one reload is ever in flight:
    (running, reloaded)."""
    running = pid(pidfile)
    if running is None:
        return False, False
    wait_idle(running)
    try:
        os.kill(running, signal.SIGHUP)
    except ProcessLookupError:
        return False, False
    return True, True


def after_reload(pidfile: Path | None) -> None:
    """Wait for a SIGHUP just sent to be taken in (dnsmasq idle again)."""
    running = pid(pidfile)
    if running is not None:
        time.sleep(SIGHUP_LANDS)
        wait_idle(running)


def wait_idle(pid: int, timeout: float = IDLE_TIMEOUT) -> bool:
    """Wait until the process sleeps and uses no CPU (dnsmasq has finished a reload)."""
    deadline = time.monotonic() + timeout
    last = _cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now = _cpu(pid)
        if now is None:
            return False
        if last is not None and now[0] in "SI" and now[1] == last[1]:
            return True
        last = now
    return False


def _cpu(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None
    return fields[0], int(fields[11]) + int(fields[12])


def check_release(interface: str, *, needed: bool) -> None:
    """An interface name dhcp_release can take, and (when it will run) dhcp_release
    itself: both checked before anything changes."""
    if not _IFACE.fullmatch(interface):
        raise InvalidInput(f"{interface!r} is not a network interface name")
    if needed and shutil.which("dhcp_release") is None:
        raise InvalidInput(
            "--release-interface needs dhcp_release (Debian package dnsmasq-utils), "
            "which is not installed"
        )


def release(interface: str, address: str, mac: str) -> None:
    """`dhcp_release IFACE IP MAC`: dnsmasq forgets that DHCPv4 lease."""
    subprocess.run(
        ["dhcp_release", interface, address, mac], check=False, capture_output=True, timeout=10
    )
