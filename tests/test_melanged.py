"""melanged end to end: real dnsmasq, real udhcpc, real melanged processes (needs root)."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest

from tests.support.melanged_harness import (
    HOSTS_LINE,
    Melanged,
    cli,
    env,
    reloads,
    served_lines,
    wait_until,
)
from tests.support.realparts import Dnsmasq, NetnsPair, require_root, udhcpc_lease

MAC = "02:00:00:00:00:aa"


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cli(url, "block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
        "--gateway", "10.77.0.1", "--dns", "10.77.0.53", "--dns", "10.77.0.54")  # fmt: skip
    return url


@pytest.fixture
def daemon(db, dnsmasq_server, tmp_path):
    with Melanged(db, dnsmasq_server, tmp_path, network="net1") as running:
        running.wait_log("rendered|watching")
        yield running
    assert dnsmasq_server.alive(), "dnsmasq died"


def _has(server, line: str, hostsdir=None) -> bool:
    return line in served_lines(server.hostsfile, hostsdir)


def _caught_up(m: Melanged, server, m_since: int = 0, d_since: int = 0, own: int = 0) -> None:
    """Wait until dnsmasq has re-read its hosts file once for each reload melanged logged
    sending after the two log marks (plus `own` reads of its own: its start): from then
    on it serves the last file rendered, so a test waits for that instead of sleeping."""
    wait_until(
        lambda: reloads(server, d_since) >= own + m.log()[m_since:].count("reload sent: yes"),
        what="dnsmasq to re-read the rendered files",
    )


def _marks(m: Melanged, server) -> tuple[int, int]:
    """Where melanged's log and dnsmasq's log end now."""
    return len(m.log()), server.log_mark()


def test_client_gets_its_address_router_and_dns(db, dnsmasq_server, netns_pair, daemon):
    ip = cli(db, "block", "allocate", "lan", "--mac", MAC, "--hostname", "vm1").strip()
    wait_until(lambda: _has(dnsmasq_server, f"{MAC},{ip},vm1"), what="hosts line")
    wait_until(lambda: reloads(dnsmasq_server) >= 2, what="dnsmasq reload")
    lease = udhcpc_lease(netns_pair, MAC)
    assert lease is not None, dnsmasq_server.log_text()[-2000:]
    assert (lease["ip"], lease["router"]) == (ip, "10.77.0.1")
    assert lease["dns"].split() == ["10.77.0.53", "10.77.0.54"]
    assert dnsmasq_server.alive()


def test_moved_then_released_address(db, dnsmasq_server, netns_pair, daemon):
    first = cli(db, "block", "allocate", "lan", "--mac", MAC).strip()
    wait_until(lambda: _has(dnsmasq_server, f"{MAC},{first}"))
    assert udhcpc_lease(netns_pair, MAC)["ip"] == first
    # Move: release at once and ask for another address for the same MAC.
    marks = _marks(daemon, dnsmasq_server)
    cli(db, "ip", "release", first, "--now")
    cli(db, "block", "allocate", "lan", "--mac", MAC, "--address", "10.77.0.200")
    wait_until(lambda: served_lines(dnsmasq_server.hostsfile) == {f"{MAC},10.77.0.200"})
    daemon.wait_log("rendered 1 hosts", since=marks[0])
    _caught_up(daemon, dnsmasq_server, *marks)
    assert udhcpc_lease(netns_pair, MAC)["ip"] == "10.77.0.200"
    # Release: no reservation, so a static-only dnsmasq offers nothing.
    marks = _marks(daemon, dnsmasq_server)
    cli(db, "ip", "release", "10.77.0.200")
    wait_until(lambda: served_lines(dnsmasq_server.hostsfile) == set(), what="empty file")
    daemon.wait_log("rendered 0 hosts", since=marks[0])
    _caught_up(daemon, dnsmasq_server, *marks)
    assert udhcpc_lease(netns_pair, MAC, tries=2) is None
    assert dnsmasq_server.alive()


def test_hosts_file_is_atomic_and_mode_0644(db, dnsmasq_server, daemon):
    cli(db, "block", "allocate", "lan", "--mac", MAC)
    wait_until(lambda: dnsmasq_server.hostsfile.stat().st_size > 0)
    daemon.wait_log("rendered 1 hosts")  # the opts file is written after the hosts file
    assert dnsmasq_server.hostsfile.stat().st_mode & 0o777 == 0o644
    leftovers = [p.name for p in dnsmasq_server.hostsfile.parent.iterdir()
                 if p.name.startswith(".")]  # fmt: skip
    assert leftovers == []


def test_two_networks_two_dnsmasqs_reload_independently(tmp_path):
    require_root()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    for net, cidr in (("net1", "10.77.0.0/24"), ("net2", "10.78.0.0/24")):
        cli(url, "block", "create", cidr, "--name", net, "--network", net,
            "--gateway", cidr.replace("0/24", "1"))  # fmt: skip
    with NetnsPair("10.77.0.0/24") as pair1, NetnsPair("10.78.0.0/24") as pair2, \
            Dnsmasq(pair1, tmp_path / "d1", network="net1") as d1, \
            Dnsmasq(pair2, tmp_path / "d2", network="net2") as d2, \
            Melanged(url, d1, tmp_path / "d1", network="net1") as m1, \
            Melanged(url, d2, tmp_path / "d2", network="net2") as m2:  # fmt: skip
        for m, d in ((m1, d1), (m2, d2)):
            m.wait_log("rendered")
            _caught_up(m, d, own=1)  # the start-up render read, besides dnsmasq's own start
        marks1, marks2 = _marks(m1, d1), _marks(m2, d2)
        ip = cli(url, "block", "allocate", "net1", "--mac", MAC).strip()
        wait_until(lambda: _has(d1, f"{MAC},{ip}"))
        wait_until(lambda: reloads(d1, marks1[1]) >= 1, what="net1 reload")
        # A later change to net2 is rendered after anything net1's change made m2 do:
        # once d2 has read it, d2 has read everything m2 sent, which is that one file.
        mac2 = "02:00:00:00:00:bb"
        ip2 = cli(url, "block", "allocate", "net2", "--mac", mac2).strip()
        wait_until(lambda: _has(d2, f"{mac2},{ip2}"), what="net2 line")
        m2.wait_log("rendered 1 hosts", since=marks2[0])
        _caught_up(m2, d2, *marks2)
        assert reloads(d2, marks2[1]) == 1, d2.log_text()[marks2[1] :]
        assert served_lines(d2.hostsfile) == {f"{mac2},{ip2}"}
        assert udhcpc_lease(pair1, MAC)["ip"] == ip
        assert d1.alive() and d2.alive()


def _burst(db: str, count: int, workers: int = 4) -> None:
    """`count` allocations from `workers` processes at once, through the core API."""
    code = (
        "import sys\n"
        "from melange import operations\nfrom melange.store import Store\n"
        "s = Store(sys.argv[1])\n"
        "for i in range(int(sys.argv[2]), int(sys.argv[3])):\n"
        "    operations.run(s, 'block.allocate', {'block': 'lan',\n"
        "        'mac': '02:00:00:01:%02x:%02x' % (i >> 8, i & 255)})\n"
    )
    step = count // workers
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db, str(w * step), str((w + 1) * step)],
                         env=env())  # fmt: skip
        for w in range(workers)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0


@pytest.mark.parametrize("use_hostsdir", [False, True], ids=["hostsfile", "hostsdir"])
def test_a_burst_of_200_is_coalesced(db, dnsmasq_server, tmp_path, use_hostsdir, netns_pair):
    hostsdir = tmp_path / "hosts.d" if use_hostsdir else None
    if hostsdir is not None:
        hostsdir.mkdir()
        dnsmasq_server.stop()
        dnsmasq_server.extra_args.append(f"--dhcp-hostsdir={hostsdir}")
        dnsmasq_server.start()
    started = dnsmasq_server.log_mark()
    with Melanged(db, dnsmasq_server, tmp_path, network="net1", hostsdir=hostsdir) as m:
        m.wait_log("rendered")
        _caught_up(m, dnsmasq_server, d_since=started)
        mark, dmark = _marks(m, dnsmasq_server)
        _burst(db, 200)
        expected = set(cli(db, "dhcp", "hosts", "--network", "net1").splitlines())
        assert len(expected) == 200
        wait_until(lambda: served_lines(dnsmasq_server.hostsfile, hostsdir) == expected,
                   timeout=20, what="all 200 lines")  # fmt: skip
        # One more address after the burst: every render of the burst comes before the
        # one that shows it (201 hosts), so none can trail behind unseen.
        cli(db, "block", "allocate", "lan", "--mac", "02:00:00:02:00:01")
        m.wait_log("rendered 201 hosts", since=mark)
        _caught_up(m, dnsmasq_server, mark, dmark)
        renders = [line for line in m.log()[mark:].splitlines() if "rendered" in line]
        sent = sum("reload sent: yes" in line for line in renders)
        assert reloads(dnsmasq_server, dmark) == sent  # each reload melanged sent, read
        count = sum("reload sent: yes" in line for line in renders if "201 hosts" not in line)
        assert count <= 5, f"{count} reloads for one burst"
        if use_hostsdir:
            assert count == 0, "additions through the hosts dir need no reload"
            mac = "02:00:00:01:00:07"
            ip = next(line.split(",")[1] for line in expected if line.startswith(mac))
            assert udhcpc_lease(netns_pair, mac)["ip"] == ip
        assert dnsmasq_server.alive()


def test_sigkill_during_writes_never_leaves_a_partial_file(db, dnsmasq_server, tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, itertools\n"
        "from melange import operations\nfrom melange.store import Store\n"
        "s = Store(sys.argv[1])\n"
        "for i in itertools.count():\n"
        "    mac = '02:00:00:02:%02x:%02x' % ((i >> 8) & 255, i & 255)\n"
        "    r = operations.run(s, 'block.allocate', {'block': 'lan', 'mac': mac})\n"
        "    if i % 3 == 0:\n"
        "        operations.run(s, 'ip.release', {'address': r[0]['address'], 'now': True})\n"
    ), db], env=env())  # fmt: skip
    rng = random.Random(7)
    try:
        for _ in range(12):
            m = Melanged(db, dnsmasq_server, tmp_path, network="net1").start()
            time.sleep(rng.uniform(0.1, 0.6))  # the kill lands at a random point: the test
            m.kill(signal.SIGKILL)
            text = dnsmasq_server.hostsfile.read_text()
            assert text == "" or text.endswith("\n")
            assert all(HOSTS_LINE.match(line) for line in text.splitlines()), text[-300:]
            assert len(set(text.splitlines())) == len(text.splitlines())
    finally:
        writer.kill()
        writer.wait()
    with Melanged(db, dnsmasq_server, tmp_path, network="net1") as m:
        expected = set(cli(db, "dhcp", "hosts").splitlines())
        wait_until(lambda: served_lines(dnsmasq_server.hostsfile) == expected, what="final")
    assert dnsmasq_server.alive()


def test_second_daemon_on_the_same_pidfile_is_refused(db, dnsmasq_server, tmp_path, daemon):
    second = Melanged(db, dnsmasq_server, tmp_path, network="net1").start()
    assert second.proc.wait(timeout=20) == 4
    assert "already running" in second.proc.stderr.read()
    assert daemon.alive()


def test_sigterm_exits_cleanly_and_removes_the_pidfile(db, dnsmasq_server, tmp_path):
    m = Melanged(db, dnsmasq_server, tmp_path, network="net1").start()
    m.wait_log("watching")
    pidfile = tmp_path / "melanged.pid"
    wait_until(pidfile.exists)
    assert m.stop() == 0
    assert not pidfile.exists()
    assert "exiting" in m.log()


def test_store_outage_is_survived_and_logged_once(dnsmasq_server, tmp_path):
    from tests.support.private_mariadb import PrivateMariaDB

    server = PrivateMariaDB(tmp_path)
    server.install()
    server.start()
    try:
        server.create_database()
        url = server.url
        cli(url, "block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1")
        first = cli(url, "block", "allocate", "lan", "--mac", MAC).strip()
        with Melanged(url, dnsmasq_server, tmp_path, network="net1") as m:
            wait_until(lambda: _has(dnsmasq_server, f"{MAC},{first}"), what="first render")
            server.stop()
            m.wait_log("store unavailable", timeout=15)
            # Its port now hangs up on whoever connects: each retry melanged makes while
            # the store is down is seen here, and two of them must not log again.
            with _hanging_up(server.port) as retries:
                wait_until(lambda: retries() >= 2, what="two retries while the store is down")
            assert m.alive()
            assert m.log().count("store unavailable") == 1, m.log()
            assert _has(dnsmasq_server, f"{MAC},{first}"), "the last good file was kept"
            server.start()
            mac2 = "02:00:00:00:00:bb"
            second = cli(url, "block", "allocate", "lan", "--mac", mac2).strip()
            wait_until(lambda: _has(dnsmasq_server, f"{mac2},{second}"), timeout=40,
                       what="render after recovery")  # fmt: skip
            assert "reachable again" in m.log()
            assert m.log().count("store unavailable") == 1
        assert dnsmasq_server.alive()
    finally:
        server.stop()


@contextmanager
def _hanging_up(port: int) -> Iterator[Callable[[], int]]:
    """Listen on a stopped server's port, closing each connection at once (to the
    client, the server is still down); yields how many connections came so far."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    listener.settimeout(0.01)
    seen = 0

    def accepted() -> int:
        nonlocal seen
        with suppress(TimeoutError):
            listener.accept()[0].close()
            seen += 1
        return seen

    try:
        yield accepted
    finally:
        listener.close()


@pytest.mark.parametrize("release", [True, False], ids=["release-interface", "no-release"])
def test_a_moved_address_serves_its_new_owner_at_once(db, dnsmasq_server, netns_pair, tmp_path,
                                                      release):  # fmt: skip
    old_mac, new_mac = "02:00:00:00:00:a1", "02:00:00:00:00:b2"
    extra = ("--release-interface", netns_pair.server_if) if release else ()
    with Melanged(db, dnsmasq_server, tmp_path, network="net1", extra=extra,
                  netns=netns_pair.server_ns) as m:  # fmt: skip
        m.wait_log("watching")
        marks = _marks(m, dnsmasq_server)
        ip = cli(db, "block", "allocate", "lan", "--mac", old_mac).strip()
        wait_until(lambda: _has(dnsmasq_server, f"{old_mac},{ip}"))
        m.wait_log("rendered 1 hosts", since=marks[0])
        _caught_up(m, dnsmasq_server, *marks)
        assert udhcpc_lease(netns_pair, old_mac)["ip"] == ip
        assert ip in dnsmasq_server.lease_text()
        marks = _marks(m, dnsmasq_server)
        cli(db, "ip", "release", ip, "--now")
        cli(db, "block", "allocate", "lan", "--mac", new_mac, "--address", ip)
        wait_until(lambda: served_lines(dnsmasq_server.hostsfile) == {f"{new_mac},{ip}"})
        m.wait_log("rendered 1 hosts", since=marks[0])  # the render that wrote it
        if release:
            m.wait_log("released stale leases", timeout=10)
            wait_until(lambda: old_mac not in dnsmasq_server.lease_text(), what="lease dropped")
            assert udhcpc_lease(netns_pair, new_mac)["ip"] == ip
        else:
            _caught_up(m, dnsmasq_server, *marks)  # dnsmasq knows the new owner
            # The old lease still holds the address: the new owner has to wait.
            assert udhcpc_lease(netns_pair, new_mac, tries=2) is None
    assert dnsmasq_server.alive()


def test_reloads_with_leases_never_crash_dnsmasq(db, dnsmasq_server, netns_pair, daemon):
    """dnsmasq 2.90 aborts on SIGHUP when host lines carry set: tags and a lease exists."""
    macs = [f"02:00:00:00:01:{i:02x}" for i in range(3)]
    for mac in macs:
        cli(db, "block", "allocate", "lan", "--mac", mac)
    wait_until(lambda: len(served_lines(dnsmasq_server.hostsfile)) == 3)
    daemon.wait_log("rendered 3 hosts")
    _caught_up(daemon, dnsmasq_server, own=1)  # dnsmasq's start, then every render
    for mac in macs:
        assert udhcpc_lease(netns_pair, mac) is not None
    for round_ in range(4):
        mark = dnsmasq_server.log_mark()
        cli(db, "ip", "update", cli(db, "ip", "list", "--mac", macs[0]).split("\t")[0],
            "--hostname", f"renamed-{round_}")  # fmt: skip
        wait_until(lambda m=mark: reloads(dnsmasq_server, m) >= 1, what="reload")
        assert dnsmasq_server.alive(), dnsmasq_server.log_text()[-2000:]
    text = dnsmasq_server.hostsfile.read_text() + dnsmasq_server.optsfile.read_text()
    assert "set:" not in text
    opts = dnsmasq_server.optsfile.read_text().split()
    assert all(line.startswith("tag:net1/10.77.0.0/24,") for line in opts)


def test_sighup_rereads_the_config_and_renders_everything(db, dnsmasq_server, tmp_path):
    config = tmp_path / "melange.conf"
    other = tmp_path / "other-hosts"
    config.write_text(f"[melanged]\nhostsfile = {dnsmasq_server.hostsfile}\n")
    cli(db, "block", "allocate", "lan", "--mac", MAC)
    m = Melanged(db, dnsmasq_server, tmp_path, network="net1")
    i = m.argv.index("--hostsfile")  # the config names it instead, so SIGHUP can change it
    del m.argv[i : i + 2]
    m.argv += ["--config", str(config)]
    with m:
        wait_until(lambda: _has(dnsmasq_server, f"{MAC},10.77.0.2"), what="first file")
        config.write_text(f"[melanged]\nhostsfile = {other}\n")
        m.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: other.exists() and f"{MAC},10.77.0.2" in other.read_text(),
                   what="render to the new path")  # fmt: skip
        assert "SIGHUP" in m.log()
        assert m.alive()


def test_daemonizes_with_a_locked_pidfile(db, dnsmasq_server, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    argv = [sys.executable, "-m", "melanged.main", "--db", db, "--network", "net1",
            "--hostsfile", str(dnsmasq_server.hostsfile), "--pidfile", str(pidfile),
            "--log-file", str(tmp_path / "daemon.log")]  # fmt: skip
    cli(db, "block", "allocate", "lan", "--mac", MAC)
    assert subprocess.run(argv, env=env(), timeout=30).returncode == 0  # the parent returns
    wait_until(pidfile.exists, what="pidfile")
    pid = int(pidfile.read_text())
    try:
        wait_until(lambda: _has(dnsmasq_server, f"{MAC},10.77.0.2"), what="render by daemon")
        again = subprocess.run(argv, env=env(), timeout=30, capture_output=True, text=True)
        assert again.returncode == 4 and "already running" in again.stderr
    finally:
        import os

        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists(), what="pidfile removed on SIGTERM")


def test_without_a_running_dnsmasq_the_file_is_still_written(db, tmp_path):
    from types import SimpleNamespace

    absent = SimpleNamespace(hostsfile=tmp_path / "hosts", optsfile=tmp_path / "opts",
                             pidfile=tmp_path / "no-dnsmasq.pid")  # fmt: skip
    absent.pidfile.write_text("999999\n")  # a pid that does not exist
    cli(db, "block", "allocate", "lan", "--mac", MAC)
    with Melanged(db, absent, tmp_path, network="net1") as m:
        wait_until(lambda: _has(absent, f"{MAC},10.77.0.2"), what="file without dnsmasq")
        m.wait_log("dnsmasq is not running")
        opts = absent.optsfile.read_text()
        assert opts.startswith("tag:net1/10.77.0.0/24,option:router,10.77.0.1")
