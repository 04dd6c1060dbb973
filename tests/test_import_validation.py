"""Import applies exactly the checks the commands apply: hostile files are refused with
one line, exit 2, and change nothing, on every backend and through the socket."""

from __future__ import annotations

import json

from tests.support.sql import dump_store

HEADER = ("kind,network,cidr,name,tenant,type,gateway,dns,policy,parent,generator,address,"
          "mac,hostname,interface,state,allocated_at,released_at,device,description,offset,"
          "length,octet,destination,vif_id")  # fmt: skip
COLUMNS = HEADER.split(",")


def _row(**fields: str) -> str:
    """One CSV row of a melange export; values are written as given (quoted when asked)."""
    return ",".join(fields.get(column, "") for column in COLUMNS)


def _csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


BLOCK = _row(kind="block", network="n9", cidr="10.9.0.0/24", name="b9", gateway="10.9.0.1",
             policy="edge")  # fmt: skip
POLICY = _row(kind="policy", name="edge")
POLICY_RANGE = _row(kind="policy_range", name="edge", offset="-3", length="2")
POLICY_OCTET = _row(kind="policy_octet", name="edge", octet="7")


def _address(address: str, **fields: str) -> str:
    return _row(kind="address", network="n9", cidr="10.9.0.0/24", address=address, **fields)


def _interface(**fields: str) -> str:
    values = {"kind": "interface", "vif_id": "vif9", "network": "n9", "mac": "02:00:00:00:09:09"}
    return _row(**{**values, **fields})


HOSTILE_CSV = {
    "interface network with a newline": _csv(_interface(network='"n9\nx"')),
    "interface network with a comma": _csv(_interface(network='"n9,x"')),
    "interface network that is a dnsmasq tag": _csv(_interface(network="tag:x")),
    "interface device with a comma": _csv(_interface(device='"vm,1"')),
    "interface device with a newline": _csv(_interface(device='"vm\n1"')),
    "interface tenant with a NUL": _csv(_interface(tenant="t\x00")),
    "interface id with a space": _csv(_interface(vif_id='"vif 9"')),
    "address tenant with a newline": _csv(POLICY, BLOCK, _address("10.9.0.5", tenant='"t\nx"')),
    "address tenant with a NUL": _csv(POLICY, BLOCK, _address("10.9.0.5", tenant="t\x00x")),
    "the network address": _csv(POLICY, BLOCK, _address("10.9.0.0")),
    "the broadcast address": _csv(POLICY, BLOCK, _address("10.9.0.255")),
    "the gateway": _csv(POLICY, BLOCK, _address("10.9.0.1", mac="02:00:00:00:00:01")),
    "unusable by the policy's range": _csv(POLICY, POLICY_RANGE, BLOCK, _address("10.9.0.253")),
    "unusable by the policy's octet": _csv(POLICY, POLICY_OCTET, BLOCK, _address("10.9.0.7")),
    "an address in a block with subnets": _csv(
        POLICY, BLOCK,
        _row(kind="block", network="n9", cidr="10.9.0.0/25", parent="10.9.0.0/24"),
        _address("10.9.0.200"),
    ),  # fmt: skip
    "a subnet's address that is its parent's gateway": _csv(
        POLICY, BLOCK,
        _row(kind="block", network="n9", cidr="10.9.0.0/25", parent="10.9.0.0/24"),
        _row(kind="address", network="n9", cidr="10.9.0.0/25", address="10.9.0.1"),
    ),  # fmt: skip
    "a hostname with a comma": _csv(POLICY, BLOCK, _address("10.9.0.5", hostname='"h,x"')),
    "a policy description with a NUL": _csv(_row(kind="policy", name="p", description="a\x00b")),
    "a policy description with a newline": _csv(
        _row(kind="policy", name="p", description='"a\nb"')
    ),
    "a policy offset that is not a number": _csv(
        POLICY, _row(kind="policy_range", name="edge", offset="1_000", length="2")
    ),
    "a block's policy with a NUL (a lookup PostgreSQL refuses)": _csv(
        _row(kind="block", network="n9", cidr="10.9.0.0/24", policy="p\x00")
    ),
    "a block's generator with a NUL": _csv(
        _row(kind="block", network="n9", cidr="10.9.0.0/24", generator="g\x00")
    ),
    "a route's gateway with a NUL": _csv(
        POLICY, BLOCK,
        _row(kind="route", network="n9", cidr="10.9.0.0/24", destination="10.8.0.0/16",
             gateway="10.9.0.1\x00"),
    ),  # fmt: skip
    "a CSV without a name column": "kind,network,cidr\npolicy,,\n",
    "a CSV policy range without offset": "kind,name\npolicy,p\npolicy_range,p\n",
    "a CSV row of an unknown kind": _csv(_row(kind="router")),
    "a time that is not ISO 8601": _csv(POLICY, BLOCK, _address("10.9.0.5", allocated_at="soon")),
    "a time beyond year 9999": _csv(
        POLICY, BLOCK, _address("10.9.0.5", allocated_at="9999-12-31T23:59:59-14:00")
    ),
}


def _document(**sections) -> str:
    base = {"format": "melange-export", "version": 1, "policies": [], "mac_ranges": [],
            "blocks": [], "interfaces": []}  # fmt: skip
    return json.dumps({**base, **sections})


def _json_block(**fields) -> dict:
    return {"network": "n9", "cidr": "10.9.0.0/24", "gateway": "10.9.0.1", "routes": [],
            "addresses": [], **fields}  # fmt: skip


HOSTILE_JSON = {
    "an integer timestamp": _document(
        blocks=[_json_block(addresses=[{"address": "10.9.0.5", "allocated_at": 1700000000}])]
    ),
    "100k-deep JSON": '{"format": "melange-export", "version": 1, "blocks": '
    + "[" * 100_000 + "]" * 100_000 + "}",
    "a NUL escape in a device": _document(
        interfaces=[{"vif_id": "v", "network": "n9", "device": "d\u0000",
                     "mac": "02:00:00:00:09:09"}]  # fmt: skip
    ),
    "a lone surrogate in a tenant": _document(
        blocks=[_json_block(addresses=[{"address": "10.9.0.5", "tenant": "\ud800"}])]
    ),
    "a lone surrogate in a description": _document(
        policies=[{"name": "p", "description": "\udfff", "unusable_ranges": [],
                   "unusable_octets": []}]  # fmt: skip
    ),
    "a number for an interface id": _document(
        interfaces=[{"vif_id": 7, "network": "n9", "mac": "02:00:00:00:09:09"}]
    ),
    "a list for an address's interface": _document(
        blocks=[_json_block(addresses=[{"address": "10.9.0.5", "interface": ["v"]}])]
    ),
    "an address that is not an object": _document(blocks=[_json_block(addresses=[5])]),
    "an address without its address": _document(blocks=[_json_block(addresses=[{"mac": None}])]),
    "a fractional policy offset": _document(
        policies=[{"name": "p", "unusable_ranges": [{"offset": 2.5, "length": 1}]}]
    ),
    "a boolean policy octet": _document(policies=[{"name": "p", "unusable_octets": [True]}]),
    "routes that are not a list": _document(blocks=[_json_block(routes=5)]),
    "the gateway": _document(blocks=[_json_block(addresses=[{"address": "10.9.0.1"}])]),
    "an object for a CIDR": _document(blocks=[_json_block(cidr={"a": 1})]),
}


def _setup(melange) -> None:
    """A store that already holds something, for the import to leave alone."""
    melange.ok("block", "create", "10.30.0.0/24", "--name", "kept", "--network", "n30",
               "--gateway", "10.30.0.1")  # fmt: skip
    melange.ok("block", "allocate", "kept", "--mac", "02:00:00:00:30:01", "--hostname", "k1")


def _import(melange, tmp_path, name: str, text: str, fmt: str = "melange") -> str:
    """Import `text`; insist on one `Error:` line and exit 2; the message."""
    path = tmp_path / "hostile"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    result = melange("import", str(path), "--format", fmt)
    assert result.exit_code == 2, (name, result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert len(result.stderr) < 600, result.stderr
    return result.stderr


def _refused(melange, tmp_path, cases: dict[str, str], fmt: str = "melange") -> list[str]:
    """Each import refused, and none changed the store or the hosts file it renders."""
    before = dump_store(melange.db), melange.ok("dhcp", "hosts")
    messages = [_import(melange, tmp_path, name, text, fmt) for name, text in cases.items()]
    assert (dump_store(melange.db), melange.ok("dhcp", "hosts")) == before
    return messages


def test_hostile_files_are_refused_and_change_nothing(melange, tmp_path):
    """Every case on one store per backend (and through the socket)."""
    _setup(melange)
    _refused(melange, tmp_path, {**HOSTILE_CSV, **HOSTILE_JSON})


def test_the_reasons_are_the_allocation_rules(melange, tmp_path):
    """The same words as `block allocate --address`, each with its line."""
    text = _csv(POLICY, POLICY_RANGE, POLICY_OCTET, BLOCK, _address("10.9.0.0"),
                _address("10.9.0.1"), _address("10.9.0.7"), _address("10.9.0.253"),
                _address("10.9.0.255"), _address("10.9.0.9"))  # fmt: skip
    _setup(melange)
    (message,) = _refused(melange, tmp_path, {"rules": text})
    for line, reason in ((6, "it is the network address"), (7, "it is the block's gateway"),
                         (8, "its last octet 7 is unusable by policy"),
                         (9, "it is unusable by policy edge"),
                         (10, "it is the broadcast address")):  # fmt: skip
        assert f"line {line}: " in message and reason in message, (line, reason, message)
    assert "line 11:" not in message
    assert "5 problem(s)" in message


NETBOX_ADDRESSES = """\
address,status,vrf,tenant,dns_name,description
10.30.0.1/24,active,n30,,router,the gateway
10.30.0.9/24,active,n30,,ok,
"""


def test_netbox_addresses_meet_the_same_rules(melange, tmp_path):
    _setup(melange)
    (message,) = _refused(melange, tmp_path, {"netbox": NETBOX_ADDRESSES}, "netbox-addresses")
    assert "line 2: 10.30.0.1 cannot be allocated: it is the block's gateway" in message


def test_an_imported_interface_follows_interface_create(melange, tmp_path):
    """What passes is stored as `interface create` would store it: the listing stays one
    line per interface."""
    path = tmp_path / "ok.csv"
    path.write_text(_csv(_interface(device="vm-9", tenant="acme")))
    melange.ok("import", str(path))
    assert melange.ok("interface", "list").splitlines() == [
        "vif9\tn9\tvm-9\tacme\t02:00:00:00:09:09\t\t"  # no addresses, no allowed IPs
    ]


def test_a_problem_is_named_by_the_line_its_row_starts_on(melange, tmp_path):
    """A quoted newline continues a row: the problem is on the row's first line."""
    text = _csv(_interface(network='"n9\nx"'),
                _interface(vif_id='"v\n\nz"', mac="02:00:00:00:09:0a"),
                _interface(vif_id="ok", mac="02:00:00:00:09:0b"))  # fmt: skip
    _setup(melange)
    (message,) = _refused(melange, tmp_path, {"lines": text})
    assert "line 2: 'n9\\nx' is not a valid network name" in message, message
    assert "line 4: 'v\\n\\nz' is not a valid interface id" in message, message
    assert "2 problem(s)" in message
