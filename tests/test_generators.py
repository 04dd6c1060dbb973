"""Address generators are plug-ins: a package adds one by entry point, melange unchanged."""

from __future__ import annotations

import hashlib
import ipaddress
import textwrap

import pytest

PLUGIN = textwrap.dedent(
    '''
    class Answer:
        """Hands out the block's 42nd address, through the free space like any generator."""

        name = "answer"
        families = frozenset({4, 6})

        def check_block(self, block):
            return None

        def choose(self, block, request, space):
            space.claim(block.first + 42)
            return [block.first + 42]
    '''
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution (dist-info on sys.path) registering generator `answer`."""
    site = tmp_path / "site"
    (site / "melange_answer-1.0.dist-info").mkdir(parents=True)
    (site / "melange_answer.py").write_text(PLUGIN)
    info = site / "melange_answer-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: melange-answer\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[melange.ip_generators]\nanswer = melange_answer:Answer\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return "answer"


@pytest.mark.sqlite_only
@pytest.mark.direct_only  # the plug-in is installed in this process only
def test_a_third_party_generator_is_found_by_name(melange, plugin):
    block = melange.json("block", "create", "10.60.0.0/24", "--name", "p", "--generator", plugin)
    assert block["generator"] == "answer"
    assert melange.ok("block", "allocate", "p") == "10.60.0.42\n"
    # The free space still guards it: the same address twice is a conflict.
    result = melange("block", "allocate", "p")
    assert result.exit_code == 4, result.stderr


def test_unknown_generator_lists_the_known_ones(melange):
    result = melange("block", "create", "10.60.0.0/24", "--generator", "nope")
    assert result.exit_code == 2
    for name in ("lowest-free", "eui64", "tenant-hash"):
        assert name in result.stderr


def test_tenant_hash_follows_the_original_melange_scheme(melange):
    melange.ok("block", "create", "2001:db8:60::/64", "--name", "t", "--tenant", "acme",
               "--generator", "tenant-hash")  # fmt: skip
    got = melange.ok("block", "allocate", "t", "--mac", "02:aa:bb:cc:dd:ee").strip()
    tenant_bits = int.from_bytes(hashlib.sha1(b"acme").digest()[:4], "big")
    expected = ipaddress.IPv6Address(
        (0x20010DB80060 << 80) | (tenant_bits << 32) | (0xFF << 24) | 0xCCDDEE
    )
    assert ipaddress.IPv6Address(got) == expected
