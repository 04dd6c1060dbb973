"""Keyset pagination in the core list functions, on every backend: walking every page
equals the unpaged list in the same order, whatever the page size; each page reads at
most `limit + 1` rows (never OFFSET); a cursor is checked before it reaches a driver."""

from __future__ import annotations

import ipaddress

import pytest

from melange import operations, paging
from melange.store import Store

LISTS = ["block.list", "ip.list", "policy.list", "mac_range.list", "interface.list",
         "report.utilization"]


def walk(store: Store, name: str, params: dict, limit: int) -> list:
    items: list = []
    after = None
    for _ in range(10_000):
        page = paging.Page(limit, after)
        got = operations.run(store, name, {**params, "page": page})
        assert len(got) <= limit
        items += got
        if page.next is None:
            return items
        after = paging.decode(paging.encode(page.next))  # as a client sends it back
    raise AssertionError("pagination did not end")


@pytest.fixture
def store(store_url):
    store = Store(store_url)

    def run(operation: str, **params) -> None:
        operations.run(store, operation, params)

    run("mac_range.create", cidr="02:00:00:00:00:00/40")
    run("mac_range.create", cidr="02:00:01:00:00:00/40")
    for n, cidr in enumerate(("10.3.0.0/24", "10.1.0.0/24", "fd00::/120", "10.2.0.0/28")):
        run("block.create", cidr=cidr, name=f"b{n}", network="net" if n < 3 else None)
    run("block.allocate", block="b0", count=9)
    run("block.allocate", block="b2", count=6)
    run("block.allocate", block="b1", count=4)
    run("block.allocate", block="b1", hostname="h")
    # IPv6 addresses whose numbers are IPv4's (::a01:0 is 10.1.0.0's number), and the
    # same IPv4 addresses in a block of another network: the order is by version, then
    # address, then row, and no page may lose or repeat one of them.
    run("block.create", cidr="::a01:0/120", name="low6", network="six")
    run("block.allocate", block="low6", count=3)
    run("block.create", cidr="10.1.0.0/24", name="again", network="other")
    run("block.allocate", block="again", count=3)
    for n in range(5):
        run("policy.create", name=f"p{(n * 7) % 5}")
        run("interface.create", vif=f"vif-{(n * 3) % 5}", network="net", device="d")
    run("ip.release", address="10.3.0.2", block="b0")
    yield store
    store.close()


@pytest.mark.parametrize("limit", [1, 2, 5, 1000])
def test_walking_every_page_equals_the_unpaged_list(store, limit):
    for name in LISTS:
        assert walk(store, name, {}, limit) == operations.run(store, name, {}), (name, limit)
    filtered = [("ip.list", {"block": "b0"}), ("ip.list", {"released": True}),
                ("ip.list", {"network": "net"}), ("block.list", {"network": "net"}),
                ("interface.list", {"device": "d"}), ("report.utilization", {"network": "net"}),
                ("report.utilization", {"above": 1.0})]  # fmt: skip
    for name, params in filtered:
        assert walk(store, name, params, limit) == operations.run(store, name, params)


def test_addresses_are_listed_by_version_then_address(store):
    listed = operations.run(store, "ip.list", {})
    keys = [(ipaddress.ip_address(r["address"]).version, int(ipaddress.ip_address(r["address"])))
            for r in listed]  # fmt: skip
    assert keys == sorted(keys)
    assert [r["block"] for r in listed if r["address"] == "10.1.0.1"] == ["b1", "again"]
    low6 = [ipaddress.ip_address(r["address"]) for r in listed if r["block"] == "low6"]
    assert low6 == [ipaddress.ip_address(f"::a01:{n}") for n in (1, 2, 3)]
    for cursor in ((5, 0, 0), (4, 0), ("4", 0, 0), (4, -1, 0), (True, 0, 0)):
        with pytest.raises(paging.BadCursor):
            operations.run(store, "ip.list", {"page": paging.Page(10, cursor)})


def test_history_pages_walk_back_from_the_newest(store):
    everything = operations.run(store, "history", {"limit": 100_000})
    assert walk(store, "history", {}, 3) == list(reversed(everything))
    for_block = operations.run(store, "history", {"block": "b0"})
    assert walk(store, "history", {"block": "b0"}, 2) == list(reversed(for_block))


def test_a_page_past_the_end_is_empty(store):
    last = operations.run(store, "ip.list", {})[-1]
    page = paging.Page(10, (6, int(ipaddress.ip_address(last["address"])) + 1, 10**6))
    assert operations.run(store, "ip.list", {"page": page}) == []
    assert page.next is None


@pytest.mark.parametrize(
    ("name", "after"),
    [("ip.list", (4, 1)), ("ip.list", ("4", 1, 1)), ("ip.list", (4, -1, 1)),
     ("ip.list", (4, 2**128, 1)), ("ip.list", (2**20, 1, 1)), ("block.list", (4, 1, 2**40)),
     ("policy.list", (1,)), ("policy.list", ("a\x00",)), ("mac_range.list", (2**64,)),
     ("history", ("x",)), ("interface.list", (True,)), ("report.utilization", ("", 4, 1)),
     ("report.utilization", (None, 4, 1, 1)), ("report.utilization", ("", True, 1, 1))],
)  # fmt: skip
def test_a_cursor_that_does_not_fit_is_refused_before_the_driver(store, name, after):
    with pytest.raises(paging.BadCursor):
        operations.run(store, name, {"page": paging.Page(5, after)})


def test_a_cursor_is_opaque_and_checked():
    for key in [(4, 2**127, 3), ("name",), (1,)]:
        assert paging.decode(paging.encode(key)) == key
    for text in ["", "!!", "e30", "W10", "WyJhIiwgdHJ1ZV0", "x" * 5000, "WzEuNV0"]:
        with pytest.raises(paging.BadCursor):
            paging.decode(text)


def test_a_client_cannot_send_a_page_itself():
    """`page` is a local parameter: no channel takes it from a client."""
    with pytest.raises(operations.InvalidInput):
        operations.validate("ip.list", {"page": {"limit": 5}})
