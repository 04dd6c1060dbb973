"""The lean path (melange.lean): direct commands on SQLite without SQLAlchemy.

It runs the same core functions on the SQL shipped in melange/shipped_sqlite.py,
so what it does must be exactly what the full path does: same results, same
rows, same audit trail, on twin stores. What it cannot serve it hands back,
rolled back, and the full path does it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from melange import operations, shipped
from melange.errors import Conflict, NotFound
from melange.lean import BIND, RESULT, LeanStore, NeedsFullPath, sqlite_path
from melange.store import Store

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("blocks", "free_ranges", "ip_addresses", "audit_log", "audit_addresses", "locks")


class FixedClock:
    """One instant for both twins, so their rows match to the microsecond."""

    def now(self) -> datetime:
        return datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _store(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.db"
    full = Store(f"sqlite:///{path}", clock=FixedClock())
    operations.run(full, "block.create", {"cidr": "10.0.0.0/24", "name": "B"})
    operations.run(full, "block.create", {"cidr": "2001:db8::/64", "name": "V6"})
    full.close()
    return path


def _dump(path: Path) -> dict[str, list]:
    with sqlite3.connect(path) as raw:
        return {t: raw.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}  # noqa: S608


STEPS = [
    ("block.allocate", {"block": "B"}),
    ("block.allocate", {"block": "B", "mac": "00:11:22:33:44:55", "hostname": "h1"}),
    ("block.allocate", {"block": "B", "mac": "00:11:22:33:44:55"}),
    ("block.allocate", {"block": "B", "address": "10.0.0.77", "tenant": "t1"}),
    ("block.allocate", {"block": "V6", "mac": "00:00:5e:00:53:af"}),
    ("block.allocate", {"block": "1"}),
    ("ip.show", {"address": "10.0.0.77"}),
    ("ip.show", {"address": "10.0.0.2", "block": "B"}),
    ("ip.show", {"address": "2001:db8::200:5eff:fe00:53af"}),
    ("ip.release", {"address": "10.0.0.2"}),
    ("ip.show", {"address": "10.0.0.2"}),
    ("ip.release", {"address": "10.0.0.77", "now": True}),
    ("ip.release", {"address": "10.0.0.2", "now": True}),
    ("block.allocate", {"block": "B", "address": "10.0.0.77"}),
    ("block.allocate", {"block": "B"}),
]


def test_the_lean_path_writes_and_answers_exactly_what_the_full_path_does(tmp_path):
    lean_path, full_path = _store(tmp_path, "lean"), _store(tmp_path, "full")
    lean = LeanStore(lean_path, clock=FixedClock())
    full = Store(f"sqlite:///{full_path}", clock=FixedClock())
    for name, params in STEPS:
        # Called directly, a lean store that cannot serve raises NeedsFullPath: every
        # step here is served lean.
        assert operations.run(lean, name, dict(params)) == operations.run(full, name, params)
    lean.close()
    full.close()
    assert _dump(lean_path) == _dump(full_path)
    assert len(_dump(lean_path)["audit_log"]) == 2 + 6 + 5


@pytest.mark.parametrize(
    ("name", "params", "error"),
    [
        ("block.allocate", {"block": "nosuch"}, NotFound),
        ("block.allocate", {"block": "B", "address": "10.0.0.0"}, Conflict),
        ("ip.show", {"address": "10.0.0.9"}, NotFound),
        ("ip.release", {"address": "10.0.0.9"}, NotFound),
    ],
)
def test_the_core_refuses_on_the_lean_path_as_on_the_full_one(tmp_path, name, params, error):
    path = _store(tmp_path, "s")
    before = _dump(path)
    lean = LeanStore(path, clock=FixedClock())
    with pytest.raises(error) as lean_error:
        operations.run(lean, name, params)
    lean.close()
    full = Store(f"sqlite:///{path}", clock=FixedClock())
    with pytest.raises(error) as full_error:
        operations.run(full, name, params)
    full.close()
    assert str(lean_error.value) == str(full_error.value)
    assert _dump(path) == before


def test_what_the_lean_path_cannot_serve_is_rolled_back_and_handed_on(tmp_path):
    path = _store(tmp_path, "s")
    full = Store(f"sqlite:///{path}", clock=FixedClock())
    operations.run(full, "policy.create", {"name": "p"})
    operations.run(full, "block.create", {"cidr": "10.1.0.0/24", "name": "P", "policy": "p"})
    full.close()
    before = _dump(path)
    lean = LeanStore(path, clock=FixedClock())
    with pytest.raises(NeedsFullPath):  # a policy's rules are read by SQLAlchemy
        operations.run(lean, "block.allocate", {"block": "P"})
    with pytest.raises(NeedsFullPath):  # --count inserts through SQLAlchemy
        operations.run(lean, "block.allocate", {"block": "B", "count": 3})
    lean.close()
    assert _dump(path) == before
    with pytest.raises(NeedsFullPath):
        LeanStore(tmp_path / "missing.db").run(lambda conn: None, write=True)
    assert not (tmp_path / "missing.db").exists()


def test_a_store_at_another_schema_revision_goes_to_the_full_path(tmp_path):
    path = _store(tmp_path, "s")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0001'")
    with pytest.raises(NeedsFullPath):
        operations.run(LeanStore(path), "ip.show", {"address": "10.0.0.1"})
    done = _melange(path, "block", "allocate", "B")
    assert done.returncode == 6, done.stderr
    assert "db upgrade" in done.stderr


def _melange(path: Path, *args: str, probe: bool = False) -> subprocess.CompletedProcess:
    """A direct melange process; with `probe`, its stderr's last line says whether it
    imported SQLAlchemy."""
    code = (
        "import sys\n"
        "from melange_cli.main import cli\n"
        "code = cli.main(sys.argv[1:], standalone_mode=False)\n"
        "if PROBE:\n"
        "    print(any(m.split('.')[0] == 'sqlalchemy' for m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    ).replace("PROBE", str(probe))
    return subprocess.run(
        [sys.executable, "-c", code, "--db", str(path), "-o", "json", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_a_direct_allocation_and_show_import_no_sqlalchemy(tmp_path):
    path = _store(tmp_path, "s")
    allocated = _melange(path, "block", "allocate", "B", "--mac", "00:11:22:33:44:55", probe=True)
    assert allocated.returncode == 0, allocated.stderr
    assert allocated.stderr.strip().splitlines()[-1] == "False"
    address = json.loads(allocated.stdout)["address"]
    shown = _melange(path, "ip", "show", address, probe=True)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.strip().splitlines()[-1] == "False"
    assert json.loads(shown.stdout)["mac"] == "00:11:22:33:44:55"
    counted = _melange(path, "block", "allocate", "B", "--count", "2", probe=True)
    assert counted.returncode == 0, counted.stderr  # handed to the full path, which imports it
    assert counted.stderr.strip().splitlines()[-1] == "True"
    assert len(json.loads(counted.stdout)) == 2


def test_the_shipped_statements_are_what_the_models_compile_to():
    """Regenerate melange/shipped_sqlite.py and compare: `python -m melange.shipped`
    after changing a hot statement or the models."""
    assert shipped.generate() == shipped.TARGET.read_text(), "run python -m melange.shipped"


def test_the_lean_conversions_are_sqlalchemys():
    from sqlalchemy import Boolean, DateTime
    from sqlalchemy.dialects import sqlite

    from melange.models import Address

    dialect = sqlite.dialect()
    cases = {
        "address": (Address(), [None, 0, 1, 2**32 - 1, 2**128 - 1, 0x20010DB8 << 96]),
        "datetime": (
            DateTime(),
            [None, datetime(2026, 1, 2, 3, 4, 5), datetime(1999, 12, 31, 23, 59, 59, 1)],
        ),
    }
    for kind, (type_, values) in cases.items():
        bind = type_.dialect_impl(dialect).bind_processor(dialect)
        result = type_.dialect_impl(dialect).result_processor(dialect, None)
        for value in values:
            stored = bind(value) if bind else value
            assert BIND[kind](value) == stored
            assert RESULT[kind](stored) == (result(stored) if result else stored)
    boolean = Boolean().dialect_impl(dialect).result_processor(dialect, None)
    for value in (None, 0, 1):
        assert RESULT["boolean"](value) == (boolean(value) if boolean else value)


def test_only_a_plain_sqlite_file_is_served_lean():
    assert sqlite_path("sqlite:////srv/ipam/melange.db") == Path("/srv/ipam/melange.db")
    assert sqlite_path("sqlite:////srv/ipam/a b.db") == Path("/srv/ipam/a b.db")
    for url in (
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:////srv/melange.db?mode=ro",
        "sqlite:///file:melange.db?uri=true",
        "sqlite:////srv/100%25.db",
        "postgresql+psycopg://u@h/melange",
        "mysql+pymysql://u@h/melange",
    ):
        assert sqlite_path(url) is None, url


def test_lean_processes_allocating_at_once_each_get_their_own_address(tmp_path):
    path = _store(tmp_path, "s")
    code = "import sys; from melange_cli.main import main; sys.exit(main())"
    argv = [sys.executable, "-c", code, "--db", str(path), "-o", "plain", "block", "allocate", "B"]
    processes = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    answers = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 8, answers
    addresses = {out.strip() for out, _ in answers}
    assert len(addresses) == 8
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT allocated_count FROM blocks WHERE name = 'B'").fetchone() == (8,)
        assert raw.execute("SELECT count(*) FROM ip_addresses").fetchone() == (8,)
