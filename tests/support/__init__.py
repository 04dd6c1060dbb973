"""Helpers shared by the tests and the benchmarks: real stores, real daemons, real dnsmasq.

Import them as ``from tests.support.realparts import …`` (the repository root is on
the path under pytest and under ``python -m benchmarks``). Modules that do not import
pytest (processes, galera, melanged_harness, socket_daemon, stress) are safe for the
benchmarks to use.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
"""The repository: what child processes get as PYTHONPATH."""
