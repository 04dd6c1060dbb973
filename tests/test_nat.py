"""NAT mappings (`nat add`, `nat list`, `nat delete`, and `ip show`'s inside globals and
locals): the rules, what a hold keeps and what freeing takes away, export and import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import event

from melange import addresses, blocks, nat
from melange.store import Store
from tests.support.cli import Melange, assert_error
from tests.support.clock import FakeClock
from tests.support.sql import dump_store

G1, G2 = "203.0.113.5", "203.0.113.6"
L1, L2 = "10.0.0.1", "10.0.0.2"


def _space(melange: Melange) -> None:
    """A public block (G1, G2 allocated) and a private one (L1, L2, and 10.0.0.3 held);
    another network's private block also holds L1."""
    melange.ok("block", "create", "203.0.113.0/24", "--name", "pub", "--network", "edge",
               "--type", "public")  # fmt: skip
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "n1")
    melange.ok("block", "create", "10.0.0.0/24", "--name", "other", "--network", "n2")
    for address in (G1, G2):
        melange.ok("block", "allocate", "pub", "--address", address)
    for address in (L1, L2, "10.0.0.3"):
        melange.ok("block", "allocate", "web", "--address", address)
    melange.ok("block", "allocate", "other", "--address", L1)
    melange.ok("ip", "release", "10.0.0.3")


def _pairs(melange: Melange, *filters: str) -> list[tuple[str, str]]:
    return [(m["inside_global"], m["inside_local"]) for m in melange.json("nat", "list", *filters)]


def _rows(melange: Melange) -> int:
    return sum(1 for row in dump_store(melange.db) if row[0] == "nat_mappings")


def test_add_list_show_and_delete(melange):
    _space(melange)
    first = melange.json("nat", "add", G1, L1, "--local-block", "web")
    assert set(first) == {"inside_global", "inside_global_block", "inside_local",
                          "inside_local_block", "created_at"}  # fmt: skip
    assert (first["inside_global_block"], first["inside_local_block"]) == ("pub", "web")
    melange.ok("nat", "add", G1, L2)
    melange.ok("nat", "add", G2, L2, "--global-block", "pub")
    melange.ok("nat", "add", G2, L1, "--local-block", "other")
    assert _pairs(melange) == [(G1, L1), (G1, L2), (G2, L1), (G2, L2)]
    assert melange.ok("nat", "list", "--address", L2).splitlines() == [
        f"{G1}\tpub\t{L2}\tweb\t{melange.json('nat', 'list')[1]['created_at']}",
        f"{G2}\tpub\t{L2}\tweb\t{melange.json('nat', 'list')[3]['created_at']}",
    ]
    assert _pairs(melange, "--address", L1) == [(G1, L1), (G2, L1)]  # in both blocks
    assert _pairs(melange, "--block", "other") == [(G2, L1)]
    assert _pairs(melange, "--address", "10.0.0.3") == []  # held: no mapping shown
    error = assert_error(melange("nat", "list", "--address", "10.0.0.9"), 3)
    assert "not allocated" in error
    shown = melange.json("ip", "show", G1)
    assert (shown["inside_globals"], shown["inside_locals"]) == ([], [L1, L2])
    local = melange.json("ip", "show", L2, "--block", "web")
    assert (local["inside_globals"], local["inside_locals"]) == ([G1, G2], [])
    assert melange.ok("ip", "show", L2, "--block", "web").rstrip("\n").split("\t")[-2:] == [
        f"{G1},{G2}",
        "",
    ]
    assert "inside_locals" not in melange.json("ip", "list", "--block", "pub")[0]
    removed = melange.json("nat", "delete", G1, L1, "--local-block", "web")
    assert removed == first
    assert _pairs(melange) == [(G1, L2), (G2, L1), (G2, L2)]


def test_adding_again_changes_nothing(melange):
    _space(melange)
    first = melange.ok("nat", "add", G1, L2)
    before = [row for row in dump_store(melange.db) if not row[0].startswith("audit")]
    assert melange.ok("nat", "add", G1, L2) == first  # the same created_at
    assert [row for row in dump_store(melange.db) if not row[0].startswith("audit")] == before


# (arguments, exit code, words of the message)
REFUSED = [
    (("add", "203.0.113", L2), 2, "not a valid IP address"),
    (("add", G1, "10.0.0.2/32"), 2, "not a valid IP address"),
    (("add", G1, L1), 2, "several blocks"),
    (("add", G1, G1), 2, "mapped to itself"),
    (("add", "203.0.113.77", L2), 3, "not allocated"),
    (("add", G1, L2, "--global-block", "typo"), 3, "no block 'typo'"),
    (("add", G1, L2, "--local-block", "pub"), 3, "not allocated in block pub"),
    (("add", G1, "10.0.0.3"), 4, "released"),  # held
    (("add", L2, G2), 4, "maps one way"),  # G2 -> L2 exists
    (("delete", G1, L2), 3, "not mapped"),
    (("delete", G2, "10.0.0.77"), 3, "not allocated"),
    (("list", "--block", "typo"), 3, "no block"),
    (("list", "--address", "10.0.0"), 2, "not a valid IP address"),
]


@pytest.mark.parametrize(("args", "code", "words"), REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_what_the_rules_refuse_changes_nothing(melange, args, code, words):
    _space(melange)
    melange.ok("nat", "add", G2, L2)
    before = dump_store(melange.db)
    for output in ("plain", "json"):
        result = melange("nat", *args, output=output)
        assert words in assert_error(result, code, as_json=output == "json")
    assert dump_store(melange.db) == before


def test_a_held_address_keeps_its_mappings_hidden_until_restored(melange):
    _space(melange)
    melange.ok("nat", "add", G1, L2)
    melange.ok("nat", "add", G2, L2)
    melange.ok("ip", "release", L2)
    assert _pairs(melange) == []
    assert _pairs(melange, "--address", L2) == []  # held: hidden, not unknown
    assert melange.json("ip", "show", G1)["inside_locals"] == []
    held = melange.json("ip", "show", L2, "--block", "web")
    assert (held["state"], held["inside_globals"]) == ("held", [])
    assert _rows(melange) == 2
    melange.ok("ip", "restore", L2)
    assert _pairs(melange) == [(G1, L2), (G2, L2)]
    # Deleted while held, a mapping stays deleted after the restore.
    melange.ok("ip", "release", G2)
    melange.ok("nat", "delete", G2, L2)
    melange.ok("ip", "restore", G2)
    assert _pairs(melange) == [(G1, L2)]


def test_freeing_either_address_takes_the_mapping_away(melange):
    _space(melange)
    melange.ok("nat", "add", G1, L2)
    melange.ok("nat", "add", G2, L2)
    melange.ok("nat", "add", G2, L1, "--local-block", "other")
    melange.ok("ip", "release", G1)
    assert _rows(melange) == 3  # held: kept
    melange.ok("ip", "release", G1, "--now")  # then freed
    assert _rows(melange) == 2
    melange.ok("block", "allocate", "pub", "--address", G1)  # a new allocation of it
    assert _pairs(melange) == [(G2, L1), (G2, L2)]
    # Held, its hold ends and an allocation in its block reclaims it: the mapping goes.
    melange.ok("ip", "release", L2)
    clock = FakeClock()
    later = Melange(melange.db, melange.env, clock=clock)
    clock.advance(49 * 3600)
    later.ok("block", "allocate", "web")
    assert _rows(melange) == 1
    melange.ok("block", "delete", "other", "--force")
    assert _rows(melange) == 0
    assert melange.json("ip", "show", G2)["inside_locals"] == []


def test_history_names_the_mapping_by_either_address(melange):
    _space(melange)
    melange.ok("nat", "add", G1, L2)
    melange.ok("nat", "delete", G1, L2)
    for address in (G1, L2):
        changes = [c for c in melange.json("history", "--address", address)
                   if c["command"].startswith("nat.")]  # fmt: skip
        assert [c["command"] for c in changes] == ["nat.add", "nat.delete"], address
        assert {(c["kind"], c["subject"]) for c in changes} == {("nat", G1)}
    pub = melange.json("block", "show", "pub")["id"]
    in_pub = melange.json("history", "--block", str(pub))
    assert "nat.add" in [c["command"] for c in in_pub]


def test_export_and_import_keep_mappings(melange, tmp_path):
    _space(melange)
    melange.ok("nat", "add", G1, L2)
    melange.ok("nat", "add", G2, L1, "--local-block", "web")
    melange.ok("nat", "add", G2, L1, "--local-block", "other")
    melange.ok("ip", "release", L2)  # held: its mapping travels, hidden
    exported = melange.ok("export")
    document = json.loads(exported)
    assert len(document["nat_mappings"]) == 3
    assert [m["local_network"] for m in document["nat_mappings"]] == ["n1", "n1", "n2"]
    for fmt, text in (("json", exported), ("csv", melange.ok("export", "-o", "csv"))):
        path = tmp_path / f"export.{fmt}"
        path.write_text(text)
        fresh = Melange(tmp_path / f"fresh-{fmt}.db", melange.env)
        assert fresh.json("import", str(path))["nat_mappings"] == 3, fmt
        assert fresh.ok("export") == exported, fmt
        assert fresh.ok("nat", "list") == melange.ok("nat", "list"), fmt
        fresh.ok("ip", "restore", L2)
        assert _pairs(fresh, "--address", L2) == [(G1, L2)], fmt
    # One network's export keeps the mappings with both sides in it (here, none).
    assert "nat_mappings" not in melange.ok("export", "--network", "n1")


def test_the_export_stream_carries_mappings_and_allowances(melange):
    """GET /v1/export sends the document as NDJSON (melange.transfer_stream): read back,
    it is the same export, NAT mappings and allowed IPs included."""
    from melange.transfer_format import export_json
    from melange.transfer_stream import from_ndjson, to_ndjson

    _space(melange)
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    melange.ok("interface", "create", "vif1", "--network", "n1")
    melange.ok("interface", "allow-ip", "vif1", L2)
    melange.ok("nat", "add", G1, L2)
    exported = melange.ok("export")
    document = json.loads(exported)
    assert len(document["nat_mappings"]) == 1 and document["interfaces"][0]["allowed_ips"]
    assert export_json(from_ndjson(list(to_ndjson(document)))) == exported


def test_an_export_without_mappings_is_what_it_was(melange):
    """No NAT mapping, no allowed IP: no new section, no new CSV column, so an older
    melange reads the export, and the export of an older store does not change."""
    _space(melange)
    assert "nat_mappings" not in melange.ok("export")
    header = melange.ok("export", "-o", "csv").splitlines()[0]
    assert header.endswith(",destination,vif_id")


GOOD = {
    "global_network": "edge",
    "global_cidr": "203.0.113.0/24",
    "inside_global": G1,
    "local_network": "n1",
    "local_cidr": "10.0.0.0/24",
    "inside_local": L2,
}
BAD_MAPPINGS = [
    ({"inside_global": "203.0.113.9"}, "203.0.113.9 is not an address of block 203.0.113.0/24"),
    ({"local_network": "n9"}, "no block 10.0.0.0/24 in network n9"),
    ({"global_network": None}, "no block 203.0.113.0/24 in network (none)"),
    ({"inside_local": None}, "not a valid IP address"),
    ({"local_cidr": "10.0.0.0/33"}, "10.0.0.0/33"),
    ({"inside_local": G1, "local_cidr": "203.0.113.0/24", "local_network": "edge"},
     "mapped to itself"),
    ({"created_at": "yesterday"}, "not an ISO 8601 time"),
]  # fmt: skip


@pytest.mark.parametrize(("mapping", "words"), BAD_MAPPINGS)
def test_an_import_with_a_bad_mapping_imports_nothing(melange, tmp_path, mapping, words):
    _space(melange)
    document = json.loads(melange.ok("export"))
    broken = {**GOOD, **mapping}
    document["nat_mappings"] = [{**GOOD, "inside_local": L1, "local_network": "n2"}, broken]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document, indent=1))
    fresh = Melange(tmp_path / "fresh.db", melange.env)
    fresh.ok("db", "upgrade")
    before = dump_store(fresh.db)
    message = assert_error(fresh("import", str(path)), 2)
    assert words in message and "line " in message
    assert dump_store(fresh.db) == before


def test_a_mapping_listed_twice_or_both_ways_is_refused(melange, tmp_path):
    _space(melange)
    melange.ok("nat", "add", G1, L2)
    document = json.loads(melange.ok("export"))
    (mapping,) = document["nat_mappings"]
    reverse = {**mapping, "inside_global": L2, "global_cidr": "10.0.0.0/24",
               "global_network": "n1", "inside_local": G1, "local_cidr": "203.0.113.0/24",
               "local_network": "edge"}  # fmt: skip
    for extra in (mapping, reverse):
        document["nat_mappings"] = [mapping, extra]
        path = tmp_path / "twice.json"
        path.write_text(json.dumps(document))
        fresh = Melange(tmp_path / f"fresh-{len(extra)}-{extra is mapping}.db", melange.env)
        assert "map twice" in assert_error(fresh("import", str(path)), 2)


def test_ip_show_reads_the_links_in_one_query(store_url):
    """`ip show` costs the same whether the address has no mapping or twenty."""

    def fill(conn) -> None:
        blocks.create(conn, "198.51.100.0/24", network="edge", type="public")
        blocks.create(conn, "10.2.0.0/24", network="lan")
        addresses.allocate(conn, "198.51.100.0/24", count=2)
        addresses.allocate(conn, "10.2.0.0/24", count=20)
        for i in range(1, 21):
            nat.add(conn, "198.51.100.1", f"10.2.0.{i}")

    def counted(store: Store, address: str) -> tuple[int, dict]:
        seen: list[str] = []
        listen = lambda *_args: seen.append("")  # noqa: E731
        event.listen(store.engine, "before_cursor_execute", listen)
        try:
            found = store.read(lambda c: addresses.show(c, address))
        finally:
            event.remove(store.engine, "before_cursor_execute", listen)
        return len(seen), found

    store = Store(store_url)
    try:
        store.write(fill)
        busy_count, busy = counted(store, "198.51.100.1")
        idle_count, idle = counted(store, "198.51.100.2")
    finally:
        store.close()
    assert len(busy["inside_locals"]) == 20 and busy["inside_locals"][1] == "10.2.0.2"
    assert idle["inside_locals"] == []
    assert busy_count == idle_count, (idle_count, busy_count)


def test_the_guide_tells_of_nat():
    guide = (Path(__file__).parent.parent / "docs" / "guide.md").read_text()
    assert "melange nat add" in guide and "melange nat list" in guide


def test_links_race_releases_without_a_bug(store_url):
    """Writers mapping, allowing and freeing one address at once: each change happens or
    is refused with its exit code (3 when the address went first), never a bug, and no
    link outlives the address; two writers mapping across two blocks in opposite
    directions both get through."""
    from concurrent.futures import ThreadPoolExecutor

    from melange import operations
    from melange.errors import MelangeError

    stores = [Store(store_url) for _ in range(4)]
    run = operations.run
    run(stores[0], "mac_range.create", {"cidr": "02:16:3e:00:00:00/24"})
    run(stores[0], "block.create", {"cidr": "203.0.113.0/24", "name": "pub", "type": "public"})
    run(stores[0], "block.create", {"cidr": "10.0.0.0/24", "name": "web", "network": "n1"})
    run(stores[0], "interface.create", {"vif": "vif1", "network": "n1"})

    def attempt(store: Store, name: str, params: dict) -> int:
        try:
            run(store, name, params)
        except MelangeError as error:
            return error.exit_code
        return 0

    try:
        with ThreadPoolExecutor(4) as pool:
            for n in range(10, 22):
                g, lo, other = f"203.0.113.{n}", f"10.0.0.{n}", f"203.0.113.{n + 100}"
                for block, address in (("pub", g), ("web", lo), ("pub", other)):
                    run(stores[0], "block.allocate", {"block": block, "address": address})
                jobs = [
                    ("nat.add", {"inside_global": g, "inside_local": lo}),
                    ("interface.allow_ip", {"vif": "vif1", "address": lo}),
                    ("ip.release", {"address": lo, "now": True}),
                    ("nat.add", {"inside_global": lo, "inside_local": other}),
                ]
                codes = list(pool.map(attempt, stores, *zip(*jobs, strict=True)))
                assert codes[2] == 0 and set(codes) <= {0, 3}, (n, codes)
                left = [m for m in run(stores[0], "nat.list", {})
                        if lo in (m["inside_global"], m["inside_local"])]  # fmt: skip
                assert left == [] and run(stores[0], "interface.allowed_ips", {"vif": "vif1"}) == []
    finally:
        for store in stores:
            store.close()
    assert _count_rows(store_url) == 0


def _count_rows(store_url: str) -> int:
    return sum(1 for row in dump_store(store_url) if row[0] in ("nat_mappings", "allowed_ips"))
