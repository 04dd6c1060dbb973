"""Every error status of the HTTP API, each a problem document (RFC 9457) with the
contract's code and exit code, and the store unchanged by a refused request."""

from __future__ import annotations

from pathlib import Path

import pytest

from melange.errors import BY_CODE
from melange.store import Store
from tests.support.http_daemon import HttpDaemon
from tests.support.sql import dump_store


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One server for the module: a refused request changes nothing, and the few tests
    that change the store use blocks of their own."""
    workdir: Path = tmp_path_factory.mktemp("http-errors")
    with HttpDaemon(f"sqlite:///{workdir / 'store.db'}", workdir / "api") as running:
        made = running.client("admin").post("/v1/blocks", json={"cidr": "10.5.0.0/30",
                                                                "name": "tiny"})  # fmt: skip
        assert made.status_code == 201
        running.db = workdir / "store.db"
        yield running


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) == {"type", "title", "status", "detail", "code", "exit_code"}
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["exit_code"] == BY_CODE[code].exit_code if code in BY_CODE else 7
    assert "\n" not in problem["detail"] and problem["detail"]
    return problem


REQUEST_INVALID = [
    ("POST", "/v1/blocks", {"content": b"{not json"}),
    ("POST", "/v1/blocks", {"content": b"[1, 2]"}),
    ("POST", "/v1/blocks", {"content": b'"text"'}),
    ("POST", "/v1/blocks", {"json": {}}),  # missing cidr
    ("POST", "/v1/blocks", {"json": {"cidr": 10}}),  # wrong type
    ("POST", "/v1/blocks", {"json": {"cidr": "10.9.0.0/24", "colour": "red"}}),  # unknown
    ("POST", "/v1/blocks", {"json": {"cidr": "10.9.0.0/24", "dns": "10.9.0.53"}}),
    ("POST", "/v1/blocks", {"json": {"cidr": "10.9.0.0/24", "name": None}, "params": {"x": 1}}),
    ("POST", "/v1/blocks/tiny/allocations", {"json": {"count": "3"}}),
    ("POST", "/v1/blocks/tiny/allocations", {"json": {"count": True}}),
    ("POST", "/v1/blocks/tiny/allocations", {"json": {"count": 10**30}}),
    ("POST", "/v1/blocks/tiny/allocations", {"content": b'{"count": 1e400}'}),
    ("POST", "/v1/blocks/tiny/allocations", {"content": b'{"block": "other"}'}),
    ("POST", "/v1/blocks/tiny/allocations", {"content": b"[" * 100_000 + b"]" * 100_000}),
    ("POST", "/v1/policies", {"json": {"name": "p\x00q"}}),
    ("GET", "/v1/reports/utilization", {"params": {"above": "lots"}}),
    ("GET", "/v1/reports/utilization", {"params": {"above": "nan"}}),
    ("GET", "/v1/addresses", {"params": {"released": "yes"}}),
    ("GET", "/v1/addresses", {"params": {"block": ["a", "b"]}}),
    ("GET", "/v1/addresses", {"params": {"colour": "red"}}),
    ("GET", "/v1/addresses", {"params": {"limit": "1001"}}),
    ("DELETE", "/v1/mac-ranges/abc", {}),
    ("DELETE", "/v1/mac-ranges/" + "9" * 30, {}),
    ("DELETE", "/v1/policies/p/ranges", {"params": {"offset": "1.5", "length": "1"}}),
]


@pytest.mark.parametrize(("method", "path", "options"), REQUEST_INVALID,
                         ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(REQUEST_INVALID)])
def test_a_request_that_does_not_fit_the_declaration_is_422(api, method, path, options):
    before = dump_store(api.db)
    assert_problem(api.client("admin").request(method, path, **options), 422, "invalid_input")
    assert dump_store(api.db) == before


def test_a_value_the_core_refuses_is_400(api):
    before = dump_store(api.db)
    problem = assert_problem(api.client("admin").post("/v1/blocks", json={"cidr": "nonsense"}),
                             400, "invalid_input")  # fmt: skip
    assert "nonsense" in problem["detail"]
    assert dump_store(api.db) == before


def test_not_found_is_404(api):
    client = api.client("admin")
    assert_problem(client.get("/v1/blocks/missing"), 404, "not_found")
    assert_problem(client.get("/v1/addresses/10.5.0.2"), 404, "not_found")
    assert_problem(client.get("/v1/no/such/thing"), 404, "not_found")


def test_conflict_and_exhausted_are_409(api):
    client = api.client("admin")
    assert_problem(client.post("/v1/blocks", json={"cidr": "10.5.0.0/30"}), 409, "conflict")
    made = client.post("/v1/blocks", json={"cidr": "10.7.0.0/30", "name": "full"})
    assert made.status_code == 201
    assert client.post("/v1/blocks/full/allocations", json={"count": 2}).status_code == 201
    assert_problem(client.post("/v1/blocks/full/allocations", json={}), 409, "exhausted")


def test_unauthenticated_401_and_forbidden_403(api):
    assert_problem(api.client().get("/v1/blocks"), 401, "unauthenticated")
    assert_problem(api.client("reader").post("/v1/blocks", json={"cidr": "10.6.0.0/24"}),
                   403, "permission_denied")  # fmt: skip


def test_a_body_beyond_the_limit_is_413(api):
    before = dump_store(api.db)
    big = b'{"name": "' + b"x" * (1 << 20) + b'"}'
    assert_problem(api.client("admin").post("/v1/policies", content=big), 413, "invalid_input")
    assert dump_store(api.db) == before


def test_a_store_that_cannot_be_reached_is_503(api):
    server = api.server
    good = server.service.store
    server.service.store = Store("postgresql://melange@127.0.0.1:1/nowhere")  # nothing listens
    try:
        assert_problem(api.client("admin").get("/v1/blocks"), 503, "store_unavailable")
        assert api.client().get("/v1/health").status_code == 200
    finally:
        server.service.store.close()
        server.service.store = good
    assert api.client("admin").get("/v1/blocks").status_code == 200


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/blocks", {"GET", "HEAD", "POST"}),
    ("PATCH", "/v1/blocks/tiny/allocations", {"POST"}),
    ("PATCH", "/v1/blocks/10.5.0.0%2F30/routes", {"GET", "HEAD", "POST", "DELETE"}),
    ("POST", "/v1/blocks/tiny", {"GET", "HEAD", "PATCH", "DELETE"}),
])  # fmt: skip
def test_a_method_a_path_lacks_is_405_naming_the_ones_it_has(api, method, path, allowed):
    response = api.client("admin").request(method, path, json={})
    assert_problem(response, 405, "invalid_input")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == allowed
