"""API tokens: `melange token …` on every backend and channel, and `tokens.authenticate`,
the check every HTTP request goes through, on real stores."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from sqlalchemy import select

from melange import models, operations, tokens
from melange.errors import InvalidInput, Unauthenticated
from melange.store import Store
from tests.support.cli import Melange, assert_error
from tests.support.clock import FakeClock
from tests.support.sql import dump_store, execute_sql

TOKEN = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
LISTED = {"name", "key_id", "role", "created_at", "expires_at", "expired", "allowed_ips",
          "last_used_at"}  # fmt: skip


def _names(melange: Melange) -> set[str]:
    return {t["name"] for t in melange.json("token", "list")}


def test_create_list_revoke(melange: Melange):
    """Plain `token create` is the token alone; -o json the record with it under `token`;
    a table shows it once with a note; list and revoke never show it."""
    plain = melange.ok("token", "create", "ci", "--role", "writer")
    theirs = _names(melange) - {"ci"}  # through HTTP, the client's own token is there too
    assert TOKEN.fullmatch(plain.rstrip("\n")) and plain.count("\n") == 1
    ips = ("--allowed-ips", "10.0.0.0/8,192.0.2.7", "--allowed-ips", "2001:db8::/32")
    made = melange.json("token", "create", "ops", "--role", "admin", "--expires", "30d", *ips)
    assert set(made) == LISTED | {"token"} and TOKEN.fullmatch(made["token"])
    assert made["token"].startswith(f"mlg_{made['key_id']}_")
    assert (made["name"], made["role"], made["expired"]) == ("ops", "admin", False)
    assert made["allowed_ips"] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert made["expires_at"] > made["created_at"] and made["last_used_at"] is None
    table = melange.ok("token", "create", "look", "--role", "reader", output="table")
    shown = TOKEN.findall(table)
    assert len(shown) == 1 and "not shown again" in table

    listed = [t for t in melange.json("token", "list") if t["name"] not in theirs]
    assert [t["name"] for t in listed] == ["ci", "look", "ops"]
    assert all(set(t) == LISTED for t in listed)
    assert listed[2] == {k: v for k, v in made.items() if k != "token"}
    for fmt in ("plain", "json", "table"):
        text = melange.ok("token", "list", output=fmt)
        assert "mlg_" not in text and made["token"][17:] not in text
    lines = [line.split("\t") for line in melange.ok("token", "list").splitlines()]
    assert [line[:3] for line in lines if line[0] not in theirs][0] == [
        "ci", listed[0]["key_id"], "writer"]  # fmt: skip

    revoked = melange.json("token", "revoke", "ops")
    assert revoked == listed[2]
    assert _names(melange) - theirs == {"ci", "look"}
    history = [(h["command"], h["kind"], h["subject"]) for h in melange.json("history")]
    assert ("token.revoke", "token", "ops") in history
    assert ("token.create", "token", "ops") in history


def test_the_secret_is_kept_nowhere(melange: Melange):
    """Not in api_tokens, not in the audit trail: no column of any table holds the
    secret; each token has a salt of its own, and the digest is salted."""
    made = [melange.json("token", "create", f"t{i}", "--role", "reader") for i in range(3)]
    made.append(melange.json("token", "create", "again", "--role", "reader"))
    melange.ok("token", "revoke", "t0")
    everything = "\n".join(map(str, dump_store(melange.db)))
    assert "token.create" in everything and made[1]["key_id"] in everything  # it did look
    for record in made:
        secret = record["token"].split("_", 2)[2]
        assert secret not in everything and record["token"] not in everything
    rows = execute_sql(melange.db, "SELECT key_id, salt, digest FROM api_tokens")
    assert len({salt for _, salt, _ in rows}) == len(rows)
    ours = [row for row in rows if row[0] in {r["key_id"] for r in made}]
    assert len(ours) == 3
    for key_id, salt, digest in ours:
        secret = next(r["token"] for r in made if r["key_id"] == key_id).split("_", 2)[2]
        assert digest == hashlib.sha256((salt + secret).encode()).hexdigest()
        assert digest != hashlib.sha256(secret.encode()).hexdigest()
        assert len(salt) == 32
    outcomes = execute_sql(
        melange.db, "SELECT outcome FROM audit_log WHERE command = 'token.create'"
    )
    assert len(outcomes) == 4 and all("token" not in json.loads(o) for (o,) in outcomes)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("create", "x", "--role", "root"), 2),
        (("create", "x"), 2),  # no --role
        (("create", "x", "--role", "reader", "--expires", "soon"), 2),
        (("create", "x", "--role", "reader", "--expires", "0"), 2),
        (("create", "x", "--role", "reader", "--expires", "99999999d"), 2),
        (("create", "x", "--role", "reader", "--allowed-ips", "10.0.0.0/33"), 2),
        (("create", "x", "--role", "reader", "--allowed-ips", "10.0.0.1/8"), 2),
        (("create", "x", "--role", "reader", "--allowed-ips", "10.0.0.0/8,nonsense"), 2),
        (("create", "x", "--role", "reader", "--allowed-ips", ""), 2),
        (("create", "x", "--role", "reader", "--allowed-ips", "10.0.0.0/8,"), 2),
        (("create", "bad name", "--role", "reader"), 2),
        (("create", "..", "--role", "reader"), 2),
        (("create", "x" * 65, "--role", "reader"), 2),
        (("create", "taken", "--role", "reader"), 4),
        (("revoke", "nobody"), 3),
        (("create", "x", "--rol", "reader"), 2),
        (("create", "x", "--role", "reader", "--expire", "1d"), 2),
        (("lst",), 2),
        (("revoke",), 2),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(melange: Melange, args, code):
    melange.ok("token", "create", "taken", "--role", "admin")
    before = dump_store(melange.db)
    for as_json in (False, True):
        result = melange("token", *args, output="json" if as_json else "plain")
        assert_error(result, code, as_json=as_json)
    assert dump_store(melange.db) == before


def test_a_name_may_be_64_characters(melange: Melange):
    name = "a" + "b.-_9" * 12 + "xyz"
    assert len(name) == 64
    assert TOKEN.fullmatch(melange.ok("token", "create", name, "--role", "reader").strip())
    assert name in _names(melange)


@pytest.fixture
def store(store_url: str):
    clock = FakeClock()
    store = Store(store_url, clock=clock)
    try:
        yield store
    finally:
        store.close()


def _create(store: Store, name: str, **params) -> str:
    return operations.run(store, "token.create", {"name": name, "role": "writer", **params})[
        "token"
    ]


def _authenticate(store: Store, token, client: str = "127.0.0.1") -> tokens.Identity:
    return store.read(lambda conn: tokens.authenticate(conn, token, client))


def _refused(store: Store, token, client: str = "127.0.0.1") -> str:
    with pytest.raises(Unauthenticated) as refused:
        _authenticate(store, token, client)
    assert refused.value.exit_code == 7 and refused.value.code == "unauthenticated"
    return refused.value.message


def test_authenticate_good_bad_unknown_revoked(store: Store):
    token = _create(store, "ci")
    admin = _create(store, "root", role="admin")
    identity = _authenticate(store, token)
    assert identity == tokens.Identity("ci", "writer")
    assert _authenticate(store, admin) == tokens.Identity("root", "admin")

    key_id, secret = token.split("_")[1], token.split("_", 2)[2]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    other_key = f"mlg_{'0' * 12 if key_id != '0' * 12 else '1' * 12}_{secret}"
    swapped = f"mlg_{admin.split('_')[1]}_{secret}"  # a real key with another's secret
    refusals = {
        _refused(store, t)
        for t in (tampered, other_key, swapped, token + "x", token[:-1], "", "Bearer " + token,
                  token.upper(), f"mlg_{key_id}_", f"xyz_{key_id}_{secret}", None, 42)
    }  # fmt: skip
    assert refusals == {tokens.REFUSED}

    operations.run(store, "token.revoke", {"name": "ci"})
    assert _refused(store, token) == tokens.REFUSED
    assert _authenticate(store, admin).name == "root"


def test_an_expired_token_is_refused_by_the_stores_clock(store: Store):
    token = _create(store, "short", expires="1h")
    _create(store, "forever")
    assert _authenticate(store, token).name == "short"
    column = models.api_tokens.c.expires_at
    query = select(column).where(models.api_tokens.c.name == "short")
    expires_at = store.read(lambda conn: conn.execute(query).scalar_one())
    assert expires_at.microsecond == 0  # whole seconds on every backend
    # The fake clock runs on with the real one: leave room for a slow machine.
    store.clock.advance(3590)
    assert _authenticate(store, token).name == "short"
    store.clock.advance(20)
    assert _refused(store, token) == tokens.REFUSED
    listed = {t["name"]: t["expired"] for t in operations.run(store, "token.list", {})}
    assert listed == {"forever": False, "short": True}


def test_allowed_ips_inside_and_outside(store: Store):
    token = _create(store, "lan", allowed_ips=["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    for client in ("10.1.2.3", "10.255.255.255", "2001:db8::1", "::ffff:10.9.9.9", "192.0.2.7"):
        assert _authenticate(store, token, client).name == "lan", client
    for client in ("11.0.0.1", "192.0.2.8", "2001:db9::1", "::1", "testclient", ""):
        message = _refused(store, token, client)
        assert "may not be used from" in message, client
    anywhere = _create(store, "any")
    assert _authenticate(store, anywhere, "203.0.113.9").name == "any"
    assert _authenticate(store, anywhere, "not an address").name == "any"


def test_last_use_is_recorded_at_most_once_a_minute(store: Store):
    token = _create(store, "busy")
    first = _authenticate(store, token)
    assert first.stale
    store.write(lambda conn: tokens.record_use(conn, first))
    used = operations.run(store, "token.list", {})[0]["last_used_at"]
    assert used is not None
    assert not _authenticate(store, token).stale
    store.clock.advance(61)
    assert _authenticate(store, token).stale


def test_the_declaration_checks_types_before_anything_runs(store: Store):
    for params in ({"name": "x", "role": "reader", "allowed_ips": "10.0.0.0/8"},
                   {"name": "x", "role": "reader", "expires": 30},
                   {"name": "x"}, {"name": "x", "role": "boss"}):  # fmt: skip
        with pytest.raises(InvalidInput):
            operations.run(store, "token.create", params)
    assert operations.run(store, "token.list", {}) == []
    for name in ("token.create", "token.list", "token.revoke"):
        assert operations.OPERATIONS[name].role == "admin"
        assert not operations.OPERATIONS[name].allows("writer")
    assert operations.OPERATIONS["token.revoke"].http.path == "/v1/tokens/{name}"
