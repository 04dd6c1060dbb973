"""The Kea backend's reservations, followed through the audit trail: after each change
the incremental read equals a whole read of the store, and names every Kea key whose
reservation changed (so a difference over those keys alone misses nothing)."""

from __future__ import annotations

from melange import operations
from melange.kea.render import reservations_by_address
from melange.kea.wanted import WantedReservations
from melange.store import Store


def _mac(n: int) -> str:
    return f"02:00:00:00:0a:{n:02x}"


def test_each_change_is_followed_and_its_keys_named(store_url):
    store = Store(store_url, release_hold=3600)
    run = operations.run
    run(store, "block.create", {"cidr": "10.44.0.0/24", "name": "a", "network": "n1"})
    run(store, "block.create", {"cidr": "10.45.0.0/24", "name": "b", "network": "n2"})
    run(store, "block.create", {"cidr": "10.46.0.0/24", "name": "loose"})  # no network
    run(store, "block.create", {"cidr": "2001:db8:44::/64", "name": "v6", "network": "n1"})
    for n in range(5):
        run(store, "block.allocate", {"block": "a", "mac": _mac(n)})
    wanted = WantedReservations(None)
    store.read(wanted.read)  # the first read: whole
    assert wanted.changed is None and len(wanted.by_address) == 5

    def step(operation: str, params: dict) -> set:
        before = dict(wanted.by_address)
        run(store, operation, params)
        store.read(wanted.read)
        whole = store.read(lambda conn: reservations_by_address(conn, None))
        assert wanted.by_address == whole, operation
        moved = {(r.subnet_id, r.mac) for k, r in before.items() if whole.get(k) != r}
        moved |= {(r.subnet_id, r.mac) for k, r in whole.items() if before.get(k) != r}
        assert wanted.changed is not None and moved <= wanted.changed, operation
        return moved

    assert len(step("block.allocate", {"block": "a", "mac": _mac(9), "hostname": "vm9"})) == 1
    assert step("block.allocate", {"block": "a"}) == set()  # no MAC: nothing for Kea
    assert step("block.allocate", {"block": "loose", "mac": _mac(8)}) == set()
    assert step("block.allocate", {"block": "v6", "mac": _mac(7)}) == set()
    assert len(step("ip.update", {"address": "10.44.0.1", "hostname": "renamed"})) == 1
    assert len(step("ip.release", {"address": "10.44.0.2"})) == 1  # held: not served
    assert len(step("ip.restore", {"address": "10.44.0.2"})) == 1
    assert len(step("ip.release", {"address": "10.44.0.3", "now": True})) == 1
    # The same MAC in another network's block: another subnet id, another key.
    assert len(step("block.allocate", {"block": "b", "mac": _mac(0)})) == 1
    # A change of many addresses at once reads everything again.
    run(store, "block.allocate", {"block": "a", "count": 3})
    store.read(wanted.read)
    assert wanted.changed is None
    assert wanted.by_address == store.read(lambda conn: reservations_by_address(conn, None))
    store.close()
