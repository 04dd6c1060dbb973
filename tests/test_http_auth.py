"""The authorization matrix, for every remote operation the declaration serves: no token,
a wrong one, an expired one, a revoked one, one used from an address it does not
allow (401); a reader writing, a writer doing admin work (403). Each refusal is audited
(actor, channel http, the client's address) and changes nothing else."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from melange import operations
from melange.models import api_tokens
from melange.store import Store
from tests.support.http_daemon import HttpDaemon

REMOTE = sorted(name for name, op in operations.OPERATIONS.items() if op.http is not None)
PLACEHOLDER = {"block": "10.0.0.0%2F24", "address": "10.0.0.1", "range_id": "1", "octet": "1"}
ROLE_ORDER = ("reader", "writer", "admin")


def url_of(name: str) -> str:
    """The operation's path, each parameter in it filled with a value of its kind."""
    http = operations.OPERATIONS[name].http
    assert http is not None
    path = http.path
    for param in http.path_params():
        value = PLACEHOLDER.get(param, "x")
        path = path.replace(f"{{{param}:path}}", value).replace(f"{{{param}}}", value)
    return path


def send(client, name: str):
    http = operations.OPERATIONS[name].http
    assert http is not None
    body = {"json": {}} if http.method in ("POST", "PATCH") else {}
    return client.request(http.method, url_of(name), **body)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    workdir: Path = tmp_path_factory.mktemp("http-auth")
    with HttpDaemon(f"sqlite:///{workdir / 'store.db'}", workdir / "api") as running:
        running.expired = running.make_token("expired", "admin")
        running.store.run(lambda conn: conn.execute(
            update(api_tokens).where(api_tokens.c.name == "expired")
            .values(expires_at=datetime(2020, 1, 1) - timedelta(days=1))), write=True)
        running.revoked = running.make_token("revoked", "admin")
        operations.run(running.store, "token.revoke", {"name": "revoked"})
        running.elsewhere = running.make_token("elsewhere", "admin", allowed_ips=["192.0.2.0/24"])
        yield running


def last_change(api) -> dict:
    return operations.run(api.store, "history", {"limit": 1})[-1]


def assert_refused(api, response, name: str, status: int, actor: str) -> None:
    assert response.status_code == status, (name, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["exit_code"] == 7
    assert problem["code"] == ("unauthenticated" if status == 401 else "permission_denied")
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    row = last_change(api)
    assert (row["command"], row["actor"], row["via"]) == (name, actor, "http"), row
    outcome = json.loads(row["outcome"])
    assert outcome["refused"] == problem["code"] and outcome["client"] == "127.0.0.1"


CASES_401 = ["no token", "wrong token", "malformed header", "expired", "revoked",
             "disallowed address"]  # fmt: skip


@pytest.mark.parametrize("case", CASES_401)
@pytest.mark.parametrize("name", REMOTE)
def test_unauthenticated_is_401_and_audited(api, name, case):
    if case == "no token":
        client = api.client()
    elif case == "malformed header":
        client = api.client()
        client.headers["Authorization"] = f"Basic {api.tokens['admin']}"
    else:
        token = {"wrong token": "mlg_0123456789ab_" + "x" * 43, "expired": api.expired,
                 "revoked": api.revoked, "disallowed address": api.elsewhere}[case]  # fmt: skip
        client = api.client(token=token)
    assert_refused(api, send(client, name), name, 401, "anonymous")


@pytest.mark.parametrize("name", REMOTE)
def test_a_role_too_small_is_403_and_audited(api, name):
    needed = operations.OPERATIONS[name].role
    for role in ROLE_ORDER[: ROLE_ORDER.index(needed)]:
        assert_refused(api, send(api.client(role), name), name, 403, f"test-{role}")


@pytest.mark.parametrize("name", REMOTE)
def test_the_role_needed_gets_past_the_door(api, name):
    """With the role the declaration names (or a greater one), never 401 or 403: the
    request reaches the operation (which may find nothing at the placeholder)."""
    needed = operations.OPERATIONS[name].role
    for role in ROLE_ORDER[ROLE_ORDER.index(needed):]:
        response = send(api.client(role), name)
        assert response.status_code not in (401, 403, 500), (name, role, response.text)


def test_health_and_openapi_are_open_and_not_audited(api):
    before = last_change(api)["id"]
    client = api.client()
    assert client.get("/v1/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert last_change(api)["id"] == before


def test_a_token_revoked_elsewhere_is_refused_from_the_next_request(api):
    """No lookup is cached: a token that has just served requests, revoked through
    another connection to the store (as `melange token revoke` on another host would),
    is refused by the very next request on the same keep-alive connection."""
    token = api.make_token("short-lived", "reader")
    client = api.client(token=token)
    for _ in range(3):
        assert client.get("/v1/blocks").status_code == 200
    elsewhere = Store(api.db_url)
    try:
        operations.run(elsewhere, "token.revoke", {"name": "short-lived"})
    finally:
        elsewhere.close()
    assert_refused(api, client.get("/v1/blocks"), "block.list", 401, "anonymous")


def test_forwarded_headers_do_not_change_the_client_address(api):
    """The client's address is the connection's: a client on this host that claims
    another address in X-Forwarded-For or Forwarded gets no further with a token
    allowed only from there, and is audited under its own address."""
    client = api.client(token=api.elsewhere)
    client.headers["X-Forwarded-For"] = "192.0.2.7"
    client.headers["Forwarded"] = "for=192.0.2.7"
    client.headers["X-Real-IP"] = "192.0.2.7"
    assert_refused(api, client.get("/v1/blocks"), "block.list", 401, "anonymous")
