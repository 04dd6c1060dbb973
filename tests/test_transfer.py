"""Export and import: lossless round trips between stores, all-or-nothing imports, NetBox CSV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from melange.transfer_format import export_json
from tests.support.cli import Melange
from tests.support.sql import dump_store


def _populate(melange) -> None:
    melange.ok("policy", "create", "edge", "--description", "two before the end")
    melange.ok("policy", "add-range", "edge", "--offset", "-3", "--length", "2")
    melange.ok("policy", "add-octet", "edge", "7")
    melange.ok("block", "create", "10.0.0.0/16", "--name", "a", "--network", "n1",
               "--gateway", "10.0.0.1", "--dns", "10.0.0.53", "--policy", "edge")  # fmt: skip
    melange.ok("block", "subnet", "a", "10.0.1.0/24", "--name", "a1")
    melange.ok("block", "create", "10.0.0.0/16", "--name", "other", "--network", "n2")
    melange.ok("block", "create", "2001:db8::/64", "--name", "v6", "--network", "n1")
    melange.ok("route", "add", "a1", "192.168.0.0/16", "--gateway", "10.0.1.1")
    melange.ok("mac-range", "create", "02:16:3e:00:00:00/24")
    melange.ok("interface", "create", "vif1", "--network", "n1", "--device", "vm1")
    melange.ok("block", "allocate", "a1", "--mac", "02:00:00:00:00:01", "--hostname", "h1")
    melange.ok("block", "allocate", "a1", "--count", "3")
    melange.ok("block", "allocate", "other", "--mac", "02:00:00:00:00:01")
    # Allowed IPs and NAT mappings, one of each on the address about to be held.
    for address in ("10.0.1.3", "10.0.1.4"):
        melange.ok("interface", "allow-ip", "vif1", address, "--block", "a1")
        melange.ok("nat", "add", "10.0.0.1", address, "--global-block", "other",
                   "--local-block", "a1")  # fmt: skip
    melange.ok("ip", "release", "10.0.1.4", "--block", "a1")


def _imported(melange, tmp_path: Path) -> Iterator[tuple[str, Melange]]:
    """The store exported as JSON and as CSV, each imported into a fresh store."""
    for name, args in (("json", ()), ("csv", ("-o", "csv"))):
        path = tmp_path / f"export.{name}"
        path.write_text(melange.ok("export", *args))
        fresh = Melange(tmp_path / f"fresh-{name}.db", melange.env)
        fresh.ok("import", str(path))
        yield name, fresh


def test_json_and_csv_round_trip_losslessly(melange, tmp_path):
    _populate(melange)
    exported = melange.ok("export")
    expected_next = melange.ok("block", "allocate", "a1")
    melange.ok("ip", "release", expected_next.strip(), "--block", "a1", "--now")
    assert melange.ok("export") == exported
    for name, fresh in _imported(melange, tmp_path):
        assert fresh.ok("export") == exported, name
        assert fresh.ok("nat", "list") == melange.ok("nat", "list")
        assert fresh.ok("interface", "allowed-ips", "vif1") == melange.ok(
            "interface", "allowed-ips", "vif1")  # fmt: skip
        # The imported store works like the original: same next address, same hosts file.
        assert fresh.ok("dhcp", "hosts") == melange.ok("dhcp", "hosts")
        assert fresh.json("block", "show", "a1")["utilization"] == melange.json(
            "block", "show", "a1")["utilization"]  # fmt: skip
        assert fresh.ok("block", "allocate", "a1") == expected_next


def test_round_trip_through_another_backend(melange, tmp_path, backends):
    """SQLite -> MariaDB -> SQLite, and the same through PostgreSQL: identical exports."""
    _populate(melange)
    original = melange.ok("export")
    for backend in ("mysql", "postgresql"):
        server = Melange(backends.url(backend, tmp_path), melange.env)
        (tmp_path / "a.json").write_text(original)
        server.ok("import", str(tmp_path / "a.json"))
        (tmp_path / "b.json").write_text(server.ok("export"))
        back = Melange(tmp_path / f"back-{backend}.db", melange.env)
        back.ok("import", str(tmp_path / "b.json"))
        assert back.ok("export") == original, backend


BAD = """\
kind,network,cidr,name,tenant,type,gateway,dns,policy,parent,generator,address,mac,hostname
block,n1,10.5.0.0/24,ok-one,,,,,,,,,,
block,n1,10.5.1.0/33,bad-cidr,,,,,,,,,,
block,n1,10.5.2.0/24,ok-two,,,,,,,,,,
address,n1,10.5.0.0/24,,,,,,,,,10.5.0.9,02:00:00:00:00:09,good
block,n2,10.6.0.0/24,ok-three,,,,,,,,,,
block,n1,10.5.0.0/16,overlaps,,,,,,,,,,
"""


def test_a_bad_import_names_every_bad_line_and_changes_nothing(melange, tmp_path):
    melange.ok("block", "create", "10.9.0.0/24", "--name", "existing")
    lines = BAD.splitlines()
    assert "10.5.1.0/33" in lines[2] and "10.5.0.0/16" in lines[6]  # lines 3 and 7
    path = tmp_path / "bad.csv"
    path.write_text(BAD)
    before = dump_store(melange.db)
    result = melange("import", str(path))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "line 3:" in result.stderr and "line 7:" in result.stderr
    assert "line 2:" not in result.stderr and "line 5:" not in result.stderr
    assert dump_store(melange.db) == before


def test_malformed_json_is_refused_with_its_line(melange, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "melange-export", "version": 1,\n"blocks": [\n{"cidr": }\n]}\n')
    result = melange("import", str(path))
    assert result.exit_code == 2 and "line 3" in result.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"format": "something-else"}\n')
    assert melange("import", str(wrong)).exit_code == 2


PREFIXES = """\
prefix,status,vrf,tenant,description
10.20.0.0/16,container,prod,acme,Production
10.20.1.0/24,active,prod,acme,Web servers
10.20.2.0/24,active,prod,,Databases
192.168.0.0/24,active,,,Lab
"""
ADDRESSES = """\
address,status,vrf,tenant,dns_name,description
10.20.1.10/24,active,prod,acme,web1.example.org,first web server
10.20.1.11/24,active,prod,acme,,second
10.20.2.5/24,reserved,prod,,db1,
192.168.0.7/24,active,,,lab-7,
"""


def test_netbox_prefixes_and_addresses(melange, tmp_path):
    (tmp_path / "p.csv").write_text(PREFIXES)
    (tmp_path / "a.csv").write_text(ADDRESSES)
    melange.ok("import", str(tmp_path / "p.csv"), "--format", "netbox-prefixes")
    melange.ok("import", str(tmp_path / "a.csv"), "--format", "netbox-addresses")
    blocks = {b["cidr"]: b for b in melange.json("block", "list")}
    assert blocks["10.20.1.0/24"]["parent"] == "10.20.0.0/16"
    web = blocks["10.20.1.0/24"]
    assert (web["network"], web["tenant"]) == ("prod", "acme")
    assert blocks["192.168.0.0/24"]["network"] is None
    listed = {(a["address"], a["block"], a["hostname"]) for a in melange.json("ip", "list")}
    assert listed == {
        ("10.20.1.10", "10.20.1.0/24", "web1.example.org"), ("10.20.1.11", "10.20.1.0/24", None),
        ("10.20.2.5", "10.20.2.0/24", "db1"), ("192.168.0.7", "192.168.0.0/24", "lab-7"),
    }  # fmt: skip
    # Melange goes on from there: the next address in the web subnet skips the imported ones.
    assert melange.ok("block", "allocate", "10.20.1.0/24", "--address", "10.20.1.12")


def test_import_is_one_audited_change(melange, tmp_path):
    _populate(melange)
    path = tmp_path / "e.json"
    path.write_text(melange.ok("export"))
    fresh = Melange(tmp_path / "fresh.db", melange.env)
    fresh.ok("import", str(path))
    history = fresh.json("history")
    assert [h["command"] for h in history] == ["import"]
    assert history[0]["via"] == "import"


# -- export reads each table once


def _grow(conn, first: int, last: int) -> None:
    """Blocks `b<first>` .. `b<last - 1>`, each with a policy, a gateway, two DNS servers, a
    subnet with a route, allocated and held addresses, and an interface; one IPv6 block."""
    from melange import addresses, interfaces, macranges, policies, routes
    from melange import blocks as block_ops

    if first == 0:
        macranges.create(conn, "02:16:3e:00:00:00/24")
        block_ops.create(conn, "2001:db8::/64", name="v6", network="n1", dns=["2001:db8::53"])
        routes.add(conn, "v6", "2001:db8:1::/48", gateway="2001:db8::1")
        addresses.allocate(conn, "v6", count=2)
    for i in range(first, last):
        policies.create(conn, f"p{i}", description=f"policy {i}")
        policies.add_range(conn, f"p{i}", offset=-3, length=2)
        policies.add_octet(conn, f"p{i}", 9)
        block_ops.create(conn, f"10.{i}.0.0/16", name=f"b{i}", network=f"n{i % 3}",
                         gateway=f"10.{i}.0.1", dns=[f"10.{i}.0.53", "9.9.9.9"],
                         policy=f"p{i}", tenant="acme")  # fmt: skip
        block_ops.create(conn, f"10.{i}.1.0/24", name=f"s{i}", parent=f"b{i}")
        routes.add(conn, f"s{i}", "192.168.0.0/16", gateway=f"10.{i}.1.1")
        addresses.allocate(conn, f"s{i}", mac=f"02:00:00:00:{i:02x}:01", hostname=f"h{i}")
        taken = addresses.allocate(conn, f"s{i}", count=2, tenant="t1")
        interfaces.create(conn, f"vif{i}", network=f"n{i % 3}", device=f"vm{i}", tenant="t2")
        addresses.release(conn, taken[-1]["address"], block=f"s{i}", hold_seconds=3600)


def _export_statements(store, network: str | None = None) -> tuple[int, dict]:
    """The statements one export sends to the store, and the document it returns."""
    from sqlalchemy import event

    from melange.transfer_export import export

    sent: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        sent.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        document = store.read(lambda conn: export(conn, network=network))
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    return len(sent), document


def test_export_sends_as_many_statements_for_30_blocks_as_for_3(store_url):
    from melange.store import Store

    store = Store(store_url)
    store.write(lambda conn: _grow(conn, 0, 3))
    small = _export_statements(store), _export_statements(store, "n1")
    store.write(lambda conn: _grow(conn, 3, 30))
    large = _export_statements(store), _export_statements(store, "n1")
    assert [count for count, _ in large] == [count for count, _ in small]
    assert large[0][0] <= 11  # one statement per table read, whatever the store holds
    everything, network = large[0][1], large[1][1]
    assert len(everything["blocks"]) == 61 and len(everything["policies"]) == 30
    assert len(everything["interfaces"]) == 30 and len(network["blocks"]) == 21
    subnet = next(b for b in everything["blocks"] if b["name"] == "s29")
    assert subnet["parent"] == "10.29.0.0/16" and len(subnet["addresses"]) == 3
    assert subnet["routes"] == [{"destination": "192.168.0.0/16", "gateway": "10.29.1.1"}]
    assert [a["state"] for a in subnet["addresses"]] == ["allocated", "allocated", "held"]
    # Every interface of network n2 took its address in the network's oldest subnet.
    oldest = next(b for b in everything["blocks"] if b["name"] == "s2")
    vifs = [a["interface"] for a in oldest["addresses"] if a["interface"] is not None]
    assert vifs == [f"vif{i}" for i in range(2, 30, 3)]
    parent = next(b for b in everything["blocks"] if b["name"] == "b29")
    assert parent["dns"] == ["10.29.0.53", "9.9.9.9"] and parent["policy"] == "p29"
    assert everything["policies"][-1]["unusable_ranges"] == [{"offset": -3, "length": 2}]


# -- the export format, byte for byte


GOLDEN = Path(__file__).parent / "golden"


def test_a_golden_export_imports_and_exports_byte_for_byte(melange, tmp_path):
    """The export text is a contract: a rich export (policies, a MAC range, subnets with
    inherited settings, routes, IPv6, held and allocated addresses, interfaces) imported
    into an empty store exports exactly the same bytes, as JSON and as CSV."""
    golden_json = (GOLDEN / "export.json").read_text()
    golden_csv = (GOLDEN / "export.csv").read_text()
    melange.ok("import", str(GOLDEN / "export.json"))
    assert melange.ok("export") == golden_json
    assert melange.ok("export", "-o", "csv") == golden_csv
    from_csv = Melange(tmp_path / "from-csv.db", melange.env)
    from_csv.ok("import", str(GOLDEN / "export.csv"))
    assert from_csv.ok("export") == golden_json


def test_dns_domains_and_names_survive_a_round_trip(melange, tmp_path):
    """A block's domain is exported (only when it has one) and imported, and the imported
    addresses have the DNS names an allocation would give them: the same DNS hosts file,
    the same name clash refused after the import as before it."""
    melange.ok("block", "create", "10.7.0.0/16", "--name", "d", "--network", "n1",
               "--domain", "lab.example")  # fmt: skip
    melange.ok("block", "subnet", "d", "10.7.1.0/24", "--name", "d1")  # inherits lab.example
    melange.ok("block", "create", "10.8.0.0/24", "--name", "e", "--network", "n2",
               "--domain", "other.example")  # fmt: skip
    melange.ok("block", "allocate", "d1", "--mac", "02:00:00:00:07:01", "--hostname", "vm1")
    melange.ok("block", "allocate", "e", "--mac", "02:00:00:00:08:01", "--hostname", "vm1")
    hosts = melange.ok("dns", "hosts")
    assert "vm1.lab.example" in hosts and "vm1.other.example" in hosts
    exported = melange.ok("export")
    assert '"domain": "lab.example"' in exported and exported.count('"domain"') == 2
    for name, fresh in _imported(melange, tmp_path):
        assert fresh.ok("export") == exported, name
        assert fresh.ok("dns", "hosts") == hosts, name
        clash = fresh("block", "allocate", "d1", "--mac", "02:00:00:00:07:02",
                      "--hostname", "vm1")  # fmt: skip
        assert clash.exit_code == 4 and "vm1.lab.example" in clash.stderr, name


def test_an_import_naming_one_dns_name_twice_changes_nothing(melange, tmp_path):
    """Addresses of a file whose hostnames make one DNS name (two of them in the domain
    the file gives their block, or one that a stored address has): refused with their
    line, and nothing of the file is stored."""
    melange.ok("block", "create", "10.9.0.0/24", "--name", "taken", "--domain", "lab.example")
    melange.ok("block", "allocate", "taken", "--mac", "02:00:00:00:09:01", "--hostname", "db")
    addresses = [
        {"address": "10.10.0.5", "hostname": "web", "mac": "02:00:00:00:10:05"},
        {"address": "10.10.0.6", "hostname": "WEB.lab.example", "mac": "02:00:00:00:10:06"},
        {"address": "10.10.0.7", "hostname": "db", "mac": "02:00:00:00:10:07"},
    ]
    block = {"network": "n9", "cidr": "10.10.0.0/24", "domain": "lab.example", "routes": [],
             "addresses": addresses}  # fmt: skip
    path = tmp_path / "twice.json"
    path.write_text(export_json({"blocks": [block]}))
    before = dump_store(melange.db)
    result = melange("import", str(path))
    assert result.exit_code == 2, result.stderr  # an import's problems, as any bad line's
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "web.lab.example is listed twice" in result.stderr
    assert "db.lab.example is in use by 10.9.0.1" in result.stderr
    assert dump_store(melange.db) == before
