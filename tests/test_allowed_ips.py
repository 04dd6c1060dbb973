"""Allowed IPs (`interface allow-ip`, `disallow-ip`, `allowed-ips`): Melange v1.0's rules,
what a hold keeps and what freeing takes away, and the way through export and import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from melange import addresses, allowed_ips, blocks, interfaces
from melange.store import Store
from tests.support.cli import Melange, assert_error
from tests.support.clock import FakeClock
from tests.support.sql import dump_store


def _network(melange: Melange) -> None:
    """Network n1 (10.0.0.0/24) with interfaces vif1 (10.0.0.1) and vif2 (10.0.0.2), a VIP
    10.0.0.100 allocated to no interface, and network n2 with the same CIDR."""
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "n1")
    melange.ok("block", "create", "10.0.0.0/24", "--name", "other", "--network", "n2")
    melange.ok("interface", "create", "vif1", "--network", "n1")
    melange.ok("interface", "create", "vif2", "--network", "n1")
    melange.ok("block", "allocate", "web", "--address", "10.0.0.100")
    melange.ok("block", "allocate", "other", "--address", "10.0.0.100")
    melange.ok("block", "allocate", "other", "--address", "10.0.0.7")


def _allowed(melange: Melange, vif: str) -> list[str]:
    return [record["address"] for record in melange.json("interface", "allowed-ips", vif)]


def _listing(melange: Melange) -> list[tuple]:
    return [
        (r["vif_id"], r["addresses"], r["allowed_ips"]) for r in melange.json("interface", "list")
    ]


def _rows(melange: Melange, table: str) -> int:
    """How many rows `table` holds (whatever shows them)."""
    return sum(1 for row in dump_store(melange.db) if row[0] == table)


def test_allow_list_show_and_disallow(melange):
    _network(melange)
    vip = melange.json("interface", "allow-ip", "vif1", "10.0.0.100", "--block", "web")
    assert vip == {"vif_id": "vif1", "address": "10.0.0.100", "block": "web", "network": "n1",
                   "owner": None}  # fmt: skip
    shared = melange.json("interface", "allow-ip", "vif1", "10.0.0.2")  # vif2's own address
    assert shared["owner"] == "vif2" and shared["block"] == "web"
    melange.ok("interface", "allow-ip", "vif2", "10.0.0.100", "--block", "web")
    assert _allowed(melange, "vif1") == ["10.0.0.2", "10.0.0.100"]  # in address order
    assert melange.ok("interface", "allowed-ips", "vif1").splitlines() == [
        "vif1\t10.0.0.2\tweb\tn1\tvif2",
        "vif1\t10.0.0.100\tweb\tn1\t",
    ]
    shown = melange.json("interface", "show", "vif1")
    assert shown["addresses"] == ["10.0.0.1"]
    assert shown["allowed_ips"] == ["10.0.0.2", "10.0.0.100"]
    listed = {r["vif_id"]: r["allowed_ips"] for r in melange.json("interface", "list")}
    assert listed == {"vif1": ["10.0.0.2", "10.0.0.100"], "vif2": ["10.0.0.100"]}
    assert melange.ok("interface", "show", "vif2").rstrip("\n").split("\t")[-1] == "10.0.0.100"
    gone = melange.json("interface", "disallow-ip", "vif1", "10.0.0.100", "--block", "web")
    assert gone == vip
    assert _allowed(melange, "vif1") == ["10.0.0.2"]
    assert _allowed(melange, "vif2") == ["10.0.0.100"]  # another interface's allowance stays


def test_allowing_again_changes_nothing(melange):
    _network(melange)
    first = melange.ok("interface", "allow-ip", "vif1", "10.0.0.2")
    before = dump_store(melange.db)
    assert melange.ok("interface", "allow-ip", "vif1", "10.0.0.2") == first
    after = [row for row in dump_store(melange.db) if not row[0].startswith("audit")]
    assert after == [row for row in before if not row[0].startswith("audit")]
    assert _rows(melange, "allowed_ips") == 1


# (arguments, exit code, words of the message)
REFUSED = [
    (("allow-ip", "vif1", "10.0.0"), 2, "not a valid IP address"),
    (("allow-ip", "vif1", "10.0.0.100"), 2, "several blocks"),  # in web and in other
    (("allow-ip", "vif9", "10.0.0.2"), 3, "no interface 'vif9'"),
    (("allow-ip", "vif1", "10.0.0.77"), 3, "not allocated"),
    (("allow-ip", "vif1", "10.0.0.2", "--block", "typo"), 3, "no block 'typo'"),
    (("allow-ip", "vif1", "10.0.0.7"), 4, "not in interface vif1's network n1"),
    (("allow-ip", "vif1", "10.0.0.1"), 4, "vif1's own address"),
    (("allow-ip", "vif1", "10.0.0.3"), 4, "released"),  # held
    (("disallow-ip", "vif1", "10.0.0.2"), 3, "not allowed on interface vif1"),
    (("disallow-ip", "vif9", "10.0.0.2"), 3, "no interface"),
    (("disallow-ip", "vif1", "::1x"), 2, "not a valid IP address"),
    (("allowed-ips", "vif9"), 3, "no interface"),
]


@pytest.mark.parametrize(("args", "code", "words"), REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_what_the_rules_refuse_changes_nothing(melange, args, code, words):
    _network(melange)
    melange.ok("block", "allocate", "web", "--address", "10.0.0.3")
    melange.ok("ip", "release", "10.0.0.3")
    melange.ok("interface", "allow-ip", "vif2", "10.0.0.100", "--block", "web")
    before = dump_store(melange.db)
    for output in ("plain", "json"):
        result = melange("interface", *args, output=output)
        assert words in assert_error(result, code, as_json=output == "json")
    assert dump_store(melange.db) == before


def test_a_held_address_keeps_its_allowance_hidden_until_restored(melange):
    _network(melange)
    melange.ok("interface", "allow-ip", "vif1", "10.0.0.2")
    melange.ok("interface", "allow-ip", "vif2", "10.0.0.100", "--block", "web")
    melange.ok("ip", "release", "10.0.0.2")
    assert _allowed(melange, "vif1") == []
    assert melange.json("interface", "show", "vif1")["allowed_ips"] == []
    assert _rows(melange, "allowed_ips") == 2  # kept for a restore
    melange.ok("ip", "restore", "10.0.0.2")
    assert _allowed(melange, "vif1") == ["10.0.0.2"]
    # Taken back while held, it stays taken back after the restore.
    melange.ok("ip", "release", "10.0.0.100", "--block", "web")
    melange.ok("interface", "disallow-ip", "vif2", "10.0.0.100", "--block", "web")
    melange.ok("ip", "restore", "10.0.0.100", "--block", "web")
    assert _allowed(melange, "vif2") == []


def test_freeing_the_address_takes_the_allowance_away(melange, tmp_path):
    _network(melange)
    melange.ok("block", "allocate", "web", "--address", "10.0.0.3")
    for vif in ("vif1", "vif2"):
        melange.ok("interface", "allow-ip", vif, "10.0.0.100", "--block", "web")
        melange.ok("interface", "allow-ip", vif, "10.0.0.3")
    melange.ok("ip", "release", "10.0.0.100", "--block", "web", "--now")
    assert _rows(melange, "allowed_ips") == 2
    melange.ok("block", "allocate", "web", "--address", "10.0.0.100")  # a new allocation
    assert _allowed(melange, "vif1") == ["10.0.0.3"]  # the old allowance did not come back
    # Held, then its hold ends and an allocation reclaims it: the allowances go with it.
    melange.ok("ip", "release", "10.0.0.3")
    clock = FakeClock()
    later = Melange(melange.db, melange.env, clock=clock)
    clock.advance(49 * 3600)
    assert later.json("interface", "allowed-ips", "vif1") == []  # expired, not yet reclaimed
    assert later("ip", "restore", "10.0.0.3").exit_code == 3  # an ended hold is gone
    later.ok("block", "allocate", "web", "--address", "10.0.0.3")
    assert _rows(melange, "allowed_ips") == 0
    assert later.json("interface", "allowed-ips", "vif2") == []


def test_deleting_the_interface_or_the_block_takes_allowances_away(melange):
    _network(melange)
    melange.ok("interface", "allow-ip", "vif1", "10.0.0.2")
    melange.ok("interface", "allow-ip", "vif1", "10.0.0.100", "--block", "web")
    melange.ok("interface", "allow-ip", "vif2", "10.0.0.1")
    deleted = melange.json("interface", "delete", "vif1")
    assert deleted["allowed_ips"] == ["10.0.0.2", "10.0.0.100"]  # as it was
    assert _rows(melange, "allowed_ips") == 1  # vif2's, of vif1's released 10.0.0.1
    assert _allowed(melange, "vif2") == []  # held with vif1's release
    restored = melange.json("ip", "restore", "10.0.0.1")
    assert restored["interface"] is None
    assert _allowed(melange, "vif2") == ["10.0.0.1"]
    assert melange.json("interface", "allowed-ips", "vif2")[0]["owner"] is None
    assert_error(melange("block", "delete", "web"), 4)
    melange.ok("block", "delete", "web", "--force")
    assert _rows(melange, "allowed_ips") == 0
    assert melange.json("interface", "show", "vif2")["allowed_ips"] == []


def test_history_names_the_interface_and_the_address(melange):
    _network(melange)
    melange.ok("interface", "allow-ip", "vif1", "10.0.0.2")
    melange.ok("interface", "disallow-ip", "vif1", "10.0.0.2")
    changes = melange.json("history", "--address", "10.0.0.2")
    allowances = [c for c in changes if "allow" in c["command"]]
    assert [c["command"] for c in allowances] == ["interface.allow_ip", "interface.disallow_ip"]
    assert {(c["kind"], c["subject"], c["address"]) for c in allowances} == {
        ("interface", "vif1", "10.0.0.2")
    }
    web = melange.json("block", "show", "web")["id"]
    assert {c["block_id"] for c in allowances} == {web}


def test_export_and_import_keep_allowances(melange, tmp_path):
    _network(melange)
    melange.ok("interface", "allow-ip", "vif1", "10.0.0.2")
    melange.ok("interface", "allow-ip", "vif1", "10.0.0.100", "--block", "web")
    melange.ok("interface", "allow-ip", "vif2", "10.0.0.100", "--block", "web")
    melange.ok("ip", "release", "10.0.0.2")  # held: its allowance travels, hidden
    exported = melange.ok("export")
    assert '"allowed_ips": [{"address": "10.0.0.2", "cidr": "10.0.0.0/24"}' in exported
    for fmt, text in (("json", exported), ("csv", melange.ok("export", "-o", "csv"))):
        path = tmp_path / f"export.{fmt}"
        path.write_text(text)
        fresh = Melange(tmp_path / f"fresh-{fmt}.db", melange.env)
        counts = fresh.json("import", str(path))
        assert counts["allowed_ips"] == 3, fmt
        assert fresh.ok("export") == exported, fmt
        assert _listing(fresh) == _listing(melange)
        fresh.ok("ip", "restore", "10.0.0.2")
        assert _allowed(fresh, "vif1") == ["10.0.0.2", "10.0.0.100"], fmt
    # One network's export takes its interfaces' allowances along.
    assert "allowed_ips" in melange.ok("export", "--network", "n1")
    assert "allowed_ips" not in melange.ok("export", "--network", "n2")


BAD_ALLOWANCES = [
    ({"cidr": "10.0.0.0/24", "address": "10.0.0.9"}, "10.0.0.9 is not an address of block"),
    ({"cidr": "10.9.0.0/24", "address": "10.9.0.1"}, "no block 10.9.0.0/24 in network n1"),
    ({"cidr": "10.0.0.0/24", "address": "10.0.0.1"}, "vif1's own address"),
    ({"cidr": "10.0.0.0/24"}, "malformed allowed IP"),
    ({"cidr": "10.0.0.0/24", "address": "10.0.0.2x"}, "not a valid IP address"),
]


@pytest.mark.parametrize(("entry", "words"), BAD_ALLOWANCES)
def test_an_import_with_a_bad_allowance_imports_nothing(melange, tmp_path, entry, words):
    import json

    _network(melange)
    document = json.loads(melange.ok("export", "--network", "n1"))
    document["interfaces"][0]["allowed_ips"] = [entry]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document, indent=1))
    fresh = Melange(tmp_path / "fresh.db", melange.env)
    fresh.ok("db", "upgrade")
    before = dump_store(fresh.db)
    message = assert_error(fresh("import", str(path)), 2)
    assert words in message and "line " in message
    assert dump_store(fresh.db) == before


def test_interface_list_reads_allowances_in_one_batch(store_url):
    """Each interface's allowed IPs are one more query per page of interfaces, never one
    per interface: listing 27 costs what listing 3 does."""

    def fill(conn) -> None:
        blocks.create(conn, "10.1.0.0/24", network="vms")
        for i in range(30):
            device = "few" if i < 3 else "many"
            interfaces.create(conn, f"vif-{i:02}", network="vms", device=device,
                              mac=f"02:00:00:00:00:{i:02x}")  # fmt: skip
        vip = addresses.allocate(conn, "10.1.0.0/24", address="10.1.0.200")[0]["address"]
        for i in range(30):
            allowed_ips.allow(conn, f"vif-{i:02}", vip)
            allowed_ips.allow(conn, f"vif-{i:02}", f"10.1.0.{(i + 1) % 30 + 1}")

    def counted(store: Store, device: str) -> tuple[int, list[dict]]:
        seen: list[str] = []
        listen = lambda *_args: seen.append("")  # noqa: E731
        event.listen(store.engine, "before_cursor_execute", listen)
        try:
            found = store.read(lambda c: interfaces.list_interfaces(c, device=device))
        finally:
            event.remove(store.engine, "before_cursor_execute", listen)
        return len(seen), found

    store = Store(store_url)
    try:
        store.write(fill)
        few_count, few = counted(store, "few")
        many_count, many = counted(store, "many")
    finally:
        store.close()
    assert few[0]["allowed_ips"] == ["10.1.0.2", "10.1.0.200"]
    assert all(len(record["allowed_ips"]) == 2 for record in many)
    assert many_count == few_count, (few_count, many_count)


def test_the_guide_tells_of_allowed_ips():
    guide = (Path(__file__).parent.parent / "docs" / "guide.md").read_text()
    assert "melange interface allow-ip" in guide and "melange interface disallow-ip" in guide


def test_an_ipv6_address_in_any_spelling(melange):
    """An IPv6 address is found whatever its spelling, shown canonical, and taken back by
    any spelling too (over HTTP it travels in the path, colons and all)."""
    _network(melange)
    melange.ok("block", "create", "2001:db8::/64", "--name", "v6", "--network", "n1")
    melange.ok("block", "allocate", "v6", "--address", "2001:db8::5")
    assert melange.json("interface", "allow-ip", "vif1", "2001:0DB8:0::0005")["address"] == (
        "2001:db8::5"
    )
    assert melange.json("interface", "show", "vif1")["allowed_ips"] == ["2001:db8::5"]
    melange.ok("interface", "disallow-ip", "vif1", "2001:db8:0:0::5")
    assert _allowed(melange, "vif1") == []
