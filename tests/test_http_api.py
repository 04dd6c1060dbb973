"""The HTTP API against a real server (melanged's uvicorn on a free loopback port, TLS
with a certificate made here) and a real client (httpx): every resource family, the
declared statuses, pagination, the text renders, export and import."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from melange import operations, paging
from melange.errors import InvalidInput, StoreUnavailable
from melange.store import Store
from melange.transfer_stream import from_ndjson, to_ndjson
from tests.support.http_daemon import HttpDaemon

CIDR = "10.20.0.0/24"
BLOCK = f"/v1/blocks/{quote(CIDR, safe='')}"


@pytest.fixture
def api(tmp_path: Path):
    with HttpDaemon(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "api") as running:
        yield running


@pytest.fixture
def admin(api):
    return api.client("admin")


@pytest.fixture
def block(admin):
    response = admin.post("/v1/blocks", json={"cidr": CIDR, "name": "lan", "gateway": "10.20.0.1"})
    assert response.status_code == 201, response.text
    return response.json()


def walk(client, path: str, **query) -> list:
    """Every item of a paged list, page after page by the `next` links."""
    items: list = []
    response = client.get(path, params=query)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next"}
        items += body["items"]
        if body["next"] is None:
            return items
        assert body["next"].startswith(path + "?")
        response = client.get(body["next"])


def test_health_and_openapi_need_no_token(api):
    anonymous = api.client()
    health = anonymous.get("/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    spec = anonymous.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    remote = {op.http.path for op in operations.OPERATIONS.values() if op.http is not None}
    assert len(spec["paths"]) == len({p.replace(":path", "") for p in remote}) + 1


def test_blocks_create_show_update_list_delete(admin, block):
    assert block["cidr"] == CIDR and block["gateway"] == "10.20.0.1"
    for ref in (quote(CIDR, safe=""), "lan", str(block["id"])):
        shown = admin.get(f"/v1/blocks/{ref}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["id"] == block["id"]
    updated = admin.patch(BLOCK, json={"tenant": "t1"})
    assert updated.status_code == 200 and updated.json()["tenant"] == "t1"
    listed = admin.get("/v1/blocks", params={"tenant": "t1"}).json()
    assert [b["cidr"] for b in listed["items"]] == [CIDR] and listed["next"] is None
    subnet = admin.post("/v1/blocks", json={"cidr": "10.20.0.0/26", "parent": "lan"})
    assert subnet.status_code == 201 and subnet.json()["parent"] is not None
    assert admin.delete("/v1/blocks/10.20.0.0%2F26").status_code == 200
    assert admin.delete(BLOCK).status_code == 200
    assert admin.get(BLOCK).status_code == 404


def test_allocate_is_201_and_idempotent_by_mac(admin, block):
    first = admin.post(f"{BLOCK}/allocations", json={"mac": "02:00:00:00:00:01",
                                                     "hostname": "web1"})  # fmt: skip
    assert first.status_code == 201, first.text
    again = admin.post(f"{BLOCK}/allocations", json={"mac": "02:00:00:00:00:01"})
    assert again.status_code == 201
    assert again.json()[0]["address"] == first.json()[0]["address"]
    many = admin.post(f"{BLOCK}/allocations", json={"count": 3})
    assert many.status_code == 201 and len(many.json()) == 3
    empty = admin.post(f"{BLOCK}/allocations")  # no body: one address
    assert empty.status_code == 201 and len(empty.json()) == 1


def test_addresses_show_update_release_restore(api, admin, block):
    address = admin.post(f"{BLOCK}/allocations", json={}).json()[0]["address"]
    writer = api.client("writer")
    assert writer.get(f"/v1/addresses/{address}").json()["state"] == "allocated"
    changed = writer.patch(f"/v1/addresses/{address}", json={"hostname": "db1"})
    assert changed.status_code == 200 and changed.json()["hostname"] == "db1"
    released = writer.post(f"/v1/addresses/{address}/release", json={})
    assert released.status_code == 200, released.text
    held = walk(writer, "/v1/addresses", released="true")
    assert [a["address"] for a in held] == [address]
    restored = writer.post(f"/v1/addresses/{address}/restore")
    assert restored.status_code == 200 and restored.json()["state"] == "allocated"
    now = writer.post(f"/v1/addresses/{address}/release", json={"now": True})
    assert now.status_code == 200
    assert writer.get(f"/v1/addresses/{address}").status_code == 404


def test_policies_ranges_octets_mac_ranges_interfaces_routes(api, admin, block):
    assert admin.post("/v1/policies", json={"name": "p1"}).status_code == 201
    assert admin.post("/v1/policies/p1/ranges", json={"offset": 0, "length": 5}).status_code == 201
    assert admin.post("/v1/policies/p1/octets", json={"octet": 255}).status_code == 201
    policy = admin.get("/v1/policies/p1").json()
    assert policy["unusable_octets"] == [255] and len(policy["unusable_ranges"]) == 1
    gone = admin.delete("/v1/policies/p1/ranges", params={"offset": 0, "length": 5})
    assert gone.status_code == 200, gone.text
    assert admin.delete("/v1/policies/p1/octets/255").status_code == 200
    assert [p["name"] for p in walk(admin, "/v1/policies")] == ["p1"]
    macs = admin.post("/v1/mac-ranges", json={"cidr": "02:00:00:00:00:00/40"})
    assert macs.status_code == 201, macs.text
    writer = api.client("writer")
    net = admin.post("/v1/blocks", json={"cidr": "10.30.0.0/24", "network": "net1"})
    assert net.status_code == 201, net.text
    made = writer.post("/v1/interfaces", json={"vif": "vif-1", "device": "vm1",
                                               "network": "net1"})  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["addresses"] and made.json()["mac"]
    assert [i["vif_id"] for i in walk(writer, "/v1/interfaces", device="vm1")] == ["vif-1"]
    assert writer.get("/v1/interfaces/vif-1").json()["device"] == "vm1"
    assert writer.delete("/v1/interfaces/vif-1").status_code == 200
    assert writer.get("/v1/interfaces/vif-1").status_code == 404
    route = admin.post(f"{BLOCK}/routes", json={"destination": "192.168.0.0/16",
                                                "gateway": "10.20.0.1"})  # fmt: skip
    assert route.status_code == 201, route.text
    assert len(admin.get(f"{BLOCK}/routes").json()) == 1
    removed = admin.delete(f"{BLOCK}/routes", params={"destination": "192.168.0.0/16"})
    assert removed.status_code == 200, removed.text
    assert admin.delete("/v1/policies/p1").status_code == 200
    assert admin.delete(f"/v1/mac-ranges/{macs.json()['id']}").status_code == 200


def test_reports_history_and_dhcp_renders(api, admin, block):
    admin.post(f"{BLOCK}/allocations", json={"mac": "02:00:00:00:00:09", "hostname": "h9"})
    reader = api.client("reader")
    report = walk(reader, "/v1/reports/utilization", limit=1)
    assert [row["used"] for row in report] == [1]
    hosts = reader.get("/v1/dhcp/hosts")
    assert hosts.status_code == 200 and hosts.headers["content-type"].startswith("text/plain")
    assert "02:00:00:00:00:09" in hosts.text
    for render in ("opts", "config"):
        assert reader.get(f"/v1/dhcp/{render}").status_code == 200
    history = walk(reader, "/v1/history", limit=1)
    assert [h["command"] for h in history[:2]] == ["block.allocate", "block.create"]
    assert history[0]["actor"] == "test-admin" and history[0]["via"] == "http"


def test_pagination_over_many_pages_equals_the_unpaged_list(api, admin, block):
    admin.post(f"{BLOCK}/allocations", json={"count": 57})
    admin.post("/v1/blocks", json={"cidr": "fd00::/120", "name": "v6"})
    admin.post("/v1/blocks/v6/allocations", json={"count": 20})
    for n in range(7):
        admin.post("/v1/policies", json={"name": f"pol-{n}"})
    store = Store(api.db_url)
    for name, path in (("ip.list", "/v1/addresses"), ("block.list", "/v1/blocks"),
                       ("policy.list", "/v1/policies")):  # fmt: skip
        whole = operations.run(store, name, {})
        for limit in (1, 7, 100):
            assert walk(admin, path, limit=limit) == whole, (name, limit)
    history = operations.run(store, "history", {})
    assert walk(admin, "/v1/history", limit=3) == list(reversed(history))
    store.close()


def test_a_page_is_limited_and_refuses_a_bad_cursor(admin, block):
    admin.post(f"{BLOCK}/allocations", json={"count": 5})
    page = admin.get("/v1/addresses", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next"]
    for query in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"after": "!!"},
                  {"after": paging.encode(("a", "b", "c"))}, {"after": paging.encode((1,))}):
        refused = admin.get("/v1/addresses", params=query)
        assert refused.status_code == 422, (query, refused.text)
        assert refused.json()["code"] == "invalid_input"


def test_export_streams_ndjson_and_imports_into_another_store(api, admin, block, tmp_path):
    assert admin.post(f"{BLOCK}/allocations", json={"count": 4}).status_code == 201
    assert admin.post(f"{BLOCK}/allocations", json={"hostname": "x"}).status_code == 201
    admin.post("/v1/policies", json={"name": "keep"})
    exported = admin.get("/v1/export")
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = exported.text.splitlines()
    assert json.loads(lines[0])["format"] == "melange-export"
    assert all(len(line) < 1000 for line in lines)
    document = from_ndjson(lines)
    store = Store(api.db_url)
    assert document == operations.run(store, "export", {})
    store.close()
    with HttpDaemon(f"sqlite:///{tmp_path / 'second.db'}", tmp_path / "second") as second:
        text = json.dumps(document)
        done = second.client("admin").post("/v1/import", json={"text": text, "format": "melange",
                                                               "source": "http"})  # fmt: skip
        assert done.status_code == 200, done.text
        again = from_ndjson(second.client("reader").get("/v1/export").text.splitlines())
    assert again == document


def test_ndjson_round_trip_and_refusals():
    document = {"format": "melange-export", "version": 1, "policies": [{"name": "p"}],
                "mac_ranges": [], "interfaces": [{"vif_id": "v"}],
                "blocks": [{"cidr": "10.0.0.0/24", "routes": [], "addresses": [{"address": "1"}]},
                           {"cidr": "10.0.1.0/24", "routes": [], "addresses": []}]}  # fmt: skip
    lines = list(to_ndjson(document))
    assert len(lines) == 7 and all(line.endswith("\n") for line in lines)
    assert json.loads(lines[-1]) == {"end": {"lines": 6}}
    assert from_ndjson(lines) == {**document, "nat_mappings": []}
    with pytest.raises(StoreUnavailable, match="ended early"):  # cut off by a failure
        from_ndjson(lines[:-1])
    with pytest.raises(InvalidInput, match="after the end"):
        from_ndjson([*lines, lines[1]])
    for bad in ([], ['{"format": "other", "version": 1}'], [lines[0], '{"address": {}}'],
                [lines[0], "[1]"], [lines[0], '{"bogus": {}}'], [lines[0], "{nope"]):
        with pytest.raises(InvalidInput):
            from_ndjson(bad)


def test_tokens_are_made_used_and_revoked_over_http(api, admin):
    made = admin.post("/v1/tokens", json={"name": "ci", "role": "reader"})
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    ci = api.client(token=secret)
    assert ci.get("/v1/blocks").status_code == 200
    listed = admin.get("/v1/tokens").json()
    assert "ci" in {t["name"] for t in listed} and all("token" not in t for t in listed)
    assert api.client("writer").get("/v1/tokens").status_code == 403  # admin work
    assert admin.delete("/v1/tokens/ci").status_code == 200
    assert ci.get("/v1/blocks").status_code == 401  # from the next request on


def test_head_is_answered_as_get_without_a_body(api, block):
    response = api.client("reader").head(BLOCK)
    assert response.status_code == 200 and response.content == b""


def test_one_server_serves_each_test_its_own_store(api, tmp_path):
    with api.serving(f"sqlite:///{tmp_path / 'other.db'}") as tokens:
        other = api.client(token=tokens["admin"])
        assert other.post("/v1/blocks", json={"cidr": "10.99.0.0/24"}).status_code == 201
        assert [b["cidr"] for b in other.get("/v1/blocks").json()["items"]] == ["10.99.0.0/24"]
    assert api.client("admin").get("/v1/blocks").json()["items"] == []


def test_an_import_is_all_or_nothing(api, admin, block):
    bad = ('{"format": "melange-export", "version": 1, "policies": [], "mac_ranges": [],'
           ' "interfaces": [], "blocks": [{"cidr": "10.40.0.0/24", "addresses": []},'
           ' {"cidr": "not a cidr", "addresses": []}]}')  # fmt: skip
    before = admin.get("/v1/export").text
    refused = admin.post("/v1/import", json={"text": bad})
    assert refused.status_code in (400, 409), refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert admin.get("/v1/export").text == before


def test_allowed_ips_and_nat_mappings(api, admin, block):
    net = admin.post("/v1/blocks", json={"cidr": "10.31.0.0/24", "network": "n2"})
    assert net.status_code == 201, net.text
    assert admin.post("/v1/mac-ranges", json={"cidr": "02:00:00:00:00:00/40"}).status_code == 201
    writer = api.client("writer")
    for vif in ("vip-a", "vip-b"):
        made = writer.post("/v1/interfaces", json={"vif": vif, "network": "n2"})
        assert made.status_code == 201, made.text
    shared = writer.get("/v1/interfaces/vip-a").json()["addresses"][0]
    allowed = writer.post("/v1/interfaces/vip-b/allowed-ips", json={"address": shared})
    assert allowed.status_code == 201, allowed.text
    listed = writer.get("/v1/interfaces/vip-b/allowed-ips")
    assert listed.status_code == 200 and shared in json.dumps(listed.json())
    gone = writer.delete(f"/v1/interfaces/vip-b/allowed-ips/{shared}")
    assert gone.status_code == 200, gone.text
    inside, outside = (admin.post(f"{BLOCK}/allocations", json={}).json()[0]["address"],
                       shared)  # fmt: skip
    mapping = {"inside_global": outside, "inside_local": inside}
    added = writer.post("/v1/nat", json=mapping)
    assert added.status_code == 201, added.text
    assert len(writer.get("/v1/nat", params={"address": inside}).json()) == 1
    assert writer.delete("/v1/nat", params=mapping).status_code == 200
    assert writer.get("/v1/nat", params={"address": inside}).json() == []
