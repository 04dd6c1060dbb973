"""The command-line contract (docs: cli-contract.md), rule by rule, through the real CLI.

Every test runs `melange --db <sqlite file> …` in-process (the `melange` fixture)
and derives its expectations from the contract, not from the implementation:
address arithmetic is done by hand here (RFC 4291 for EUI-64, SHA-1 for the
tenant-hash generator), and "changes nothing" is checked on the SQLite file itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from melange_cli.main import cli
from tests.support.cli import Melange, assert_error
from tests.support.clock import FakeClock
from tests.support.sql import dump_store, execute_sql

MAC1 = "02:00:00:aa:bb:01"
MAC2 = "02:00:00:aa:bb:02"
MAC3 = "02:00:00:aa:bb:03"

# The JSON keys of each kind of record: stable, snake_case (the contract's promise).
BLOCK_KEYS = {
    "id", "cidr", "name", "network", "tenant", "type", "version", "gateway", "dns",
    "policy", "parent_id", "parent", "generator", "created_at", "updated_at", "domain",
}  # fmt: skip
ADDRESS_KEYS = {
    "address", "block_id", "block", "network", "mac", "hostname", "interface", "tenant",
    "state", "allocated_at", "released_at", "held_until", "dns_name",
}  # fmt: skip
NAT_LINK_KEYS = {"inside_globals", "inside_locals"}  # `ip show` only
POLICY_KEYS = {"name", "description", "unusable_ranges", "unusable_octets", "blocks", "created_at"}
INTERFACE_KEYS = {"vif_id", "network", "device", "tenant", "mac", "addresses", "allowed_ips",
                  "created_at"}  # fmt: skip
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


# -- helpers


def with_config(melange: Melange, tmp_path, text: str) -> Melange:
    """The same store, run with another config file (e.g. a shorter release hold)."""
    config = tmp_path / "other.conf"
    config.write_text(text)
    return Melange(melange.db, {**melange.env, "MELANGE_CONFIG": str(config)})


def allocate(melange: Melange, block: str, *args: str) -> str:
    out = melange.ok("block", "allocate", block, *args)
    assert out.count("\n") == 1, out
    return out.strip()


def web(melange: Melange, cidr: str = "10.0.0.0/24", *args: str) -> None:
    melange.ok("block", "create", cidr, "--name", "web", "--network", "net1", *args)


def eui64(prefix: str, mac: str) -> str:
    """RFC 4291 appendix A, by hand: OUI with the U/L bit inverted, FFFE, the NIC part."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    interface_id = bytes(octets[:3] + [0xFF, 0xFE] + octets[3:])
    network = ipaddress.IPv6Network(prefix)
    return str(network.network_address + int.from_bytes(interface_id, "big"))


def hosts_lines(melange: Melange) -> list[str]:
    return melange.ok("dhcp", "hosts").splitlines()


def parse_iso_utc(text: str) -> datetime:
    assert text.endswith("Z") or text.endswith("+00:00"), text
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset().total_seconds() == 0
    return moment


# -- IPv4 allocation


def test_first_allocation_with_gateway_dot1_is_dot2(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    assert allocate(melange, "web") == "10.0.0.2"
    assert allocate(melange, "web") == "10.0.0.3"


def test_without_gateway_dot1_is_an_ordinary_address(melange):
    web(melange)
    assert melange.json("block", "show", "web")["gateway"] is None
    assert allocate(melange, "web") == "10.0.0.1"
    assert allocate(melange, "web") == "10.0.0.2"


def test_slash30_hands_out_its_two_hosts_then_exhausted(melange):
    web(melange, "10.0.0.8/30")
    assert [allocate(melange, "web") for _ in range(2)] == ["10.0.0.9", "10.0.0.10"]
    before = dump_store(melange.db)
    assert_error(melange("block", "allocate", "web"), 5)
    assert dump_store(melange.db) == before


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [("10.0.0.8/31", ["10.0.0.8", "10.0.0.9"]), ("10.0.0.7/32", ["10.0.0.7"])],
)
def test_slash31_and_slash32_hand_out_every_address(melange, cidr, expected):
    web(melange, cidr)
    assert [allocate(melange, "web") for _ in expected] == expected
    assert_error(melange("block", "allocate", "web"), 5)


def test_slash31_address_request_for_both_ends(melange):
    web(melange, "10.0.0.8/31")
    assert allocate(melange, "web", "--address", "10.0.0.9") == "10.0.0.9"
    assert allocate(melange, "web", "--address", "10.0.0.8") == "10.0.0.8"


def test_lowest_free_address_is_handed_out(melange):
    web(melange)
    got = [allocate(melange, "web") for _ in range(4)]
    assert got == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    melange.ok("ip", "release", "10.0.0.2", "--now")
    assert allocate(melange, "web") == "10.0.0.2"
    assert allocate(melange, "web", "--address", "10.0.0.9") == "10.0.0.9"
    assert allocate(melange, "web") == "10.0.0.5"


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("10.0.1.5", 2),  # outside the block
        ("192.168.0.1", 2),
        ("2001:db8::5", 2),  # another family
        ("10.0.0.1", 4),  # the gateway
        ("10.0.0.0", 4),  # the network address
        ("10.0.0.255", 4),  # the broadcast address
        ("10.0.0.2", 4),  # taken
    ],
)
def test_address_request_rules(melange, address, code):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    assert allocate(melange, "web") == "10.0.0.2"
    before = dump_store(melange.db)
    assert_error(melange("block", "allocate", "web", "--address", address), code)
    assert dump_store(melange.db) == before


def test_address_request_of_the_gateway_says_gateway(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    line = assert_error(melange("block", "allocate", "web", "--address", "10.0.0.1"), 4)
    assert "gateway" in line and "network address" not in line


# -- policies


def test_policy_range_is_honoured_automatically_and_on_request(melange):
    melange.ok("policy", "create", "p")
    melange.ok("policy", "add-range", "p", "--offset", "2", "--length", "5")
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1", "--policy", "p")
    # offsets 2..6 of the block: 10.0.0.2 - 10.0.0.6; .1 is the gateway
    assert allocate(melange, "web") == "10.0.0.7"
    for address in ("10.0.0.2", "10.0.0.4", "10.0.0.6"):
        assert_error(melange("block", "allocate", "web", "--address", address), 4)
    assert allocate(melange, "web", "--address", "10.0.0.8") == "10.0.0.8"
    assert allocate(melange, "web") == "10.0.0.9"


def test_policy_negative_offset_counts_from_the_end(melange):
    melange.ok("policy", "create", "tail")
    melange.ok("policy", "add-range", "tail", "--offset", "-4", "--length", "2")
    # 10.0.0.0/29 is .0-.7; offset -4 is .4 (as -1 is .7, the last), length 2: .4 and .5
    web(melange, "10.0.0.0/29", "--policy", "tail")
    for address in ("10.0.0.4", "10.0.0.5"):
        assert_error(melange("block", "allocate", "web", "--address", address), 4)
    got = [allocate(melange, "web") for _ in range(4)]
    assert got == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.6"]
    assert_error(melange("block", "allocate", "web"), 5)


def test_policy_negative_offset_in_a_slash24(melange):
    melange.ok("policy", "create", "tail")
    melange.ok("policy", "add-range", "tail", "--offset", "-10", "--length", "5")
    web(melange, "10.0.0.0/24", "--policy", "tail")  # .246 - .250 unusable
    for address in ("10.0.0.246", "10.0.0.248", "10.0.0.250"):
        assert_error(melange("block", "allocate", "web", "--address", address), 4)
    for address in ("10.0.0.245", "10.0.0.251", "10.0.0.254"):
        assert allocate(melange, "web", "--address", address) == address


def test_policy_octet_is_honoured_automatically_and_on_request(melange):
    melange.ok("policy", "create", "no3")
    melange.ok("policy", "add-octet", "no3", "3")
    melange.ok("block", "create", "10.0.0.0/29", "--name", "small", "--policy", "no3")
    melange.ok("block", "create", "10.1.0.0/23", "--name", "big", "--policy", "no3")
    got = [allocate(melange, "small") for _ in range(5)]
    assert got == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert_error(melange("block", "allocate", "small"), 5)
    for address in ("10.1.0.3", "10.1.1.3"):
        assert_error(melange("block", "allocate", "big", "--address", address), 4)
    assert allocate(melange, "big", "--address", "10.1.1.4") == "10.1.1.4"


def test_no_policy_makes_the_addresses_usable_again(melange):
    melange.ok("policy", "create", "p")
    melange.ok("policy", "add-range", "p", "--offset", "1", "--length", "3")
    web(melange, "10.0.0.0/24", "--policy", "p")
    assert allocate(melange, "web") == "10.0.0.4"
    melange.ok("block", "update", "web", "--no-policy")
    assert allocate(melange, "web") == "10.0.0.1"


def test_policy_create_list_show_delete(melange):
    created = melange.json("policy", "create", "p1", "--description", "keep low")
    assert created["name"] == "p1" and created["description"] == "keep low"
    melange.ok("policy", "create", "p2")
    melange.ok("policy", "add-range", "p1", "--offset", "0", "--length", "10")
    melange.ok("policy", "add-octet", "p1", "255")
    shown = melange.json("policy", "show", "p1")
    assert shown["unusable_ranges"] == [{"offset": 0, "length": 10}]
    assert shown["unusable_octets"] == [255]
    assert sorted(p["name"] for p in melange.json("policy", "list")) == ["p1", "p2"]
    assert_error(melange("policy", "create", "p1"), 4)
    melange.ok("policy", "delete", "p2")
    assert [p["name"] for p in melange.json("policy", "list")] == ["p1"]
    assert_error(melange("policy", "show", "p2"), 3)
    assert_error(melange("policy", "delete", "p2"), 3)


def test_policy_in_use_cannot_be_deleted(melange):
    melange.ok("policy", "create", "p")
    web(melange, "10.0.0.0/24", "--policy", "p")
    before = dump_store(melange.db)
    assert_error(melange("policy", "delete", "p"), 4)
    assert dump_store(melange.db) == before
    melange.ok("block", "update", "web", "--no-policy")
    melange.ok("policy", "delete", "p")
    assert_error(melange("policy", "show", "p"), 3)


# -- --count


def test_count_beyond_free_space_is_exhausted_and_changes_nothing(melange):
    web(melange, "10.0.0.0/29")  # 6 usable: .1 - .6
    allocate(melange, "web")
    before = dump_store(melange.db)
    assert_error(melange("block", "allocate", "web", "--count", "6"), 5)
    assert dump_store(melange.db) == before
    result = melange("block", "allocate", "web", "--count", "6", output="json")
    assert_error(result, 5, as_json=True)
    assert json.loads(result.stderr.splitlines()[1])["error"]["code"] == "exhausted"
    assert dump_store(melange.db) == before
    out = melange.ok("block", "allocate", "web", "--count", "5")
    assert out.splitlines() == [f"10.0.0.{i}" for i in range(2, 7)]
    assert_error(melange("block", "allocate", "web"), 5)


def test_count_is_all_or_none_across_fragmented_free_space(melange):
    melange.ok("policy", "create", "no9")
    melange.ok("policy", "add-octet", "no9", "9")
    web(melange, "10.0.0.0/28", "--gateway", "10.0.0.1", "--policy", "no9")
    for address in ("10.0.0.3", "10.0.0.7", "10.0.0.12"):
        allocate(melange, "web", "--address", address)
    # usable .2-.14 minus .9 = 12 addresses, 3 taken: 9 free
    free = ["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.8", "10.0.0.10",
            "10.0.0.11", "10.0.0.13", "10.0.0.14"]  # fmt: skip
    before = dump_store(melange.db)
    assert_error(melange("block", "allocate", "web", "--count", "10"), 5)
    assert dump_store(melange.db) == before
    assert melange.ok("block", "allocate", "web", "--count", "9").splitlines() == free
    assert_error(melange("block", "allocate", "web"), 5)


@pytest.mark.parametrize(
    "extra",
    [["--mac", MAC1], ["--address", "10.0.0.5"], ["--hostname", "host-a"]],
    ids=["mac", "address", "hostname"],
)
def test_count_with_mac_address_or_hostname_is_a_usage_error(melange, extra):
    web(melange)
    before = dump_store(melange.db)
    assert_error(melange("block", "allocate", "web", "--count", "2", *extra), 2)
    assert dump_store(melange.db) == before


def test_count_json_is_an_array_and_single_allocate_an_object(melange):
    web(melange)
    many = melange.json("block", "allocate", "web", "--count", "3")
    assert isinstance(many, list) and len(many) == 3
    assert [a["address"] for a in many] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert all(set(a) == ADDRESS_KEYS for a in many)
    one = melange.json("block", "allocate", "web", "--count", "1")
    assert isinstance(one, list) and [a["address"] for a in one] == ["10.0.0.4"]
    single = melange.json("block", "allocate", "web")
    assert isinstance(single, dict) and single["address"] == "10.0.0.5"
    assert set(single) == ADDRESS_KEYS


# -- idempotency by MAC


def test_allocate_is_idempotent_by_mac(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    first = melange("block", "allocate", "web", "--mac", MAC1)
    again = melange("block", "allocate", "web", "--mac", MAC1)
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout == "10.0.0.2\n"
    upper = melange("block", "allocate", "web", "--mac", MAC1.upper())
    assert (upper.exit_code, upper.stdout) == (0, "10.0.0.2\n")
    assert allocate(melange, "web", "--mac", MAC1, "--address", "10.0.0.2") == "10.0.0.2"
    listed = melange.json("ip", "list", "--mac", MAC1)
    assert [a["address"] for a in listed] == ["10.0.0.2"]
    before = dump_store(melange.db)
    assert_error(melange("block", "allocate", "web", "--mac", MAC1, "--address", "10.0.0.9"), 4)
    assert dump_store(melange.db) == before


def test_a_mac_holds_one_active_address_per_block(melange):
    web(melange)
    melange.ok("block", "create", "10.1.0.0/24", "--name", "other", "--network", "net2")
    assert allocate(melange, "web", "--mac", MAC1, "--address", "10.0.0.7") == "10.0.0.7"
    assert allocate(melange, "web", "--mac", MAC1) == "10.0.0.7"
    assert allocate(melange, "other", "--mac", MAC1) == "10.1.0.1"  # another block: fine
    b = allocate(melange, "web", "--mac", MAC2)
    assert_error(melange("ip", "update", b, "--mac", MAC1), 4)
    assert len(melange.json("ip", "list", "--block", "web", "--mac", MAC1)) == 1


def test_after_release_the_mac_gets_a_new_address_and_restore_conflicts(melange):
    web(melange)
    a = allocate(melange, "web", "--mac", MAC1)
    melange.ok("ip", "release", a)
    b = allocate(melange, "web", "--mac", MAC1)
    assert b != a  # the held one is not reusable
    assert_error(melange("ip", "restore", a), 4)  # MAC1 holds b now
    assert [x["address"] for x in melange.json("ip", "list", "--mac", MAC1)] == [b]


# -- IPv6


def test_eui64_by_hand_matches_the_rfc_example():
    assert eui64("2001:db8::/64", "00:00:5e:00:53:af") == "2001:db8::200:5eff:fe00:53af"


@pytest.mark.parametrize("mac", ["00:00:5e:00:53:af", "02:16:3e:12:34:56", "a8:5e:45:01:02:03"])
def test_ipv6_with_mac_is_modified_eui64(melange, mac):
    melange.ok("block", "create", "2001:db8:0:1::/64", "--name", "v6")
    expected = eui64("2001:db8:0:1::/64", mac)
    assert allocate(melange, "v6", "--mac", mac) == expected
    assert allocate(melange, "v6", "--mac", mac) == expected  # idempotent


def test_ipv6_rfc_example_address(melange):
    melange.ok("block", "create", "2001:db8::/64", "--name", "v6")
    out = melange.ok("block", "allocate", "v6", "--mac", "00:00:5e:00:53:af")
    assert out == "2001:db8::200:5eff:fe00:53af\n"


def test_ipv6_shorter_prefix_eui64_lies_inside_the_block(melange):
    melange.ok("block", "create", "2001:db8:100::/56", "--name", "v6")
    got = ipaddress.IPv6Address(allocate(melange, "v6", "--mac", MAC1))
    assert got in ipaddress.IPv6Network("2001:db8:100::/56")
    assert int(got) & (2**64 - 1) == int(ipaddress.IPv6Address(eui64("::/64", MAC1)))


@pytest.mark.parametrize("tenant", ["acme", "tenant-42"])
def test_tenant_hash_generator(melange, tenant):
    melange.ok("block", "create", "2001:db8:5::/64", "--name", "th", "--tenant", tenant,
               "--generator", "tenant-hash")  # fmt: skip
    mac = "02:16:3e:ab:cd:ef"
    digest = hashlib.sha1(tenant.encode()).digest()
    interface_id = (
        (int.from_bytes(digest[:4], "big") << 32)
        | (0xFF << 24)
        | (int(mac.replace(":", ""), 16) & 0xFFFFFF)
    )
    expected = ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:5::")) | interface_id)
    assert allocate(melange, "th", "--mac", mac) == str(expected)
    assert melange.json("block", "show", "th")["generator"] == "tenant-hash"


def test_ipv6_without_mac_is_lowest_free_not_the_anycast_address(melange):
    melange.ok("block", "create", "2001:db8::/64", "--name", "v6")
    assert allocate(melange, "v6") == "2001:db8::1"
    assert allocate(melange, "v6") == "2001:db8::2"
    assert allocate(melange, "v6", "--address", "2001:DB8:0:0::5") == "2001:db8::5"
    assert allocate(melange, "v6") == "2001:db8::3"


# -- release, hold, restore


def test_release_holds_the_address(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    a = allocate(melange, "web", "--mac", MAC1)
    assert hosts_lines(melange) == [f"{MAC1},{a}"]
    released = melange.json("ip", "release", a)
    assert released["address"] == a
    assert hosts_lines(melange) == []
    assert [x["address"] for x in melange.json("ip", "list", "--released")] == [a]
    assert melange.json("ip", "list") == []
    assert allocate(melange, "web") != a
    assert_error(melange("block", "allocate", "web", "--address", a), 4)
    held = melange.json("ip", "list", "--released")[0]
    assert parse_iso_utc(held["held_until"]) > parse_iso_utc(held["released_at"])


def test_default_release_hold_is_48h(melange, tmp_path):
    default = with_config(melange, tmp_path, "[melange]\n")
    web(default)
    a = allocate(default, "web")
    held = default.json("ip", "release", a)
    span = parse_iso_utc(held["held_until"]) - parse_iso_utc(held["released_at"])
    assert span.total_seconds() == 48 * 3600


def test_release_now_frees_at_once(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    a = allocate(melange, "web", "--mac", MAC1)
    melange.ok("ip", "release", a, "--now")
    assert melange.json("ip", "list", "--released") == []
    assert allocate(melange, "web") == a


def test_release_now_of_a_held_address_frees_it(melange):
    web(melange)
    a = allocate(melange, "web")
    melange.ok("ip", "release", a)
    melange.ok("ip", "release", a, "--now")
    assert allocate(melange, "web") == a


def test_restore_undoes_a_release(melange):
    web(melange)
    a = allocate(melange, "web", "--mac", MAC1, "--hostname", "vm1")
    melange.ok("ip", "release", a)
    restored = melange.json("ip", "restore", a)
    assert restored["address"] == a and restored["mac"] == MAC1
    assert hosts_lines(melange) == [f"{MAC1},{a},vm1"]
    assert melange.json("ip", "list", "--released") == []
    assert allocate(melange, "web", "--mac", MAC1) == a
    assert_error(melange("ip", "restore", a), 4)  # allocated, nothing to restore


def test_expired_hold_never_blocks_allocation(melange, tmp_path):
    # The hold outlasts the next command even on a loaded machine (an hour of the
    # test's clock); then the clock skips past both holds' end.
    short = with_config(melange, tmp_path, "[melange]\nrelease_hold = 1h\n")
    short.clock = clock = FakeClock()
    web(short, "10.0.0.8/30")  # .9 and .10
    a, b = allocate(short, "web", "--mac", MAC1), allocate(short, "web")
    short.ok("ip", "release", a)
    short.ok("ip", "release", b)
    assert_error(short("block", "allocate", "web"), 5)  # still held
    clock.advance(3601)
    assert short.json("ip", "list", "--released") == []
    got = short.json("block", "allocate", "web", "--count", "2")
    assert sorted(x["address"] for x in got) == sorted([a, b])


def test_expired_hold_allows_address_request_and_mac_reuse(melange, tmp_path):
    short = with_config(melange, tmp_path, "[melange]\nrelease_hold = 1s\n")
    short.clock = clock = FakeClock()
    web(short, "10.0.0.0/24", "--gateway", "10.0.0.1")
    a = allocate(short, "web", "--mac", MAC1)
    short.ok("ip", "release", a)
    clock.advance(2)  # past the hold, stored to the second
    assert allocate(short, "web", "--address", a, "--mac", MAC2) == a
    assert hosts_lines(short) == [f"{MAC2},{a}"]
    assert short("ip", "restore", a).exit_code == 4  # allocated again: nothing to restore


def test_zero_release_hold_frees_at_once(melange, tmp_path):
    none = with_config(melange, tmp_path, "[melange]\nrelease_hold = 0\n")
    web(none, "10.0.0.0/24", "--gateway", "10.0.0.1")
    a = allocate(none, "web", "--mac", MAC1)
    none.ok("ip", "release", a)
    assert none.json("ip", "list", "--released") == []
    assert allocate(none, "web") == a


def test_restore_after_the_hold_expired_fails(melange, tmp_path):
    short = with_config(melange, tmp_path, "[melange]\nrelease_hold = 1s\n")
    short.clock = clock = FakeClock()
    web(short)
    a = allocate(short, "web")
    short.ok("ip", "release", a)
    clock.advance(2)  # past the hold, stored to the second
    result = short("ip", "restore", a)
    assert result.exit_code in (3, 4)
    assert_error(result, result.exit_code)


def test_release_of_an_unallocated_address_is_not_found(melange):
    web(melange)
    before = dump_store(melange.db)
    assert_error(melange("ip", "release", "10.0.0.77"), 3)
    assert_error(melange("ip", "show", "10.0.0.77"), 3)
    assert dump_store(melange.db) == before


# -- blocks: overlap rules


@pytest.mark.parametrize("cidr", ["10.0.0.0/24", "10.0.0.128/25", "10.0.0.0/16", "10.0.0.7/32"])
def test_top_level_blocks_of_one_network_never_overlap(melange, cidr):
    web(melange)
    before = dump_store(melange.db)
    assert_error(melange("block", "create", cidr, "--network", "net1"), 4)
    assert dump_store(melange.db) == before


def test_adjacent_blocks_of_one_network_are_fine(melange):
    web(melange)
    melange.ok("block", "create", "10.0.1.0/24", "--network", "net1")
    melange.ok("block", "create", "9.255.255.0/24", "--network", "net1")
    assert len(melange.json("block", "list", "--network", "net1")) == 3


def test_same_cidr_in_different_networks_is_fine(melange):
    web(melange)
    other = melange.json("block", "create", "10.0.0.0/24", "--network", "net2", "--name", "w2")
    assert other["cidr"] == "10.0.0.0/24" and other["network"] == "net2"
    assert allocate(melange, "web") == allocate(melange, "w2") == "10.0.0.1"


def test_top_level_public_blocks_never_overlap_across_networks(melange):
    melange.ok("block", "create", "203.0.113.0/24", "--type", "public", "--network", "a")
    before = dump_store(melange.db)
    for cidr in ("203.0.113.0/24", "203.0.113.64/26", "203.0.112.0/23"):
        result = melange("block", "create", cidr, "--type", "public", "--network", "b")
        assert_error(result, 4)
    assert dump_store(melange.db) == before
    melange.ok("block", "create", "203.0.114.0/24", "--type", "public", "--network", "b")


def test_subnets_lie_inside_the_parent_and_do_not_overlap_siblings(melange):
    web(melange, "10.0.0.0/16")
    sub = melange.json("block", "subnet", "web", "10.0.1.0/24", "--name", "s1")
    assert sub["parent"] == "10.0.0.0/16" and sub["network"] == "net1"
    melange.ok("block", "subnet", "web", "10.0.2.0/24")
    melange.ok("block", "create", "10.0.3.0/24", "--parent", "web")
    before = dump_store(melange.db)
    for cidr in ("10.1.0.0/24", "10.0.1.128/25", "10.0.0.0/23", "9.255.255.0/24"):
        assert_error(melange("block", "subnet", "web", cidr), 4)
    assert_error(melange("block", "create", "10.0.1.0/25", "--parent", "web"), 4)
    assert dump_store(melange.db) == before


def test_a_block_with_subnets_hands_out_no_addresses(melange):
    web(melange, "10.0.0.0/16")
    melange.ok("block", "subnet", "web", "10.0.1.0/24", "--name", "s1")
    before = dump_store(melange.db)
    assert_error(melange("block", "allocate", "web"), 4)
    assert_error(melange("block", "allocate", "web", "--address", "10.0.5.5"), 4)
    assert_error(melange("block", "allocate", "web", "--count", "2"), 4)
    assert_error(melange("block", "allocate", "web", "--mac", MAC1), 4)
    assert dump_store(melange.db) == before
    assert allocate(melange, "s1") == "10.0.1.1"


def test_no_subnet_of_a_block_with_allocations(melange):
    web(melange, "10.0.0.0/16")
    allocate(melange, "web")
    before = dump_store(melange.db)
    assert_error(melange("block", "subnet", "web", "10.0.200.0/24"), 4)
    assert dump_store(melange.db) == before


# -- blocks: delete, lookup, update


def test_block_delete_refuses_while_allocated_unless_forced(melange):
    web(melange)
    allocate(melange, "web", "--mac", MAC1)
    before = dump_store(melange.db)
    assert_error(melange("block", "delete", "web"), 4)
    assert dump_store(melange.db) == before
    melange.ok("block", "delete", "web", "--force")
    assert_error(melange("block", "show", "web"), 3)
    assert melange.json("ip", "list") == []
    assert hosts_lines(melange) == []


def test_block_delete_of_an_empty_block(melange):
    web(melange)
    a = allocate(melange, "web")
    melange.ok("ip", "release", a, "--now")
    melange.ok("block", "delete", "web")
    assert melange.json("block", "list") == []


def test_block_argument_resolves_by_id_name_and_cidr(melange):
    created = melange.json("block", "create", "10.5.0.0/24", "--name", "five")
    ids = {
        melange.json("block", "show", ref)["id"]
        for ref in (str(created["id"]), "five", "10.5.0.0/24")
    }
    assert ids == {created["id"]}
    for ref in (str(created["id"]), "five", "10.5.0.0/24"):
        assert allocate(melange, ref).startswith("10.5.0.")
    assert_error(melange("block", "show", "nope"), 3)
    assert_error(melange("block", "show", str(created["id"] + 100)), 3)
    assert_error(melange("block", "show", "10.6.0.0/24"), 3)


def test_ambiguous_cidr_reference_is_refused(melange):
    melange.ok("block", "create", "10.0.0.0/24", "--network", "a")
    melange.ok("block", "create", "10.0.0.0/24", "--network", "b")
    result = melange("block", "allocate", "10.0.0.0/24")
    assert result.exit_code not in (0, 1)
    assert_error(result, result.exit_code)


def test_block_update_and_list_filters(melange):
    web(melange)
    melange.ok("block", "create", "10.9.0.0/24", "--network", "net2", "--tenant", "t2",
               "--type", "public", "--dns", "10.9.0.53", "--dns", "10.9.0.54")  # fmt: skip
    assert [b["cidr"] for b in melange.json("block", "list", "--network", "net2")] == [
        "10.9.0.0/24"
    ]
    assert [b["cidr"] for b in melange.json("block", "list", "--tenant", "t2")] == ["10.9.0.0/24"]
    assert [b["cidr"] for b in melange.json("block", "list", "--type", "public")] == ["10.9.0.0/24"]
    assert melange.json("block", "show", "10.9.0.0/24")["dns"] == ["10.9.0.53", "10.9.0.54"]
    updated = melange.json("block", "update", "web", "--name", "web2", "--gateway", "10.0.0.1")
    assert updated["name"] == "web2" and updated["gateway"] == "10.0.0.1"
    assert allocate(melange, "web2") == "10.0.0.2"
    assert_error(melange("block", "show", "web"), 3)


# -- interfaces and MAC ranges


def test_interface_create_gives_a_mac_and_one_address_per_family(melange):
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    melange.ok("block", "create", "2001:db8:1::/64", "--name", "web6", "--network", "net1")
    melange.ok("block", "create", "10.7.0.0/24", "--network", "net7")
    out = melange.ok("interface", "create", "vif1", "--network", "net1", "--device", "vm1")
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0] == "10.0.0.2", lines
    record = melange.json("interface", "show", "vif1")
    mac = record["mac"]
    assert re.fullmatch(r"02:16:3e(:[0-9a-f]{2}){3}", mac), mac
    assert record["addresses"] == lines and record["device"] == "vm1"
    assert lines[1] == eui64("2001:db8:1::/64", mac)
    listed = melange.json("ip", "list", "--interface", "vif1")
    assert sorted(x["address"] for x in listed) == sorted(lines)
    assert all(x["mac"] == mac and x["interface"] == "vif1" for x in listed)
    hosts = hosts_lines(melange)
    assert f"{mac},10.0.0.2" in hosts and f"{mac},[{lines[1]}]" in hosts
    second = melange.json("interface", "create", "vif2", "--network", "net1")
    assert second["mac"] != mac and second["addresses"][0] == "10.0.0.3"
    assert [i["vif_id"] for i in melange.json("interface", "list")] == ["vif1", "vif2"]
    assert [i["vif_id"] for i in melange.json("interface", "list", "--device", "vm1")] == ["vif1"]


def test_interface_create_with_a_given_mac(melange):
    web(melange)
    record = melange.json("interface", "create", "vif1", "--network", "net1", "--mac",
                          "02:AA:BB:CC:DD:EE")  # fmt: skip
    assert record["mac"] == "02:aa:bb:cc:dd:ee"
    assert record["addresses"] == ["10.0.0.1"]
    assert hosts_lines(melange) == ["02:aa:bb:cc:dd:ee,10.0.0.1"]
    assert_error(melange("interface", "create", "vif1", "--network", "net1"), 4)


def test_interface_delete_releases_its_addresses(melange):
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    web(melange)
    melange.ok("block", "create", "2001:db8:1::/64", "--name", "web6", "--network", "net1")
    addresses = melange.ok("interface", "create", "vif1", "--network", "net1").splitlines()
    melange.ok("interface", "delete", "vif1")
    assert_error(melange("interface", "show", "vif1"), 3)
    assert melange.json("ip", "list") == []
    assert hosts_lines(melange) == []
    released = sorted(x["address"] for x in melange.json("ip", "list", "--released"))
    assert released == sorted(addresses)
    assert_error(melange("interface", "delete", "vif1"), 3)


def test_interface_create_is_all_or_nothing(melange):
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    melange.ok("block", "create", "10.0.0.7/32", "--name", "tiny", "--network", "net1")
    melange.ok("block", "create", "2001:db8:1::/64", "--network", "net1")
    allocate(melange, "tiny")  # the IPv4 family is full
    before = dump_store(melange.db)
    assert_error(melange("interface", "create", "vif1", "--network", "net1"), 5)
    assert dump_store(melange.db) == before
    assert_error(melange("interface", "create", "vif1", "--network", "nonet"), 3)
    assert dump_store(melange.db) == before


def test_interface_without_a_mac_range_is_exhausted(melange):
    web(melange)
    before = dump_store(melange.db)
    assert_error(melange("interface", "create", "vif1", "--network", "net1"), 5)
    assert dump_store(melange.db) == before


def test_mac_range_create_list_delete(melange):
    created = melange.json("mac-range", "create", "02:16:3e:00:00:00/24")
    assert created["first"] == "02:16:3e:00:00:00" and created["last"] == "02:16:3e:ff:ff:ff"
    assert created["size"] == 2**24
    melange.ok("mac-range", "create", "02:16:3f:00:00:00/32")
    before = dump_store(melange.db)
    for cidr in ("02:16:3e:00:00:00/24", "02:16:3e:80:00:00/25", "02:16:00:00:00:00/16"):
        assert_error(melange("mac-range", "create", cidr), 4)
    assert dump_store(melange.db) == before
    assert len(melange.json("mac-range", "list")) == 2
    melange.ok("mac-range", "delete", str(created["id"]))
    assert [r["cidr"] for r in melange.json("mac-range", "list")] == ["02:16:3f:00:00:00/32"]
    assert_error(melange("mac-range", "delete", str(created["id"])), 3)


def test_mac_range_exhaustion(melange):
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/47")  # two MACs
    web(melange)
    macs = {melange.json("interface", "create", f"vif{i}", "--network", "net1")["mac"]
            for i in range(2)}  # fmt: skip
    assert macs == {"02:16:3e:00:00:00", "02:16:3e:00:00:01"}
    assert_error(melange("interface", "create", "vif9", "--network", "net1"), 5)


# -- routes


def test_route_add_list_delete(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    added = melange.json("route", "add", "web", "192.168.0.0/16", "--gateway", "10.0.0.254")
    assert added["destination"] == "192.168.0.0/16" and added["gateway"] == "10.0.0.254"
    melange.ok("route", "add", "web", "172.16.0.0/12", "--gateway", "10.0.0.253")
    routes = melange.json("route", "list", "web")
    assert {(r["destination"], r["gateway"]) for r in routes} == {
        ("192.168.0.0/16", "10.0.0.254"),
        ("172.16.0.0/12", "10.0.0.253"),
    }
    assert_error(melange("route", "add", "web", "192.168.0.0/16", "--gateway", "10.0.0.9"), 4)
    melange.ok("route", "delete", "web", "192.168.0.0/16")
    assert [r["destination"] for r in melange.json("route", "list", "web")] == ["172.16.0.0/12"]
    assert_error(melange("route", "delete", "web", "192.168.0.0/16"), 3)
    assert_error(melange("route", "list", "nope"), 3)
    opts = melange.ok("dhcp", "opts")
    assert "172.16.0.0/12,10.0.0.253" in opts


# -- output


def test_plain_allocate_is_the_bare_address_for_command_substitution(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    result = melange("block", "allocate", "web", "--mac", MAC1)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "10.0.0.2\n", "")
    result = melange("block", "allocate", "web", "--count", "2")
    assert result.stdout == "10.0.0.3\n10.0.0.4\n"


def test_default_output_off_a_terminal_is_plain(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", str(melange.db), "block", "allocate", "web"],
                           env=melange.env)  # fmt: skip
    assert (result.exit_code, result.stdout) == (0, "10.0.0.2\n")
    result = runner.invoke(cli, ["--db", str(melange.db), "block", "allocate", "web"],
                           env={**melange.env, "MELANGE_OUTPUT": "json"})  # fmt: skip
    assert json.loads(result.stdout)["address"] == "10.0.0.3"


def test_plain_output_is_tab_separated_without_header(melange):
    web(melange)
    allocate(melange, "web", "--mac", MAC1)
    allocate(melange, "web", "--mac", MAC2)
    lines = melange.ok("ip", "list").splitlines()
    assert len(lines) == 2
    assert all("\t" in line for line in lines)
    assert lines[0].split("\t")[0] == "10.0.0.1" and MAC1 in lines[0].split("\t")


def test_json_documents_have_stable_keys(melange):
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    melange.ok("policy", "create", "p")
    block = melange.json("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1",
                         "--gateway", "10.0.0.1", "--policy", "p")  # fmt: skip
    assert set(block) == BLOCK_KEYS
    assert set(melange.json("block", "list")[0]) == BLOCK_KEYS
    assert BLOCK_KEYS <= set(melange.json("block", "show", "web"))
    address = melange.json("block", "allocate", "web", "--mac", MAC1.upper())
    assert set(address) == ADDRESS_KEYS
    assert set(melange.json("ip", "show", "10.0.0.2")) == ADDRESS_KEYS | NAT_LINK_KEYS
    assert set(melange.json("ip", "update", "10.0.0.2", "--hostname", "h1")) == ADDRESS_KEYS
    assert set(melange.json("ip", "list")[0]) == ADDRESS_KEYS
    assert set(melange.json("ip", "release", "10.0.0.2")) == ADDRESS_KEYS
    assert set(melange.json("ip", "list", "--released")[0]) == ADDRESS_KEYS
    assert set(melange.json("policy", "show", "p")) == POLICY_KEYS
    assert set(melange.json("policy", "list")[0]) == POLICY_KEYS
    interface = melange.json("interface", "create", "vif1", "--network", "net1")
    assert set(interface) == INTERFACE_KEYS
    assert set(melange.json("interface", "show", "vif1")) == INTERFACE_KEYS
    assert set(melange.json("interface", "list")[0]) == INTERFACE_KEYS
    for record in (block, address, interface):
        assert all(SNAKE.match(key) for key in record)


def test_json_value_forms(melange):
    web(melange)
    melange.ok("block", "create", "2001:db8::/64", "--name", "v6")
    address = melange.json("block", "allocate", "web", "--mac", "02-00-00-AA-BB-CC")
    assert address["address"] == "10.0.0.1"
    assert address["mac"] == "02:00:00:aa:bb:cc"
    assert address["state"] == "allocated" and address["block"] == "web"
    assert address["network"] == "net1"
    moment = parse_iso_utc(address["allocated_at"])
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 120
    v6 = melange.json("block", "allocate", "v6", "--address", "2001:0DB8:0000::0005")
    assert v6["address"] == "2001:db8::5"
    assert melange.json("block", "show", "v6")["cidr"] == "2001:db8::/64"


# -- dhcp


def _populate_hosts(melange: Melange, order: list[int]) -> None:
    entries = [
        ("10.0.0.9", MAC2, None),
        ("10.0.0.5", MAC1, "host-a"),
        ("10.0.0.7", MAC3, "db.example.org"),
    ]
    melange.ok("block", "create", "2001:db8::/64", "--name", "v6", "--network", "net1")
    for i in order:
        address, mac, hostname = entries[i]
        args = ["--address", address, "--mac", mac] + (["--hostname", hostname] if hostname else [])
        allocate(melange, "web", *args)
    allocate(melange, "v6", "--mac", MAC1)
    allocate(melange, "web", "--address", "10.0.0.20")  # no MAC: no line
    held = allocate(melange, "web", "--mac", "02:00:00:00:00:99")
    melange.ok("ip", "release", held)


def test_dhcp_hosts_lines(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    _populate_hosts(melange, [0, 1, 2])
    lines = hosts_lines(melange)
    v6 = eui64("2001:db8::/64", MAC1)
    assert sorted(lines) == sorted(
        [f"{MAC1},10.0.0.5,host-a", f"{MAC3},10.0.0.7,db.example.org", f"{MAC2},10.0.0.9",
         f"{MAC1},[{v6}]"]
    )  # fmt: skip
    v4 = [line for line in lines if "[" not in line]
    assert v4 == sorted(v4, key=lambda line: ipaddress.ip_address(line.split(",")[1]))
    assert_error(melange("dhcp", "hosts", "--network", "nonet"), 3)  # never an empty success


@pytest.mark.sqlite_only
def test_dhcp_hosts_order_is_deterministic(melange, tmp_path):
    other = Melange(tmp_path / "other.db", melange.env)
    for store, order in ((melange, [0, 1, 2]), (other, [2, 0, 1])):
        web(store, "10.0.0.0/24", "--gateway", "10.0.0.1")
        _populate_hosts(store, order)
    first = melange.ok("dhcp", "hosts")
    assert first == melange.ok("dhcp", "hosts") == other.ok("dhcp", "hosts")
    assert first.endswith("\n") and first.count("\n") == 4


def test_dhcp_opts_and_config_are_tagged_by_block(melange):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1", "--dns", "10.0.0.53")
    opts = melange.ok("dhcp", "opts").splitlines()
    assert opts and all(line.startswith("tag:net1/10.0.0.0/24,") for line in opts)
    assert "tag:net1/10.0.0.0/24,option:router,10.0.0.1" in opts
    config = melange.ok("dhcp", "config").splitlines()
    assert "dhcp-range=set:net1/10.0.0.0/24,10.0.0.0,static,255.255.255.0,12h" in config
    assert "tag-if=set:net1,tag:net1/10.0.0.0/24" in config


HOSTS_LINE = re.compile(
    r"^[0-9a-f]{2}(:[0-9a-f]{2}){5},(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\])(,[a-z0-9.-]+)?$"
)
BLOCK_TAG = r"[A-Za-z0-9_.-]+/[0-9a-f.:/]+"
CONFIG_LINE = re.compile(rf"^(dhcp-range=set:{BLOCK_TAG},[^\s,]+,static,[^\s,]+,12h"
                         rf"|tag-if=set:[A-Za-z0-9_.-]+,tag:{BLOCK_TAG}"
                         r"|dhcp-(hostsfile|optsfile)=\S+|dhcp-lease-max=\d+)$")  # fmt: skip


@pytest.mark.parametrize(
    "hostname",
    [
        "a,b",
        "x\n02:00:00:00:00:99,10.0.0.99",
        "#c",
        "set:x",
        "h 1",
        "evil\n",
        pytest.param("evil\n", id="update-evil"),
    ],
)
def test_a_hostname_cannot_inject_into_the_hosts_file(melange, hostname, request):
    web(melange, "10.0.0.0/24", "--gateway", "10.0.0.1")
    allocate(melange, "web", "--mac", MAC1, "--hostname", "good")
    if "update" in request.node.callspec.id:
        melange("ip", "update", "10.0.0.2", "--hostname", hostname)
    else:
        melange("block", "allocate", "web", "--mac", MAC2, "--hostname", hostname)
    text = melange.ok("dhcp", "hosts")
    lines = text.split("\n")
    assert lines[-1] == ""
    assert all(HOSTS_LINE.match(line) for line in lines[:-1]), lines
    assert len(lines) - 1 == len(melange.json("ip", "list")), lines


@pytest.mark.parametrize(
    "network",
    ["a,b", "n 1", "x\ndhcp-range=1.2.3.4", "net1\n"],
)
def test_a_network_name_cannot_inject_into_the_dnsmasq_config(melange, network):
    melange("block", "create", "10.0.0.0/24", "--network", network)
    lines = melange.ok("dhcp", "config").split("\n")
    assert lines[-1] == ""
    assert all(CONFIG_LINE.match(line) for line in lines[:-1]), lines


# -- the store


@pytest.mark.sqlite_only
@pytest.mark.direct_only  # through the socket, melanged has initialised it already
def test_empty_store_is_initialised_on_first_use(melange):
    """By a write: a read on a named store that does not exist creates nothing (6)."""
    assert not melange.db.exists()
    assert_error(melange("block", "list"), 6)
    assert not melange.db.exists()
    melange.ok("policy", "create", "p")
    assert melange.db.exists()
    assert melange.json("block", "list") == []


@pytest.mark.host_local
def test_db_current_prints_the_revision(melange):
    melange.ok("db", "upgrade")  # first use: the store is initialised
    out = melange.ok("db", "current").strip()
    assert out
    status = melange.json("db", "current")
    revision = status["revision"]
    assert isinstance(revision, str) and revision
    assert revision in out.split("\t")
    [(stored,)] = execute_sql(melange.db, "SELECT version_num FROM alembic_version")
    assert revision == stored
    assert melange.json("db", "upgrade")["revision"] == revision  # already current: no-op


@pytest.mark.host_local
def test_db_current_on_a_new_store_initialises_it(melange):
    if melange.socket is None and isinstance(melange.db, Path):  # a named SQLite file
        assert_error(melange("db", "current"), 6)
        melange.ok("db", "upgrade")
    status = melange.json("db", "current")
    assert status["revision"] and status["up_to_date"] is True


def test_older_schema_exits_6_and_asks_for_db_upgrade(melange):
    web(melange)
    allocate(melange, "web")
    execute_sql(melange.db, "UPDATE alembic_version SET version_num = '0000'")
    before = dump_store(melange.db)
    for args in (("block", "allocate", "web"), ("block", "list"), ("ip", "list")):
        line = assert_error(melange(*args), 6)
        assert "melange db upgrade" in line
    result = melange("block", "allocate", "web", output="json")
    assert_error(result, 6, as_json=True)
    assert "melange db upgrade" in json.loads(result.stderr.splitlines()[1])["error"]["message"]
    assert dump_store(melange.db) == before
    on_the_host = Melange(melange.db, melange.env)  # db current is host-local (not --url)
    assert "0000" in on_the_host.ok("db", "current")


def test_store_location_order(tmp_path, melange):
    env = {**melange.env}
    runner = CliRunner()

    def run(*args, **extra_env):
        result = runner.invoke(cli, ["-o", "json", *args], env={**env, **extra_env})
        assert result.exit_code == 0, result.stderr
        return result

    explicit, from_env = tmp_path / "explicit.db", tmp_path / "env.db"
    run("--db", str(explicit), "block", "create", "10.1.0.0/24", MELANGE_DB=str(from_env))
    assert explicit.exists() and not from_env.exists()
    run("block", "create", "10.2.0.0/24", MELANGE_DB=str(from_env))
    assert from_env.exists()
    configured = tmp_path / "configured.db"
    config = tmp_path / "db.conf"
    config.write_text(f"[melange]\ndb = {configured}\n")
    run("block", "create", "10.3.0.0/24", MELANGE_CONFIG=str(config))
    assert configured.exists()
    run("block", "create", "10.4.0.0/24")
    assert (tmp_path / "xdg" / "melange" / "melange.db").exists()
    for path, cidr in ((explicit, "10.1.0.0/24"), (from_env, "10.2.0.0/24"),
                       (configured, "10.3.0.0/24"),
                       (tmp_path / "xdg" / "melange" / "melange.db", "10.4.0.0/24")):  # fmt: skip
        listed = json.loads(run("--db", str(path), "block", "list").stdout)
        assert [b["cidr"] for b in listed] == [cidr]


# -- errors


@pytest.mark.parametrize(
    ("args", "code", "error_code"),
    [
        (("block", "allocate", "tiny"), 5, "exhausted"),
        (("block", "show", "nope"), 3, None),
        (("block", "create", "10.0.0.0/24", "--network", "net1"), 4, None),
        (("block", "create", "10.0.0.0/33"), 2, None),
        (("block", "allocate", "web", "--bogus"), 2, None),
        (("no-such-command",), 2, None),
    ],
)
def test_json_errors_go_to_stderr(melange, args, code, error_code):
    web(melange)
    melange.ok("block", "create", "10.9.9.9/32", "--name", "tiny")
    allocate(melange, "tiny")
    before = dump_store(melange.db)
    result = melange(*args, output="json")
    line = assert_error(result, code, as_json=True)
    error = json.loads(result.stderr.splitlines()[1])["error"]
    if error_code:
        assert error["code"] == error_code
    assert error["message"] in line
    assert dump_store(melange.db) == before


def test_json_error_codes_tell_failures_apart(melange):
    web(melange)
    melange.ok("block", "create", "10.9.9.9/32", "--name", "tiny")
    allocate(melange, "tiny")
    codes = {}
    for args, exit_code in (
        (("block", "allocate", "tiny"), 5),
        (("block", "show", "nope"), 3),
        (("block", "create", "10.0.0.0/24", "--network", "net1"), 4),
        (("block", "create", "10.0.0.0/33"), 2),
    ):
        result = melange(*args, output="json")
        assert_error(result, exit_code, as_json=True)
        codes[exit_code] = json.loads(result.stderr.splitlines()[1])["error"]["code"]
    assert codes[5] == "exhausted"
    assert len(set(codes.values())) == 4  # each kind of failure has its own code


def test_errors_are_one_line_without_traceback(melange):
    web(melange)
    for args, code in (
        (("block", "allocate", "web", "--hostname", "a\nb\nc"), 2),
        (("block", "create", "10.0.0.0/24\nX"), 2),
        (("block", "show", "line1\nline2"), 3),
        (("policy", "create", "x\ny"), 2),
    ):
        assert_error(melange(*args), code)


def test_debug_is_the_only_way_to_a_traceback(melange):
    melange.ok("policy", "create", "p")  # the store exists: "nope" is what is not found
    result = melange("block", "show", "nope")
    assert "Traceback" not in result.stderr
    runner = CliRunner()
    debug = runner.invoke(cli, ["--db", str(melange.db), "--debug", "block", "show", "nope"],
                          env=melange.env)  # fmt: skip
    assert debug.exit_code == 3
    assert "Traceback" in debug.stderr  # --debug: show tracebacks
    assert debug.stderr.splitlines()[-1].startswith("Error: ")


def test_version(melange):
    result = CliRunner().invoke(cli, ["--version"], env=melange.env)
    assert result.exit_code == 0 and result.stdout.strip()


REQUIRED_COMMANDS = [
    "db upgrade", "db current", "block create", "block list", "block show", "block update",
    "block delete", "block subnet", "block allocate", "ip list", "ip show", "ip update",
    "ip release", "ip restore", "policy create", "policy list", "policy show", "policy delete",
    "policy add-range", "policy add-octet", "mac-range create", "mac-range list",
    "mac-range delete", "interface create", "interface list", "interface show",
    "interface delete", "route add", "route list", "route delete", "dhcp hosts", "dhcp opts",
    "dhcp config", "dhcp sync", "report utilization", "history",
    "export", "import", "reconcile",
]  # fmt: skip
MISSING_COMMANDS: list[str] = [
]  # fmt: skip


@pytest.mark.parametrize(
    "command",
    REQUIRED_COMMANDS
    + [
        pytest.param(
            command,
            marks=pytest.mark.xfail(
                reason=f"BUG: the contract's required command `melange {command}` is missing",
                strict=True,
            ),
        )
        for command in MISSING_COMMANDS
    ],
)
def test_required_command_exists(melange, command):
    result = melange(*command.split(), "--help")
    assert result.exit_code == 0, result.stderr
    assert "Usage:" in result.stdout


def test_an_expired_hold_does_not_stop_the_address_becoming_the_gateway(melange, tmp_path):
    web(melange, "10.0.0.0/24")
    assert allocate(melange, "web") == "10.0.0.1"
    melange.ok("ip", "release", "10.0.0.1")
    assert_error(melange("block", "update", "web", "--gateway", "10.0.0.1"), 4)  # held
    execute_sql(melange.db, "UPDATE ip_addresses SET held_until = '2000-01-01 00:00:00'")
    assert melange.json("block", "update", "web", "--gateway", "10.0.0.1")["gateway"] == "10.0.0.1"
    assert allocate(melange, "web") == "10.0.0.2"
