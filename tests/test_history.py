"""`history` is exact: a block's rows are its own, an address's rows are all of them."""

from __future__ import annotations

from tests.support.sql import execute_sql

MAC = "02:00:00:00:00:01"


def _commands(rows: list[dict]) -> list[str]:
    return [row["command"] for row in rows]


def test_a_new_block_never_shows_a_deleted_blocks_events(melange):
    """SQLite handed a deleted block's id to the next block, whose history then began
    with the old block's life; ids are never reused now, on every backend."""
    old = melange.json("block", "create", "10.0.0.0/24", "--name", "old")
    melange.ok("block", "allocate", "old", "--mac", MAC)
    melange.ok("block", "delete", "old", "--force")
    new = melange.json("block", "create", "10.1.0.0/24", "--name", "new")
    assert new["id"] != old["id"]
    rows = melange.json("history", "--block", "new")
    assert _commands(rows) == ["block.create"]
    assert (rows[0]["kind"], rows[0]["subject"]) == ("block", "new (10.1.0.0/24)")
    by_old_id = melange.json("history", "--block", str(old["id"]))
    assert _commands(by_old_id) == ["block.create", "block.allocate", "block.delete"]
    assert by_old_id[-1]["subject"] == "old (10.0.0.0/24)"  # its identity as it was


def test_a_blocks_history_never_lists_another_kinds_rows(melange):
    """A MAC range's creation was listed under the block whose id equalled the range's."""
    mac_range = melange.json("mac-range", "create", "02:16:3e:00:00:00/24")
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "n1")
    block_id = melange.json("block", "show", "web")["id"]
    assert melange.json("history", "--block", "web")[0]["command"] == "block.create"
    assert _commands(melange.json("history", "--block", "web")) == ["block.create"]
    ranges = [row for row in melange.json("history") if row["kind"] == "mac_range"]
    assert [(r["block_id"], r["subject"]) for r in ranges] == [(None, mac_range["cidr"])]
    melange.ok("interface", "create", "vif1", "--network", "n1")
    assert _commands(melange.json("history", "--block", str(block_id))) == [
        "block.create", "interface.create"]  # fmt: skip


def test_an_address_is_found_however_it_was_made(melange, tmp_path):
    """`--count`, interfaces and import made addresses that `history --address` missed."""
    melange.ok("block", "create", "10.9.0.0/24", "--name", "moved", "--network", "n2")
    for last in (5, 6, 7, 9):
        melange.ok("block", "allocate", "moved", "--address", f"10.9.0.{last}")
    exported = melange("export", "-o", "json").stdout
    melange.ok("block", "delete", "moved", "--force")
    path = tmp_path / "moved.json"
    path.write_text(exported)
    result = melange("import", str(path))
    assert result.exit_code == 0, result.stderr
    for address in ("10.9.0.6", "10.9.0.9"):
        assert _commands(melange.json("history", "--address", address))[-1] == "import"
    assert _commands(melange.json("history", "--address", "10.9.0.8")) == []
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "n1")
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    counted = melange.json("block", "allocate", "web", "--count", "5")
    rows = melange.json("history", "--address", counted[2]["address"])
    assert [(r["command"], r["kind"], r["subject"]) for r in rows] == [
        ("block.allocate", "address", "5 addresses")]  # fmt: skip
    one = melange.ok("block", "allocate", "web").strip()
    rows = melange.json("history", "--address", one)
    assert [(r["kind"], r["subject"], r["address"]) for r in rows] == [("address", one, one)]
    vif = melange.json("interface", "create", "vif1", "--network", "n1")
    melange.ok("interface", "delete", "vif1")
    assert _commands(melange.json("history", "--address", vif["addresses"][0])) == [
        "interface.create", "interface.delete"]  # fmt: skip


def test_a_large_count_is_recorded_as_a_few_runs(melange):
    """Addresses of a change are kept as runs of consecutive addresses, not one row each."""
    melange.ok("block", "create", "10.0.0.0/22", "--name", "web", "--gateway", "10.0.1.1")
    melange.ok("block", "allocate", "web", "--count", "1000")
    assert execute_sql(melange.db, "SELECT count(*) FROM audit_addresses") == [(2,)]
    for address in ("10.0.0.1", "10.0.1.0", "10.0.1.2", "10.0.3.233"):
        assert _commands(melange.json("history", "--address", address)) == ["block.allocate"]
    for address in ("10.0.1.1", "10.0.3.234"):
        assert melange.json("history", "--address", address) == []


def test_a_block_id_the_store_never_knew_is_not_found(melange):
    """`history --block 999` was an empty success: a typo'd id looked like a quiet block.
    A deleted block's id still has its history (previous tests); an unknown one is 3."""
    block = melange.json("block", "create", "10.0.0.0/24", "--name", "web")
    result = melange("history", "--block", str(block["id"] + 1000))
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert _commands(melange.json("history", "--block", str(block["id"]))) == ["block.create"]
