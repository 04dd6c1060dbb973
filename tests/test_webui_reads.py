"""The core reads behind the web view: a block's map (melange.blockmap) and the search
box (melange.search), on every backend (the map groups on the stored address's
leading bytes, which each backend must read the same)."""

from __future__ import annotations

import pytest

from melange import blockmap, operations, search
from melange.errors import InvalidInput
from melange.store import Store


@pytest.fixture
def store(store_url):
    opened = Store(store_url)
    yield opened
    opened.close()


def run(store: Store, operation: str, **params):
    return operations.run(store, operation, params)


def read(store: Store, function, *args):
    return store.run(lambda conn: function(conn, *args), write=False)


def test_a_24_has_a_cell_per_address_telling_its_state_mac_and_name(store):
    run(store, "policy.create", name="edge")
    run(store, "policy.add_range", name="edge", offset=-3, length=2)
    run(store, "block.create", cidr="10.0.0.0/24", name="a", network="n1", gateway="10.0.0.1",
        policy="edge")  # fmt: skip
    run(store, "block.allocate", block="a", mac="02:00:00:00:00:01", hostname="web-1")
    run(store, "block.allocate", block="a", mac="02:00:00:00:00:02")
    run(store, "ip.release", address="10.0.0.3")
    shown = read(store, blockmap.block_map, "a")
    cells = {cell["start"]: cell for cell in shown["cells"]}
    assert shown["per_address"] and len(cells) == 256 and shown["range"] == "10.0.0.0/24"
    assert cells["10.0.0.2"]["allocated"] == 1
    assert (cells["10.0.0.2"]["mac"], cells["10.0.0.2"]["hostname"]) == ("02:00:00:00:00:01",
                                                                           "web-1")  # fmt: skip
    assert cells["10.0.0.3"]["held"] == 1
    for address in ("10.0.0.0", "10.0.0.1", "10.0.0.253", "10.0.0.254", "10.0.0.255"):
        assert cells[address]["unusable"] == 1, address
    assert "gateway" in cells["10.0.0.1"]["reason"]
    assert cells["10.0.0.4"]["free"] == 1
    usage = run(store, "block.show", block="a")["utilization"]
    assert shown["totals"] == {"allocated": usage["used"], "held": usage["held"],
                               "unusable": usage["unusable"], "free": usage["free"]}  # fmt: skip


def test_a_16_has_a_cell_per_24_and_opens_one_of_them(store):
    run(store, "block.create", cidr="10.8.0.0/16", name="big", network="n1")
    run(store, "block.allocate", block="big", count=600)
    shown = read(store, blockmap.block_map, "big")
    assert not shown["per_address"] and shown["cell_prefix"] == 24 and len(shown["cells"]) == 256
    first = shown["cells"][0]
    assert first["start"] == "10.8.0.0/24"
    assert (first["allocated"], first["unusable"], first["free"]) == (255, 1, 0)
    assert shown["cells"][2]["allocated"] == 600 - 255 - 256
    assert shown["cells"][-1]["unusable"] == 1  # the broadcast
    usage = run(store, "block.show", block="big")["utilization"]
    assert shown["totals"]["allocated"] == usage["used"] == 600
    assert shown["totals"]["free"] == usage["free"]
    one = read(store, blockmap.block_map, "big", "10.8.2.0/24")
    assert one["per_address"] and one["range"] == "10.8.2.0/24"
    assert sum(cell["allocated"] for cell in one["cells"]) == 600 - 255 - 256
    with pytest.raises(InvalidInput):
        read(store, blockmap.block_map, "big", "10.9.0.0/24")


def test_a_policys_octets_count_in_every_cell(store):
    run(store, "policy.create", name="ends")
    for octet in (0, 255):
        run(store, "policy.add_octet", name="ends", octet=octet)
    run(store, "block.create", cidr="10.9.0.0/22", name="c", policy="ends", gateway="10.9.1.1")
    shown = read(store, blockmap.block_map, "c")
    assert [cell["unusable"] for cell in shown["cells"]] == [2, 3, 2, 2]  # and the gateway
    usage = run(store, "block.show", block="c")["utilization"]
    assert shown["totals"]["unusable"] == usage["unusable"] == 9


def test_an_ipv6_64_has_256_cells_of_a_72(store):
    run(store, "block.create", cidr="2001:db8::/64", name="v6", network="n1")
    run(store, "block.allocate", block="v6", count=3)
    shown = read(store, blockmap.block_map, "v6")
    assert shown["cell_prefix"] == 72 and len(shown["cells"]) == 256
    first, last = shown["cells"][0], shown["cells"][-1]
    assert first["start"] == "2001:db8::/72" and last["start"] == "2001:db8:0:0:ff00::/72"
    assert (first["allocated"], first["unusable"]) == (3, 1)  # the subnet-router anycast
    assert first["free"] == 2**56 - 4 and last["free"] == 2**56


def test_a_parent_maps_its_subnets_addresses(store):
    run(store, "block.create", cidr="10.4.0.0/23", name="parent", network="n1")
    run(store, "block.create", cidr="10.4.1.0/24", name="child", parent="parent")
    run(store, "block.allocate", block="child", count=3)
    shown = read(store, blockmap.block_map, "parent")
    assert [cell["allocated"] for cell in shown["cells"]] == [0, 3]
    assert shown["cells"][1]["unusable"] == 2  # the subnet's network and broadcast


def test_search_reads_an_ip_a_mac_or_a_name(store):
    run(store, "block.create", cidr="10.0.0.0/24", name="edge-a", network="prod_1")
    run(store, "block.create", cidr="10.0.0.0/25", name="edge-b", parent="edge-a")
    run(store, "interface.create", vif="vif-7", network="prod_1", device="hv_3",
        mac="02:00:00:00:00:07")  # fmt: skip
    run(store, "block.allocate", block="edge-b", mac="02:00:00:00:00:09", hostname="Web-1")
    by_ip = read(store, search.search, "10.0.0.2")
    assert by_ip["as"] == "ip"
    assert [(hit["kind"], hit.get("address") or hit.get("cidr")) for hit in by_ip["hits"]] == [
        ("address", "10.0.0.2"), ("block", "10.0.0.0/25"), ("block", "10.0.0.0/24")]  # fmt: skip
    by_mac = read(store, search.search, "02-00-00-00-00-09")
    assert by_mac["as"] == "mac" and [h["kind"] for h in by_mac["hits"]] == ["address"]
    assert by_mac["hits"][0]["hostname"] == "web-1"
    vif_mac = read(store, search.search, "02:00:00:00:00:07")["hits"]
    assert [(h["kind"], h.get("address") or h.get("interface")) for h in vif_mac] == [
        ("address", "10.0.0.1"), ("interface", "vif-7")]  # fmt: skip
    assert [h["address"] for h in read(store, search.search, "WEB")["hits"]] == ["10.0.0.2"]
    assert [h["interface"] for h in read(store, search.search, "HV_")["hits"]] == ["vif-7"]
    assert read(store, search.search, "h%")["hits"] == []  # `%` and `_` are no wildcards
    assert read(store, search.search, "h_")["hits"] == []
    assert [h["kind"] for h in read(store, search.search, "edge-")["hits"]] == ["block", "block"]
    assert read(store, search.search, "prod_")["hits"] == [{"kind": "network",
                                                             "network": "prod_1"}]  # fmt: skip
    for bad in ("", "   ", "x" * 300):
        with pytest.raises(InvalidInput):
            read(store, search.search, bad)
