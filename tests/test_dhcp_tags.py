"""DHCP options per block, never ambiguous: each block that serves DHCP has its own
dnsmasq tag, set by its own dhcp-range line, and its router, DNS servers and
classless routes go under it. Proved with a real dnsmasq and udhcpc."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.support.cli import assert_error
from tests.support.melanged_harness import Melanged, cli, reloads, wait_until
from tests.support.realparts import Dnsmasq, find_dnsmasq, udhcpc_lease
from tests.support.sql import dump_store

MAC_A = "02:00:00:00:0a:01"
MAC_B = "02:00:00:00:0b:01"
A = "net1/10.77.0.0/25"
B = "net1/10.77.0.128/25"


def _lan_with_two_subnets(melange) -> None:
    """One network, a parent and two subnets with different routers, DNS and routes."""
    melange.ok("block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
               "--gateway", "10.77.0.1", "--dns", "10.77.0.53")  # fmt: skip
    melange.ok("route", "add", "lan", "10.99.0.0/16", "--gateway", "10.77.0.5")
    melange.ok("block", "subnet", "lan", "10.77.0.0/25", "--name", "a")
    melange.ok("block", "subnet", "lan", "10.77.0.128/25", "--name", "b",
               "--gateway", "10.77.0.129", "--dns", "10.77.0.153")  # fmt: skip
    melange.ok("route", "add", "b", "10.98.0.0/16", "--gateway", "10.77.0.254")


def _per_tag_and_option(opts: list[str]) -> Counter:
    return Counter(tuple(line.split(",")[:2]) for line in opts)


def test_each_block_renders_its_own_options_under_its_own_tag(melange):
    _lan_with_two_subnets(melange)
    assert melange.ok("dhcp", "opts").splitlines() == [
        f"tag:{A},option:router,10.77.0.1",
        f"tag:{A},option:dns-server,10.77.0.53",
        f"tag:{A},option:classless-static-route,10.99.0.0/16,10.77.0.5,0.0.0.0/0,10.77.0.1",
        f"tag:{B},option:router,10.77.0.129",
        f"tag:{B},option:dns-server,10.77.0.153",
        f"tag:{B},option:classless-static-route,10.99.0.0/16,10.77.0.5,"
        "10.98.0.0/16,10.77.0.254,0.0.0.0/0,10.77.0.129",
    ]
    assert melange.ok("dhcp", "config").splitlines()[:4] == [
        f"dhcp-range=set:{A},10.77.0.0,static,255.255.255.128,12h",
        f"tag-if=set:net1,tag:{A}",
        f"dhcp-range=set:{B},10.77.0.128,static,255.255.255.128,12h",
        f"tag-if=set:net1,tag:{B}",
    ]


def test_two_top_level_blocks_of_one_network_never_share_an_option_line(melange):
    for cidr, gateway in (("10.1.0.0/24", "10.1.0.1"), ("10.2.0.0/24", "10.2.0.1")):
        melange.ok("block", "create", cidr, "--network", "net1", "--gateway", gateway,
                   "--dns", gateway)  # fmt: skip
        melange.ok("route", "add", cidr, "10.99.0.0/16", "--gateway", gateway)
        melange.ok("route", "add", cidr, "0.0.0.0/0", "--gateway", gateway)
    opts = melange.ok("dhcp", "opts").splitlines()
    assert set(_per_tag_and_option(opts).values()) == {1}, opts
    assert len(opts) == 6
    for line in opts:
        if "classless-static-route" in line:
            assert line.count("0.0.0.0/0") == 1, line


def test_the_default_route_is_given_once_and_a_default_route_replaces_the_gateway(melange):
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1",
               "--gateway", "10.0.0.1")  # fmt: skip
    melange.ok("route", "add", "web", "10.9.0.0/16", "--gateway", "10.0.0.5")
    melange.ok("route", "add", "web", "0.0.0.0/0", "--gateway", "10.0.0.1")
    tag = "tag:net1/10.0.0.0/24"
    assert melange.ok("dhcp", "opts").splitlines() == [
        f"{tag},option:router,10.0.0.1",
        f"{tag},option:classless-static-route,10.9.0.0/16,10.0.0.5,0.0.0.0/0,10.0.0.1",
    ]
    melange.ok("route", "delete", "web", "0.0.0.0/0")
    melange.ok("route", "add", "web", "0.0.0.0/0", "--gateway", "10.0.0.254")
    assert melange.ok("dhcp", "opts").splitlines() == [
        f"{tag},option:router,10.0.0.254",
        f"{tag},option:classless-static-route,10.9.0.0/16,10.0.0.5,0.0.0.0/0,10.0.0.254",
    ]
    # The gateway stays reserved; a subnet's own gateway is nearer than the parent's route.
    assert melange.json("block", "show", "web")["gateway"] == "10.0.0.1"
    melange.ok("block", "subnet", "web", "10.0.0.64/26", "--gateway", "10.0.0.65")
    sub = "tag:net1/10.0.0.64/26"
    assert f"{sub},option:router,10.0.0.65" in melange.ok("dhcp", "opts").splitlines()


def test_a_route_gateway_must_be_on_link(melange):
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1")
    before = dump_store(melange.db)
    for gateway in ("10.0.1.1", "192.168.0.1"):
        assert_error(melange("route", "add", "web", "10.9.0.0/16", "--gateway", gateway), 2)
    assert dump_store(melange.db) == before
    # A subnet's inherited gateway is its router, so on its link; its parent's others are not.
    melange.ok("block", "update", "web", "--gateway", "10.0.0.1")
    melange.ok("block", "subnet", "web", "10.0.0.64/26", "--name", "web-b")
    assert_error(melange("route", "add", "web-b", "10.9.0.0/16", "--gateway", "10.0.0.5"), 2)
    melange.ok("route", "add", "web-b", "10.9.0.0/16", "--gateway", "10.0.0.1")
    melange.ok("route", "add", "web-b", "10.8.0.0/16", "--gateway", "10.0.0.70")


def _add_until_refused(melange, block: str, routes: list[tuple[str, str]]) -> int:
    """Add routes in order until one is refused (exit 4, store unchanged); how many fit."""
    for count, (destination, gateway) in enumerate(routes):
        before = dump_store(melange.db)
        result = melange("route", "add", block, destination, "--gateway", gateway)
        if result.exit_code != 0:
            assert_error(result, 4)
            assert dump_store(melange.db) == before
            return count
    raise AssertionError("every route was accepted")


ROUTES_24 = [(f"10.{100 + i // 256}.{i % 256}.0/24", "10.77.0.254") for i in range(64)]
ROUTES_8 = [(f"{100 + i}.0.0.0/8", f"10.77.0.{200 + i}") for i in range(50)]


def test_routes_beyond_what_dnsmasq_reads_are_refused(melange):
    """255 bytes on the wire (31 routes to /24s, with the default route), and an opts
    line of 1024 characters (39 routes to /8s through long gateways)."""
    melange.ok("block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
               "--gateway", "10.77.0.1")  # fmt: skip
    assert _add_until_refused(melange, "lan", ROUTES_24) == 31
    melange.ok("block", "create", "10.77.0.0/24", "--name", "other", "--network", "net2",
               "--gateway", "10.77.0.1")  # fmt: skip
    assert _add_until_refused(melange, "other", ROUTES_8) == 39
    # A parent's route counts in its subnets' options too.
    melange.ok("block", "create", "10.50.0.0/24", "--name", "top", "--network", "net3")
    melange.ok("block", "subnet", "top", "10.50.0.0/25", "--name", "sub")
    near = [(d, "10.50.0.100") for d, _ in ROUTES_24]
    for destination, gateway in near[:20]:
        melange.ok("route", "add", "sub", destination, "--gateway", gateway)
    assert _add_until_refused(melange, "top", near[20:]) == 11


def _dnsmasq_complaints(pair, workdir: Path, opts: str, config: list[str]) -> list[str]:
    """Start a real dnsmasq with `opts` as its opts file; what it logs against it."""
    workdir.mkdir()
    (workdir / "opts").write_text(opts)
    with Dnsmasq(pair, workdir, config_lines=config) as server:
        messages = server.log_messages()
    return [m for m in messages if "bad" in m or "too long" in m or " at line " in m]


def _one_more(line: str, destination: str, gateway: str) -> str:
    """`line` with one more route before its default route."""
    head, default = line.rstrip("\n").rsplit(",0.0.0.0/0,", 1)
    return f"{head},{destination},{gateway},0.0.0.0/0,{default}\n"


def _routes_of(lease: dict) -> list[str]:
    return (lease.get("staticroutes") or "").split()


@pytest.mark.one_store
def test_real_dnsmasq_serves_the_most_routes_accepted_and_no_more(melange, netns_pair, tmp_path):
    melange.ok("block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
               "--gateway", "10.77.0.1")  # fmt: skip
    fitted = ROUTES_24[: _add_until_refused(melange, "lan", ROUTES_24)]
    mac = "02:00:00:00:00:31"
    ip = melange.ok("block", "allocate", "lan", "--mac", mac).strip()
    config = melange.ok("dhcp", "config").splitlines()
    opts = melange.ok("dhcp", "opts")
    dnsmasq = Dnsmasq(netns_pair, tmp_path / "served", config_lines=config)
    dnsmasq.workdir.mkdir()
    (dnsmasq.workdir / "opts").write_text(opts)
    (dnsmasq.workdir / "hosts").write_text(melange.ok("dhcp", "hosts"))
    with dnsmasq:
        lease = udhcpc_lease(netns_pair, mac, extra_args=["-O", "staticroutes"])
        assert lease is not None, dnsmasq.log_text()[-3000:]
        assert lease["ip"] == ip
        expected = [part for d, g in fitted for part in (d, g)] + ["0.0.0.0/0", "10.77.0.1"]
        assert _routes_of(lease) == expected
    route_line = opts.splitlines()[-1] + "\n"
    assert _dnsmasq_complaints(netns_pair, tmp_path / "fits", opts, config) == []
    over = _one_more(route_line, "10.200.0.0/24", "10.77.0.254")
    assert _dnsmasq_complaints(netns_pair, tmp_path / "over", over, config) != []
    # The line length limit: 39 routes to /8s fit, a 40th makes a line dnsmasq drops.
    melange.ok("block", "create", "10.77.0.0/24", "--name", "long", "--network", "net2",
               "--gateway", "10.77.0.1")  # fmt: skip
    assert _add_until_refused(melange, "long", ROUTES_8) == 39
    long_opts = melange.ok("dhcp", "opts", "--network", "net2")
    assert _dnsmasq_complaints(netns_pair, tmp_path / "long", long_opts, config) == []
    over = _one_more(long_opts.splitlines()[-1], "199.0.0.0/8", "10.77.0.250")
    assert _dnsmasq_complaints(netns_pair, tmp_path / "long-over", over, config) != []


@pytest.mark.one_store
def test_real_dnsmasq_gives_each_blocks_clients_their_own_router_and_routes(
    melange, netns_pair, tmp_path
):
    """Two subnets of one network on one link (the server has an address in each):
    dnsmasq started with the ranges and tag-ifs `dhcp config` prints."""
    _lan_with_two_subnets(melange)
    ip_a = melange.ok("block", "allocate", "a", "--mac", MAC_A).strip()
    ip_b = melange.ok("block", "allocate", "b", "--mac", MAC_B).strip()
    netns_pair.run_server(["ip", "addr", "add", "10.77.0.253/25", "dev", netns_pair.server_if])
    config = melange.ok("dhcp", "config").splitlines()
    dnsmasq = Dnsmasq(netns_pair, tmp_path / "dnsmasq", config_lines=config)
    dnsmasq.workdir.mkdir()
    (dnsmasq.workdir / "hosts").write_text(melange.ok("dhcp", "hosts"))
    # A line under the network's tag still applies (set by the tag-if lines).
    (dnsmasq.workdir / "opts").write_text(
        melange.ok("dhcp", "opts") + "tag:net1,option:domain-name,example.org\n"
    )
    with dnsmasq:
        got = {}
        for mac in (MAC_A, MAC_B):
            got[mac] = udhcpc_lease(netns_pair, mac, extra_args=["-O", "staticroutes"])
            assert got[mac] is not None, dnsmasq.log_text()[-3000:]
        assert dnsmasq.alive()
        log = dnsmasq.log_text()
    a, b = got[MAC_A], got[MAC_B]
    assert (a["ip"], a["router"], a["dns"], a["mask"]) == (ip_a, "10.77.0.1", "10.77.0.53", "25")
    assert _routes_of(a) == ["10.99.0.0/16", "10.77.0.5", "0.0.0.0/0", "10.77.0.1"]
    assert (b["ip"], b["router"], b["dns"]) == (ip_b, "10.77.0.129", "10.77.0.153")
    assert _routes_of(b) == ["10.99.0.0/16", "10.77.0.5", "10.98.0.0/16", "10.77.0.254",
                             "0.0.0.0/0", "10.77.0.129"]  # fmt: skip
    assert f"tags: net1, {A}," in log and f"tags: net1, {B}," in log
    assert "domain-name  example.org" in log


def test_an_ipv6_block_dnsmasq_cannot_serve_is_a_comment_not_a_range(melange, tmp_path):
    melange.ok("block", "create", "2001:db8:1::/56", "--network", "net1")
    melange.ok("block", "create", "2001:db8:2::/64", "--network", "net1")
    config = melange.ok("dhcp", "config").splitlines()
    assert config[0].startswith("# net1/2001:db8:1::/56: not served")
    assert config[1:3] == ["dhcp-range=set:net1/2001:db8:2::/64,2001:db8:2::,static,64,12h",
                           "tag-if=set:net1,tag:net1/2001:db8:2::/64"]  # fmt: skip
    for name in ("hosts", "opts"):
        (tmp_path / name).write_text("")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("".join(f"{line}\n" for line in config[:3])
                    + f"dhcp-hostsfile={tmp_path / 'hosts'}\ndhcp-optsfile={tmp_path / 'opts'}\n")
    check = subprocess.run([find_dnsmasq(), "--test", f"--conf-file={conf}"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    # What was rendered before, for the /56: dnsmasq refuses it.
    conf.write_text("dhcp-range=set:net1,2001:db8:1::,static,56,12h\n")
    check = subprocess.run([find_dnsmasq(), "--test", f"--conf-file={conf}"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode != 0 and "prefix length must be at least 64" in check.stderr


def test_melanged_carries_a_parents_new_gateway_to_its_subnets_clients(netns_pair, tmp_path):
    """A subnet's options follow its parent: melanged re-renders them, dnsmasq serves them."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    cli(db, "block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
        "--gateway", "10.77.0.1")  # fmt: skip
    cli(db, "block", "subnet", "lan", "10.77.0.0/25", "--name", "a")
    ip = cli(db, "block", "allocate", "a", "--mac", MAC_A).strip()
    config = cli(db, "dhcp", "config").splitlines()
    dnsmasq = Dnsmasq(netns_pair, tmp_path / "dnsmasq", config_lines=config)
    dnsmasq.workdir.mkdir()
    dnsmasq.hostsfile.write_text(cli(db, "dhcp", "hosts"))
    dnsmasq.optsfile.write_text(cli(db, "dhcp", "opts"))
    router = f"tag:{A},option:router,"
    assert f"{router}10.77.0.1\n" in dnsmasq.optsfile.read_text()
    with dnsmasq, Melanged(db, dnsmasq, tmp_path, network="net1") as daemon:
        daemon.wait_log("rendered|watching")
        assert udhcpc_lease(netns_pair, MAC_A)["router"] == "10.77.0.1"
        mark = dnsmasq.log_mark()
        cli(db, "block", "update", "lan", "--gateway", "10.77.0.126")
        wait_until(lambda: f"{router}10.77.0.126\n" in dnsmasq.optsfile.read_text(),
                   what="the parent's new gateway in the subnet's options")  # fmt: skip
        wait_until(lambda: reloads(dnsmasq, mark) >= 1, what="dnsmasq reload")
        lease = udhcpc_lease(netns_pair, MAC_A)
        assert (lease["ip"], lease["router"]) == (ip, "10.77.0.126")
