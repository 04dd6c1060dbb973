"""DNS names with a real dnsmasq: how soon a name answers after its allocation commits.

One dnsmasq (DNS only, on a loopback port, `--addn-hosts` and `--hostsdir`,
`local=/bench.example/`) and one melanged (`--dns-hostsdir`, `--addn-hosts`,
`--dnsmasq-pidfile`) follow an SQLite store pre-filled with N named addresses
(one `block.allocate count=N`, then one UPDATE naming them; melanged's first
pass folds them into the addn-hosts file and reloads dnsmasq). Each sample
allocates one new named address through the core API in this process; the
clock starts after the commit and stops when dnsmasq answers the name (a UDP
query every 2 ms, built and read here: no process per query). Then each
sample name is released and timed until dnsmasq answers NXDOMAIN.

The baseline, in the same run, is what dnsmasq offers without a hosts dir:
melanged stopped, the whole addn-hosts file rewritten with one more name
(atomically, as melanged writes it) and SIGHUP, timed the same way.

Throughout, a thread asks for one pre-filled name in a steady stream; the
longest time between two answers is reported (the issue: never more than
100 ms unanswered). CPU: melanged's per allocation (its pass renders every
name of the network) and dnsmasq's for the SIGHUP of the baseline, from /proc.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import median, ms, section, table, verdict

DOMAIN = "bench.example"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT = 5300 + os.getpid() % 600


def _sizes(quick: bool) -> dict:
    return {"names": 10_000, "samples": 5} if quick else {"names": 50_000, "samples": 9}


def _query(name: str, ident: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + b"\0\1\0\1"


class Resolver:
    """A bare UDP client: (rcode, answers) of an A query, None on a timeout."""

    def __init__(self, timeout: float = 0.05) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.ident = random.randrange(1 << 16)

    def ask(self, name: str) -> tuple[int, int] | None:
        self.ident = (self.ident + 1) & 0xFFFF
        self.sock.sendto(_query(name, self.ident), ("127.0.0.1", PORT))
        deadline = time.monotonic() + self.sock.gettimeout()  # type: ignore[operator]
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return None
            ident, flags, _, answers = struct.unpack(">HHHH", data[:8])
            if ident == self.ident:
                return flags & 0xF, answers
        return None

    def wait(self, name: str, *, answered: bool, timeout: float = 60.0) -> float:
        """monotonic() once `name` has an answer (or, not `answered`, is NXDOMAIN)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.ask(name)
            if got is not None and (got[1] > 0 if answered else got[0] == 3):
                return time.monotonic()
            time.sleep(0.002)
        raise TimeoutError(f"{name}: no {'answer' if answered else 'NXDOMAIN'} in {timeout} s")


class Stream(threading.Thread):
    """One name asked for again and again; the longest wait between two answers."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.name_ = name
        self.stop = threading.Event()
        self.longest = 0.0
        self.asked = 0

    def take(self) -> float:
        """The longest gap so far, and start again."""
        longest, self.longest = self.longest, 0.0
        return longest

    def run(self) -> None:
        resolver = Resolver(timeout=0.5)
        last = time.monotonic()
        while not self.stop.is_set():
            got = resolver.ask(self.name_)
            now = time.monotonic()
            self.asked += 1
            if got is not None and got[1] > 0:
                self.longest = max(self.longest, now - last)
                last = now
            time.sleep(0.005)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _prefill(url: str, count: int):
    from sqlalchemy import text

    from melange import operations
    from melange.store import Store

    store = Store(url, release_hold=0)
    operations.run(store, "block.create",
                   {"cidr": "10.80.0.0/16", "name": "lan", "domain": DOMAIN})  # fmt: skip
    operations.run(store, "block.allocate", {"block": "lan", "count": count})

    def name(conn) -> None:
        conn.execute(text(
            "UPDATE ip_addresses SET hostname = 'h' || id, dns_version = 4, "
            f"dns_name = 'h' || id || '.{DOMAIN}'"))  # fmt: skip
        conn.execute(text("UPDATE blocks SET generation = generation + 1"))

    store.write(name)
    return store


def _dnsmasq(work: Path) -> subprocess.Popen:
    argv = [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "-k", "--conf-file=/dev/null",
            f"--port={PORT}", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
            "--no-hosts", "--user=root", f"--local=/{DOMAIN}/",
            f"--addn-hosts={work / 'dns.hosts'}", f"--hostsdir={work / 'dns.d'}",
            f"--pid-file={work / 'dnsmasq.pid'}",
            f"--log-facility={work / 'dnsmasq.log'}"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _melanged(url: str, work: Path) -> tuple[subprocess.Popen, Path]:
    import sys

    log = work / "melanged.log"
    argv = [sys.executable, "-m", "melanged.main", "--foreground", "--db", url,
            "--hostsfile", str(work / "dhcp.hosts"), "--dnsmasq-pidfile", str(work / "dnsmasq.pid"),
            "--dns-hostsdir", str(work / "dns.d"), "--addn-hosts", str(work / "dns.hosts"),
            "--log-file", str(log)]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    env["PYTHONPATH"] = str(root)
    return subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL), log


def _wait_log(log: Path, text: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            raise TimeoutError(f"melanged never logged {text!r}")
        time.sleep(0.05)


def _measure(work: Path, count: int, samples: int) -> dict:
    from melange import operations

    url = f"sqlite:///{work / 'store.db'}"
    store = _prefill(url, count)
    (work / "dns.d").mkdir()
    (work / "dns.hosts").write_text("")
    server = _dnsmasq(work)
    daemon, log = _melanged(url, work)
    resolver = Resolver()
    stream = Stream(f"h1.{DOMAIN}")
    result: dict = {}
    try:
        _wait_log(log, f"DNS: {count} names folded")
        resolver.wait(f"h{count}.{DOMAIN}", answered=True)
        stream.start()
        before = _cpu(daemon.pid)
        added, names = [], []
        for i in range(samples):
            time.sleep(0.3 + random.random() * 0.1)  # a lone change, anywhere in a poll
            name = f"s{i}.{DOMAIN}"
            operations.run(store, "block.allocate", {"block": "lan", "hostname": f"s{i}"})
            t0 = time.monotonic()
            added.append(resolver.wait(name, answered=True) - t0)
            names.append(name)
        time.sleep(0.5)
        result["melanged_cpu"] = (_cpu(daemon.pid) - before) / samples
        released = []
        records = operations.run(store, "ip.list", {"block": "lan"})
        sample_ips = [r["address"] for r in records if (r["hostname"] or "").startswith("s")]
        for address, name in zip(sample_ips, names, strict=True):
            time.sleep(0.3 + random.random() * 0.1)
            operations.run(store, "ip.release", {"address": address, "now": True})
            t0 = time.monotonic()
            released.append(resolver.wait(name, answered=False) - t0)
        result["gap_hostsdir"] = stream.take()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        result.update(added=added, released=released, baseline=_baseline(work, resolver,
                      server.pid, samples))  # fmt: skip
        result["gap_sighup"] = stream.take()
        result["alone"] = _alone(work, resolver, samples)
        result["bound"] = _bound(work, resolver, server.pid)
        stream.stop.set()
        stream.join(5)
        result["asked"] = stream.asked
    finally:
        stream.stop.set()
        for proc in (daemon, server):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        store.close()
    return result


def _baseline(work: Path, resolver: Resolver, dnsmasq_pid: int, samples: int) -> dict:
    """The whole addn-hosts file rewritten with one more name, then SIGHUP."""
    from melange.filesync import write_if_changed

    addn = work / "dns.hosts"
    base = addn.read_text()
    times, cpu = [], []
    for i in range(samples):
        time.sleep(0.3)
        before = _cpu(dnsmasq_pid)
        t0 = time.monotonic()
        write_if_changed(addn, [base, f"10.81.0.{i + 1} b{i}.{DOMAIN}\n"])
        os.kill(dnsmasq_pid, signal.SIGHUP)
        times.append(resolver.wait(f"b{i}.{DOMAIN}", answered=True) - t0)
        time.sleep(0.2)
        cpu.append(_cpu(dnsmasq_pid) - before)
    return {"times": times, "cpu": median(cpu)}


def _alone(work: Path, resolver: Resolver, samples: int) -> list[float]:
    """dnsmasq's own part, melanged stopped: one new small file written (as melanged
    writes it) -> its name answered. No path through melanged can beat it, so the
    baseline divided by it is the highest ratio the hosts dir can reach."""
    from melange.filesync import write_if_changed

    times = []
    for i in range(samples):
        time.sleep(0.3 + random.random() * 0.1)
        name = f"a{i}.{DOMAIN}"
        t0 = time.monotonic()
        write_if_changed(work / "dns.d" / name, [f"10.83.0.{i + 1} {name}\n"])
        times.append(resolver.wait(name, answered=True) - t0)
    return times


def _bound(work: Path, resolver: Resolver, dnsmasq_pid: int, count: int = 200) -> dict:
    """dnsmasq's CPU per new small file (written one after the other, as a burst of
    allocations would) and for a SIGHUP with those files in the hosts dir besides the
    folded names: what melanged's fold bounds weigh."""
    from melange.filesync import write_if_changed

    hostsdir = work / "dns.d"
    time.sleep(0.5)
    before = _cpu(dnsmasq_pid)
    for i in range(count):
        name = f"k{i}.{DOMAIN}"
        write_if_changed(hostsdir / name, [f"10.82.{i // 250}.{i % 250 + 1} {name}\n"])
    resolver.wait(f"k{count - 1}.{DOMAIN}", answered=True, timeout=600)
    time.sleep(0.5)
    per_file = (_cpu(dnsmasq_pid) - before) / count
    cpu = []
    for _ in range(3):
        before = _cpu(dnsmasq_pid)
        os.kill(dnsmasq_pid, signal.SIGHUP)
        time.sleep(0.5)
        resolver.wait(f"k0.{DOMAIN}", answered=True)
        cpu.append(_cpu(dnsmasq_pid) - before)
    return {"files": count, "one_file_cpu": per_file, "sighup_cpu": median(cpu)}


def run(quick: bool) -> str:
    if os.geteuid() != 0 or shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin") is None:
        return section("DNS", "", "skipped: needs root and dnsmasq")
    sizes = _sizes(quick)
    with tempfile.TemporaryDirectory(prefix="melange-bench-dns-") as tmp:
        r = _measure(Path(tmp), sizes["names"], sizes["samples"])
    added, released = median(r["added"]), median(r["released"])
    baseline, alone = median(r["baseline"]["times"]), median(r["alone"])
    rows = [
        ("allocation commit → name answered (median)", ms(added),
         verdict(added * 1000, 50, at_most=True)),
        ("  slowest of the samples", ms(max(r["added"])), ""),
        ("addn-hosts rewrite + SIGHUP → answered (median)", ms(baseline), ""),
        ("  ratio baseline / hosts dir", f"{baseline / added:.1f}×",
         verdict(baseline / added, 20, at_most=False)),
        ("dnsmasq alone: one new hosts-dir file → answered (median)", ms(alone), ""),
        ("  the highest ratio the hosts dir can reach: baseline / that", f"{baseline / alone:.1f}×",
         ""),
        ("release → NXDOMAIN (median)", ms(released), verdict(released * 1000, 50, at_most=True)),
        ("steady stream, longest gap between answers: hosts-dir samples",
         ms(r["gap_hostsdir"]), verdict(r["gap_hostsdir"] * 1000, 100, at_most=True)),
        ("  the same during the baseline's SIGHUPs", ms(r["gap_sighup"]), ""),
        ("melanged CPU per allocation (its pass)", ms(r["melanged_cpu"]), ""),
        ("dnsmasq CPU per SIGHUP (baseline)", ms(r["baseline"]["cpu"]), ""),
        (f"dnsmasq CPU per SIGHUP, {r['bound']['files']:,} small files besides",
         ms(r["bound"]["sighup_cpu"]), ""),
        (f"dnsmasq CPU per new small file (a burst of {r['bound']['files']:,})",
         ms(r["bound"]["one_file_cpu"]), ""),
    ]  # fmt: skip
    method = (
        f"{sizes['names']:,} names in dnsmasq, {sizes['samples']} samples each; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end; "
        f"{r['asked']} queries in the steady stream. See benchmarks/dns.py for the method."
    )
    return section("DNS", method, table(("what", "time", "target"), rows))
