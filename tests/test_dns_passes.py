"""What a pass of the dnsmasq backend writes for DNS names, on SQLite and a server:
the first pass folds every name into the addn-hosts file (never one small file per
name, which dnsmasq would read one cache pass at a time when it starts), later ones
write a small file per new name, found through the audit trail on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from melange import dhcp_backend, operations
from melange.dhcp_backend import Target
from melange.dnsmasq.names import FOLD_AT
from melange.store import Store
from tests.support.sql import execute_sql


@pytest.fixture
def named_store(store_url):
    store = Store(store_url, release_hold=0)
    operations.run(store, "block.create",
                   {"cidr": "10.90.0.0/16", "name": "lan", "domain": "lab.example"})  # fmt: skip
    operations.run(store, "block.allocate", {"block": "lan", "count": FOLD_AT + 200})
    # More names than the small files may ever be, given as the bulk path would.
    if store.backend.startswith("mysql"):
        name, full = "CONCAT('h', id)", "CONCAT('h', id, '.lab.example')"
    else:
        name, full = "'h' || id", "'h' || id || '.lab.example'"
    execute_sql(store_url, f"UPDATE ip_addresses SET hostname = {name}, dns_name = {full}, "
                           "dns_version = 4")  # fmt: skip
    yield store
    store.close()


def test_the_first_pass_folds_and_a_new_name_is_one_small_file(named_store, tmp_path: Path):
    (tmp_path / "dns.d").mkdir()
    (tmp_path / "dns.hosts").write_text("")  # a folded file from an earlier run, say
    target = Target(hostsfile=tmp_path / "dhcp.hosts", dns_hostsdir=tmp_path / "dns.d",
                    addn_hosts=tmp_path / "dns.hosts")  # fmt: skip
    backend = dhcp_backend.load("dnsmasq", target)
    first = backend.sync(named_store)  # no dnsmasq running: it reads the file when it starts
    assert first.dns_folded and list((tmp_path / "dns.d").iterdir()) == []
    assert (tmp_path / "dns.hosts").read_text().count(".lab.example\n") == FOLD_AT + 200
    address = operations.run(named_store, "block.allocate", {"block": "lan", "hostname": "new"})
    second = backend.sync(named_store)
    assert second.dns_changed and not second.dns_folded
    small = list((tmp_path / "dns.d").iterdir())
    assert [p.name for p in small] == ["new.lab.example"]
    assert small[0].read_text() == f"{address[0]['address']} new.lab.example\n"
    operations.run(named_store, "ip.release", {"address": address[0]["address"]})
    assert backend.sync(named_store).dns_changed
    assert list((tmp_path / "dns.d").iterdir()) == []


@pytest.mark.one_store
@pytest.mark.parametrize("with_hostsdir", [True, False])
def test_a_pass_that_changes_nothing_sends_no_sighup(named_store, dnsmasq_server, tmp_path,
                                                     with_hostsdir):  # fmt: skip
    """Each one-shot pass (`dhcp sync`; melanged's first) brings the DNS files in step.
    When they already hold every name, dnsmasq is not reloaded, also with an addn-hosts
    file alone, where every pass folds: a sync every few minutes signals only when
    something changed."""
    hostsdir = tmp_path / "dns.d" if with_hostsdir else None
    if hostsdir is not None:
        hostsdir.mkdir()
    target = Target(hostsfile=dnsmasq_server.hostsfile, pidfile=dnsmasq_server.pidfile,
                    dns_hostsdir=hostsdir, addn_hosts=tmp_path / "dns.hosts")  # fmt: skip

    def one_shot():
        return dhcp_backend.load("dnsmasq", target).sync(named_store)

    first = one_shot()
    assert first.dns_folded and first.dns_changed and first.reloaded
    again = one_shot()
    assert not again.dns_changed and not again.reloaded
    assert again.dns_folded is not with_hostsdir  # without a hosts dir, every pass folds
    operations.run(named_store, "block.allocate", {"block": "lan", "hostname": "new"})
    third = one_shot()
    assert third.dns_changed and third.reloaded
    assert "new.lab.example" in (tmp_path / "dns.hosts").read_text()
