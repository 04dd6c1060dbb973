"""melanged with a real Kea: how soon an allocation is served, and syncs by difference.

One kea-dhcp4 (Debian's 2.2) serves a /16 in a network namespace, its host
database on PostgreSQL (made by `kea-admin db-init`; MariaDB's schema takes
tens of seconds to make, and reads the same). N reservations are pre-filled in
an SQLite store (`block.allocate` count=N, then one UPDATE giving every address
a MAC) and written to Kea's database by the backend's first sync (timed: N
inserts by difference). Then:

(a) Latency. melanged runs with `--backend kea`; each sample allocates a new
MAC through the core API in this process; the clock starts just after the
commit and stops (i) when the row is in Kea's `hosts` table and (ii) when
busybox udhcpc, started as soon as the row is there, is bound to the address.
Kea's reconfigurations (its DHCP4_DYNAMIC_RECONFIGURATION log lines) are
counted over the samples: there should be none.

(b) One burst. 1,000 more addresses allocated at once; melanged's next pass
(timed in-process, the backend's own `sync`): inserts by difference, one
transaction per batch of 1,000.

(c) The alternative: the same N reservations inline in the subnet, sent to the
same Kea with `config-set` (what a backend without a host database must do on
every change); its wall time, Kea's RSS before and after, and whether Kea
answers DHCP during it.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import mac, median, ms, section, table

SUBNET = "10.79.0.0/16"
GATEWAY = "10.79.0.1"
NETWORK = "net1"
SAMPLE_PREFIX = 0x06


def _sizes(quick: bool) -> dict:
    if quick:
        return {"count": 2_000, "samples": 3}
    return {"count": 50_000, "samples": 7}


def _prefill(url: str, count: int):
    from sqlalchemy import text

    from melange import operations
    from melange.store import Store

    store = Store(url, release_hold=3600)
    operations.run(store, "block.create",
                   {"cidr": SUBNET, "name": "lan", "network": NETWORK, "gateway": GATEWAY})
    operations.run(store, "block.allocate", {"block": "lan", "count": count})

    def macs(conn) -> None:
        base = 0x02 << 40
        conn.execute(text(f"UPDATE ip_addresses SET mac = {base} + id, active_mac = {base} + id"))
        conn.execute(text("UPDATE blocks SET generation = generation + 1"))

    store.write(macs)
    return store


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _kea_pid(server) -> int:
    """kea-dhcp4's own pid (`ip netns exec` execs it, so it is the Popen's)."""
    return server.proc.pid


class _Bench:
    def __init__(self, workdir: Path, sizes: dict) -> None:
        from tests.support import kea as support

        self.k = support
        self.workdir = workdir
        self.count = sizes["count"]
        self.samples = sizes["samples"]
        self.db = support.HostDb("postgresql").ready()
        self.url = f"sqlite:///{workdir / 'store.db'}"
        self.store = _prefill(self.url, self.count)
        self.fragment = workdir / "melange-kea.json"

    def close(self) -> None:
        self.store.close()
        self.db.drop()

    def backend(self, socket: Path | None):
        from melange import dhcp_backend

        options = {"host_db": self.db.url, "config": str(self.fragment)}
        if socket is not None:
            options["control_socket"] = str(socket)
        return dhcp_backend.load("kea", dhcp_backend.Target(options=options))

    def run(self, pair) -> dict:
        found: dict = {}
        first = self.backend(None)
        started = time.perf_counter()
        cpu = time.process_time()
        result = first.sync(self.store)
        found["initial"] = (time.perf_counter() - started, time.process_time() - cpu,
                            result.added)  # fmt: skip
        first.db.close()
        server = self.k.KeaServer(pair, self.workdir, self.fragment).start(timeout=120)
        try:
            found["samples"] = self._latency(pair, server)
            found["burst"] = self._burst(server)
            found["config_set"] = self._config_set(pair, server)
        finally:
            server.stop()
        return found

    def _rows(self, address: int) -> bool:
        from sqlalchemy import create_engine, text

        if not hasattr(self, "_engine"):
            from melange.kea.hostdb import parse_url

            self._engine = create_engine(parse_url(self.db.url))
        with self._engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM hosts WHERE ipv4_address = :a"),
                                {"a": address}).first() is not None  # fmt: skip

    def _latency(self, pair, server) -> list[dict]:
        import netaddr

        from melange import operations
        from tests.support.realparts import udhcpc_lease

        daemon = self.k.KeaMelanged(self.url, self.db.url, self.workdir, fragment=self.fragment,
                                    socket=server.socket).start()  # fmt: skip
        try:
            time.sleep(3)  # its first pass: nothing to change
            before = server.log_count("DHCP4_DYNAMIC_RECONFIGURATION ")
            samples = []
            for n in range(1, self.samples + 1):
                wanted = mac(n, prefix=SAMPLE_PREFIX)
                result = operations.run(self.store, "block.allocate",
                                        {"block": "lan", "mac": wanted})  # fmt: skip
                committed = time.monotonic()
                address = result[0]["address"]
                number = int(netaddr.IPAddress(address))
                while not self._rows(number):
                    if time.monotonic() - committed > 60:
                        raise RuntimeError("the reservation never reached Kea's database")
                    time.sleep(0.005)
                seen = time.monotonic()
                lease = udhcpc_lease(pair, wanted, timeout=60, tries=30, wait=1)
                bound = time.monotonic()
                samples.append({"row": seen - committed,
                                "lease": bound - committed if lease else None,
                                "right": bool(lease) and lease.get("ip") == address})  # fmt: skip
                time.sleep(1.0)
            reconfigured = server.log_count("DHCP4_DYNAMIC_RECONFIGURATION ") - before
            for s in samples:
                s["reconfigured"] = reconfigured
            return samples
        finally:
            daemon.stop()

    def _burst(self, server) -> dict:
        from melange import operations

        backend = self.backend(server.socket)
        backend.sync(self.store)  # in step first
        operations.run(self.store, "block.allocate", {"block": "lan", "count": 1000})

        def macs(conn) -> None:
            from sqlalchemy import text

            base = 0x04 << 40
            conn.execute(text(f"UPDATE ip_addresses SET mac = {base} + id, "
                              f"active_mac = {base} + id WHERE mac IS NULL"))  # fmt: skip

        self.store.write(macs)
        started = time.perf_counter()
        cpu = time.process_time()
        result = backend.sync(self.store)
        took = time.perf_counter() - started
        return {"wall": took, "cpu": time.process_time() - cpu, "added": result.added,
                "reloaded": result.reloaded, "transactions": backend.transactions}  # fmt: skip

    def _config_set(self, pair, server) -> dict:
        """config-set of the same reservations inline (no host database)."""
        import netaddr

        from melange.kea import render
        from tests.support.realparts import udhcpc_lease

        config = server.head()
        rows = self.store.read(lambda conn: render.reservations(conn, NETWORK))
        entries = self.store.read(lambda conn: render.subnet_entries(conn, NETWORK))
        entries[0]["reservations"] = [
            {"hw-address": r.mac.to_bytes(6, "big").hex(":"),
             "ip-address": str(netaddr.IPAddress(r.address, 4)),
             **({"hostname": r.hostname} if r.hostname else {})} for r in rows
        ]  # fmt: skip
        config["subnet4"] = entries
        config["host-reservation-identifiers"] = ["hw-address"]
        pid = _kea_pid(server)
        rss0 = _rss_kb(pid)
        probe: dict = {}
        sample_mac = mac(1, prefix=SAMPLE_PREFIX)

        def client() -> None:
            time.sleep(0.05)
            t0 = time.monotonic()
            lease = udhcpc_lease(pair, sample_mac, timeout=60, tries=30, wait=1)
            probe["lease"] = time.monotonic() - t0 if lease else None

        thread = threading.Thread(target=client)
        started = time.monotonic()
        thread.start()
        answer = server.command("config-set", {"Dhcp4": config})
        took = time.monotonic() - started
        thread.join()
        if answer.get("result") != 0:
            raise RuntimeError(f"config-set refused: {answer.get('text')}")
        return {"wall": took, "rss0": rss0, "rss1": _rss_kb(pid), "reservations": len(rows),
                "probe": probe.get("lease")}  # fmt: skip


def _report(found: dict, sizes: dict) -> str:
    n = sizes["count"]
    wall, cpu, added = found["initial"]
    samples = found["samples"]
    rows = [s["row"] for s in samples]
    leases = [s["lease"] for s in samples if s["lease"] is not None]
    right = sum(s["right"] for s in samples)
    burst = found["burst"]
    cs = found["config_set"]
    lines = [
        ("first sync (inserts by difference)", f"{added:,} rows", f"{wall:.2f} s wall, "
         f"{cpu:.2f} s CPU in melange", ""),
        ("commit → row in Kea's hosts table", f"{len(rows)} samples", f"median {ms(median(rows))}",
         f"max {ms(max(rows))}"),
        ("commit → udhcpc bound", f"{right}/{len(samples)} right address",
         f"median {ms(median(leases)) if leases else '-'}",
         f"Kea reconfigurations: {samples[0]['reconfigured'] if samples else '-'}"),
        ("sync of a 1,000-allocation burst", f"{burst['added']:,} rows",
         f"{burst['wall']:.3f} s wall, {burst['cpu']:.3f} s CPU",
         f"{burst['transactions']} transaction(s); reload: "
         f"{'yes' if burst['reloaded'] else 'no'}"),
        ("config-set, same reservations inline", f"{cs['reservations']:,}",
         f"{cs['wall']:.2f} s", f"Kea RSS {cs['rss0'] // 1024} → {cs['rss1'] // 1024} MB; "
         f"udhcpc started with it bound after "
         f"{ms(cs['probe']) if cs['probe'] is not None else 'never'}"),
    ]  # fmt: skip
    ratio = cs["wall"] / statistics.median(rows) if rows else float("nan")
    body = table(("what", "size", "time", "notes"), lines)
    body += (f"\n\nAt {n:,} reservations: a `config-set` took {ratio:.0f}× the median time "
             "from commit to Kea's table.\n")
    return body


def run(quick: bool) -> str:
    if os.geteuid() != 0:
        return section("Kea", "needs root", "skipped: needs root (network namespaces, Kea)\n")
    from tests.support.realparts import NetnsPair

    sizes = _sizes(quick)
    with tempfile.TemporaryDirectory(prefix="melange-bench-kea-") as tmp:
        bench = _Bench(Path(tmp), sizes)
        try:
            print(f"[bench]   kea at {sizes['count']:,} reservations", file=sys.stderr,
                  flush=True)  # fmt: skip
            with NetnsPair(SUBNET) as pair:
                found = bench.run(pair)
        finally:
            bench.close()
    method = (f"{sizes['count']:,} reservations in Kea's PostgreSQL host database; "
              f"{sizes['samples']} latency samples.")
    return section("melanged and Kea: from allocation to a served lease", method,
                   _report(found, sizes))


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
