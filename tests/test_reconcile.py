"""`melange reconcile`: each kind of drift planted in a real store, hosts file or lease file,
found (exit 8), repaired by --fix where it has one right answer, and gone on a rerun; and a
stale lease in a real dnsmasq released so that an address's new owner gets it at once."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time

import pytest

from tests.support.melanged_harness import cli, env
from tests.support.realparts import SBIN_PATH, udhcpc_lease
from tests.support.sql import execute_sql

pytestmark = pytest.mark.host_local  # reconcile reads this host's files: never over HTTP

MAC1 = "02:00:00:00:00:01"
MAC2 = "02:00:00:00:00:02"
MAC3 = "02:00:00:00:00:03"
LINE1 = f"{MAC1},10.0.0.2,vm1"
LINE2 = f"{MAC2},10.0.0.3"


# -- helpers


def setup_web(melange) -> int:
    """Block web (10.0.0.0/24, gateway .1) with .2 for MAC1 (vm1) and .3 for MAC2; its id."""
    block = melange.json("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1",
                         "--gateway", "10.0.0.1")  # fmt: skip
    melange.ok("block", "allocate", "web", "--mac", MAC1, "--hostname", "vm1")
    melange.ok("block", "allocate", "web", "--mac", MAC2)
    return block["id"]


def reconcile(melange, *args: str) -> tuple[int, list[dict], str]:
    """Run `reconcile -o json ARGS`: exit code, the findings, the stderr."""
    result = melange("reconcile", *args, output="json")
    assert "Traceback" not in result.stderr
    return result.exit_code, json.loads(result.stdout), result.stderr


def assert_drift(melange, *args: str) -> list[dict]:
    """Exit 8 with findings and the one-line error naming how many."""
    code, found, stderr = reconcile(melange, *args)
    assert code == 8, (found, stderr)
    count = len(found)
    assert stderr.splitlines()[0] == (
        f"Error: {count} finding{'s' if count > 1 else ''} of drift; run with --fix"
    )
    assert json.loads(stderr.splitlines()[1])["error"]["code"] == "drift"
    return found


def assert_fixed(melange, *args: str) -> list[dict]:
    """--fix repairs everything (exit 0, each finding marked fixed); a rerun finds nothing."""
    code, found, stderr = reconcile(melange, *args, "--fix")
    assert code == 0, (found, stderr)
    assert found and all(f["fixed"] for f in found), found
    assert reconcile(melange, *args) == (0, [], "")
    return found


def assert_remains(melange, *args: str) -> list[dict]:
    """--fix cannot repair it (it needs an operator): exit 8, marked not fixed."""
    code, found, stderr = reconcile(melange, *args, "--fix")
    assert code == 8, (found, stderr)
    assert stderr.startswith(f"Error: {len(found)} finding")
    assert "after --fix" in stderr.splitlines()[0]
    assert not any(f["fixed"] for f in found), found
    return found


def address_sql(db, ip: str) -> str:
    """An SQL literal of a stored address (16 big-endian bytes) for this backend."""
    raw = int(ipaddress.ip_address(ip)).to_bytes(16, "big").hex()
    if isinstance(db, str) and db.startswith("postgresql"):
        return f"decode('{raw}', 'hex')"
    return f"X'{raw}'"


def plant(melange, values: str, ip: str, *, unchecked: bool = False) -> None:
    """`UPDATE ip_addresses SET values` for the row of address `ip`."""
    run = execute_unchecked if unchecked else execute_sql
    run(
        melange.db,
        f"UPDATE ip_addresses SET {values} WHERE address = {address_sql(melange.db, ip)}",
    )


def execute_unchecked(db, statement: str) -> None:
    """One statement with foreign keys not enforced: a store written around them."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = db if isinstance(db, str) else f"sqlite:///{db}"  # SQLite: not enforced by default
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
        elif engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(statement))
    engine.dispose()


def lease_line(mac: str, ip: str, hostname: str = "*", expires: int | None = None) -> str:
    """One line of dnsmasq's lease file, valid for ten minutes unless `expires` is given."""
    expires = int(time.time()) + 600 if expires is None else expires
    return f"{expires} {mac} {ip} {hostname} 01:{mac}\n"


# -- a clean store, and the housekeeping that is not drift


def test_a_clean_store_is_in_order(melange, tmp_path):
    setup_web(melange)
    melange.ok("interface", "create", "vif1", "--network", "net1", "--mac", MAC3)
    melange.ok("ip", "release", "10.0.0.4")  # an interface without addresses is no drift
    melange.ok("block", "allocate", "web", "--address", "10.0.0.9")  # no MAC: not in the file
    hosts = tmp_path / "hosts"
    hosts.write_text(melange.ok("dhcp", "hosts", "--network", "net1"))
    leases = tmp_path / "leases"
    leases.write_text(
        lease_line(MAC1, "10.0.0.2", "vm1")
        + lease_line(MAC2, "10.0.0.3", expires=0)  # infinite
        + lease_line(MAC3, "10.0.0.4", expires=int(time.time()) - 60)  # expired: ignored
        + lease_line(MAC3, "192.168.7.7")  # outside every block: not melange's
    )
    args = ("--hostsfile", str(hosts), "--leasefile", str(leases))
    assert reconcile(melange, *args) == (0, [], "")
    assert reconcile(melange, *args, "--fix") == (0, [], "")
    plain = melange("reconcile", *args)
    assert (plain.exit_code, plain.stdout, plain.stderr) == (0, "", "")
    assert melange("reconcile", *args, output="table").stdout == "No drift.\n"
    assert melange.json("history")[-1]["command"] == "block.allocate"  # nothing audited


def test_expired_holds_are_purged_and_counted(melange):
    setup_web(melange)
    melange.ok("block", "allocate", "web", "--mac", MAC3)
    for ip in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
        melange.ok("ip", "release", ip)
    aged = address_sql(melange.db, "10.0.0.4")
    execute_sql(melange.db, "UPDATE ip_addresses SET held_until = '2000-01-01 00:00:00' "
                            f"WHERE address <> {aged}")  # fmt: skip
    assert reconcile(melange) == (0, [{"kind": "holds_purged", "count": 2}], "")
    assert execute_sql(melange.db, "SELECT count(*) FROM ip_addresses") == [(1,)]  # live hold
    assert melange.ok("reconcile") == ""  # nothing left to purge
    purge = melange.json("history")[-1]
    assert purge["command"] == "reconcile.purge" and json.loads(purge["outcome"])["purged"] == 2
    # Back in the free ranges, as an allocation's own reclaim would have put them.
    for ip in ("10.0.0.2", "10.0.0.3"):
        value = address_sql(melange.db, ip)
        assert execute_sql(
            melange.db,
            "SELECT count(*) FROM free_ranges WHERE "
            f"first_addr <= {value} AND last_addr >= {value}",
        ) == [(1,)]
    assert melange.ok("block", "allocate", "web").strip() == "10.0.0.2"
    assert reconcile(melange) == (0, [], "")


# -- the store's integrity


def test_a_wrong_allocated_counter_is_corrected(melange):
    block_id = setup_web(melange)
    execute_sql(melange.db, "UPDATE blocks SET allocated_count = 7")
    expected = {"kind": "counter_mismatch", "block": "web", "block_id": block_id,
                "allocated_count": 7, "actual": 2}  # fmt: skip
    assert assert_drift(melange) == [expected]
    assert melange("reconcile").stdout == f"counter_mismatch\tweb\t{block_id}\t7\t2\n"
    assert assert_fixed(melange) == [{**expected, "fixed": True}]
    assert melange.json("report", "utilization")[0]["used"] == 2
    fix = melange.json("history")[-1]
    assert fix["command"] == "reconcile.fix" and fix["via"] in ("cli", "socket")
    assert json.loads(fix["outcome"])["store"] == [{"kind": "counter_mismatch",
                                                    "block_id": block_id}]  # fmt: skip


def test_network_narrows_the_check(melange):
    setup_web(melange)
    melange.ok("block", "create", "10.1.0.0/24", "--name", "other", "--network", "net2")
    execute_sql(melange.db, "UPDATE blocks SET allocated_count = 5 WHERE name = 'other'")
    assert reconcile(melange, "--network", "net1") == (0, [], "")
    assert [f["block"] for f in assert_drift(melange, "--network", "net2")] == ["other"]
    assert melange("reconcile", "--network", "bad,name").exit_code == 2


def test_an_address_outside_its_block_needs_an_operator(melange):
    block_id = setup_web(melange)
    plant(melange, f"address = {address_sql(melange.db, '10.9.0.5')}", "10.0.0.3")
    expected = {"kind": "address_outside_block", "address": "10.9.0.5", "block": "web",
                "block_id": block_id, "mac": MAC2, "state": "allocated",
                "cidr": "10.0.0.0/24"}  # fmt: skip
    assert assert_drift(melange) == [expected]
    assert assert_remains(melange) == [{**expected, "fixed": False}]


def test_addresses_the_gateway_or_a_policy_forbids(melange):
    block_id = setup_web(melange)
    melange.ok("policy", "create", "edge")
    melange.ok("policy", "add-range", "edge", "--offset", "3", "--length", "1")  # .3
    melange.ok("block", "update", "web", "--policy", "edge")  # after .3 was handed out
    execute_sql(melange.db, f"UPDATE blocks SET gateway = {address_sql(melange.db, '10.0.0.2')}")
    common = {"kind": "address_excluded", "block": "web", "block_id": block_id,
              "state": "allocated"}  # fmt: skip
    assert assert_drift(melange) == [
        {**common, "address": "10.0.0.2", "mac": MAC1, "reason": "it is the block's gateway"},
        {**common, "address": "10.0.0.3", "mac": MAC2, "reason": "it is unusable by policy edge"},
    ]
    assert len(assert_remains(melange)) == 2


def test_a_mac_active_twice_in_a_block_needs_an_operator(melange):
    block_id = setup_web(melange)
    plant(melange, f"active_mac = NULL, mac = {int(MAC1.replace(':', ''), 16)}", "10.0.0.3")
    expected = {"kind": "mac_duplicate", "mac": MAC1, "block": "web", "block_id": block_id,
                "addresses": ["10.0.0.2", "10.0.0.3"]}  # fmt: skip
    assert assert_drift(melange) == [expected]
    assert assert_remains(melange) == [{**expected, "fixed": False}]
    plain = f"mac_duplicate\t{MAC1}\tweb\t{block_id}\t10.0.0.2,10.0.0.3\n"
    assert melange("reconcile").stdout == plain


def test_a_missing_mac_guard_is_restored(melange):
    block_id = setup_web(melange)
    plant(melange, "active_mac = NULL", "10.0.0.3")
    assert assert_drift(melange) == [{"kind": "active_mac_missing", "address": "10.0.0.3",
                                      "block": "web", "block_id": block_id,
                                      "mac": MAC2}]  # fmt: skip
    assert_fixed(melange)
    # Allocation by MAC is idempotent again: the MAC's address, not a second one.
    assert melange.ok("block", "allocate", "web", "--mac", MAC2).strip() == "10.0.0.3"


def test_an_address_of_a_deleted_interface_is_unlinked(melange):
    block_id = setup_web(melange)
    melange.ok("interface", "create", "vif1", "--network", "net1", "--mac", MAC3)
    plant(melange, "interface_id = 4242", "10.0.0.4", unchecked=True)
    assert assert_drift(melange) == [{"kind": "interface_missing", "address": "10.0.0.4",
                                      "block": "web", "block_id": block_id,
                                      "interface_id": 4242}]  # fmt: skip
    assert_fixed(melange)
    assert melange.json("ip", "show", "10.0.0.4")["interface"] is None


# -- the hosts file


HOSTS_DRIFT = {
    # name: (file content, expected findings)
    "missing": (f"{LINE1}\n", [{"kind": "hosts_missing", "line": LINE2}]),
    "extra": (f"{LINE1}\n{LINE2}\n{MAC3},10.0.0.9\n",
              [{"kind": "hosts_extra", "line": f"{MAC3},10.0.0.9"}]),
    "different-hostname": (f"{MAC1},10.0.0.2,old\n{LINE2}\n",
                           [{"kind": "hosts_different", "line": f"{MAC1},10.0.0.2,old",
                             "expected": LINE1}]),
    "different-mac": (f"{LINE1}\n{MAC3},10.0.0.3\n",
                      [{"kind": "hosts_different", "line": f"{MAC3},10.0.0.3",
                        "expected": LINE2}]),
    "different-ip": (f"{LINE1}\n{MAC2},10.0.0.7\n",
                     [{"kind": "hosts_different", "line": f"{MAC2},10.0.0.7",
                       "expected": LINE2}]),
}  # fmt: skip


@pytest.mark.sqlite_only  # files, not the store, are at issue
@pytest.mark.parametrize("drift", sorted(HOSTS_DRIFT))
def test_hosts_file_drift_is_found_and_rewritten(melange, tmp_path, drift):
    setup_web(melange)
    content, expected = HOSTS_DRIFT[drift]
    hosts = tmp_path / "hosts"
    hosts.write_text(content)
    assert assert_drift(melange, "--hostsfile", str(hosts)) == expected
    assert_fixed(melange, "--hostsfile", str(hosts))
    assert hosts.read_text() == melange.ok("dhcp", "hosts") == f"{LINE1}\n{LINE2}\n"
    assert hosts.stat().st_mode & 0o777 == 0o644


@pytest.mark.sqlite_only
def test_a_missing_hosts_file_is_written(melange, tmp_path):
    setup_web(melange)
    hosts = tmp_path / "dnsmasq" / "hosts"
    assert assert_drift(melange, "--hostsfile", str(hosts)) == [
        {"kind": "hosts_file_missing", "path": str(hosts), "lines": 2}]  # fmt: skip
    assert_fixed(melange, "--hostsfile", str(hosts))
    assert hosts.read_text() == f"{LINE1}\n{LINE2}\n"


@pytest.mark.sqlite_only
def test_a_hosts_dir_counts_as_part_of_the_hosts_file(melange, tmp_path):
    setup_web(melange)
    hosts, hostsdir = tmp_path / "hosts", tmp_path / "hosts.d"
    hostsdir.mkdir()
    hosts.write_text(f"{LINE1}\n")
    (hostsdir / "melange-1-1").write_text(f"{LINE2}\n")  # as melanged --hostsdir adds lines
    (hostsdir / ".melange-1-2.tmp").write_text("02:00:00:00:00:99,10.0.0.99\n")  # dnsmasq skips
    assert assert_drift(melange, "--hostsfile", str(hosts)) == [
        {"kind": "hosts_missing", "line": LINE2}]  # fmt: skip
    args = ("--hostsfile", str(hosts), "--hostsdir", str(hostsdir))
    assert reconcile(melange, *args) == (0, [], "")
    # An addition is fixed the way melanged would: a new file in the dir, no reload.
    melange.ok("block", "allocate", "web", "--mac", MAC3)
    line3 = f"{MAC3},10.0.0.4"
    assert assert_drift(melange, *args) == [{"kind": "hosts_missing", "line": line3}]
    assert_fixed(melange, *args)
    assert hosts.read_text() == f"{LINE1}\n"
    assert sorted(p.read_text() for p in hostsdir.glob("melange-*")) == [f"{LINE2}\n", f"{line3}\n"]
    # A change rewrites the whole file and empties the dir (dnsmasq re-reads it on SIGHUP).
    melange.ok("ip", "update", "10.0.0.2", "--hostname", "vm9")
    assert [f["kind"] for f in assert_drift(melange, *args)] == ["hosts_different"]
    assert_fixed(melange, *args)
    assert hosts.read_text() == melange.ok("dhcp", "hosts")
    assert list(hostsdir.glob("melange-*")) == []


@pytest.mark.sqlite_only
def test_a_line_in_any_file_dnsmasq_reads_from_the_hosts_dir_is_drift(melange, tmp_path):
    """dnsmasq reads every file of its hosts dir, not only melange's: a line left there
    by hand is found, and --fix (the one listing of the dir, dnsmasq's) removes it."""
    setup_web(melange)
    hosts, hostsdir = tmp_path / "hosts", tmp_path / "hosts.d"
    hostsdir.mkdir()
    hosts.write_text(melange.ok("dhcp", "hosts"))
    stray = hostsdir / "by-hand"
    stray.write_text("02:00:00:00:00:99,10.0.0.99\n")
    backup = hostsdir / "by-hand~"  # an editor's backup: dnsmasq skips it
    backup.write_text("02:00:00:00:00:98,10.0.0.98\n")
    args = ("--hostsfile", str(hosts), "--hostsdir", str(hostsdir))
    assert assert_drift(melange, *args) == [
        {"kind": "hosts_extra", "line": "02:00:00:00:00:99,10.0.0.99"}]  # fmt: skip
    assert_fixed(melange, *args)
    assert not stray.exists() and backup.exists()
    assert hosts.read_text() == melange.ok("dhcp", "hosts")


# -- dnsmasq's leases (files written here; a real dnsmasq further down)


# Lease lines are written when the test runs, not when this module is imported: a lease
# valid for ten minutes from collection had expired by the time a long suite got here.
LEASE_DRIFT = {
    "unknown-address": (
        (MAC3, "10.0.0.50", "vm3"),
        {"kind": "lease_unknown_address", "address": "10.0.0.50", "mac": MAC3, "hostname": "vm3"},
    ),
    "mac-mismatch": (
        (MAC3, "10.0.0.3"),
        {"kind": "lease_mac_mismatch", "address": "10.0.0.3", "mac": MAC3, "expected_mac": MAC2,
         "hostname": None},
    ),
}  # fmt: skip


@pytest.mark.sqlite_only
@pytest.mark.parametrize("drift", sorted(LEASE_DRIFT))
def test_stale_leases_are_found(melange, tmp_path, drift):
    setup_web(melange)
    lease, expected = LEASE_DRIFT[drift]
    leases = tmp_path / "leases"
    leases.write_text(lease_line(MAC1, "10.0.0.2", "vm1") + lease_line(*lease))
    [found] = assert_drift(melange, "--leasefile", str(leases))
    assert found.pop("expires").endswith("Z")
    assert found == expected
    # Only dnsmasq may change its lease file: without --release-interface nothing can.
    assert len(assert_remains(melange, "--leasefile", str(leases))) == 1
    # A lease file that is not there is a mistake in the cron line, not a clean bill.
    result = melange("reconcile", "--leasefile", str(tmp_path / "nope"))
    assert result.exit_code == 3 and "no lease file" in result.stderr


@pytest.mark.sqlite_only
def test_bad_release_interface_is_refused_before_anything(melange, tmp_path):
    setup_web(melange)
    execute_sql(melange.db, "UPDATE blocks SET allocated_count = 7")
    result = melange("reconcile", "--fix", "--release-interface", "-bad name")
    assert result.exit_code == 2 and "interface name" in result.stderr
    assert execute_sql(melange.db, "SELECT allocated_count FROM blocks") == [(7,)]


# -- a real dnsmasq: a moved address and its stale lease


def _reconcile_beside_dnsmasq(pair, db: str, *args: str):
    """`melange reconcile` in dnsmasq's namespace, as dhcp_release must run."""
    environment = {**env(), "PATH": f"{os.environ.get('PATH', '')}:{SBIN_PATH}"}
    argv = [sys.executable, "-m", "melange_cli.main", "--db", db, "-o", "json", "reconcile",
            "--network", "net1", *args]  # fmt: skip
    proc = pair.run_server(argv, check=False, env=environment, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout or "[]")


@pytest.mark.parametrize("release", [True, False], ids=["release-interface", "no-release"])
def test_a_stale_lease_is_released_so_the_new_owner_gets_the_address(
    dnsmasq_server, netns_pair, tmp_path, release
):
    server, pair = dnsmasq_server, netns_pair
    old_mac, new_mac, gone_mac = "02:00:00:00:00:a1", "02:00:00:00:00:b2", "02:00:00:00:00:c3"
    db = f"sqlite:///{tmp_path / 'store.db'}"
    cli(db, "block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
        "--gateway", "10.77.0.1")  # fmt: skip
    moved = cli(db, "block", "allocate", "lan", "--mac", old_mac).strip()
    dropped = cli(db, "block", "allocate", "lan", "--mac", gone_mac).strip()
    mark = server.log_mark()
    cli(db, "dhcp", "sync", "--hostsfile", str(server.hostsfile),
        "--dnsmasq-pidfile", str(server.pidfile), "--network", "net1")  # fmt: skip
    server.wait_for_read(since=mark)
    assert udhcpc_lease(pair, old_mac)["ip"] == moved
    assert udhcpc_lease(pair, gone_mac)["ip"] == dropped
    # The store moves one address to another MAC and frees the other one.
    cli(db, "ip", "release", moved, "--now")
    cli(db, "block", "allocate", "lan", "--mac", new_mac, "--address", moved)
    cli(db, "ip", "release", dropped, "--now")
    files = ("--hostsfile", str(server.hostsfile), "--leasefile", str(server.leasefile))
    code, found = _reconcile_beside_dnsmasq(pair, db, *files)
    assert code == 8
    assert {(f["kind"], f.get("address") or f.get("line")) for f in found} == {
        ("hosts_different", f"{old_mac},{moved}"), ("hosts_extra", f"{gone_mac},{dropped}"),
        ("lease_mac_mismatch", moved), ("lease_unknown_address", dropped),
    }  # fmt: skip
    extra = ("--release-interface", pair.server_if) if release else ()
    code, fixed = _reconcile_beside_dnsmasq(
        pair, db, *files, "--fix", "--dnsmasq-pidfile", str(server.pidfile), *extra
    )
    assert server.alive()
    assert server.hostsfile.read_text() == f"{new_mac},{moved}\n"
    if release:
        assert (code, [f["fixed"] for f in fixed]) == (0, [True] * 4), fixed
        leases = server.lease_text()
        assert old_mac not in leases and gone_mac not in leases, leases
        assert udhcpc_lease(pair, new_mac)["ip"] == moved  # at once, not after the old lease
        assert _reconcile_beside_dnsmasq(pair, db, *files) == (0, [])
    else:
        # The hosts file is right and loaded, but the old lease still holds the address.
        assert code == 8
        assert {f["kind"] for f in fixed if not f["fixed"]} == {
            "lease_mac_mismatch", "lease_unknown_address"}  # fmt: skip
        assert udhcpc_lease(pair, new_mac, tries=2) is None
