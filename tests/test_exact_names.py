"""Names are compared exactly on every backend (schema 0010): on MariaDB, whose default
collation ignores case, `block show WEB` found `web` and `token revoke OPS` revoked
`ops`; now every backend answers as SQLite and PostgreSQL always did."""

from __future__ import annotations

import pytest

from melange import migrations, operations
from melange.errors import NotFound
from melange.store import Store
from tests.support.backends import unmigrated_store
from tests.support.cli import assert_error


@pytest.mark.direct_only
def test_names_differing_only_in_case_are_two_names(melange):
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "Net1")
    assert_error(melange("block", "show", "WEB"), 3)
    assert_error(melange("block", "list", "--network", "net1"), 3)
    melange.ok("block", "create", "10.1.0.0/24", "--name", "WEB", "--network", "net1")
    assert melange.json("block", "show", "WEB")["cidr"] == "10.1.0.0/24"
    melange.ok("interface", "create", "vif1", "--network", "Net1", "--mac", "02:00:00:00:00:01")
    melange.ok("interface", "create", "VIF1", "--network", "net1", "--mac", "02:00:00:00:00:02")
    melange.ok("token", "create", "ops", "--role", "reader")
    assert_error(melange("token", "revoke", "OPS"), 3)
    assert [t["name"] for t in melange.json("token", "list")] == ["ops"]


def test_0010_upgrades_and_downgrades_with_data(backend, tmp_path):
    with unmigrated_store(backend, tmp_path) as url:
        migrations.upgrade(Store(url), "0009")
        store = Store(url)
        migrations.upgrade(store)
        operations.run(store, "block.create", {"cidr": "10.0.0.0/24", "name": "web"})
        store.close()
        migrations.downgrade(Store(url), "0009")
        assert Store(url).current_revision() == "0009"
        migrations.upgrade(Store(url))
        store = Store(url)
        assert operations.run(store, "block.show", {"block": "web"})["cidr"] == "10.0.0.0/24"
        with pytest.raises(NotFound):
            operations.run(store, "block.show", {"block": "WEB"})
        operations.run(store, "block.create", {"cidr": "10.1.0.0/24", "name": "WEB"})
        store.close()
