"""`report utilization` (for cron alerts) and the audit trail read by `history`."""

from __future__ import annotations

import pytest

from tests.support.cli import Melange
from tests.support.sql import execute_sql


def _setup(melange) -> None:
    melange.ok("policy", "create", "edge")
    melange.ok("policy", "add-range", "edge", "--offset", "-3", "--length", "2")
    melange.ok("block", "create", "10.0.0.0/24", "--name", "a", "--network", "n1",
               "--gateway", "10.0.0.1", "--policy", "edge")  # fmt: skip
    melange.ok("block", "create", "10.1.0.0/29", "--name", "b", "--network", "n1")
    melange.ok("block", "create", "10.2.0.0/24", "--name", "c", "--network", "n2")
    melange.ok("block", "allocate", "b", "--count", "5")
    melange.ok("block", "allocate", "a", "--mac", "02:00:00:00:00:01")
    melange.ok("block", "allocate", "a", "--mac", "02:00:00:00:00:02")
    melange.ok("ip", "release", "10.0.0.3")


def test_utilization_counts_every_kind_of_address(melange):
    _setup(melange)
    report = {r["name"]: r for r in melange.json("report", "utilization")}
    # a: network, broadcast, gateway and two policy addresses are unusable.
    assert {k: report["a"][k] for k in ("size", "used", "held", "free", "unusable")} == {
        "size": 256, "used": 1, "held": 1, "free": 249, "unusable": 5}  # fmt: skip
    assert report["a"]["percent_used"] == round(100 * 2 / 251, 2)
    assert (report["b"]["used"], report["b"]["free"], report["b"]["unusable"]) == (5, 1, 2)
    assert [r["name"] for r in melange.json("report", "utilization", "--network", "n2")] == ["c"]


def test_above_threshold_lists_those_blocks_and_exits_9(melange):
    _setup(melange)
    result = melange("report", "utilization", "--above", "50")
    assert result.exit_code == 9
    assert [line.split("\t")[2] for line in result.stdout.splitlines()] == ["b"]
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    quiet = melange("report", "utilization", "--above", "90")
    assert (quiet.exit_code, quiet.stdout) == (0, "")
    assert melange("report", "utilization", "--above", "101").exit_code == 2


MUTATING = [
    ("policy", "create", "p"),
    ("policy", "add-range", "p", "--offset", "0", "--length", "2"),
    ("policy", "add-octet", "p", "9"),
    ("block", "create", "10.9.0.0/24", "--name", "z", "--network", "nz"),
    ("block", "update", "z", "--gateway", "10.9.0.1"),
    ("block", "allocate", "z", "--mac", "02:00:00:00:00:aa"),
    ("ip", "update", "10.9.0.2", "--hostname", "h1"),
    ("ip", "release", "10.9.0.2"),
    ("ip", "restore", "10.9.0.2"),
    ("route", "add", "z", "192.168.0.0/16", "--gateway", "10.9.0.1"),
    ("route", "delete", "z", "192.168.0.0/16"),
    ("mac-range", "create", "02:16:3e:00:00:00/24"),
    ("interface", "create", "vif1", "--network", "nz"),
    ("interface", "delete", "vif1"),
    ("ip", "release", "10.9.0.2", "--now"),
]
READING = [
    ("block", "list"), ("block", "show", "z"), ("ip", "list"), ("policy", "list"),
    ("policy", "show", "p"), ("mac-range", "list"), ("interface", "list"), ("route", "list", "z"),
    ("dhcp", "hosts"), ("dhcp", "opts"), ("dhcp", "config"), ("report", "utilization"),
    ("history",), ("db", "current"),
]  # fmt: skip


def test_every_change_and_only_changes_are_audited(melange):
    seen = 0
    for args in MUTATING:
        melange.ok(*args)
        history = melange.json("history")
        assert len(history) == seen + 1, (args, history[-1:])
        seen += 1
        assert history[-1]["command"].replace("_", "-").split(".")[-1] in "-".join(args[:2])
        assert history[-1]["via"] in ("cli", "socket", "http") and history[-1]["actor"]
    for read in READING:
        if read[0] == "db" and melange.url:  # host-local: not through --url
            continue
        melange.ok(*read)
    assert len(melange.json("history")) == seen, "a read command was audited"
    failed = melange("block", "allocate", "nope")
    assert failed.exit_code == 3
    assert len(melange.json("history")) == seen, "a failed command left an audit record"


def test_history_filters_by_block_address_and_time(melange):
    _setup(melange)
    by_block = melange.json("history", "--block", "a")
    assert [h["command"] for h in by_block] == [
        "block.create", "block.allocate", "block.allocate", "ip.release"]  # fmt: skip
    by_address = melange.json("history", "--address", "10.0.0.3")
    assert [h["command"] for h in by_address] == ["block.allocate", "ip.release"]
    assert melange.json("history", "--since", "1h") == melange.json("history")
    oldest = melange.json("history")[2]["id"]
    execute_sql(melange.db, f"UPDATE audit_log SET at = '2001-01-01 00:00:00' WHERE id <= {oldest}")
    recent = melange.json("history", "--since", "2020-01-01T00:00:00Z")
    assert len(recent) == len(melange.json("history")) - 3
    assert melange("history", "--since", "yesterday-ish").exit_code == 2


@pytest.mark.parametrize("bad", [("--block", "nope"), ("--address", "10.0.0.999")])
def test_history_bad_filters(melange, bad):
    Melange(melange.db, melange.env).ok("db", "upgrade")  # a read does not create a store
    result = melange("history", *bad)
    assert result.exit_code in (2, 3) and result.stderr.startswith("Error: ")
