"""Allocating again for a MAC that has an address: never silently different."""

from __future__ import annotations

from tests.support.sql import dump_store, execute_sql

MAC = "02:00:00:00:00:01"


def _generation(melange) -> int:
    return execute_sql(melange.db, "SELECT generation FROM blocks WHERE name = 'web'")[0][0]


def test_a_new_hostname_replaces_the_old_one_and_the_hosts_file_follows(melange):
    """It printed the address and kept the old hostname."""
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "n1")
    first = melange.ok("block", "allocate", "web", "--mac", MAC, "--hostname", "old").strip()
    before = _generation(melange)
    again = melange.json("block", "allocate", "web", "--mac", MAC, "--hostname", "new")
    assert (again["address"], again["hostname"]) == (first, "new")
    assert melange.json("ip", "show", first)["hostname"] == "new"
    assert melange.ok("dhcp", "hosts", "--network", "n1") == f"{MAC},{first},new\n"
    assert _generation(melange) > before  # melanged re-renders the hosts file
    same = melange.ok("block", "allocate", "web", "--mac", MAC).strip()  # no --hostname
    assert same == first and melange.json("ip", "show", first)["hostname"] == "new"


def test_another_tenant_or_interface_is_a_conflict(melange):
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "n1")
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    vif = melange.json("interface", "create", "vif1", "--network", "n1")
    melange.ok("block", "allocate", "web", "--mac", MAC, "--tenant", "t1")
    before = dump_store(melange.db)
    for args in (("--mac", MAC, "--tenant", "t2"), ("--mac", MAC, "--interface", "vif1"),
                 ("--interface", "vif1", "--tenant", "t9"),
                 ("--mac", vif["mac"], "--hostname", "x", "--tenant", "t1")):  # fmt: skip
        result = melange("block", "allocate", "web", *args)
        assert result.exit_code == 4, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
        assert "already holds" in result.stderr
    assert dump_store(melange.db) == before
    # The same tenant, or the interface's own address, is the idempotent answer.
    assert melange.ok("block", "allocate", "web", "--mac", MAC, "--tenant", "t1").strip()
    again = melange.ok("block", "allocate", "web", "--interface", "vif1").strip()
    assert again == vif["addresses"][0]
