"""DNS names: the rules of the store (every backend), and a real dnsmasq answering `dig`."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest

from melange.dnsmasq import names as dns_files
from tests.support.cli import Melange, assert_error
from tests.support.melanged_harness import Melanged, wait_until
from tests.support.realparts import Dnsmasq, find_dnsmasq

BAD_HOSTNAMES = ["a b", "a,b", "a\nb", "#x", "a_b", "-a", "a..b", "é", "x" * 64, "12", "a/b"]
BAD_DOMAINS = ["a b", "a,b", "lab.example\n1.2.3.4 evil", "x/y", "1.2.3.4", "-x.y", "a..b",
               "#c", "*.lab", "é.fr", ""]  # fmt: skip
HOSTS_LINE = re.compile(r"^[0-9a-f.:]+ [a-z0-9.-]+$")


def _fails(melange, code: int, *args: str) -> None:
    assert_error(melange(*args), code)


@pytest.mark.direct_only
def test_names_rules(melange):
    """Domains inherited, names unique among live addresses (4), renames, holds, bad input (2)."""
    melange.ok("block", "create", "10.5.0.0/16", "--name", "top", "--network", "n1",
               "--domain", "Lab.Example.")  # fmt: skip
    melange.ok("block", "subnet", "top", "10.5.1.0/24", "--name", "sub")
    melange.ok("block", "create", "10.6.0.0/24", "--name", "other", "--network", "n2",
               "--domain", "other.example")  # fmt: skip
    shown = melange.json("block", "show", "sub")
    assert shown["domain"] == "lab.example" and shown["inherited"]["domain"] == "top"
    ip1 = melange.ok("block", "allocate", "sub", "--hostname", "vm1").strip()
    record = melange.json("ip", "show", ip1)
    assert record["dns_name"] == "vm1.lab.example"
    _fails(melange, 4, "block", "allocate", "sub", "--hostname", "VM1.lab.example")
    ip2 = melange.ok("block", "allocate", "other", "--hostname", "vm1").strip()  # other domain
    assert melange.ok("dns", "hosts") == f"{ip1} vm1.lab.example\n{ip2} vm1.other.example\n"
    assert melange.ok("dns", "hosts", "--network", "n2") == f"{ip2} vm1.other.example\n"
    _fails(melange, 3, "dns", "hosts", "--network", "typo")
    # A rename; a held address has no name, and its name is free meanwhile.
    melange.ok("ip", "update", ip1, "--hostname", "vm2")
    melange.ok("ip", "release", ip1)
    ip3 = melange.ok("block", "allocate", "sub", "--hostname", "vm2").strip()
    _fails(melange, 4, "ip", "restore", ip1)
    assert melange.ok("dns", "hosts", "--network", "n1") == f"{ip3} vm2.lab.example\n"
    # A domain change renames what it reaches, all or nothing.
    melange.ok("block", "update", "top", "--domain", "new.example")
    assert melange.ok("dns", "hosts", "--network", "n1") == f"{ip3} vm2.new.example\n"
    melange.ok("block", "update", "other", "--domain", "new.example")
    melange.ok("ip", "update", ip2, "--hostname", "vm3")
    melange.ok("block", "update", "sub", "--domain", "x.example")
    melange.ok("ip", "update", ip2, "--hostname", "vm2")
    _fails(melange, 4, "block", "update", "sub", "--domain", "new.example")
    _fails(melange, 4, "block", "update", "sub", "--no-domain")  # inherits new.example
    melange.ok("ip", "update", ip2, "--hostname", "vm4")
    melange.ok("block", "update", "sub", "--no-domain")
    assert melange.ok("dns", "hosts", "--network", "n1") == f"{ip3} vm2.new.example\n"
    before = melange.ok("dns", "hosts")
    for bad in BAD_HOSTNAMES:
        _fails(melange, 2, "block", "allocate", "sub", "--hostname", bad)
        _fails(melange, 2, "ip", "update", ip3, "--hostname", bad)
    for bad in BAD_DOMAINS:
        _fails(melange, 2, "block", "update", "top", "--domain", bad)
        _fails(melange, 2, "block", "create", "10.9.0.0/24", "--domain", bad)
    _fails(melange, 2, "block", "update", "top", "--domain", "x.example", "--no-domain")
    long = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 60])  # 252: the name would be 264
    _fails(melange, 2, "block", "allocate", "sub", "--hostname", long)
    assert melange.ok("dns", "hosts") == before
    _fails(melange, 3, "block", "show", "10.9.0.0/24")


class DnsServingDnsmasq(Dnsmasq):
    """The DHCP test server with its DNS on (port 53 instead of 0)."""

    @property
    def argv(self) -> list[str]:
        return ["--port=53" if arg == "--port=0" else arg for arg in super().argv]


def _melange(store: str, tmp_path) -> Melange:
    """The CLI in this process (a process per command costs seconds on a busy machine)."""
    unset = ("MELANGE_CONFIG", "MELANGE_DB", "MELANGE_OUTPUT", "MELANGE_SOCKET", "MELANGE_URL",
             "MELANGE_DEBUG", "MELANGE_TOKEN_FILE", "MELANGE_CA_FILE")  # fmt: skip
    return Melange(store, {**dict.fromkeys(unset), "XDG_DATA_HOME": str(tmp_path / "xdg")})


def _dig(server: Dnsmasq, *query: str) -> list[str]:
    """`dig +short` from dnsmasq's namespace, at its address."""
    proc = server.pair.run_server(
        ["dig", "+short", "+time=2", "+tries=2", f"@{server.pair.server_ip}", *query]
    )
    return proc.stdout.split()


def _status(server: Dnsmasq, name: str) -> str:
    proc = server.pair.run_server(["dig", "+time=2", "+tries=2", f"@{server.pair.server_ip}", name])
    return re.search(r"status: (\w+)", proc.stdout).group(1)


def _files_whole(hostsdir, addn_hosts) -> None:
    """Every file dnsmasq reads holds only whole `ADDRESS NAME` lines."""
    paths = [p for p in hostsdir.iterdir() if not p.name.startswith(".")] + [addn_hosts]
    for path in paths:
        if path.exists():
            text = path.read_text()
            assert text == "" or text.endswith("\n"), path
            assert all(HOSTS_LINE.match(line) for line in text.splitlines()), (path, text)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, backends, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return backends.url("postgresql", tmp_path)


def test_dnsmasq_answers_names_at_once(store, netns_pair, tmp_path):
    """A, AAAA and PTR for a machine that never took a lease; a rename; a release; two
    networks with different domains; folds at a reload; a SIGKILLed melanged and a
    restart with the files present."""
    run = _melange(store, tmp_path)
    run.ok("block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
        "--gateway", "10.77.0.1", "--domain", "lab.example")  # fmt: skip
    run.ok("block", "create", "2001:db8:77::/64", "--name", "lan6", "--network", "net1",
        "--domain", "lab.example")  # fmt: skip
    run.ok("block", "create", "10.88.0.0/24", "--name", "dmz", "--network", "net2",
        "--domain", "dmz.example")  # fmt: skip
    hostsdir, addn = tmp_path / "dns.d", tmp_path / "dns.hosts"
    hostsdir.mkdir()
    config = run.ok("dns", "config").replace("/var/lib/melange/dns.hosts", str(addn))
    config = config.replace("/var/lib/melange/dns.d", str(hostsdir))
    extra = [f"--{line}" for line in config.splitlines()]
    server = DnsServingDnsmasq(netns_pair, tmp_path / "dnsmasq", extra_args=extra).start()
    flags = ("--dns-hostsdir", str(hostsdir), "--addn-hosts", str(addn))
    daemon = Melanged(store, server, tmp_path, extra=flags).start()
    try:
        daemon.wait_log("DNS: 0 names folded", timeout=120)  # the addn-hosts file, written at start
        started = len(daemon.log())
        v4 = run.ok("block", "allocate", "lan", "--hostname", "vm1").strip()
        v6 = run.ok("block", "allocate", "lan6", "--hostname", "vm1").strip()
        dmz = run.ok("block", "allocate", "dmz", "--hostname", "web").strip()
        wait_until(lambda: _dig(server, "vm1.lab.example") == [v4], what="A", timeout=60)
        assert _dig(server, "AAAA", "vm1.lab.example") == [v6]
        assert _dig(server, "-x", v4) == ["vm1.lab.example."]
        assert _dig(server, "-x", v6) == ["vm1.lab.example."]
        wait_until(
            lambda: _dig(server, "web.dmz.example") == [dmz], what="other domain", timeout=60
        )
        assert _status(server, "web.lab.example") == "NXDOMAIN"
        assert sorted(p.name for p in hostsdir.iterdir()) == ["vm1.lab.example", "web.dmz.example"]
        # A rename, then a release (held: no name), each by a small file alone.
        run.ok("ip", "update", v4, "--hostname", "vm2")
        wait_until(lambda: _dig(server, "vm2.lab.example") == [v4], what="rename", timeout=60)
        assert _dig(server, "A", "vm1.lab.example") == []
        assert _dig(server, "AAAA", "vm1.lab.example") == [v6]
        run.ok("ip", "release", dmz)
        wait_until(
            lambda: _status(server, "web.dmz.example") == "NXDOMAIN", what="release", timeout=60
        )
        assert "folded" not in daemon.log()[started:]
        # A DHCP reservation: a reload melanged sends anyway, and the names are folded.
        run.ok("block", "allocate", "lan", "--mac", "02:00:00:00:00:07", "--hostname", "db")
        daemon.wait_log("folded into the addn-hosts file", timeout=120)
        wait_until(lambda: not list(hostsdir.iterdir()), what="small files removed", timeout=60)
        assert dns_files.parse(addn.read_text()).keys() == {"vm1.lab.example", "vm2.lab.example",
                                                            "db.lab.example"}  # fmt: skip
        assert _dig(server, "vm2.lab.example") == [v4]
        assert _dig(server, "db.lab.example") != []
        # A folded name released: only a reload takes it away.
        run.ok("ip", "release", v4)
        wait_until(
            lambda: _status(server, "vm2.lab.example") == "NXDOMAIN", what="folded gone", timeout=60
        )
        assert _dig(server, "AAAA", "vm1.lab.example") == [v6]
        # SIGKILL in the middle of a burst: the files stay whole.
        for i in range(6):
            run.ok("block", "allocate", "dmz", "--hostname", f"burst{i}")
        daemon.kill(signal.SIGKILL)
        _files_whole(hostsdir, addn)
        daemon = Melanged(store, server, tmp_path, extra=flags).start()
        wait_until(
            lambda: _dig(server, "burst5.dmz.example") != [], what="after restart", timeout=120
        )
        assert _dig(server, "AAAA", "vm1.lab.example") == [v6]
        _files_whole(hostsdir, addn)
        wanted = dns_files.parse(run.ok("dns", "hosts"))
        served = dns_files.DnsFiles(hostsdir, addn).served()
        wait_until(
            lambda: dns_files.DnsFiles(hostsdir, addn).served() == wanted,
            what="in step",
            timeout=60,
        )
        assert served.keys() <= wanted.keys()
        assert server.alive()
    finally:
        daemon.stop()
        server.stop()


def test_dns_config_is_accepted_by_dnsmasq(tmp_path):
    """Every line `dns config` prints parses (dnsmasq --test), for odd prefix lengths too."""
    run = _melange(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    for cidr, domain in (
        ("10.1.0.0/22", "a.example"),
        ("10.2.0.0/26", "b.example"),
        ("2001:db8::/60", "c.example"),
        ("10.3.0.0/24", "a.example"),
    ):
        run.ok("block", "create", cidr, "--network", "n1", "--domain", domain)  # fmt: skip
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(run.ok("dns", "config"))
    proc = subprocess.run([find_dnsmasq(), "--test", f"--conf-file={conf}"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert conf.read_text().count("local=/a.example/") == 1


def test_reconcile_finds_and_repairs_dns_drift(tmp_path):
    """Names the files lack and records the store does not have: found (8), repaired."""
    run = _melange(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    run.ok("block", "create", "10.0.0.0/24", "--name", "a", "--domain", "lab.example")
    ip = run.ok("block", "allocate", "a", "--hostname", "vm1").strip()
    hostsdir, addn = tmp_path / "dns.d", tmp_path / "dns.hosts"
    hostsdir.mkdir()
    (hostsdir / "ghost.lab.example").write_text("10.0.0.99 ghost.lab.example\n")
    files = ("--dns-hostsdir", str(hostsdir), "--addn-hosts", str(addn))
    result = run("reconcile", *files, output="json")
    assert result.exit_code == 8, result.stderr
    found = {(f["kind"], f.get("name"), f.get("address")) for f in _findings(result.stdout)}
    assert ("dns_missing", "vm1.lab.example", ip) in found
    assert ("dns_extra", "ghost.lab.example", "10.0.0.99") in found
    fixed = run("reconcile", *files, "--fix", output="json")
    assert fixed.exit_code == 0, fixed.stdout + fixed.stderr
    assert addn.read_text() == f"{ip} vm1.lab.example\n"
    assert list(hostsdir.iterdir()) == []
    assert run("reconcile", *files).exit_code == 0


def _findings(stdout: str) -> list[dict]:
    document = json.loads(stdout)
    return document["findings"] if isinstance(document, dict) else document


def test_dhcp_sync_writes_the_dns_names_files_too(tmp_path):
    """`dhcp sync --dns-hostsdir --addn-hosts`: one pass writes the DNS names as melanged
    keeps them (folded into the addn-hosts file, no small file left), follows a rename
    and a release, and leaves nothing for reconcile to find."""
    run = _melange(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    run.ok("block", "create", "10.0.0.0/24", "--name", "a", "--domain", "lab.example")
    first = run.ok("block", "allocate", "a", "--hostname", "vm1").strip()
    second = run.ok("block", "allocate", "a", "--hostname", "vm2").strip()
    hostsdir, addn = tmp_path / "dns.d", tmp_path / "dns.hosts"
    hostsdir.mkdir()
    files = ("--dns-hostsdir", str(hostsdir), "--addn-hosts", str(addn))
    hosts = ("--hostsfile", str(tmp_path / "dhcp.hosts"))
    synced = run("dhcp", "sync", *hosts, *files, output="json")
    assert synced.exit_code == 0, synced.stderr
    assert json.loads(synced.stdout)["dns_names"] == 2
    assert addn.read_text() == f"{first} vm1.lab.example\n{second} vm2.lab.example\n"
    assert list(hostsdir.iterdir()) == []
    run.ok("ip", "update", first, "--hostname", "web1")
    run.ok("ip", "release", second)
    assert run("dhcp", "sync", *hosts, *files).exit_code == 0
    assert addn.read_text() == f"{first} web1.lab.example\n"
    assert run("reconcile", *files).exit_code == 0
    row = run.json("history", "--limit", "1")[0]
    params = json.loads(row["params"]) if isinstance(row["params"], str) else row["params"]
    assert row["command"] == "dhcp.sync" and params["addn_hosts"] == str(addn)
