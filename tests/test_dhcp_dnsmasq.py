"""What `melange dhcp hosts/opts` prints is read by a real dnsmasq, and served."""

from __future__ import annotations

from tests.support.realparts import dnsmasq_check_hostsfile, udhcpc_lease

HOSTNAMES = ["vm-1", "db.example.org", "x", "web-01.rack-2", None]


def _populate(melange) -> list[tuple[str, str, str | None]]:
    """A network with varied hostnames, an IPv6 block, held and MAC-less addresses."""
    melange.ok("block", "create", "10.77.0.0/24", "--name", "net1-v4", "--network", "net1",
               "--gateway", "10.77.0.1", "--dns", "10.77.0.1", "--dns", "10.77.0.2")  # fmt: skip
    melange.ok("block", "create", "2001:db8:77::/64", "--name", "net1-v6", "--network", "net1")
    expected = []
    for i, hostname in enumerate(HOSTNAMES, start=1):
        mac = f"02:00:00:00:00:{i:02x}"
        args = ["block", "allocate", "net1-v4", "--mac", mac]
        if hostname:
            args += ["--hostname", hostname]
        expected.append((mac, melange.ok(*args).strip(), hostname))
    melange.ok("block", "allocate", "net1-v6", "--mac", "02:00:00:00:00:01")
    melange.ok("block", "allocate", "net1-v4")  # no MAC: no DHCP line
    held = melange.ok("block", "allocate", "net1-v4", "--mac", "02:00:00:00:00:99").strip()
    melange.ok("ip", "release", held)
    return expected


def test_hosts_file_is_accepted_by_real_dnsmasq(melange, tmp_path):
    expected = _populate(melange)
    text = melange.ok("dhcp", "hosts")
    lines = text.splitlines()
    for mac, ip, hostname in expected:
        assert (f"{mac},{ip},{hostname}" if hostname else f"{mac},{ip}") in lines
    assert any(line.startswith("02:00:00:00:00:01,[2001:db8:77::") for line in lines)
    assert not any("02:00:00:00:00:99" in line for line in lines), "held address rendered"
    assert len(lines) == len(expected) + 1
    hosts = tmp_path / "hosts"
    hosts.write_text(text)
    assert dnsmasq_check_hostsfile(hosts) == []


def test_client_gets_the_allocated_address_router_and_dns(melange, dnsmasq_server, netns_pair):
    expected = _populate(melange)
    dnsmasq_server.write_hosts(melange.ok("dhcp", "hosts"))
    dnsmasq_server.write_opts(melange.ok("dhcp", "opts"))
    dnsmasq_server.reload()
    mac, ip, hostname = expected[1]
    lease = udhcpc_lease(netns_pair, mac)
    assert lease is not None, dnsmasq_server.log_text()
    assert lease["ip"] == ip
    assert lease["router"] == "10.77.0.1"
    assert lease["dns"].split() == ["10.77.0.1", "10.77.0.2"]
    assert dnsmasq_server.alive()


def test_released_address_is_not_offered(melange, dnsmasq_server, netns_pair):
    expected = _populate(melange)
    mac, ip, _ = expected[0]
    melange.ok("ip", "release", ip)
    dnsmasq_server.write_hosts(melange.ok("dhcp", "hosts"))
    dnsmasq_server.reload()
    assert udhcpc_lease(netns_pair, mac, tries=2) is None
    assert dnsmasq_server.alive()
