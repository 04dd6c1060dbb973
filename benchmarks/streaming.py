"""Peak memory of the streamed reads (export, ip list, history) and of the streamed
import on a large store.

A SQLite store of 1,000,000 addresses in one block (200,000 with --quick), made with
the bulk allocation path, then each command run as its own process, directly, through
melanged's socket and over its HTTP API; the peak RSS is the kernel's (getrusage of
the waited-for process), the daemon's its VmHWM. MELANGE_BENCH_OLD names another
checkout (the code before streaming) to run the same commands with, directly.
The import: the store's export imported into a fresh store, directly, through the
socket and over HTTP (one melanged serving both, a process of its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import section, table

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "export": ("export",),
    "export -o csv": ("export", "-o", "csv"),
    "ip list -o json": ("ip", "list", "-o", "json"),
    "ip list -o plain": ("ip", "list", "-o", "plain"),
}
PROBE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run([sys.executable, '-m', 'melange_cli.main', *sys.argv[1:]],"
    " stdout=subprocess.DEVNULL).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
)


def peak(root: Path, args: tuple[str, ...], out: Path | None = None) -> tuple[int, float]:
    """(peak RSS in MB, seconds) of `melange ARGS` run from the checkout `root` (its
    directory the working one: the first on the import path); its output to `out`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    started = time.perf_counter()
    sink = "subprocess.DEVNULL" if out is None else f"open({str(out)!r}, 'wb')"
    probe = PROBE.replace("subprocess.DEVNULL", sink)
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=root, text=True,
                          env={**env, "PYTHONPATH": str(root)}, capture_output=True)  # fmt: skip
    code, mb = done.stdout.split()
    if code != "0":
        raise RuntimeError(f"melange {' '.join(args)} failed: {done.stderr}")
    return int(mb), time.perf_counter() - started


def build(url: str, count: int) -> float:
    from melange import operations
    from melange.store import Store

    started = time.perf_counter()
    store = Store(url)
    store.ensure_schema()
    operations.run(store, "block.create", {"cidr": "10.0.0.0/8", "name": "big", "network": "big"})
    for _ in range(count // 50_000):
        operations.run(store, "block.allocate", {"block": "big", "count": 50_000})
    store.close()
    return time.perf_counter() - started


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def _only(names: str | None) -> list[str]:
    """MELANGE_BENCH_STREAM: the commands to run, comma-separated (all by default;
    `import` for the import)."""
    return [n.strip() for n in names.split(",")] if names else [*COMMANDS, "import"]


def imports(tmp: Path, url: str, old: str | None) -> list[list[str]]:
    """The store's export imported into a fresh store on each channel: the client's
    peak, and the daemon's (VmHWM) for the socket and HTTP."""
    from tests.support.http_daemon import free_port, make_tokens
    from tests.support.socket_daemon import SocketDaemon

    exported = tmp / "export.json"
    mb, seconds = peak(ROOT, ("--db", url, "export"), out=exported)
    size = exported.stat().st_size >> 20
    rows = [[f"export ({size} MB file)", "direct", f"{mb} MB", f"{seconds:.1f} s"]]
    mb, seconds = peak(ROOT, ("--db", f"sqlite:///{tmp / 'direct.db'}", "import", str(exported)))
    row = ["import", "direct", f"{mb} MB", f"{seconds:.1f} s"]
    if old:
        old_mb, old_seconds = peak(Path(old), ("--db", f"sqlite:///{tmp / 'old.db'}", "import",
                                               str(exported)))  # fmt: skip
        row += [f"{old_mb} MB", f"{old_seconds:.1f} s"]
    rows.append(row)
    print(f"streaming: {row}", file=sys.stderr, flush=True)
    for through in ("socket", "HTTP"):
        target = f"sqlite:///{tmp / through}.db"
        token = tmp / "admin-token"
        token.write_text(make_tokens(target)["admin"] + "\n")
        token.chmod(0o600)
        port = free_port()
        with SocketDaemon(target, tmp / f"d-{through}", extra=("--http", f"127.0.0.1:{port}")) as d:
            assert d.proc is not None
            start = _vm_hwm(d.proc.pid)
            api = ("--url", f"http://127.0.0.1:{port}", "--token-file", str(token))
            channel = ("--socket", str(d.socket)) if through == "socket" else api
            mb, seconds = peak(ROOT, (*channel, "import", str(exported)))
            rows.append(["import", through, f"{mb} MB", f"{seconds:.1f} s"])
            rows.append(["(melanged)", through, f"{_vm_hwm(d.proc.pid)} MB (from {start} MB)", ""])
            print(f"streaming: {rows[-2:]}", file=sys.stderr, flush=True)
    return rows


def run(quick: bool) -> str:
    from tests.support.http_daemon import HttpDaemon
    from tests.support.socket_daemon import SocketDaemon

    count = 200_000 if quick else 1_000_000
    chosen = _only(os.environ.get("MELANGE_BENCH_STREAM"))
    commands = {label: COMMANDS[label] for label in chosen if label in COMMANDS}
    old = os.environ.get("MELANGE_BENCH_OLD")
    rows = []
    with tempfile.TemporaryDirectory(prefix="melange-bench-stream-") as name:
        tmp = Path(name)
        url = f"sqlite:///{tmp / 'big.db'}"
        made = build(url, count)
        print(f"streaming: {count} addresses in {made:.0f} s", file=sys.stderr, flush=True)
        for label, args in commands.items():
            mb, seconds = peak(ROOT, ("--db", url, *args))
            row = [label, "direct", f"{mb} MB", f"{seconds:.1f} s"]
            if old:
                old_mb, old_seconds = peak(Path(old), ("--db", url, *args))
                row += [f"{old_mb} MB", f"{old_seconds:.1f} s"]
            rows.append(row)
            print(f"streaming: {row}", file=sys.stderr, flush=True)
        with SocketDaemon(url, tmp / "d") as daemon:
            for label, args in commands.items():
                mb, seconds = peak(ROOT, ("--socket", str(daemon.socket), *args))
                rows.append([label, "socket", f"{mb} MB", f"{seconds:.1f} s"])
            assert daemon.proc is not None
            rows.append(["(melanged)", "socket", f"{_vm_hwm(daemon.proc.pid)} MB", ""])
        with HttpDaemon(url, tmp / "api", tls=False) as api:
            token = tmp / "token"
            token.write_text(api.tokens["reader"] + "\n")
            token.chmod(0o600)
            for label, args in commands.items():
                argv = ("--url", api.url, "--token-file", str(token), *args)
                mb, seconds = peak(ROOT, argv)
                rows.append([label, "HTTP", f"{mb} MB", f"{seconds:.1f} s"])
        if "import" in chosen:
            rows += imports(tmp, url, old)
    header = ["command", "through", "peak RSS", "time"]
    if old:
        header += ["peak RSS before streaming", "time before"]
        rows = [row + [""] * (len(header) - len(row)) for row in rows]
    return section(
        f"Streamed reads and import: peak memory, {count:,} addresses",
        "One SQLite store made with `block allocate --count 50000` batches; each command a "
        "process of its own, output to /dev/null; peak RSS from getrusage (the daemon's "
        "VmHWM). Goal: below 80 MB at 1,000,000 addresses.",
        table(header, rows),
    )
