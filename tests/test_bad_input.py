"""Bad input never gets in: the contract's exit code, one `Error:` line, an unchanged store.

Each case runs one command against a store that already holds a block, a policy,
an allocation with a MAC and a held (released) address, and checks that the
command fails the way the contract says, with one line on stderr, no traceback,
and not a single row of the SQLite file changed.
"""

from __future__ import annotations

import pytest

from tests.support.sql import dump_store

MAC = "02:00:00:aa:bb:cc"
FRESH_MAC = "02:00:00:aa:bb:dd"


def allocate_with_hostname(name: str) -> tuple[str, ...]:
    return ("block", "allocate", "web", "--mac", FRESH_MAC, "--hostname", name)


def create_block(cidr: str) -> tuple[str, ...]:
    return ("block", "create", cidr, "--network", "net9")


def allocate_with_mac(mac: str) -> tuple[str, ...]:
    return ("block", "allocate", "web", "--mac", mac)


def allocate_count(count: str) -> tuple[str, ...]:
    return ("block", "allocate", "web", "--count", count)


CASES = [
    # malformed CIDRs
    ("cidr-no-prefix", create_block("10.0.0.0"), 2),
    ("cidr-prefix-33", create_block("10.0.0.0/33"), 2),
    ("cidr-octet-300", create_block("300.0.0.0/24"), 2),
    ("cidr-three-octets", create_block("10.0.0/24"), 2),
    ("cidr-letters", create_block("abc/24"), 2),
    ("cidr-negative-prefix", create_block("10.0.0.0/-1"), 2),
    ("cidr-v6-prefix-129", create_block("2001:db8::/129"), 2),
    ("cidr-empty", create_block(""), 2),
    ("cidr-empty-prefix", create_block("10.0.0.0/"), 2),
    ("cidr-leading-zeros", create_block("010.000.000.000/24"), 2),
    # host bits set
    ("cidr-host-bits-v4", create_block("10.0.0.5/24"), 2),
    ("cidr-host-bits-v6", create_block("2001:db8::1/64"), 2),
    ("subnet-host-bits", ("block", "subnet", "web", "10.0.0.129/25"), 2),
    (
        "route-destination-host-bits",
        ("route", "add", "web", "192.168.0.1/16", "--gateway", "10.0.0.1"),
        2,
    ),
    # invalid MACs
    ("mac-not-hex", allocate_with_mac("zz:00:00:00:00:01"), 2),
    ("mac-five-octets", allocate_with_mac("02:00:00:00:01"), 2),
    ("mac-seven-octets", allocate_with_mac("02:00:00:00:00:01:02"), 2),
    ("mac-multicast", allocate_with_mac("01:00:5e:00:00:01"), 2),
    ("mac-all-zeros", allocate_with_mac("00:00:00:00:00:00"), 2),
    ("mac-mixed-separators", allocate_with_mac("02:00-00:00:00:01"), 2),
    ("mac-update-invalid", ("ip", "update", "10.0.0.2", "--mac", "02:00:00:00:00"), 2),
    ("mac-range-bad", ("mac-range", "create", "02:16:3e:00:00:01/24"), 2),
    (
        "interface-broadcast-mac",
        ("interface", "create", "vif9", "--network", "net1", "--mac", "ff:ff:ff:ff:ff:ff"),
        2,
    ),
    # hostnames
    ("hostname-comma", allocate_with_hostname("a,b"), 2),
    ("hostname-space", allocate_with_hostname("a b"), 2),
    ("hostname-hash", allocate_with_hostname("a#b"), 2),
    ("hostname-newline", allocate_with_hostname("a\nb"), 2),
    ("hostname-tab", allocate_with_hostname("a\tb"), 2),
    ("hostname-254-chars", allocate_with_hostname(".".join(["a" * 50] * 5)), 2),
    ("hostname-label-64", allocate_with_hostname("a" * 64 + ".example"), 2),
    ("hostname-leading-hyphen", allocate_with_hostname("-web"), 2),
    ("hostname-all-digits", allocate_with_hostname("12345"), 2),
    ("hostname-lease-time", allocate_with_hostname("10m"), 2),
    ("hostname-infinite", allocate_with_hostname("infinite"), 2),
    ("hostname-empty", allocate_with_hostname(""), 2),
    ("hostname-underscore", allocate_with_hostname("a_b"), 2),
    ("hostname-trailing-newline", allocate_with_hostname("evil\n"), 2),
    ("hostname-update-trailing-newline", ("ip", "update", "10.0.0.2", "--hostname", "x\n"), 2),
    ("hostname-update-comma", ("ip", "update", "10.0.0.2", "--hostname", "x,10.0.0.9"), 2),
    # names that end up in dnsmasq files or in tab-separated output
    ("network-trailing-newline", ("block", "create", "10.2.0.0/24", "--network", "net2\n"), 2),
    ("block-name-trailing-newline", ("block", "create", "10.2.0.0/24", "--name", "b2\n"), 2),
    ("policy-name-trailing-newline", ("policy", "create", "p2\n"), 2),
    ("tenant-trailing-newline", ("block", "allocate", "web", "--tenant", "t1\n"), 2),
    (
        "interface-trailing-newline",
        ("interface", "create", "vif9\n", "--network", "net1", "--mac", FRESH_MAC),
        2,
    ),
    ("mac-trailing-newline", allocate_with_mac(FRESH_MAC + "\n"), 2),
    # numbers that are digits to str.isdigit() but not to int()
    ("cidr-superscript-prefix", create_block("10.2.0.0/\u00b2"), 2),
    ("mac-range-superscript-prefix", ("mac-range", "create", "02:16:3e:00:00:00/\u00b2"), 2),
    ("block-ref-superscript", ("block", "allocate", "\u00b2"), 3),
    # policy numbers beyond what the store holds
    (
        "range-length-huge",
        ("policy", "add-range", "pol", "--offset", "0", "--length", str(10**20)),
        2,
    ),
    (
        "range-offset-huge",
        ("policy", "add-range", "pol", "--offset", str(-(10**20)), "--length", "1"),
        2,
    ),
    # --count
    ("count-negative", allocate_count("-1"), 2),
    ("count-zero", allocate_count("0"), 2),
    ("count-not-integer", allocate_count("two"), 2),
    ("count-fraction", allocate_count("1.5"), 2),
    ("count-huge", allocate_count("10000000"), 5),  # the /24 has fewer than N free
    # not found
    ("unknown-block-name", ("block", "allocate", "nope"), 3),
    ("unknown-block-id", ("block", "allocate", "999"), 3),
    ("unknown-block-cidr", ("block", "delete", "10.99.0.0/24"), 3),
    ("unknown-policy", ("block", "create", "10.5.0.0/24", "--policy", "nope"), 3),
    ("release-not-allocated", ("ip", "release", "10.0.0.200"), 3),
    ("unknown-interface", ("interface", "delete", "vif-nope"), 3),
    # conflicts
    ("restore-allocated", ("ip", "restore", "10.0.0.2"), 4),
    ("release-held-again", ("ip", "release", "10.0.0.3"), 4),
    ("delete-block-in-use", ("block", "delete", "web"), 4),
    ("overlapping-cidr", ("block", "create", "10.0.0.128/25", "--network", "net1"), 4),
    ("duplicate-block-name", ("block", "create", "10.1.0.0/24", "--name", "web"), 4),
    ("duplicate-policy", ("policy", "create", "pol"), 4),
    ("delete-used-policy", ("policy", "delete", "pol"), 4),
    ("address-held", ("block", "allocate", "web", "--address", "10.0.0.3"), 4),
    # usage errors and invalid values
    ("gateway-outside", ("block", "create", "10.2.0.0/24", "--gateway", "10.3.0.1"), 2),
    ("gateway-malformed", ("block", "create", "10.2.0.0/24", "--gateway", "10.2.0"), 2),
    ("address-outside", ("block", "allocate", "web", "--address", "10.1.0.5"), 2),
    ("address-malformed", ("block", "allocate", "web", "--address", "10.0.0.256"), 2),
    ("octet-256", ("policy", "add-octet", "pol", "256"), 2),
    ("octet-negative", ("policy", "add-octet", "pol", "-1"), 2),
    ("length-zero", ("policy", "add-range", "pol", "--offset", "0", "--length", "0"), 2),
    ("unknown-option", ("block", "create", "10.2.0.0/24", "--colour", "red"), 2),
    ("unknown-command", ("block", "explode", "web"), 2),
    ("unknown-top-command", ("frobnicate",), 2),
    ("missing-argument", ("block", "create"), 2),
    ("missing-required-option", ("route", "add", "web", "192.168.0.0/16"), 2),
    ("bad-type", ("block", "create", "10.2.0.0/24", "--type", "secret"), 2),
    ("bad-output-format", ("block", "list", "-o", "xml"), 2),
    ("unknown-generator", ("block", "create", "2001:db8:9::/64", "--generator", "random"), 2),
    ("eui64-on-ipv4", ("block", "create", "10.2.0.0/24", "--generator", "eui64"), 2),
    ("network-with-comma", ("block", "create", "10.2.0.0/24", "--network", "a,b"), 2),
    ("network-with-space", ("interface", "create", "vif9", "--network", "net 1"), 2),
    ("dns-malformed", ("block", "create", "10.2.0.0/24", "--dns", "10.2.0.x"), 2),
]


_NEWLINE = (
    "BUG: a trailing newline passes validation (the regex's `$` matches before a final "
    "newline), so the value is stored and can break a dnsmasq line"
)
_ISDIGIT = "BUG: str.isdigit() accepts '\u00b2', then int() raises ValueError: exit 1"
_OVERFLOW = "BUG: values up to 2**128 pass, then SQLite raises OverflowError: exit 1"
KNOWN_BUGS: dict[str, str] = {}  # case id -> "BUG: …" while a bug is open


def _params():
    for case_id, args, code in CASES:
        marks = ()
        if case_id in KNOWN_BUGS:
            marks = pytest.mark.xfail(reason=KNOWN_BUGS[case_id], strict=True)
        yield pytest.param(args, code, id=case_id, marks=marks)


@pytest.fixture
def populated(melange):
    """A block with a gateway, a policy, an allocation with a MAC and a held address."""
    melange.ok("policy", "create", "pol")
    melange.ok("policy", "add-range", "pol", "--offset", "-6", "--length", "2")
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1",
               "--gateway", "10.0.0.1", "--policy", "pol")  # fmt: skip
    assert melange.ok("block", "allocate", "web", "--mac", MAC) == "10.0.0.2\n"
    assert melange.ok("block", "allocate", "web", "--mac", "02:00:00:aa:bb:ee") == "10.0.0.3\n"
    melange.ok("ip", "release", "10.0.0.3")
    return melange


def test_there_are_enough_cases():
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES) >= 35


@pytest.mark.parametrize(("args", "code"), list(_params()))
def test_bad_input_is_refused_cleanly(populated, args, code):
    before = dump_store(populated.db)
    result = populated(*args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.endswith("\n")
    lines = result.stderr.split("\n")[:-1]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ") and len(lines[0]) > len("Error: ")
    assert result.stdout == ""
    assert dump_store(populated.db) == before


def test_the_store_is_as_set_up(populated):
    """The setup itself: if it changed, the cases above would test less than they say."""
    assert [a["address"] for a in populated.json("ip", "list")] == ["10.0.0.2"]
    assert [a["address"] for a in populated.json("ip", "list", "--released")] == ["10.0.0.3"]
    assert populated.ok("dhcp", "hosts") == f"{MAC},10.0.0.2\n"
