"""The kea backend's pieces that need no Kea: the difference it writes, the subnet ids,
option 121's bytes, the host database's URL and the settings that reach the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from melange import dhcp_backend
from melange.errors import InvalidInput, StoreUnavailable
from melange.kea import hostdb, render
from melange.kea.render import Reservation
from melanged.settings import backend_options, resolve

A = 0x020000000001
B = 0x020000000002


def test_difference_updates_a_mac_in_place_and_deletes_before_inserting():
    have = {Reservation(7, A, 10, "a"), Reservation(7, B, 11, None), Reservation(8, A, 12, None)}
    want = [Reservation(7, A, 20, "a"), Reservation(9, B, 11, None), Reservation(8, A, 12, None)]
    changes = hostdb.difference(have, want)
    assert changes.update == [Reservation(7, A, 20, "a")]  # same subnet and MAC: its row
    assert changes.delete == [Reservation(7, B, 11, None)]  # the MAC left subnet 7
    assert changes.insert == [Reservation(9, B, 11, None)]
    assert len(changes) == 3
    assert len(hostdb.difference(set(want), want)) == 0


def test_batches_never_exceed_the_batch_size_and_keep_the_order():
    work = [("delete", [{}] * 3), ("update", [{}] * 2), ("insert", [{}] * 4)]
    groups = list(hostdb._transactions(work, 4))
    assert [[(sql, len(rows)) for sql, rows in g] for g in groups] == [
        [("delete", 3)], [("update", 2)], [("insert", 4)]]
    assert all(sum(len(rows) for _, rows in g) <= 4 for g in groups)


def test_subnet_ids_are_stable_in_kea_range_and_differ_by_network():
    first = render.subnet_id("net1", "10.0.0.0/24")
    assert first == render.subnet_id("net1", "10.0.0.0/24")
    assert 1 <= first <= render.MAX_SUBNET_ID
    assert first != render.subnet_id("net2", "10.0.0.0/24")


def test_option_121_is_rfc_3442_on_the_wire():
    gateway = int.from_bytes(bytes([10, 0, 0, 1]), "big")
    payload = render.option_121([("192.168.50.0/24", gateway), ("0.0.0.0/0", gateway)])
    assert payload == bytes([24, 192, 168, 50, 10, 0, 0, 1, 0, 10, 0, 0, 1])


def test_reservation_lines_round_trip():
    r = Reservation(7, A, int.from_bytes(bytes([10, 0, 0, 5]), "big"), "vm5")
    assert render.reservation_line(r) == "02:00:00:00:00:01,10.0.0.5,7,vm5"
    assert render.parse_line(render.reservation_line(r)) == r
    bare = r._replace(hostname=None)
    assert render.parse_line(render.reservation_line(bare)) == bare


def test_host_database_urls_and_the_stanza_kea_reads():
    url = hostdb.parse_url("mysql://kea:s3cret@db1:3307/kea")
    assert url.drivername == "mysql+pymysql"
    assert hostdb.stanza(url) == {"type": "mysql", "name": "kea", "host": "db1", "port": 3307,
                                  "user": "kea", "password": "s3cret"}  # fmt: skip
    sock = hostdb.parse_url("mysql+pymysql://kea@localhost/kea?unix_socket=/run/mysqld/m.sock")
    assert hostdb.stanza(sock)["host"] == "localhost"
    pg = hostdb.parse_url("postgresql://kea@/kea?host=/var/run/postgresql")
    assert pg.drivername == "postgresql+psycopg"
    assert hostdb.stanza(pg) == {"type": "postgresql", "name": "kea", "user": "kea",
                                 "host": "/var/run/postgresql"}  # fmt: skip
    with pytest.raises(InvalidInput, match="MySQL/MariaDB or PostgreSQL"):
        hostdb.parse_url("sqlite:///kea.db")


def test_the_backend_needs_a_host_database_and_a_socket_to_release():
    with pytest.raises(InvalidInput, match="kea_host_db"):
        dhcp_backend.load("kea", dhcp_backend.Target())
    options = {"host_db": "postgresql://nobody@127.0.0.1:1/kea", "release": True}
    with pytest.raises(InvalidInput, match="kea_control_socket"):
        dhcp_backend.load("kea", dhcp_backend.Target(options=options))


def test_an_unreachable_host_database_is_exit_6_at_the_first_pass(tmp_path: Path):
    """At start it is only logged (Kea's database may come up later); a pass fails as a
    store outage does, and melanged retries."""
    target = dhcp_backend.Target(options={"host_db": "postgresql://nobody@127.0.0.1:1/kea"})
    backend = dhcp_backend.load("kea", target)
    with pytest.raises(StoreUnavailable) as caught:
        backend.sync(None)  # type: ignore[arg-type]  (fails before the store is read)
    assert caught.value.exit_code == 6


def test_melanged_passes_the_kea_settings_to_the_backend(tmp_path: Path):
    config = tmp_path / "melange.conf"
    config.write_text(f"[melange]\ndb = sqlite:///{tmp_path}/s.db\n[melanged]\nbackend = kea\n"
                      f"kea_host_db = mysql://kea@db1/kea\nkea_release = yes\n"
                      f"kea_control_socket = {tmp_path}/kea.sock\n")  # fmt: skip
    settings = resolve({"kea_config": str(tmp_path / "kea.json")}, str(config))
    assert backend_options(settings) == {
        "host_db": "mysql://kea@db1/kea", "release": True,
        "control_socket": tmp_path / "kea.sock", "config": tmp_path / "kea.json"}  # fmt: skip
    settings.backend = "dnsmasq"
    assert "host_db" not in backend_options(settings)


def test_backend_options_must_be_key_value():
    assert dhcp_backend.parse_options(["host_db=mysql://a@b/c?x=1"]) == {
        "host_db": "mysql://a@b/c?x=1"}
    with pytest.raises(InvalidInput):
        dhcp_backend.parse_options(["host_db"])


def test_naming_kea_beside_the_http_api_still_does_dhcp_work(tmp_path: Path):
    config = tmp_path / "melange.conf"
    config.write_text(f"[melange]\ndb = sqlite:///{tmp_path}/s.db\n[melanged]\n"
                      "http = 127.0.0.1:8479\nkea_host_db = mysql://kea@db1/kea\n")  # fmt: skip
    assert resolve({}, str(config)).hostsfile is None  # dnsmasq's default: the API alone
    assert resolve({"backend": "kea"}, str(config)).hostsfile is not None
