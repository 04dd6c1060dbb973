"""`melange` through melanged's socket against `melange --db` and a bare sqlite3 process.

One SQLite store with block B (a /16), one melanged serving it with --socket
(as tests/support/socket_daemon.py starts it; its watcher runs too). Every command is
a fresh process of this virtualenv: single commands run in rotating order,
round after round after one untimed warm-up round, and medians are compared
with `python -c "import sqlite3; …one insert…"` measured in the same rounds.
Then shell loops (`for i in $(seq N); do melange … block allocate B; done`
in bash) time N allocations through each path. Last, which modules a
socket-mode process imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import bare_sqlite_process, median, ms, rotating_walls, section, table

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("sqlalchemy", "alembic", "rich", "netaddr", "psycopg", "pymysql")


def _sizes(quick: bool) -> dict:
    if quick:
        return {"rounds": 9, "loop": 100, "requests": 50}
    return {"rounds": 11, "loop": 1000, "requests": 200}


def _melange() -> list[str]:
    script = Path(sys.executable).parent / "melange"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "melange_cli.main"]


def _loop(argv: list[str], count: int) -> float:
    """Seconds for `count` runs of argv from a bash for-loop (stops at the first failure)."""
    script = 'for i in $(seq "$1"); do "${@:2}" > /dev/null || exit 1; done'
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script, "loop", str(count), *argv], check=True)
    return time.perf_counter() - start


def _imports(socket_path: str, tmp: Path) -> dict:
    """Modules loaded by a socket-mode `block allocate`, two ways."""
    argv = ["--socket", socket_path, "-o", "plain", "block", "allocate", "B"]
    dump = tmp / "modules.json"
    wrapper = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: json.dump(sorted(sys.modules), open({str(dump)!r}, 'w')))\n"
        f"sys.argv = ['melange', *{argv!r}]\n"
        "from melange_cli.main import main\n"
        "main()\n"
    )
    subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True)
    modules = json.loads(dump.read_text())
    timing = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "melange_cli.main", *argv],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    imported = []
    total_us = 0
    for line in timing.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3:
            continue
        if not fields[0].strip().isdigit():
            continue  # the header line
        imported.append(fields[2].strip())
        total_us += int(fields[0])
    heavy_modules = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    heavy_timed = sorted({n for n in imported if n.split(".")[0] in HEAVY})
    return {
        "modules": len(modules),
        "heavy": heavy_modules,
        "heavy_importtime": heavy_timed,
        "import_ms": total_us / 1000,
    }


def _requests(socket_path: str, count: int) -> float:
    """Median seconds of one allocation request sent from this process."""
    from melange_cli import client

    samples = []
    for _ in range(count):
        start = time.perf_counter()
        client.call(socket_path, "block.allocate", {"block": "B"})
        samples.append(time.perf_counter() - start)
    return median(samples)


def _direct_imports(url: str, tmp: Path) -> int:
    """How many sqlalchemy modules a direct-mode `block allocate` loads, for contrast."""
    dump = tmp / "direct-modules.json"
    wrapper = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: json.dump(sorted(sys.modules), open({str(dump)!r}, 'w')))\n"
        f"sys.argv = ['melange', '--db', {url!r}, '-o', 'plain', 'block', 'allocate', 'B']\n"
        "from melange_cli.main import main\n"
        "main()\n"
    )
    subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True)
    return sum(1 for m in json.loads(dump.read_text()) if m.split(".")[0] == "sqlalchemy")


def run(quick: bool) -> str:
    from melange import operations
    from melange.store import Store
    from tests.support.socket_daemon import SocketDaemon

    sizes = _sizes(quick)
    rounds = sizes["rounds"]
    with tempfile.TemporaryDirectory(prefix="melange-bench-socket-") as name:
        tmp = Path(name)
        url = f"sqlite:///{tmp / 'melange.db'}"
        store = Store(url, release_hold=3600)
        operations.run(store, "block.create", {"cidr": "10.0.0.0/16", "name": "B"})
        store.close()
        with SocketDaemon(url, tmp / "daemon") as daemon:
            sock = str(daemon.socket)
            commands = {
                "base": (
                    '`python -c "import sqlite3; …one insert…"` (baseline)',
                    bare_sqlite_process(tmp),
                ),
                "socket": (
                    "`melange --socket S -o plain block allocate B`",
                    [*_melange(), "--socket", sock, "-o", "plain", "block", "allocate", "B"],
                ),
                "direct": (
                    "`melange --db URL -o plain block allocate B`",
                    [*_melange(), "--db", url, "-o", "plain", "block", "allocate", "B"],
                ),
            }
            times = rotating_walls({k: argv for k, (_, argv) in commands.items()}, rounds)
            print(f"[bench]   socket: {sizes['loop']} allocations in a shell loop, each way",
                  file=sys.stderr, flush=True)  # fmt: skip
            loops = {
                "socket": _loop(commands["socket"][1], sizes["loop"]),
                "direct": _loop(commands["direct"][1], sizes["loop"]),
            }
            request = _requests(sock, sizes["requests"])
            imports = _imports(sock, tmp)
            direct_sqla = _direct_imports(url, tmp)
            alive = daemon.alive()
        check = Store(url, release_hold=3600)
        allocated = operations.run(check, "block.show", {"block": "B"})
        check.close()

    medians = {key: median(values) for key, values in times.items()}
    base = medians["base"]
    rows = [
        [label, ms(medians[key]), f"{medians[key] / base:.1f}",
         f"{medians['direct'] / medians[key]:.2f}"]
        for key, (label, _) in commands.items()
    ]  # fmt: skip
    single = table(["command", "median wall time", "/ baseline", "direct / this"], rows)
    n = sizes["loop"]
    loop_rows = [
        ["through the socket", f"{loops['socket']:.1f} s", ms(loops["socket"] / n)],
        ["direct (`--db URL`)", f"{loops['direct']:.1f} s", ms(loops["direct"] / n)],
        ["direct / socket", f"{loops['direct'] / loops['socket']:.2f}", ""],
    ]
    loop = table([f"{n:,} allocations, bash loop", "total", "per call"], loop_rows)
    single += (
        f"\n\nOne `block.allocate` request from this (already running) process through "
        f"`melange_cli.client.call`, no process start: median {ms(request)} of "
        f"{sizes['requests']}; the rest of the socket command's wall time is starting "
        "Python, click and the CLI."
    )
    heavy = ", ".join(imports["heavy"]) or "none"
    expected = 2 * (rounds + 1) + 2 * n + 3 + sizes["requests"]
    used = _used(allocated)
    notes = (
        f"Socket-mode process (`block allocate` through the socket, run under a wrapper "
        f"that lists `sys.modules` at exit): {imports['modules']} modules loaded; of "
        f"{', '.join(HEAVY)}: {heavy}. `python -X importtime` of the same command lists "
        f"{', '.join(imports['heavy_importtime']) or 'none of them'}; its self times add up "
        f"to {imports['import_ms']:.0f} ms. For contrast, the direct-mode process loads "
        f"{direct_sqla} sqlalchemy modules. Block B holds {used} addresses after the run "
        f"({expected} allocations expected); melanged was "
        f"{'still running' if alive else 'NOT running'} at the end."
    )
    method = " ".join(__doc__.split("\n\n", 1)[1].split())
    return section(
        "Socket mode: melange through melanged against direct store access",
        f"{method} {rounds} timed rounds.",
        f"{single}\n\n{loop}\n\n{notes}",
    )


def _used(record: dict) -> str:
    for key in ("allocated", "allocated_count", "used"):
        if key in record:
            return f"{record[key]:,}"
    utilisation = record.get("utilization") or record.get("utilisation") or {}
    for key in ("allocated", "used"):
        if key in utilisation:
            return f"{utilisation[key]:,}"
    return "?"
