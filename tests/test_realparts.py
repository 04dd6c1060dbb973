"""The real-parts harness works: namespaces, a real dnsmasq, a real DHCP client.

These tests also pin down dnsmasq 2.90 behaviour that melange relies on.
"""

import subprocess

import pytest

from tests.support import realparts
from tests.support.realparts import (
    Dnsmasq,
    NetnsPair,
    dnsmasq_check_hostsfile,
    require_root,
    udhcpc_lease,
)

# Fixtures from realparts, bound by assignment (an import would trip ruff's F811).
netns_pair = realparts.netns_pair
dnsmasq_server = realparts.dnsmasq_server

MAC1 = "02:00:00:00:00:01"


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


# -- capability rule: fail in CI, skip elsewhere (no root needed)


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
     ("", pytest.skip.Exception), ("false", pytest.skip.Exception),
     (None, pytest.skip.Exception)],
)  # fmt: skip
def test_missing_root_fails_in_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(realparts.os, "geteuid", lambda: 1000)
    with pytest.raises(outcome, match="root"):
        require_root()


# -- namespaces


@pytest.mark.root
def test_netns_pair_links_up_and_cleaned_up_after_failure():
    require_root()
    with pytest.raises(RuntimeError, match="boom"):
        with NetnsPair("10.78.0.0/24") as pair:
            names = {pair.server_ns, pair.client_ns}
            assert names <= _netns_names()
            addr = pair.run_server(["ip", "-4", "-o", "addr", "show", pair.server_if]).stdout
            assert "10.78.0.1/24" in addr
            link = pair.run_client(["ip", "-o", "link", "show", pair.client_if]).stdout
            assert "LOWER_UP" in link
            raise RuntimeError("boom")
    assert not names & _netns_names()


# -- hosts-file checking


@pytest.mark.root
def test_valid_hosts_line_has_no_complaints(tmp_path):
    require_root()
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{MAC1},10.77.0.5,vm1\n")
    assert dnsmasq_check_hostsfile(hosts) == []


@pytest.mark.root
@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("02:00:00:00:00:02,10.77.0.6,bad name", "bad DHCP host name at line 2"),
        ("02:00:00:00:00:02,10.77.0.6,-bad", "bad DHCP host name at line 2"),
        ("zz:00,10.77.0.7", "bad hex constant at line 2"),
        ("02:00:00:00:00:02,10.77.0.5,dup", "duplicate dhcp-host IP address 10.77.0.5 at line 2"),
    ],
)
def test_bad_hosts_line_is_reported(tmp_path, line, complaint):
    require_root()
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{MAC1},10.77.0.5,vm1\n{line}\n")
    problems = dnsmasq_check_hostsfile(hosts)
    assert len(problems) == 1, problems
    assert problems[0] == f"{complaint} of {hosts}"


@pytest.mark.root
def test_missing_hosts_file_is_reported(tmp_path):
    require_root()
    problems = dnsmasq_check_hostsfile(tmp_path / "nope")
    assert problems == [f"cannot read {tmp_path / 'nope'}: No such file or directory"]


@pytest.mark.root
@pytest.mark.parametrize(
    "line",
    [
        "02:00:00:00:00:02,10.77.0.6,bad,name",  # two name fields: the last one wins
        "02:00:00:00:00:02,10.77.0.6,bad_name",  # underscore, handed out as is
        "02:00:00:00:00:02,10.77.0.6,a..b",  # handed out as "a"
        "02:00:00:00:00:02,10.77.1.999",  # taken for a host name
    ],
)
def test_dnsmasq_silently_accepts_some_wrong_lines(tmp_path, line):
    """dnsmasq does not flag these, so melange has to validate what it writes."""
    require_root()
    hosts = tmp_path / "hosts"
    hosts.write_text(line + "\n")
    assert dnsmasq_check_hostsfile(hosts) == []


# -- DHCP with a real client


@pytest.mark.root
def test_reservation_lease_then_removal(netns_pair, dnsmasq_server):
    dnsmasq_server.write_opts("tag:net1,option:router,10.77.0.1\n")
    dnsmasq_server.write_hosts(f"{MAC1},10.77.0.5,vm1\n")
    dnsmasq_server.reload()

    lease = udhcpc_lease(netns_pair, MAC1)
    assert lease is not None, dnsmasq_server.log_text()
    assert lease["ip"] == "10.77.0.5"
    assert lease["router"] == "10.77.0.1"
    assert lease["hostname"] == "vm1"
    assert lease["subnet"] == "255.255.255.0"
    assert lease["dns"] is None  # not configured; DNS is off (--port=0)
    assert f" {MAC1} 10.77.0.5 vm1 " in dnsmasq_server.lease_text()

    # Remove the reservation: a fresh DISCOVER from the same MAC gets no offer.
    dnsmasq_server.write_hosts("")
    mark = dnsmasq_server.log_mark()
    dnsmasq_server.reload()
    assert udhcpc_lease(netns_pair, MAC1, tries=2) is None
    dnsmasq_server.wait_for_log(rf"DHCPDISCOVER\(veth-s\) {MAC1} no address available", since=mark)
    assert dnsmasq_server.alive()

    # The old lease record stays until released.
    assert "10.77.0.5" in dnsmasq_server.lease_text()
    mark = dnsmasq_server.log_mark()
    dnsmasq_server.dhcp_release("10.77.0.5", MAC1)
    dnsmasq_server.wait_for_log(rf"DHCPRELEASE\(veth-s\) 10\.77\.0\.5 {MAC1}", since=mark)
    assert "10.77.0.5" not in dnsmasq_server.lease_text()
    assert dnsmasq_server.alive()


@pytest.mark.root
def test_two_name_fields_last_one_is_served(netns_pair, dnsmasq_server):
    dnsmasq_server.write_hosts(f"{MAC1},10.77.0.5,first,second\n")
    dnsmasq_server.reload()
    lease = udhcpc_lease(netns_pair, MAC1)
    assert lease is not None
    assert (lease["ip"], lease["hostname"]) == ("10.77.0.5", "second")


@pytest.mark.root
def test_dnsmasq_stop(netns_pair, tmp_path):
    server = Dnsmasq(netns_pair, tmp_path).start()
    assert server.alive()
    assert server.pid == int((tmp_path / "dnsmasq.pid").read_text())
    server.stop()
    assert not server.alive()
