"""melanged's HTTP API: allocations over HTTPS against the same call made in-process.

A real melanged in a process of its own (`--http` on a free loopback port, TLS with a
certificate made for the run, its socket too; no hosts file, so no DHCP work, as
`melanged --http` runs unless told otherwise) serves an SQLite store (file, WAL),
with a writer token. First, batches of single allocations through one keep-alive
httpx.Client (`POST /v1/blocks/{block}/allocations` with a MAC of its own) alternate
with batches of the same allocation made in-process (`operations.run(store,
"block.allocate", …)` on a store file of its own, no server): the in-process rate is
the baseline. Then client processes (an httpx.Client each; processes started once and
reused) allocate together for a fixed window after a warm-up: 1 client, 16 on one
shared block, 16 on blocks of their own; the same again against a melanged serving a
PostgreSQL database made for the run. The server's memory and CPU time come from
/proc. Last, whole `melange --url` processes against `melange --socket` processes, in
rotating rounds.

Run as `python -m benchmarks.http WORKER`, this module is one client process: for
each JSON line on stdin ({"url", "block", "warmup", "window", "ca", "token"}) it
opens a connection, prints "ready", waits for the start time and allocates as
benchmarks/worker.py does, over HTTP.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from benchmarks.common import (
    BackendUnavailable,
    mac,
    median,
    ms,
    rotating_walls,
    section,
    store_url,
    table,
    timed,
    verdict,
)
from benchmarks.concurrency import Window, _Blocks, _Pool
from benchmarks.worker import timed_window

CLIENTS = 16
NETBOX_ONE = 6.05  # allocations/s, one client (NetBox 4.4, available-ips POST, 2 cores)
NETBOX_ONE_MEDIAN = 0.168  # its median latency, seconds
NETBOX_SIXTEEN = 7.6  # allocations/s in total from 16 clients on one /16
LAYOUTS = {"one": "1 client", "shared": "16 clients, one shared /16",
           "own": "16 clients, a /16 each"}  # fmt: skip
WORKER_PREFIX = 0x06  # MACs of the client processes; the paired batches use 0x02


def _sizes(quick: bool) -> dict:
    if quick:
        return {"batch": 30, "batches": 4, "window": Window(0.2, 0.5), "repeats": 1, "rounds": 5}
    return {"batch": 100, "batches": 7, "window": Window(0.3, 2.0), "repeats": 3, "rounds": 9}


class Tls(NamedTuple):
    """The server's certificate chain and key, and the CA a client trusts."""

    cert: Path
    key: Path
    ca: Path


def make_tls(directory: Path) -> Tls:
    """A certificate for 127.0.0.1, signed by a CA made for this run (as the tests make it)."""
    from tests.support.http_daemon import make_certificate

    cert, key = make_certificate(directory)
    return Tls(cert, key, directory / "ca.pem")


class Server(NamedTuple):
    """A running melanged: its HTTPS base URL, socket and process id."""

    base: str
    socket: Path
    pid: int


@contextmanager
def serve(url: str, workdir: Path, tls: Tls) -> Iterator[Server]:
    """`melanged --http` serving `url` over HTTPS, and its socket, as a process of its own
    (tests/support/http_daemon.py's MelangedHttp); stopped on exit."""
    from tests.support.http_daemon import MelangedHttp, free_port

    port = free_port()
    sock = workdir / "run" / "melange.sock"
    args = ["--db", url, "--socket", str(sock), "--http", f"127.0.0.1:{port}",
            "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]  # fmt: skip
    daemon = MelangedHttp(workdir, args, port=port, tls=True)
    proc = daemon.start()
    try:
        _wait_healthy(proc, daemon.url(), tls, daemon)
        yield Server(daemon.url(), sock, proc.pid)
    finally:
        daemon.stop()


def _wait_healthy(proc, base: str, tls: Tls, daemon, timeout: float = 30) -> None:
    """Until /v1/health answers over HTTPS, trusting the run's CA."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/v1/health", verify=_verify(str(tls.ca))).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"melanged did not serve {base}: {daemon.log_text()[-2000:]}")
        time.sleep(0.05)


def _verify(ca: str):
    import ssl

    return ssl.create_default_context(cafile=ca)


def writer_token(url: str) -> str:
    """A new writer token's secret, made in the store directly."""
    from melange import operations
    from melange.store import Store

    store = Store(url, release_hold=3600)
    try:
        made = operations.run(store, "token.create", {"name": "bench", "role": "writer"})
    finally:
        store.close()
    return made["token"]


def client(base: str, ca: str, token: str):
    """One keep-alive HTTPS client holding the token."""
    import httpx

    return httpx.Client(base_url=base, verify=_verify(ca), timeout=60,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def allocate(http, block: str, mac_value: str) -> None:
    """One allocation over HTTP; anything but 201 is an error carrying the problem."""
    answer = http.post(f"/v1/blocks/{quote(block, safe='')}/allocations", json={"mac": mac_value})
    if answer.status_code != 201:
        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")


# ---------------------------------------------------------------- the client processes


def _allocate_for(http, block: str, worker: int, serial: int, command: dict) -> dict:
    """Single allocations over HTTPS in the window (benchmarks.worker.timed_window)."""

    def allocate_one(serial: int) -> object:
        return allocate(http, block, mac((worker << 24) | serial, WORKER_PREFIX))

    result = timed_window(command, serial, allocate_one, Exception)
    result["retries"] = 0
    return result


def main(worker: int) -> int:
    """One client process: a run per command line on stdin (see the module's doc)."""
    serial = 0
    for line in sys.stdin:
        command = json.loads(line)
        # A connection per run, closed at its end: no idle connection keeps a server
        # from stopping between runs.
        with client(command["url"], command["ca"], command["token"]) as http:
            http.get("/v1/health").raise_for_status()
            print("ready", flush=True)
            result = _allocate_for(http, command["block"], worker, serial, command)
        serial = result.pop("serial")
        print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------- the measurements


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def melange_client(
    base: str, ca: Path, token_file: Path
) -> tuple[Callable[[str, str], None], Callable]:
    """An allocating function through melange's own HTTP client (what `melange --url`
    runs: one keep-alive connection, standard library only), and its close."""
    from melange_cli.httpclient import Remote

    remote = Remote(base, str(token_file), str(ca))

    def send(block: str, mac_value: str) -> None:
        remote.call("block.allocate", {"block": block, "mac": mac_value})

    return send, remote.close


def _paired(senders: dict[str, Callable[[str, str], None]], sizes: dict, tmp: Path,
            server_pid: int) -> dict:  # fmt: skip
    """Batches of single allocations in-process and through each HTTP client, in
    rotating order, after one untimed batch of each: the median rates, and for each
    client its requests' latencies and the CPU time the server and it spent on them."""
    from melange import operations
    from melange.store import Store

    local = Store(f"sqlite:///{tmp / 'inprocess.db'}", release_hold=3600)
    operations.run(local, "block.create", {"cidr": "10.0.0.0/16", "name": "B"})
    serial = 0
    stats: dict[str, dict] = {}

    def in_process() -> None:
        nonlocal serial
        for _ in range(sizes["batch"]):
            serial += 1
            operations.run(local, "block.allocate", {"block": "B", "mac": mac(serial)})

    def over(key: str) -> Callable[[], None]:
        def batch() -> None:
            nonlocal serial
            record, send = stats[key], senders[key]
            server, client = cpu_seconds(server_pid), time.process_time()
            for _ in range(sizes["batch"]):
                serial += 1
                began = time.perf_counter()
                send("B", mac(serial))
                record["latencies"].append(time.perf_counter() - began)
            record["server"] += cpu_seconds(server_pid) - server
            record["client"] += time.process_time() - client

        return batch

    series = {"in": in_process, **{key: over(key) for key in senders}}
    rates: dict[str, list[float]] = {key: [] for key in series}
    for rounds, timing in ((1, False), (sizes["batches"], True)):  # warm-up, then timed
        stats.update({key: {"latencies": [], "server": 0.0, "client": 0.0} for key in senders})
        for i in range(rounds):
            keys = list(series)[i % len(series) :] + list(series)[: i % len(series)]
            for key in keys:
                took = timed(series[key])
                if timing:
                    rates[key].append(sizes["batch"] / took)
    local.close()
    return {"in": median(rates["in"]), **{key: _client_figures(median(rates[key]), stats[key])
                                          for key in senders}}  # fmt: skip


def _client_figures(rate: float, record: dict) -> dict:
    latencies = sorted(record["latencies"])
    count = len(latencies)
    return {"rate": rate, "p50": median(latencies), "p99": latencies[int(0.99 * (count - 1))],
            "server_cpu": record["server"] / count,
            "client_cpu": record["client"] / count}  # fmt: skip


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a process and its children, from /proc."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    now = peak = 0
    for each in pids:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{each}/status").read_text().splitlines()
        )
        now += int(fields["VmRSS"].split()[0])
        peak += int(fields["VmHWM"].split()[0])
    return now / 1024, peak / 1024


def _windowed(pool: _Pool, server: Server, url: str, creds: dict, sizes: dict) -> dict:
    """Runs of 1 client, 16 on one block, 16 on blocks of their own, interleaved and
    repeated, each on fresh blocks; the server's memory after each 16-client run."""
    blocks = _Blocks(url)
    samples: dict[str, list[dict]] = {layout: [] for layout in LAYOUTS}
    memory: list[tuple[float, float]] = []
    try:
        for _ in range(sizes["repeats"]):
            for layout in LAYOUTS:
                if layout == "one":
                    names = [blocks.create()]
                elif layout == "shared":
                    names = [blocks.create()] * CLIENTS
                else:
                    names = [blocks.create() for _ in range(CLIENTS)]
                targets = [(server.base, name) for name in names]
                samples[layout].append(pool.run_targets(targets, sizes["window"], **creds))
                if layout != "one":
                    memory.append(memory_mb(server.pid))
    finally:
        blocks.store.close()
    return {"samples": samples, "memory": memory}


def _token_file(token: str, tmp: Path) -> Path:
    """The token in a file only its owner reads, as `--token-file` wants it."""
    token_file = tmp / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return token_file


def _processes(server: Server, token_file: Path, tls: Tls, rounds: int) -> dict:
    """Wall times of whole `melange --url` and `melange --socket` allocate processes."""
    from benchmarks.cli import _melange

    tail = ["-o", "plain", "block", "allocate", "B"]
    argvs = {
        "url": [
            *_melange(),
            "--url",
            server.base,
            "--token-file",
            str(token_file),
            "--ca-file",
            str(tls.ca),
            *tail,
        ],
        "socket": [*_melange(), "--socket", str(server.socket), *tail],
    }
    times = rotating_walls(argvs, rounds)
    return {key: median(values) for key, values in times.items()}


def _measure_sqlite(pool: _Pool, tls: Tls, tmp: Path, sizes: dict) -> dict:
    from melange import operations
    from melange.store import Store

    url = f"sqlite:///{tmp / 'server.db'}"
    store = Store(url, release_hold=3600)
    operations.run(store, "block.create", {"cidr": "172.16.0.0/16", "name": "B"})
    store.close()
    token = writer_token(url)
    token_file = _token_file(token, tmp)
    with serve(url, tmp / "sqlite", tls) as server:
        send, close = melange_client(server.base, tls.ca, token_file)
        with client(server.base, str(tls.ca), token) as http:
            print("[bench]   http: one client against in-process", file=sys.stderr, flush=True)
            senders = {"httpx": lambda block, value: allocate(http, block, value), "melange": send}
            paired = _paired(senders, sizes, tmp, server.pid)
        close()
        print("[bench]   http: 1 and 16 clients, SQLite", file=sys.stderr, flush=True)
        creds = {"ca": str(tls.ca), "token": token}
        windowed = _windowed(pool, server, url, creds, sizes)
        print("[bench]   http: melange --url against --socket", file=sys.stderr, flush=True)
        processes = _processes(server, token_file, tls, sizes["rounds"])
    return {"paired": paired, **windowed, "processes": processes}


def _measure_postgresql(pool: _Pool, tls: Tls, tmp: Path, sizes: dict) -> dict:
    with store_url("postgresql", "http") as url:
        token = writer_token(url)
        with serve(url, tmp / "postgresql", tls) as server:
            print("[bench]   http: 1 and 16 clients, PostgreSQL", file=sys.stderr, flush=True)
            creds = {"ca": str(tls.ca), "token": token}
            return _windowed(pool, server, url, creds, sizes)


# ---------------------------------------------------------------- the report


def _ratio(value: float, base: float) -> float:
    """value / base; NaN (printed as such, a missed goal) when no request of the base
    run ended within its window, as on a machine loaded far past its cores."""
    return value / base if base else math.nan


def _rates(samples: dict) -> dict[str, float]:
    return {layout: median([s["rate"] for s in runs]) for layout, runs in samples.items()}


def _single_table(paired: dict) -> str:
    base = paired["in"]
    rows = [["in-process `operations.run` (baseline)", f"{base:,.0f}", ms(1 / base), "1.00",
             f"{base / NETBOX_ONE:,.0f}", "", ""]]  # fmt: skip
    labels = {"httpx": "HTTPS, one keep-alive httpx.Client",
              "melange": "HTTPS, melange's own client (`melange_cli.httpclient`)"}  # fmt: skip
    for key, label in labels.items():
        one = paired[key]
        rows.append([label, f"{one['rate']:,.0f}", f"{ms(one['p50'])} (p99 {ms(one['p99'])})",
                     f"{one['rate'] / base:.2f}", f"**{one['rate'] / NETBOX_ONE:,.0f}**",
                     ms(one["server_cpu"]), ms(one["client_cpu"])])  # fmt: skip
    rows.append(["NetBox 4.4 (available-ips POST, measured elsewhere)", f"{NETBOX_ONE}",
                 ms(NETBOX_ONE_MEDIAN), "", "1", "", ""])  # fmt: skip
    header = ["single allocations, one at a time", "allocations/s", "latency (median)",
              "/ in-process", "/ NetBox", "melanged CPU per request",
              "client CPU per request"]  # fmt: skip
    return table(header, rows) + (
        "\n\nCPU time from /proc: all of melanged's process (TLS, HTTP, token check, "
        "allocation), and this client process's own. The goals are for httpx; melange's "
        "own client (what `melange --url` runs, standard library only, one keep-alive "
        "connection) shows what the client costs."
    )


def _windowed_rows(label: str, measured: dict) -> list[list[object]]:
    rates = _rates(measured["samples"])
    rows = []
    for layout, runs in measured["samples"].items():
        pooled = list(runs)
        rows.append([
            label, LAYOUTS[layout], f"{rates[layout]:,.0f}",
            f"**{_ratio(rates[layout], rates['one']):.2f}**",
            f"{median([s['p50_ms'] for s in pooled]):.1f} / "
            f"{median([s['p99_ms'] for s in pooled]):.1f} / "
            f"{max(s['max_ms'] for s in pooled):.0f}",
            f"{min(s['least_share'] for s in pooled):.2f}",
            sum(s["errors"] for s in pooled),
        ])  # fmt: skip
    return rows


def _goals(sqlite: dict, postgresql: dict | None) -> str:
    paired, processes = sqlite["paired"], sqlite["processes"]
    one = paired["httpx"]["rate"]
    rates = _rates(sqlite["samples"])
    shared_p99 = median([s["p99_ms"] for s in sqlite["samples"]["shared"]])
    peak = max(mb for _, mb in sqlite["memory"] + (postgresql or {}).get("memory", []))
    rows = [
        ["one client / NetBox's one client", f"{one / NETBOX_ONE:,.0f}×",
         verdict(one / NETBOX_ONE, 100, at_most=False)],
        ["one client / in-process", f"{one / paired['in']:.2f}",
         verdict(one / paired["in"], 0.3, at_most=False)],
        ["16 clients on one block / 1 client (SQLite)",
         f"{_ratio(rates['shared'], rates['one']):.2f}",
         verdict(_ratio(rates["shared"], rates["one"]), 1, at_most=False)],
        ["p99 latency, 16 clients on one block (SQLite)", f"{shared_p99:.1f} ms",
         verdict(shared_p99, 50, at_most=True).replace("50", "50 ms")],
    ]  # fmt: skip
    if postgresql is not None:
        pg = _rates(postgresql["samples"])
        rows.append(["16 clients on blocks of their own / 1 client (PostgreSQL)",
                     f"{_ratio(pg['own'], pg['one']):.2f}",
                     verdict(_ratio(pg["own"], pg["one"]), 1.5, at_most=False)])  # fmt: skip
    url_ratio = processes["url"] / processes["socket"]
    rows += [
        ["`melange --url` process / `melange --socket` process", f"{url_ratio:.2f}",
         verdict(url_ratio, 1.5, at_most=True)],
        ["server peak RSS under 16 clients", f"{peak:.0f} MB",
         verdict(peak, 150, at_most=True).replace("150", "150 MB")],
    ]  # fmt: skip
    return table(["goal", "measured", "target"], rows)


def _clients_text(sqlite: dict, postgresql: dict | None) -> str:
    """The client runs' table, the comparison with NetBox's 16 clients, the memory."""
    rows = _windowed_rows("SQLite (file, WAL)", sqlite)
    if postgresql is not None:
        rows += _windowed_rows("PostgreSQL", postgresql)
    header = ["server store", "clients", "allocations/s", "/ 1 client",
              "latency ms: p50 / p99 / max", "least share", "errors"]  # fmt: skip
    memory = "; ".join(
        f"{label}: {max(now for now, _ in m['memory']):.0f} MB resident after the 16-client "
        f"runs, peak {max(peak for _, peak in m['memory']):.0f} MB"
        for label, m in (("SQLite", sqlite), ("PostgreSQL", postgresql))
        if m is not None
    )
    shared = _rates(sqlite["samples"])["shared"]
    return (
        f"{table(header, rows)}\n\n16 clients on one block (SQLite) allocate "
        f"{shared / NETBOX_SIXTEEN:,.0f}× as fast as NetBox's 16 clients on one /16 "
        f"({NETBOX_SIXTEEN}/s, p99 14 s).\n\nServer memory (melanged and its children, "
        f"/proc VmRSS and VmHWM): {memory}."
    )


def _report(sqlite: dict, postgresql: dict | None, notes: list[str], sizes: dict) -> str:
    processes = sqlite["processes"]
    cli = table(
        ["whole process, `-o plain block allocate B`", "median wall time", "/ socket"],
        [["`melange --url https://… --token-file F --ca-file CA`", ms(processes["url"]),
          f"**{processes['url'] / processes['socket']:.2f}**"],
         ["`melange --socket S`", ms(processes["socket"]), "1.00"]],
    )  # fmt: skip
    body = (
        f"{_goals(sqlite, postgresql)}\n\n{_single_table(sqlite['paired'])}\n\n"
        f"{_clients_text(sqlite, postgresql)}\n\n{cli}"
    )
    if notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in notes)
    return section("HTTP API: melanged over HTTPS against in-process allocation",
                   _method(sizes), body)  # fmt: skip


def _method(sizes: dict) -> str:
    window = sizes["window"]
    return (
        f"{' '.join(__doc__.split(chr(10) * 2)[1].split())} Paired batches: "
        f"{sizes['batches']} of {sizes['batch']} allocations each way (in-process, httpx, "
        f"melange's client), the median batch rate; request latency over all timed requests. "
        f"Client runs: "
        f"{window.warmup:g} s warm-up, then the allocations that end within "
        f"{window.window:g} s are counted; median of {sizes['repeats']} interleaved run(s), "
        f"latency pooled over the clients of a run (p50 and p99 medians over the runs, max "
        f'over all); "least share" as in the concurrency section. Whole processes: '
        f"{sizes['rounds']} rounds. NetBox's figures come from a comparable 2-core machine, "
        f"not from this run. Clients, server and database share the machine's "
        f"{os.cpu_count()} CPU(s)."
    )


def run(quick: bool) -> str:
    sizes = _sizes(quick)
    notes: list[str] = []
    pool = _Pool(CLIENTS, module="benchmarks.http")  # started first: settled before timing
    postgresql = None
    try:
        with tempfile.TemporaryDirectory(prefix="melange-bench-http-") as name:
            tmp = Path(name)
            tls = make_tls(tmp)
            sqlite = _measure_sqlite(pool, tls, tmp, sizes)
            try:
                postgresql = _measure_postgresql(pool, tls, tmp, sizes)
            except BackendUnavailable as error:
                notes.append(f"PostgreSQL skipped: {error}")
    finally:
        pool.close()
    return _report(sqlite, postgresql, notes, sizes)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
