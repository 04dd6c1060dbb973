"""Run the benchmarks: `python -m benchmarks [--quick] [NAME...]`, Markdown on stdout.

NAME is one of the modules below (all of them by default). Each module's `run`
returns its section; progress and timings go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime

MODULES = ("concurrency", "flatness", "bulk", "bulkcli", "cli", "dhcp", "socket", "reports",
           "galera", "http", "groupcommit", "startup", "streaming", "webui", "kea",
           "dns")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(MODULES)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    names = args.names or list(MODULES)

    import melange

    started = time.perf_counter()
    print("# Melange benchmarks\n")
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; melange {melange.__version__}; "
        f"Python {platform.python_version()}; {platform.system()} {platform.machine()}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; "
        f"{'quick' if args.quick else 'full'} sizes; modules: {', '.join(names)}.\n",
        flush=True,
    )
    failed: list[str] = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            text = module.run(args.quick)
        except Exception:  # noqa: BLE001  (one failing benchmark does not hide the others)
            failed.append(name)
            text = f"## {name}: FAILED\n\n```\n{traceback.format_exc().strip()}\n```\n"
        took = time.perf_counter() - t0
        print(f"[bench] {name} done in {took:.0f} s", file=sys.stderr, flush=True)
        print(f"{text}\n_{name}: {took:.0f} s._\n", flush=True)
    total = time.perf_counter() - started
    print(
        f"Total wall time: {total:.0f} s; load average {os.getloadavg()[0]:.2f} at the end "
        "(other work on the machine shows up in the figures, less so in the ratios)."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
