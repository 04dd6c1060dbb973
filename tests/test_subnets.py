"""Subnets are part of their parent: what they inherit, what they never hand out,
and how a parent's utilisation counts them."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import assert_error
from tests.support.sql import dump_store

MACS = [f"02:00:00:00:01:{i:02x}" for i in range(4)]


def _web(melange, *args: str) -> None:
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1",
               "--gateway", "10.0.0.1", *args)  # fmt: skip


def _drain(melange, block: str) -> list[str]:
    """Allocate from `block` until it is exhausted: every address it hands out."""
    got = []
    for _ in range(300):
        result = melange("block", "allocate", block)
        if result.exit_code == 5:
            return got
        assert result.exit_code == 0, result.stderr
        got.append(result.stdout.strip())
    raise AssertionError("the block never ran out")


def test_a_subnet_never_hands_out_its_parents_gateway(melange):
    _web(melange)
    melange.ok("block", "subnet", "web", "10.0.0.0/26", "--name", "web-a")
    assert melange.ok("block", "allocate", "web-a", "--mac", MACS[0]).strip() == "10.0.0.2"
    handed = _drain(melange, "web-a")
    assert "10.0.0.1" not in handed
    assert len(handed) == 64 - 3 - 1  # network, broadcast, gateway; the first one above


def test_a_subnet_shows_what_it_inherits_and_from_where(melange):
    melange.ok("policy", "create", "edge")
    melange.ok("policy", "add-range", "edge", "--offset", "0", "--length", "4")
    _web(melange, "--dns", "10.0.0.53", "--policy", "edge")
    melange.ok("route", "add", "web", "192.168.0.0/16", "--gateway", "10.0.0.254")
    melange.ok("block", "subnet", "web", "10.0.0.64/26", "--name", "web-b")
    shown = melange.json("block", "show", "web-b")
    assert (shown["gateway"], shown["dns"], shown["policy"]) == ("10.0.0.1", ["10.0.0.53"], "edge")
    assert shown["routes"] == [{"destination": "192.168.0.0/16", "gateway": "10.0.0.254",
                                "inherited_from": "web"}]  # fmt: skip
    assert shown["inherited"] == {"gateway": "web", "dns": "web", "policy": "web",
                                  "routes": "web"}  # fmt: skip
    top = melange.json("block", "show", "web")
    assert (top["gateway"], top["inherited"]) == ("10.0.0.1", {})
    # The inherited policy applies at the subnet's own offsets: .64-.67 are kept out.
    assert melange.ok("block", "allocate", "web-b").strip() == "10.0.0.68"


def test_a_subnets_own_values_replace_inherited_ones(melange):
    melange.ok("policy", "create", "none-reserved")
    _web(melange, "--dns", "10.0.0.53")
    melange.ok("block", "subnet", "web", "10.0.0.128/25", "--name", "web-b",
               "--gateway", "10.0.0.129", "--dns", "10.0.0.153")  # fmt: skip
    shown = melange.json("block", "show", "web-b")
    assert (shown["gateway"], shown["dns"], shown["inherited"]) == (
        "10.0.0.129", ["10.0.0.153"], {})
    melange.ok("block", "update", "web-b", "--no-gateway", "--no-dns")
    shown = melange.json("block", "show", "web-b")
    assert (shown["gateway"], shown["dns"], shown["inherited"]) == (
        "10.0.0.1", ["10.0.0.53"], {"gateway": "web", "dns": "web"})
    melange.ok("block", "update", "web-b", "--gateway", "10.0.0.129")
    assert melange.json("block", "list")[1]["gateway"] == "10.0.0.129"  # its own, listed
    assert_error(melange("block", "subnet", "web", "10.0.0.0/26", "--gateway", "10.0.0.65"), 2)
    assert_error(melange("block", "subnet", "web", "10.0.0.0/26", "--policy", "nope"), 3)
    melange.ok("block", "create", "10.0.0.0/26", "--parent", "web", "--name", "web-a",
               "--gateway", "10.0.0.62")  # fmt: skip
    melange.ok("block", "update", "web-a", "--policy", "none-reserved")
    shown = melange.json("block", "show", "web-a")
    assert (shown["gateway"], shown["policy"], shown["inherited"]) == (
        "10.0.0.62", "none-reserved", {"dns": "web"})
    handed = _drain(melange, "web-a")
    # Its own gateway and its parent's are both kept out.
    assert "10.0.0.62" not in handed and "10.0.0.1" not in handed
    assert len(handed) == 64 - 4


def test_no_subnet_hands_out_what_any_ancestor_reserves(melange):
    """Three levels: every ancestor's gateway and policy (at its own offsets) are kept out."""
    melange.ok("policy", "create", "top")
    melange.ok("policy", "add-range", "top", "--offset", "-8", "--length", "3")  # .248-.250
    melange.ok("policy", "create", "mid")
    melange.ok("policy", "add-range", "mid", "--offset", "16", "--length", "2")  # .208-.209
    melange.ok("policy", "add-octet", "mid", "250")
    melange.ok("block", "create", "10.0.0.0/24", "--name", "top", "--network", "net1",
               "--gateway", "10.0.0.254", "--policy", "top")  # fmt: skip
    melange.ok("block", "subnet", "top", "10.0.0.192/26", "--name", "mid",
               "--gateway", "10.0.0.193", "--policy", "mid")  # fmt: skip
    melange.ok("block", "subnet", "mid", "10.0.0.240/28", "--name", "leaf")
    melange.ok("block", "subnet", "mid", "10.0.0.192/28", "--name", "low")
    handed = _drain(melange, "leaf")
    # leaf 10.0.0.240/28: network .240, broadcast .255, top's gateway .254, top's policy
    # .248-.250 (and mid's octet 250); mid's policy at leaf's own offsets (.256+) is empty.
    assert handed == [f"10.0.0.{i}" for i in range(241, 254) if i not in (248, 249, 250)]
    low = _drain(melange, "low")
    # low 10.0.0.192/28: mid's gateway .193; mid's range, at low's offsets 16-17, lies outside.
    assert low == [f"10.0.0.{i}" for i in range(194, 207)]
    assert_error(melange("block", "allocate", "leaf", "--address", "10.0.0.254"), 4)


def test_a_parents_gateway_change_reaches_its_subnets(melange):
    _web(melange)
    melange.ok("block", "subnet", "web", "10.0.0.0/26", "--name", "web-a")
    assert melange.ok("block", "allocate", "web-a").strip() == "10.0.0.2"
    # .3 taken in the subnet: it cannot become the parent's gateway.
    melange.ok("block", "allocate", "web-a")
    before = dump_store(melange.db)
    assert_error(melange("block", "update", "web", "--gateway", "10.0.0.3"), 4)
    assert dump_store(melange.db) == before
    melange.ok("block", "update", "web", "--gateway", "10.0.0.254")
    # The old gateway is free again in the subnet (its free space was rebuilt).
    assert melange.ok("block", "allocate", "web-a", "--address", "10.0.0.1").strip() == "10.0.0.1"
    melange.ok("block", "subnet", "web", "10.0.0.192/26", "--name", "web-d")
    assert "10.0.0.254" not in _drain(melange, "web-d")


def test_a_parents_policy_change_reaches_its_subnets(melange):
    melange.ok("policy", "create", "low")
    melange.ok("policy", "add-range", "low", "--offset", "0", "--length", "8")
    _web(melange, "--policy", "low")
    melange.ok("block", "subnet", "web", "10.0.0.0/26", "--name", "web-a")
    assert melange.ok("block", "allocate", "web-a").strip() == "10.0.0.8"
    melange.ok("policy", "remove-range", "low", "--offset", "0", "--length", "8")
    assert melange.ok("block", "allocate", "web-a").strip() == "10.0.0.2"
    melange.ok("block", "update", "web", "--no-policy")
    melange.ok("policy", "add-range", "low", "--offset", "0", "--length", "8")
    assert melange.ok("block", "allocate", "web-a").strip() == "10.0.0.3"


def test_a_parents_utilisation_counts_its_subnets(melange):
    melange.ok("block", "create", "10.20.0.0/16", "--name", "big", "--network", "net1")
    melange.ok("block", "subnet", "big", "10.20.1.0/24", "--name", "part")
    melange.ok("block", "allocate", "part", "--count", "10")
    melange.ok("block", "allocate", "part", "--mac", MACS[0])
    melange.ok("ip", "release", "10.20.1.11")
    usage = melange.json("block", "show", "big")["utilization"]
    assert usage == {"size": 65536, "used": 10, "held": 1, "unusable": 2,
                     "free": 65536 - 13, "percent_used": round(100 * 11 / 65534, 2),
                     "kind": "parent", "subnets": 1}  # fmt: skip
    report = {r["name"]: r for r in melange.json("report", "utilization")}
    assert report["big"]["kind"] == "parent" and report["big"]["subnets"] == 1
    assert report["big"]["used"] == 10 and report["big"]["percent_used"] < 1
    assert (report["part"]["kind"], report["part"]["used"], report["part"]["free"]) == (
        "leaf", 10, 256 - 2 - 11)
    plain = melange.ok("report", "utilization").splitlines()
    assert [line.split("\t")[-2:] for line in plain] == [["parent", "1"], ["leaf", "0"]]


@pytest.mark.host_local
def test_reconcile_sees_an_address_an_ancestors_policy_now_reserves(melange):
    """The store check uses the same exclusions as allocation."""
    _web(melange)
    melange.ok("block", "subnet", "web", "10.0.0.0/26", "--name", "web-a")
    melange.ok("block", "allocate", "web-a", "--address", "10.0.0.5")
    melange.ok("policy", "create", "p")
    melange.ok("policy", "add-range", "p", "--offset", "5", "--length", "1")
    melange.ok("block", "update", "web", "--policy", "p")
    result = melange("reconcile", output="json")
    assert result.exit_code == 8, result.stderr
    findings = json.loads(result.stdout)
    assert [(f["kind"], f["address"], f["block"]) for f in findings] == [
        ("address_excluded", "10.0.0.5", "web-a")]
