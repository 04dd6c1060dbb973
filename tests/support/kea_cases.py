"""The kea backend's end-to-end tests, run by tests/test_kea_mysql.py and
tests/test_kea_postgresql.py (one module per host-database kind, so that xdist runs
them side by side): a real kea-dhcp4 in a network namespace, its host database made
with kea-admin, melanged keeping it in step with the store, and busybox udhcpc taking
leases from it.

Kea starts once per module (the module's `kea` fixture, from `kea_fixture`); each test
has a store of its own and empties Kea's hosts table and leases first."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from melange.kea import hostdb, render
from tests.support.cli import Melange
from tests.support.kea import HostDb, KeaMelanged, KeaServer, _sql, host_rows
from tests.support.melanged_harness import wait_until
from tests.support.realparts import NetnsPair, require_root, udhcpc_lease

MAC = "02:00:00:00:00:05"
BIG_MAC = 0x021000000000


class Setup:
    def __init__(self, kind: str, url: str, name: str, kea: KeaServer) -> None:
        self.kind, self.url, self.name, self.kea = kind, url, name, kea
        self.pair = kea.pair
        self.fragment = kea.fragment

    def rows(self) -> set[tuple[str, str, int]]:
        return host_rows(self.kind, self.name)

    def reconfigurations(self) -> int:
        return self.kea.log_count("DHCP4_DYNAMIC_RECONFIGURATION ")


def kea_fixture(kind: str):
    """The module-scoped `kea` fixture of a test module for one host-database kind."""

    @pytest.fixture(scope="module")
    def kea(tmp_path_factory):
        require_root()
        work = tmp_path_factory.mktemp(f"kea-{kind}")
        db = HostDb(kind)
        try:
            db.ready()
            fragment = work / "melange-kea.json"
            members = {"host-reservation-identifiers": ["hw-address"],
                       "hosts-databases": [hostdb.stanza(hostdb.parse_url(db.url))],
                       "subnet4": []}  # fmt: skip
            fragment.write_text(json.dumps(members)[1:-1] + "\n")
            with NetnsPair() as pair:
                server = KeaServer(pair, work, fragment).start()
                try:
                    yield Setup(kind, db.url, db.name, server)
                finally:
                    server.stop()
        finally:
            db.drop()

    return kea


@pytest.fixture
def setup(kea: Setup) -> Setup:
    """A clean Kea: no host rows, no leases, running."""
    if not kea.kea.alive():
        kea.kea.start()
    _sql(kea.kind, "DELETE FROM hosts", kea.name)
    kea.kea.command("lease4-wipe")
    return kea


@pytest.fixture
def store(tmp_path: Path) -> Melange:
    config = tmp_path / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 0\n")
    env = {"MELANGE_CONFIG": str(config), "MELANGE_DB": None, "MELANGE_SOCKET": None,
           "MELANGE_URL": None, "MELANGE_OUTPUT": None}  # fmt: skip
    return Melange(tmp_path / "melange.db", env)


def _daemon(store: Melange, setup: Setup, tmp_path: Path, **kw) -> KeaMelanged:
    return KeaMelanged(f"sqlite:///{store.db}", setup.url, tmp_path, fragment=setup.fragment,
                       socket=setup.kea.socket, **kw)  # fmt: skip


def _net1(store: Melange) -> None:
    store.ok("block", "create", "10.77.0.0/24", "--name", "net1-v4", "--network", "net1",
             "--gateway", "10.77.0.1", "--dns", "10.77.0.1", "--dns", "10.77.0.2")  # fmt: skip


def _sid(cidr: str = "10.77.0.0/24", network: str = "net1") -> int:
    return render.subnet_id(network, cidr)


def test_lease_move_and_release(setup: Setup, store: Melange, tmp_path: Path):
    """Allocate → udhcpc gets the address, router and DNS; a move (the MAC's address
    released, another allocated) → the new address, the old lease deleted; release →
    the row is gone, the lease deleted, and the client gets nothing."""
    _net1(store)
    with _daemon(store, setup, tmp_path, release=True).start() as daemon:
        ip = store.ok("block", "allocate", "net1-v4", "--mac", MAC, "--hostname", "vm5").strip()
        wait_until(lambda: (MAC, ip, _sid()) in setup.rows(), 30, "the reservation")
        lease = udhcpc_lease(setup.pair, MAC)
        assert lease is not None, setup.kea.diagnostics()
        assert (lease["ip"], lease["router"], lease["hostname"]) == (ip, "10.77.0.1", "vm5")
        assert lease["dns"].split() == ["10.77.0.1", "10.77.0.2"]
        assert setup.kea.command("lease4-get", {"ip-address": ip})["result"] == 0

        store.ok("block", "allocate", "net1-v4", "--address", "10.77.0.50", "--mac",
                 "02:00:00:00:00:06")  # fmt: skip
        store.ok("ip", "release", ip)
        moved = store.ok("block", "allocate", "net1-v4", "--mac", MAC, "--address",
                         "10.77.0.60").strip()  # fmt: skip
        assert moved == "10.77.0.60"
        wait_until(lambda: (MAC, moved, _sid()) in setup.rows(), 30, "the moved reservation")
        wait_until(lambda: setup.kea.command("lease4-get", {"ip-address": ip})["result"] == 3,
                   30, "the old lease deleted")  # fmt: skip
        lease = udhcpc_lease(setup.pair, MAC)
        assert lease is not None and lease["ip"] == moved, setup.kea.diagnostics()

        store.ok("ip", "release", moved)
        wait_until(lambda: all(r[0] != MAC for r in setup.rows()), 30, "the row deleted")
        wait_until(lambda: setup.kea.command("lease4-get", {"ip-address": moved})["result"] == 3,
                   30, "the lease deleted")  # fmt: skip
        assert udhcpc_lease(setup.pair, MAC, tries=2) is None
        assert re.search(r"released stale leases: .*" + re.escape(moved), daemon.log())
        assert daemon.alive(), daemon.log()
    assert setup.kea.alive()


def test_two_networks_and_reload_only_for_subnets(setup: Setup, store: Melange,
                                                   tmp_path: Path):  # fmt: skip
    """Two networks: both subnets in Kea's configuration, each reservation under its
    block's subnet id. Allocations reconfigure nothing; a DNS change reloads once."""
    _net1(store)
    store.ok("block", "create", "10.78.0.0/24", "--name", "net2-v4", "--network", "net2",
             "--gateway", "10.78.0.1")  # fmt: skip
    store.ok("route", "add", "net1-v4", "192.168.50.0/24", "--gateway", "10.77.0.1")
    with _daemon(store, setup, tmp_path).start() as daemon:
        a = store.ok("block", "allocate", "net1-v4", "--mac", MAC).strip()
        b = store.ok("block", "allocate", "net2-v4", "--mac", "02:00:00:00:00:07").strip()
        wanted = {(MAC, a, _sid()), ("02:00:00:00:00:07", b, _sid("10.78.0.0/24", "net2"))}
        wait_until(lambda: setup.rows() == wanted, 30, "both reservations")
        assert setup.fragment.stat().st_mode & 0o777 == 0o640  # it holds a password
        subnets = setup.kea.command("config-get")["arguments"]["Dhcp4"]["subnet4"]
        assert sorted((s["id"], s["subnet"]) for s in subnets) == sorted(
            [(_sid(), "10.77.0.0/24"), (_sid("10.78.0.0/24", "net2"), "10.78.0.0/24")])
        lease = udhcpc_lease(setup.pair, MAC, extra_args=["-O", "staticroutes"])
        assert lease is not None and lease["ip"] == a, setup.kea.diagnostics()
        assert lease["staticroutes"].split() == ["192.168.50.0/24", "10.77.0.1",
                                                 "0.0.0.0/0", "10.77.0.1"]  # fmt: skip
        before = setup.reconfigurations()
        for i in range(3):
            store.ok("block", "allocate", "net1-v4", "--mac", f"02:00:00:00:01:{i:02x}")
        wait_until(lambda: len(setup.rows()) == 5, 30, "three more reservations")
        assert setup.reconfigurations() == before  # a pass reloads before it writes rows
        store.ok("block", "update", "net1-v4", "--dns", "10.77.0.9")
        wait_until(lambda: setup.reconfigurations() == before + 1, 30, "one config-reload")
        subnets = setup.kea.command("config-get")["arguments"]["Dhcp4"]["subnet4"]
        options = next(s["option-data"] for s in subnets if s["id"] == _sid())
        assert {"name": "domain-name-servers", "data": "10.77.0.9"}.items() <= next(
            o for o in options if o["name"] == "domain-name-servers").items()
        assert daemon.alive(), daemon.log()


def test_kea_restarted_and_melanged_killed_mid_sync(setup: Setup, store: Melange,
                                                    tmp_path: Path):  # fmt: skip
    """Kea down while the store changes, then back: it serves what the table holds.
    melanged SIGKILLed during a sync of 1,501 rows (two transactions): restarted, the
    table ends equal to the store."""
    _net1(store)
    store.ok("block", "create", "10.90.0.0/20", "--name", "big", "--network", "big")
    setup.kea.stop()
    ip = store.ok("block", "allocate", "net1-v4", "--mac", MAC).strip()
    store.ok("block", "allocate", "big", "--count", "1500")
    with sqlite3.connect(store.db) as conn:  # a MAC each, at once (allocate --count gives none)
        conn.execute("UPDATE ip_addresses SET mac = ? + id, active_mac = ? + id "
                     "WHERE mac IS NULL", (BIG_MAC, BIG_MAC))  # fmt: skip
    daemon = _daemon(store, setup, tmp_path).start()
    try:
        wait_until(lambda: setup.rows(), 60, "a first batch")
        daemon.kill()
    finally:
        daemon.stop()
    setup.kea.start()
    big = json.loads(store.ok("ip", "list", "--block", "big", output="json"))
    expected = {(MAC, ip, _sid())}
    expected |= {(r["mac"], r["address"], _sid("10.90.0.0/20", "big")) for r in big}
    assert len(expected) == 1501
    with _daemon(store, setup, tmp_path).start() as again:
        wait_until(lambda: setup.rows() == expected, 120, "the table equal to the store")
        assert again.alive(), again.log()
    lease = udhcpc_lease(setup.pair, MAC)
    assert lease is not None and lease["ip"] == ip, setup.kea.diagnostics()


def test_unknown_schema_version_stops_melanged(setup: Setup, store: Melange, tmp_path: Path):
    _net1(store)
    version = "14" if setup.kind == "mysql" else "13"
    _sql(setup.kind, "UPDATE schema_version SET version = 99", setup.name)
    try:
        proc = _daemon(store, setup, tmp_path).run_once()
    finally:
        _sql(setup.kind, f"UPDATE schema_version SET version = {version}", setup.name)
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.startswith("Error: Kea host schema 99.0 "), proc.stderr
    assert f"{version}.0" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_config_output_is_accepted_by_kea(setup: Setup, store: Melange, tmp_path: Path):
    """`melange dhcp config --backend kea` included in a Kea configuration passes
    `kea-dhcp4 -t`, and names every IPv4 block that serves DHCP."""
    _net1(store)
    store.ok("route", "add", "net1-v4", "192.168.50.0/24", "--gateway", "10.77.0.1")
    text = store.ok("dhcp", "config", "--backend", "kea")
    assert f'"id": {_sid()}' in text and '"subnet": "10.77.0.0/24"' in text
    fragment = tmp_path / "fragment.json"
    fragment.write_text(text)
    config = tmp_path / "kea-dhcp4.conf"
    config.write_text(setup.kea.config_text().replace(str(setup.fragment), str(fragment)))
    checked = setup.kea.check(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    fragment.write_text(text.replace('"subnet": "10.77.0.0/24"', '"subnet": "10.77.0.0/99"'))
    assert setup.kea.check(config).returncode != 0  # the check does look at the fragment


def test_reconcile_finds_and_fixes_drift(setup: Setup, store: Melange, tmp_path: Path):
    _net1(store)
    ip = store.ok("block", "allocate", "net1-v4", "--mac", MAC).strip()
    options = ["--backend", "kea", "--backend-option", f"host_db={setup.url}"]
    result = store("reconcile", *options, output="json")
    assert result.exit_code == 8, result.stderr
    assert [f["kind"] for f in json.loads(result.stdout)] == ["hosts_missing"]
    fixed = store("reconcile", *options, "--fix", output="json")
    assert fixed.exit_code == 0, fixed.stdout + fixed.stderr
    assert setup.rows() == {(MAC, ip, _sid())}
    _sql(setup.kind, "UPDATE hosts SET ipv4_address = ipv4_address + 1", setup.name)
    result = store("reconcile", *options, output="json")
    assert result.exit_code == 8
    assert [f["kind"] for f in json.loads(result.stdout)] == ["hosts_different"]
    assert store("reconcile", *options, "--fix").exit_code == 0
    assert setup.rows() == {(MAC, ip, _sid())}
