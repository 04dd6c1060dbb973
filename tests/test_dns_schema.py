"""Schema 0009 (DNS names) both ways, with data, on every backend."""

from __future__ import annotations

from melange import migrations, operations
from melange.store import Store
from tests.support.backends import unmigrated_store
from tests.support.sql import execute_sql


def test_0009_upgrades_and_downgrades_with_data(backend, tmp_path):
    with unmigrated_store(backend, tmp_path) as url:
        migrations.upgrade(Store(url), "0008")
        migrations.upgrade(Store(url))
        store = Store(url)
        operations.run(store, "block.create", {"cidr": "10.0.0.0/24", "name": "a",
                                               "domain": "lab.example"})  # fmt: skip
        operations.run(store, "block.create", {"cidr": "2001:db8::/64", "name": "b",
                                               "domain": "lab.example"})  # fmt: skip
        operations.run(store, "block.allocate", {"block": "a", "hostname": "vm1"})
        operations.run(store, "block.allocate", {"block": "b", "hostname": "vm1"})
        assert operations.run(store, "dns.hosts", {}) == (
            "10.0.0.1 vm1.lab.example\n2001:db8::1 vm1.lab.example\n")  # fmt: skip
        store.close()

        migrations.downgrade(Store(url), "0008")
        assert Store(url).current_revision() == "0008"
        assert execute_sql(url, "SELECT hostname FROM ip_addresses") == [("vm1",), ("vm1",)]
        migrations.upgrade(Store(url))
        store = Store(url)
        # The names come back with the domains that a downgrade dropped: none.
        assert operations.run(store, "dns.hosts", {}) == ""
        operations.run(store, "block.update", {"block": "a", "domain": "lab.example"})
        assert operations.run(store, "dns.hosts", {}) == "10.0.0.1 vm1.lab.example\n"
        store.close()
