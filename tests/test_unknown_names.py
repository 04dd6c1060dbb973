"""A filter or argument naming a network, block, interface or device that does not exist
fails (exit 3, one line), on every command: a typo never looks like an empty answer.

`dhcp hosts --network typo > hostsfile` in a cron job printed nothing and exited 0,
which wiped every reservation of the network. The same for the list commands,
the other renders, `dhcp sync` and melanged, which must leave the files dnsmasq
has as they are.
"""

from __future__ import annotations

import pytest

from tests.support.melanged_harness import cli, wait_until
from tests.support.socket_daemon import SocketDaemon
from tests.support.sql import dump_store

UNKNOWN = [
    ("block", "list", "--network", "typo"),
    ("ip", "list", "--network", "typo"),
    ("ip", "list", "--released", "--network", "typo"),
    ("ip", "list", "--block", "typo"),
    ("ip", "list", "--interface", "typo"),
    ("ip", "show", "10.0.0.2", "--block", "typo"),
    ("interface", "list", "--device", "typo"),
    ("interface", "show", "typo"),
    ("route", "list", "typo"),
    ("dhcp", "hosts", "--network", "typo"),
    ("dhcp", "opts", "--network", "typo"),
    ("dhcp", "config", "--network", "typo"),
    ("report", "utilization", "--network", "typo"),
    ("export", "--network", "typo"),
    ("history", "--block", "typo"),
    ("reconcile", "--network", "typo"),
    ("interface", "create", "vif9", "--network", "typo"),
    ("block", "allocate", "typo"),
    ("block", "subnet", "typo", "10.0.0.0/26"),
    ("ip", "release", "10.0.0.2", "--block", "typo"),
    ("route", "add", "typo", "10.9.0.0/16", "--gateway", "10.0.0.1"),
]
RENDERS_AND_LISTS = [args for args in UNKNOWN if args[0] in ("dhcp", "export", "report")] + [
    ("block", "list", "--network", "typo"),
    ("interface", "list", "--device", "typo"),
]
INVALID = [
    ("dhcp", "hosts", "--network", "a b"),
    ("dhcp", "hosts", "--network", "tag:x"),
    ("dhcp", "opts", "--network", "net1,net2"),
    ("dhcp", "config", "--network", "net1\nnet2"),
    ("block", "list", "--network", "tag:net1"),
    ("report", "utilization", "--network", "a b"),
    ("export", "--network", "a b"),
    ("interface", "list", "--device", "a b"),
    ("reconcile", "--network", "tag:x"),
]


@pytest.fixture
def seeded(melange):
    """A network with a block, an interface on a device, and a reservation."""
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1",
               "--gateway", "10.0.0.1")  # fmt: skip
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    melange.ok("interface", "create", "vif1", "--network", "net1", "--device", "dev1")
    melange.ok("block", "allocate", "web", "--mac", "02:00:00:00:00:01")
    return melange


def _fails(melange, args, code: int, output: str = "plain") -> None:
    before = dump_store(melange.db)
    result = melange(*args, output=output)
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: ") and "Traceback" not in result.stderr
    assert len(lines) == (2 if output == "json" else 1), result.stderr
    assert dump_store(melange.db) == before


# One seeded store per channel for every case: each case must leave it unchanged (checked),
# and a store per case cost the suite minutes on the servers.
def test_a_name_that_matches_nothing_is_not_found(seeded):
    for args in UNKNOWN:
        host_local = seeded.url is not None and args[0] == "reconcile"  # refused first (2)
        _fails(seeded, args, 2 if host_local else 3)


def test_not_found_with_json_output_too(seeded):
    for args in RENDERS_AND_LISTS:
        _fails(seeded, args, 3, output="json")


def test_a_network_or_device_filter_is_validated_like_every_name(seeded):
    for args in INVALID:
        _fails(seeded, args, 2)


def test_names_that_exist_still_filter(seeded):
    assert seeded.ok("dhcp", "hosts", "--network", "net1").splitlines() == [
        "02:16:3e:00:00:00,10.0.0.2",
        "02:00:00:00:00:01,10.0.0.3",
    ]
    opts = seeded.ok("dhcp", "opts", "--network", "net1")
    assert "tag:net1/10.0.0.0/24,option:router,10.0.0.1" in opts
    assert seeded.ok("block", "list", "--network", "net1").count("\n") == 1
    assert seeded.ok("interface", "list", "--device", "dev1").startswith("vif1\t")
    assert seeded.ok("ip", "list", "--network", "net1").count("\n") == 2
    assert seeded.json("export", "--network", "net1")["blocks"][0]["cidr"] == "10.0.0.0/24"


@pytest.mark.host_local
def test_dhcp_sync_for_an_unknown_network_writes_nothing(seeded, tmp_path):
    hosts = tmp_path / "sync" / "hosts"
    hosts.parent.mkdir()
    hosts.write_text("02:00:00:00:00:01,10.0.0.3\n")
    opts = tmp_path / "sync" / "opts"
    result = seeded("dhcp", "sync", "--hostsfile", str(hosts), "--optsfile", str(opts),
                    "--network", "typo")  # fmt: skip
    assert result.exit_code == 3, result.stderr
    assert hosts.read_text() == "02:00:00:00:00:01,10.0.0.3\n"
    assert sorted(p.name for p in hosts.parent.iterdir()) == ["hosts"]


def test_melanged_keeps_the_files_of_a_network_that_does_not_exist(backend, store_url, tmp_path):
    """A melanged started with a mistyped --network (or whose network lost its last
    block) keeps dnsmasq's files as they were, and says why in its log."""
    cli(store_url, "block", "create", "10.0.0.0/24", "--network", "net1")
    cli(store_url, "block", "allocate", "10.0.0.0/24", "--mac", "02:00:00:00:00:01")
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    hosts = workdir / "hosts"
    hosts.write_text("02:00:00:00:00:01,10.0.0.2\n")
    with SocketDaemon(store_url, workdir, extra=("--network", "typo")) as daemon:
        wait_until(lambda: "nothing to render" in daemon.log.read_text(), what="log line")
        assert daemon.alive()
        assert hosts.read_text() == "02:00:00:00:00:01,10.0.0.2\n"
        assert "no network 'typo'" in daemon.log.read_text()
