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
from melange.errors import Conflict, Exhausted, NotFound
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
    ("block.allocate", {"block": "B", "count": 3}),
    ("block.allocate", {"block": "V6", "count": 40, "tenant": "t1"}),
    ("block.allocate", {"block": "B", "count": 1}),
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
    assert len(_dump(lean_path)["audit_log"]) == 2 + 9 + 5
    assert len(_dump(lean_path)["audit_addresses"]) == 2  # the runs of the two --count


def build_hierarchy(url: str) -> None:
    """Blocks that use everything `block show` reads: a parent with a policy (ranges and
    octets), DNS servers, routes and subnets, a subnet of a subnet inheriting them, held
    addresses, and a parent with ten subnets."""
    full = Store(url, clock=FixedClock(), release_hold=3600)

    def run(operation: str, **params):
        return operations.run(full, operation, params)

    run("policy.create", name="edge")
    run("policy.add_range", name="edge", offset=0, length=5)
    run("policy.add_range", name="edge", offset=250, length=3)
    run("policy.add_octet", name="edge", octet=7)
    run(
        "block.create",
        cidr="172.16.0.0/16",
        name="P",
        gateway="172.16.0.1",
        dns=["172.16.0.53", "172.16.0.54"],
        policy="edge",
        domain="lab.example",
    )
    run("route.add", block="P", destination="192.168.0.0/16", gateway="172.16.0.1")
    run("block.create", cidr="172.16.1.0/24", name="S", parent="P")
    run("route.add", block="S", destination="192.168.9.0/24", gateway="172.16.1.1")
    run("block.create", cidr="172.16.1.0/26", name="SS", parent="S", dns=["172.16.1.53"])
    made = run("block.allocate", block="SS", count=4)
    run("ip.release", address=made[1]["address"])
    run("block.create", cidr="172.17.0.0/16", name="WIDE")
    for n in range(10):
        run("block.create", cidr=f"172.17.{n}.0/24", name=f"w{n}", parent="WIDE")
    full.close()


def test_block_show_answers_on_the_lean_path_exactly_what_the_full_path_does(tmp_path):
    path = _store(tmp_path, "s")
    build_hierarchy(f"sqlite:///{path}")
    lean = LeanStore(path, clock=FixedClock(), release_hold=3600)
    full = Store(f"sqlite:///{path}", clock=FixedClock(), release_hold=3600)
    try:
        for ref in ("B", "V6", "P", "S", "SS", "172.16.1.0/26", "w3", "WIDE"):
            shown = operations.run(lean, "block.show", {"block": ref})
            assert shown == operations.run(full, "block.show", {"block": ref}), ref
        inner = operations.run(lean, "block.show", {"block": "SS"})
        assert inner["inherited"] == {"gateway": "P", "policy": "P", "domain": "P", "routes": "P"}
        assert [r["destination"] for r in inner["routes"]] == ["192.168.0.0/16", "192.168.9.0/24"]
        assert inner["dns"] == ["172.16.1.53"] and inner["utilization"]["held"] == 1
        with pytest.raises(NotFound):
            operations.run(lean, "block.show", {"block": "nosuch"})
    finally:
        lean.close()
        full.close()


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


def test_a_count_beyond_the_free_addresses_is_refused_alike_with_addresses_held(tmp_path):
    """--count's capacity check counts the held addresses (a shipped statement) lean."""
    messages = []
    for name in ("lean", "full"):
        path = _store(tmp_path, name)
        full = Store(f"sqlite:///{path}", clock=FixedClock())
        operations.run(full, "block.allocate", {"block": "B", "count": 5})
        operations.run(full, "ip.release", {"address": "10.0.0.3"})
        full.close()
        store = LeanStore(path, clock=FixedClock()) if name == "lean" else full
        before = _dump(path)
        with pytest.raises(Exhausted) as refused:
            operations.run(store, "block.allocate", {"block": "B", "count": 250})
        store.close()
        assert _dump(path) == before
        messages.append(str(refused.value))
    assert messages[0] == messages[1]
    assert "has 249 free addresses" in messages[0]  # 254 usable, 4 allocated, 1 held


def test_allocations_under_a_policy_are_lean_and_the_same_as_on_the_full_path(tmp_path):
    """A policy's rules are read by named statements (melange.blocks.policy_rules)."""
    paths = []
    for name in ("lean", "full"):
        path = _store(tmp_path, name)
        full = Store(f"sqlite:///{path}", clock=FixedClock())
        operations.run(full, "policy.create", {"name": "p"})
        operations.run(full, "policy.add_range", {"name": "p", "offset": 0, "length": 10})
        operations.run(full, "policy.add_octet", {"name": "p", "octet": 12})
        operations.run(full, "block.create", {"cidr": "10.1.0.0/24", "name": "P", "policy": "p"})
        full.close()
        paths.append(path)
    lean = LeanStore(paths[0], clock=FixedClock())
    full = Store(f"sqlite:///{paths[1]}", clock=FixedClock())
    for params in ({"block": "P"}, {"block": "P", "count": 3}, {"block": "P"}):
        assert operations.run(lean, "block.allocate", params) == operations.run(
            full, "block.allocate", params)  # fmt: skip
    lean.close()
    full.close()
    assert _dump(paths[0]) == _dump(paths[1])
    addresses = [row[2] for row in _dump(paths[0])["ip_addresses"]]
    assert len(addresses) == 5 and all(a not in (0, 12) for a in addresses)


def test_what_the_lean_path_cannot_serve_is_rolled_back_and_handed_on(tmp_path):
    path = _store(tmp_path, "s")
    full = Store(f"sqlite:///{path}", clock=FixedClock())
    operations.run(full, "block.create", {"cidr": "10.1.0.0/24", "name": "N", "network": "n1"})
    operations.run(full, "interface.create", {"vif": "vif1", "network": "n1",
                                              "mac": "02:00:00:00:00:01"})  # fmt: skip
    full.close()
    before = _dump(path)
    lean = LeanStore(path, clock=FixedClock())
    with pytest.raises(NeedsFullPath):  # an interface is looked up by SQLAlchemy
        operations.run(lean, "block.allocate", {"block": "N", "interface": "vif1"})
    with pytest.raises(NeedsFullPath):
        operations.run(lean, "block.allocate", {"block": "N", "interface": "vif1", "count": 3})
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
    """A direct melange process; with `probe`, its stderr's last line names the heavy
    libraries it imported (SQLAlchemy, netaddr, socket's enums), and the CLI's command
    modules beyond the one that ran (they load when asked for), as JSON."""
    code = (
        "import sys\n"
        "from melange_cli.main import cli, COMMANDS\n"
        "code = cli.main(sys.argv[1:], standalone_mode=False)\n"
        "if PROBE:\n"
        "    import json\n"
        "    heavy = {'sqlalchemy', 'netaddr', 'socket'} & {m.split('.')[0] for m in sys.modules}\n"
        "    loaded = {module for module, _ in COMMANDS.values()} & set(sys.modules)\n"
        "    heavy |= loaded if len(loaded) > 1 else set()\n"
        "    print(json.dumps(sorted(heavy)), file=sys.stderr)\n"
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


def _imported(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_a_direct_allocation_show_and_release_import_no_sqlalchemy_nor_netaddr(tmp_path):
    path = _store(tmp_path, "s")
    allocated = _melange(path, "block", "allocate", "B", "--mac", "00:11:22:33:44:55", probe=True)
    assert _imported(allocated) == []
    address = json.loads(allocated.stdout)["address"]
    shown = _melange(path, "ip", "show", address, probe=True)
    assert _imported(shown) == []
    assert json.loads(shown.stdout)["mac"] == "00:11:22:33:44:55"
    released = _melange(path, "ip", "release", address, probe=True)
    assert _imported(released) == []
    assert json.loads(released.stdout)["state"] == "held"
    counted = _melange(path, "block", "allocate", "B", "--count", "2", probe=True)
    assert _imported(counted) == []
    assert len(json.loads(counted.stdout)) == 2
    shown_block = _melange(path, "block", "show", "B", probe=True)
    assert _imported(shown_block) == []
    usage = json.loads(shown_block.stdout)["utilization"]
    assert (usage["used"], usage["held"]) == (2, 1)


def test_a_direct_block_show_of_a_parent_and_a_subnet_imports_no_sqlalchemy(tmp_path):
    path = _store(tmp_path, "s")
    build_hierarchy(f"sqlite:///{path}")
    shown = _melange(path, "block", "show", "WIDE", probe=True)
    assert _imported(shown) == []
    assert json.loads(shown.stdout)["utilization"]["subnets"] == 10
    inner = _melange(path, "block", "show", "SS", probe=True)
    assert _imported(inner) == []
    assert json.loads(inner.stdout)["inherited"]["policy"] == "P"


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1", "0.0.0.0", "255.255.255.255", "10.1", "10.0.0.01", "010.0.0.1", "10.0.0.256",
     "1.2.3.4.5", "10.0.0.1/24", "10.0.0.\x00", "::", "::1", "2001:db8::1", "2001:DB8::A",
     "::ffff:10.0.0.1", "::ffff:010.0.0.1", "fe80::1%eth0", "2001:db8:::1", "1:2:3:4:5:6:7:8:9",
     "12345::", "", " 10.0.0.1", "a.b.c.d", "１.2.3.4", "0x1.2.3.4"],
)  # fmt: skip
def test_ip_value_accepts_and_refuses_what_netaddr_does(text):
    """melange.validate.ip_value (no netaddr import) against netaddr with INET_PTON."""
    import netaddr

    from melange.errors import InvalidInput
    from melange.records import ip_text
    from melange.validate import ip_value

    try:
        expected = netaddr.IPAddress(text, 6 if ":" in text else 4, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        expected = None
    if text != text.strip() or not text:
        expected = None  # refused before parsing, as ever
    if expected is None:
        with pytest.raises(InvalidInput):
            ip_value(text)
    else:
        assert ip_value(text) == (int(expected), expected.version)
        assert ip_text(*ip_value(text)) == str(expected)


@pytest.mark.parametrize("kind", shipped.BACKENDS)
def test_the_shipped_statements_are_what_the_models_compile_to(kind):
    """Regenerate melange/shipped_{sqlite,mysql,postgresql}.py and compare: `python -m
    melange.shipped` after changing a hot statement or the models."""
    assert shipped.generate(kind) == shipped.target(kind).read_text(), (
        "run python -m melange.shipped"
    )


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


def test_dhcp_hosts_on_the_lean_path_is_the_full_paths_file_byte_for_byte(tmp_path):
    """More lines than one batch, both families, hostnames, a held address, another
    network; whole and streamed to a sink; a network that no block has is refused alike."""
    from melange import hostlines

    path = _store(tmp_path, "s")
    full = Store(f"sqlite:///{path}", clock=FixedClock(), release_hold=3600)
    operations.run(full, "block.create", {"cidr": "10.64.0.0/16", "name": "big", "network": "n1"})
    operations.run(full, "block.create", {"cidr": "fd00:64::/64", "name": "big6", "network": "n1"})
    operations.run(full, "mac_range.create", {"cidr": "02:64:00:00:00:00/24"})
    operations.run(full, "block.allocate", {"block": "big", "count": hostlines.STREAM_BATCH + 50})
    operations.run(full, "block.allocate", {"block": "big6", "mac": "02:00:00:00:06:01",
                                            "hostname": "six"})  # fmt: skip
    operations.run(full, "block.allocate", {"block": "B", "mac": "02:00:00:00:00:0b",
                                            "hostname": "bee"})  # fmt: skip
    operations.run(full, "block.allocate", {"block": "big", "mac": "02:00:00:00:00:0c"})
    operations.run(full, "ip.release", {"address": "10.64.0.9"})
    lean = LeanStore(path, clock=FixedClock(), release_hold=3600)
    try:
        for params in ({}, {"network": "n1"}):
            whole = operations.run(full, "dhcp.hosts", params)
            assert operations.run(lean, "dhcp.hosts", params) == whole
            chunks: list[bytes] = []
            operations.run(lean, "dhcp.hosts", {**params, "sink": chunks.append})
            assert b"".join(chunks).decode() == whole and len(chunks) >= 2
        assert "02:00:00:00:00:0b,10.0.0.1,bee\n" in operations.run(lean, "dhcp.hosts", {})
        assert "10.0.0.1" not in operations.run(lean, "dhcp.hosts", {"network": "n1"})
        with pytest.raises(NotFound) as lean_error:
            operations.run(lean, "dhcp.hosts", {"network": "nosuch"})
        with pytest.raises(NotFound) as full_error:
            operations.run(full, "dhcp.hosts", {"network": "nosuch"})
        assert str(lean_error.value) == str(full_error.value)
    finally:
        lean.close()
        full.close()


def test_a_direct_dhcp_hosts_imports_no_sqlalchemy_nor_netaddr(tmp_path):
    path = _store(tmp_path, "s")
    _melange(path, "block", "allocate", "B", "--mac", "00:11:22:33:44:55", "--hostname", "h")
    hosts = _melange(path, "dhcp", "hosts", probe=True)
    assert _imported(hosts) == []
    assert json.loads(hosts.stdout) == ["00:11:22:33:44:55,10.0.0.1,h"]
