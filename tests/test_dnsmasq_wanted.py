"""The dnsmasq backend's hosts lines, followed through the audit trail: after each change
the incremental read equals a whole render of the store, its delta is exactly what
changed, and a line two addresses want stays while one of them still does."""

from __future__ import annotations

from melange import operations
from melange.dnsmasq.render import hosts_lines
from melange.dnsmasq.wanted import WantedHosts
from melange.store import Store

MAC = "02:00:00:00:0b:01"


def test_each_change_is_followed_with_its_delta(store_url):
    store = Store(store_url, release_hold=3600)
    run = operations.run
    run(store, "block.create", {"cidr": "10.50.0.0/24", "name": "a", "network": "n1"})
    # The same CIDR in another network: the same MAC and address make the same line.
    run(store, "block.create", {"cidr": "10.50.0.0/24", "name": "twin", "network": "n2"})
    run(store, "block.create", {"cidr": "2001:db8:50::/64", "name": "v6", "network": "n1"})
    for n in range(4):
        run(store, "block.allocate", {"block": "a", "mac": f"02:00:00:00:0a:{n:02x}"})
    wanted = WantedHosts(None)
    store.read(wanted.read)
    assert wanted.delta is None and len(wanted.lines) == 4

    def step(operation: str, params: dict) -> tuple[set, set]:
        before = wanted.lines
        run(store, operation, params)
        store.read(wanted.read)
        whole = store.read(lambda conn: {line.rstrip("\n") for line in hosts_lines(conn)})
        assert wanted.lines == whole, operation
        assert wanted.delta == (whole - before, before - whole), operation
        return wanted.delta

    added, removed = step("block.allocate", {"block": "a", "mac": MAC, "hostname": "vm"})
    assert added == {f"{MAC},10.50.0.5,vm"} and removed == set()
    assert step("block.allocate", {"block": "a"}) == (set(), set())  # no MAC, no line
    assert len(step("block.allocate", {"block": "v6", "mac": MAC})[0]) == 1
    added, removed = step("ip.update", {"address": "10.50.0.5", "block": "a", "hostname": "x"})
    assert added == {f"{MAC},10.50.0.5,x"} and removed == {f"{MAC},10.50.0.5,vm"}
    assert step("ip.release", {"address": "10.50.0.1", "block": "a"})[1] == {
        "02:00:00:00:0a:00,10.50.0.1"}  # fmt: skip
    assert step("ip.restore", {"address": "10.50.0.1", "block": "a"})[0] == {
        "02:00:00:00:0a:00,10.50.0.1"}  # fmt: skip
    # Two addresses wanting one line: it goes only when neither wants it.
    twin = {"block": "twin", "mac": "02:00:00:00:0a:02", "address": "10.50.0.3"}
    assert step("block.allocate", twin) == (set(), set())
    assert step("ip.release", {"address": "10.50.0.3", "block": "twin", "now": True}) == (
        set(), set())  # fmt: skip
    assert "02:00:00:00:0a:02,10.50.0.3" in wanted.lines
    assert step("ip.release", {"address": "10.50.0.3", "block": "a", "now": True})[1] == {
        "02:00:00:00:0a:02,10.50.0.3"}  # fmt: skip
    store.close()
