"""melanged with a real dnsmasq: how soon an allocation is served, and full renders.

(a) Latency. One dnsmasq (2.90-style recipe from tests/support/realparts.py, started
with --dhcp-hostsdir and a large --dhcp-lease-max) serves a /16 in a network
namespace; N reservations are pre-filled (`block.allocate` count=N through the
core API, then one UPDATE giving every address a MAC, then the block's
`generation` bumped). melanged runs first without --hostsdir (its initial
render writes the hosts file and reloads dnsmasq; a new reservation means a
full rewrite and a SIGHUP), then, against the same dnsmasq, with --hostsdir
(a new reservation is a new file dnsmasq reads by inotify, no reload). Each
sample allocates a new MAC through the core API in this process; the clock
starts just after the commit, stops (i) when the line is in a file dnsmasq
reads and (ii) when busybox udhcpc, started in the client namespace as soon as
the line is there, is bound to the allocated address. Samples are spaced so
each change is a lone one (melanged renders the first change after a quiet
spell at once) and dnsmasq is idle when it comes; a random 0–100 ms
added to each pause spreads the commits over melanged's 50 ms poll period.

(b) Full render. An SQLite store holding N addresses with MACs in one /12:
`melange --db URL dhcp hosts > FILE` against `sqlite3 -csv` running the same
query (same columns, join, filter and order) into a file, and `melange dhcp
sync --hostsfile F` (a fresh F each time, so it always writes); wall time of
each process and its peak RSS (GNU time's %M).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import mac, median, ms, section, table, verdict

ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.78.0.0/16"
GATEWAY = "10.78.0.1"
NETWORK = "net1"
LEASE_MAX = 200_000
TARGET_AT = 50_000  # the targets are for this many reservations
GAP = 2.4  # seconds between a render and the next change: more than melanged's wait_max
SAMPLE_PREFIX = 0x06  # MACs of the samples; pre-filled ones are 02:00:00:…
RENDER_QUERY = (
    "SELECT ip.mac, ip.address, ip.hostname FROM ip_addresses ip "
    "JOIN blocks b ON b.id = ip.block_id "
    "WHERE ip.state = 'allocated' AND ip.mac IS NOT NULL "
    "ORDER BY b.version, ip.address, ip.block_id"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _sizes(quick: bool) -> dict:
    if quick:
        return {"latency": (100, 2_000), "samples": 3, "render": 100_000, "rounds": 3}
    return {"latency": (100, 10_000, 50_000), "samples": 7, "render": 1_000_000, "rounds": 5}


def _helpers():
    """tests/support/realparts.py and melanged_harness.py (real dnsmasq, real melanged)."""
    from tests.support import melanged_harness, realparts

    return realparts, melanged_harness


def _missing_for_latency() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, dnsmasq)"
    search = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    for program in ("ip", "dnsmasq"):
        if shutil.which(program, path=search) is None:
            return f"{program} not found"
    if shutil.which("udhcpc", path=search) is None and shutil.which("busybox", path=search) is None:
        return "udhcpc (busybox) not found"
    return None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _settle(pid: int, quiet: float = 0.4, share: float = 0.05, timeout: float = 300.0) -> None:
    """Wait until `pid` used at most `share` of a CPU (or one clock tick) over `quiet` s."""
    allowed = max(1.0 / CLK_TCK, share * quiet) + 1e-9
    deadline = time.monotonic() + timeout
    window: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        now = time.monotonic()
        window.append((now, _cpu_seconds(pid)))
        window = [(t, c) for t, c in window if now - t <= quiet + 0.06]
        if now - window[0][0] >= quiet and window[-1][1] - window[0][1] <= allowed:
            return
        time.sleep(0.05)
    raise TimeoutError(f"process {pid} did not go idle within {timeout:.0f} s")


class _Watch:
    """Polls the files dnsmasq reads (hosts file, hosts dir) for one line."""

    def __init__(self, hostsfile: Path, hostsdir: Path) -> None:
        self.hostsfile = hostsfile
        self.hostsdir = hostsdir
        self.stamp: tuple | None = None
        self.dir_seen: set[str] = set()

    def _dir_has(self, needle: bytes) -> bool:
        for entry in os.scandir(self.hostsdir):
            if entry.name.startswith(".") or entry.name in self.dir_seen:
                continue
            self.dir_seen.add(entry.name)
            if needle in b"\n" + Path(entry.path).read_bytes():
                return True
        return False

    def wait(self, line: str, timeout: float = 120.0) -> float:
        """monotonic() when `line` is first seen in either place."""
        needle = f"\n{line}\n".encode()
        self.stamp = None  # re-read the hosts file once: the line may already be there
        deadline = time.monotonic() + timeout
        while True:
            # A leading newline keeps 02:…:01,10.0.0.1 from matching …:01,10.0.0.10.
            if self._file_has_line(needle) or self._dir_has(needle):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{line!r} did not reach dnsmasq's files in {timeout:.0f} s")
            time.sleep(0.002)

    def _file_has_line(self, needle: bytes) -> bool:
        try:
            st = self.hostsfile.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return needle in b"\n" + self.hostsfile.read_bytes()

    def forget_dir(self) -> None:
        self.dir_seen = {e.name for e in os.scandir(self.hostsdir)}


def _prefill(url: str, count: int):
    """A /16 for net1 holding `count` addresses, each with a MAC; returns the Store."""
    from sqlalchemy import text

    from melange import operations
    from melange.store import Store

    store = Store(url, release_hold=3600)
    operations.run(
        store,
        "block.create",
        {"cidr": SUBNET, "name": "lan", "network": NETWORK, "gateway": GATEWAY},
    )
    operations.run(store, "block.allocate", {"block": "lan", "count": count})

    def macs(conn) -> None:
        base = 0x02 << 40
        conn.execute(text(f"UPDATE ip_addresses SET mac = {base} + id, active_mac = {base} + id"))
        conn.execute(text("UPDATE blocks SET generation = generation + 1"))

    store.write(macs)
    return store


class _Latency:
    """One size: a store, a dnsmasq, then melanged in each mode."""

    def __init__(self, pair, realparts, harness, workdir: Path, count: int, samples: int):
        self.pair = pair
        self.rp = realparts
        self.h = harness
        self.workdir = workdir
        self.count = count
        self.samples = samples
        self.serial = 0
        self.rng = random.Random(count)
        self.url = f"sqlite:///{workdir / 'store.db'}"
        self.hostsdir = workdir / "hosts.d"
        self.results: dict[str, dict] = {}

    def run(self) -> dict:
        t0 = time.perf_counter()
        self.store = _prefill(self.url, self.count)
        fill = time.perf_counter() - t0
        self.hostsdir.mkdir()
        server = self.rp.Dnsmasq(
            self.pair,
            self.workdir / "dnsmasq",
            network=NETWORK,
            extra_args=[f"--dhcp-hostsdir={self.hostsdir}", f"--dhcp-lease-max={LEASE_MAX}"],
        )
        server.start(timeout=60)
        self.server = server
        self.watch = _Watch(server.hostsfile, self.hostsdir)
        try:
            initial = self._mode("hostsfile", hostsdir=None)
            self._mode("hostsdir", hostsdir=self.hostsdir)
            floor = [self._existing_lease(i) for i in (1, 2, 3)]
            alive = server.alive()
        finally:
            server.stop()
            self.store.close()
        return {
            "fill": fill,
            "initial": initial,
            "modes": self.results,
            "floor": median(floor),
            "dnsmasq_alive": alive,
        }

    def _mode(self, name: str, hostsdir: Path | None) -> dict:
        server = self.server
        workdir = self.workdir / f"melanged-{name}"
        workdir.mkdir()
        pid = server.pid
        cpu0 = _cpu_seconds(pid)
        mark = server.log_mark()
        started = time.monotonic()
        daemon = self.h.Melanged(self.url, server, workdir, network=NETWORK, hostsdir=hostsdir)
        daemon.start()
        initial: dict = {}
        try:
            daemon.wait_log("watching", timeout=60)
            if hostsdir is None:  # the initial render: full file, one SIGHUP
                deadline = time.monotonic() + 300
                while self.h.reloads(server, mark) < 1:
                    if time.monotonic() > deadline or not daemon.alive():
                        raise RuntimeError(f"dnsmasq did not re-read: {daemon.log()[-2000:]}")
                    time.sleep(0.02)
                _settle(pid)
                initial = {
                    "seconds": time.monotonic() - started,
                    "cpu": _cpu_seconds(pid) - cpu0,
                }
            _settle(daemon.proc.pid)  # melanged's first pass is done
            _settle(pid)
            time.sleep(GAP)
            self.watch.forget_dir()
            rows = [self._sample(reload_expected=hostsdir is None) for _ in range(self.samples + 1)]
            rows = rows[1:]  # the first is a warm-up
        finally:
            daemon.stop()
        print(f"[bench]     {self.count} {name}: line "
              + " ".join(f"{r['line'] * 1000:.0f}" for r in rows) + " ms; lease "
              + " ".join(f"{(r['lease'] or 0) * 1000:.0f}" for r in rows) + " ms",
              file=sys.stderr, flush=True)  # fmt: skip
        leases = [r["lease"] for r in rows if r["lease"] is not None]
        self.results[name] = {
            "line": median([r["line"] for r in rows]),
            "lease": median(leases or [float("nan")]),
            "lease_range": f"{_s(min(leases))} – {_s(max(leases))}" if leases else "n/a",
            "cpu": median([r["cpu"] for r in rows]),
            "failed": sum(1 for r in rows if r["lease"] is None or not r["right"]),
            "unanswered": sum(r["unanswered"] for r in rows),
            "reloads": sum(r["reloads"] for r in rows),
            "samples": len(rows),
        }
        return initial

    def _sample(self, *, reload_expected: bool) -> dict:
        from melange import operations

        server = self.server
        self.serial += 1
        wanted = mac(self.serial, prefix=SAMPLE_PREFIX)
        pid = server.pid
        cpu0 = _cpu_seconds(pid)
        mark = server.log_mark()
        result = operations.run(self.store, "block.allocate", {"block": "lan", "mac": wanted})
        committed = time.monotonic()
        address = result[0]["address"]
        seen = self.watch.wait(f"{wanted},{address}")
        lease = self.rp.udhcpc_lease(self.pair, wanted, timeout=120, tries=60, wait=1)
        bound = time.monotonic()
        _settle(pid)
        cpu = _cpu_seconds(pid) - cpu0
        unanswered = sum(
            1
            for m in server.log_messages(mark)
            if m.startswith("DHCPDISCOVER") and wanted in m and "no address available" in m
        )
        # The jitter spreads the next commit evenly over melanged's poll period.
        pause = GAP + self.rng.uniform(0.0, 0.1) - (time.monotonic() - bound)
        time.sleep(max(0.0, pause))
        return {
            "reloads": self.h.reloads(server, mark),
            "line": seen - committed,
            "lease": bound - committed if lease is not None else None,
            "right": lease is not None and lease.get("ip") == address,
            "cpu": cpu,
            "unanswered": unanswered,
        }

    def _existing_lease(self, n: int) -> float:
        """udhcpc alone, for a reservation dnsmasq has had all along (the client's own cost)."""
        start = time.monotonic()
        lease = self.rp.udhcpc_lease(self.pair, mac(n, prefix=0x02), timeout=30, tries=5, wait=1)
        took = time.monotonic() - start
        if lease is None:
            raise RuntimeError(f"no lease for pre-filled reservation {n}")
        return took


def _latency(sizes: dict) -> str:
    missing = _missing_for_latency()
    if missing:
        return f"(a) skipped: {missing}.\n"
    realparts, harness = _helpers()
    found: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="melange-bench-dhcp-") as tmp:
        with realparts.NetnsPair(SUBNET) as pair:
            for count in sizes["latency"]:
                print(f"[bench]   dhcp latency at {count:,} reservations", file=sys.stderr,
                      flush=True)  # fmt: skip
                workdir = Path(tmp) / f"n{count}"
                workdir.mkdir()
                found[count] = _Latency(
                    pair, realparts, harness, workdir, count, sizes["samples"]
                ).run()
    return _latency_tables(found, sizes)


def _s(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "n/a"
    return f"{seconds:.3f} s" if seconds >= 1 else ms(seconds)


def _latency_tables(found: dict[int, dict], sizes: dict) -> str:
    rows = []
    for count, data in found.items():
        for name, label in (("hostsfile", "no --hostsdir (rewrite + SIGHUP)"),
                            ("hostsdir", "--hostsdir (new file, inotify)")):  # fmt: skip
            m = data["modes"][name]
            rows.append([
                f"{count:,}", label, _s(m["line"]), _s(m["lease"]), m["lease_range"],
                f"{m['cpu']:.2f} s", m["reloads"], m["unanswered"],
                f"{m['samples'] - m['failed']}/{m['samples']}",
            ])  # fmt: skip
    first = table(
        ["reservations", "melanged mode", "commit → line in dnsmasq's files",
         "commit → udhcpc bound", "(min – max)", "dnsmasq CPU per addition", "SIGHUP reloads",
         "unanswered DISCOVERs", "right leases"],
        rows,
    )  # fmt: skip
    ratio_rows = []
    for count, data in found.items():
        full, inc = data["modes"]["hostsfile"], data["modes"]["hostsdir"]
        lease_ratio = full["lease"] / inc["lease"]
        ratio_rows.append([
            f"{count:,}",
            f"{full['line'] / inc['line']:.1f}",
            f"{lease_ratio:.1f}",
            verdict(inc["lease"], 1.0, at_most=True) if count >= TARGET_AT else "—",
            verdict(lease_ratio, 10, at_most=False) if count >= TARGET_AT else "—",
            _s(data["initial"]["seconds"]), f"{data['initial']['cpu']:.2f} s",
            _s(data["floor"]), f"{data['fill']:.1f} s",
        ])  # fmt: skip
    second = table(
        ["reservations", "line: no-hostsdir / hostsdir", "lease: no-hostsdir / hostsdir",
         "hostsdir lease < 1 s", "lease ratio ≥ 10", "initial render + reload",
         "dnsmasq CPU, initial reload", "udhcpc alone (loaded reservation)", "pre-fill"],
        ratio_rows,
    )  # fmt: skip
    dead = [f"{c:,}" for c, d in found.items() if not d["dnsmasq_alive"]]
    note = f"\n\ndnsmasq died at {', '.join(dead)} reservations." if dead else ""
    return (
        f"(a) Medians of {sizes['samples']} samples per mode and size (after one warm-up "
        'sample). "dnsmasq CPU per addition" is dnsmasq\'s utime+stime from before the '
        "allocation to after the client's lease (a reload, or reading the new file, plus the "
        'DHCP exchange). "Unanswered DISCOVERs" counts DISCOVERs dnsmasq logged as "no '
        "address available\" for the sample's MAC (each costs the client a 1 s retry). "
        '"udhcpc alone" is one exchange for a reservation loaded long before (link '
        "set-up, udhcpc and its script included): the floor of the lease column.\n\n"
        f"{first}\n\n{second}{note}\n"
    )


# ---------------------------------------------------------------------------
# (b) full render


def _melange() -> list[str]:
    script = Path(sys.executable).parent / "melange"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "melange_cli.main"]


def _timed_process(argv: list[str], stdout: Path | None, workdir: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process, run under GNU time."""
    report = workdir / "time.out"
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(report), *argv],
            stdout=out, stderr=subprocess.PIPE,
        )  # fmt: skip
        wall = time.perf_counter() - start
    finally:
        if stdout is not None:
            out.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr.decode()[-2000:]}")
    return wall, int(report.read_text().split()[-1]) / 1024


def _mb_verdict(peak: float, target: float = 150) -> str:
    return f"< {target:g} MB: {'met' if peak < target else 'MISSED'}"


def _render(count: int, rounds: int) -> str:
    from sqlalchemy import text

    from melange import operations
    from melange.store import Store

    if not Path("/usr/bin/time").exists():
        return "(b) skipped: GNU time (/usr/bin/time) is not installed.\n"
    sqlite3_cli = shutil.which("sqlite3")
    if sqlite3_cli is None:
        return "(b) skipped: the sqlite3 command-line shell is not installed.\n"
    with tempfile.TemporaryDirectory(prefix="melange-bench-render-") as tmp:
        work = Path(tmp)
        db = work / "melange.db"
        url = f"sqlite:///{db}"
        store = Store(url, release_hold=3600)
        t0 = time.perf_counter()
        operations.run(store, "block.create", {"cidr": "10.16.0.0/12", "name": "big",
                                               "network": NETWORK})  # fmt: skip
        operations.run(store, "block.allocate", {"block": "big", "count": count})
        allocate = time.perf_counter() - t0

        def macs(conn) -> None:
            base = 0x02 << 40
            conn.execute(
                text(f"UPDATE ip_addresses SET mac = {base} + id, active_mac = {base} + id")
            )
            conn.execute(text("UPDATE blocks SET generation = generation + 1"))

        t0 = time.perf_counter()
        store.write(macs)
        update = time.perf_counter() - t0
        store.close()

        melange = _melange()
        commands = {
            "sqlite3": ([sqlite3_cli, "-csv", str(db), RENDER_QUERY], work / "dump.csv"),
            "hosts": ([*melange, "--db", url, "dhcp", "hosts"], work / "hosts.txt"),
            "sync": (
                [
                    *melange,
                    "--db",
                    url,
                    "-o",
                    "plain",
                    "dhcp",
                    "sync",
                    "--hostsfile",
                    str(work / "synced.hosts"),
                ],
                None,
            ),  # fmt: skip
        }
        walls: dict[str, list[float]] = {k: [] for k in commands}
        peaks: dict[str, list[float]] = {k: [] for k in commands}
        keys = list(commands)
        for i in range(rounds + 1):  # the first round is a warm-up (page cache)
            shift = i % len(keys)
            for key in keys[shift:] + keys[:shift]:
                if key == "sync":
                    (work / "synced.hosts").unlink(missing_ok=True)
                argv, out = commands[key]
                wall, peak = _timed_process(argv, out, work)
                if i:
                    walls[key].append(wall)
                    peaks[key].append(peak)
        lines = sum(1 for _ in open(work / "hosts.txt", "rb"))
        same = (work / "hosts.txt").read_bytes() == (work / "synced.hosts").read_bytes()

    w = {k: median(v) for k, v in walls.items()}
    p = {k: max(v) for k, v in peaks.items()}
    base = w["sqlite3"]
    rows = [
        ["`sqlite3 -csv` (same query, baseline)", _s(w["sqlite3"]), "1.00",
         f"{p['sqlite3']:.0f} MB", "—"],
        ["`melange --db URL dhcp hosts > FILE`", _s(w["hosts"]), f"{w['hosts'] / base:.2f}",
         f"{p['hosts']:.0f} MB",
         f"ratio {verdict(w['hosts'] / base, 2, at_most=True)}; "
         f"memory {_mb_verdict(p['hosts'])}"],
        ["`melange dhcp sync --hostsfile F` (writes F)", _s(w["sync"]),
         f"{w['sync'] / base:.2f}", f"{p['sync']:.0f} MB",
         f"memory {_mb_verdict(p['sync'])}"],
    ]  # fmt: skip
    return (
        f"(b) {count:,} reservations (one /12, SQLite file; filled by `block.allocate` "
        f"count={count:,} in {allocate:.1f} s and an UPDATE setting MACs in {update:.1f} s). "
        f"Each command a fresh process, median of {rounds} rounds in rotating order after "
        f"one warm-up round; peak RSS is the largest of the rounds. The baseline runs "
        f"`{RENDER_QUERY}` with `sqlite3 -csv` into a file. The rendered file has "
        f"{lines:,} lines; sync's file is {'byte-identical to' if same else 'DIFFERENT from'} "
        "the `dhcp hosts` output.\n\n"
        + table(["command", "median wall time", "/ sqlite3", "peak RSS", "target"], rows)
        + "\n"
    )


def run(quick: bool) -> str:
    sizes = _sizes(quick)
    parts = [_latency(sizes)]
    print(f"[bench]   dhcp full render of {sizes['render']:,}", file=sys.stderr, flush=True)
    parts.append(_render(sizes["render"], sizes["rounds"]))
    return section(
        "melanged and dnsmasq: time to serve a new reservation; full render",
        "\n\n".join(p.strip().replace("\n", " ") for p in __doc__.split("\n\n")[1:]),
        "\n".join(parts),
    )
