"""The web view's server side, through melanged's HTTP server over TLS with a real
client: no page without a session, the cookies' attributes, CSRF on sign-in and
sign-out, the security headers, and every stored value rendered as text."""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie

import httpx
import pytest
from sqlalchemy import update

from melange import operations
from melange.models import blocks, interfaces, ip_addresses
from melanged.http.ui.sessions import Sessions
from tests.support.http_daemon import HttpDaemon

HOSTILE = "<script>alert(1)</script>\"' onmouseover=x &amp;"
PAGES = ["/ui/", "/ui/network?name=n1", "/ui/blocks/1", "/ui/block?ref=a",
         "/ui/blocks/2?cell=10.8.1.0/24", "/ui/addresses", "/ui/addresses/10.0.0.2",
         "/ui/interfaces/vif-1", "/ui/search?q=10.0.0.2", "/ui/search?q=web",
         "/ui/history", "/ui/report?above=0", "/ui/no-such-page", "/ui/block?ref=v6",
         "/ui/block?ref=v6&cell=2001:db8::/120"]  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("webui")
    with HttpDaemon(f"sqlite:///{workdir / 'store.db'}", workdir) as daemon:
        store = daemon.store
        operations.run(
            store,
            "block.create",
            {"cidr": "10.0.0.0/24", "name": "a", "network": "n1", "gateway": "10.0.0.1"},
        )
        operations.run(store, "block.create", {"cidr": "10.8.0.0/16", "name": "big",
                                               "network": "n1"})  # fmt: skip
        operations.run(store, "interface.create", {"vif": "vif-1", "network": "n1",
                                                   "mac": "02:00:00:00:00:01"})  # fmt: skip
        operations.run(store, "block.allocate", {"block": "a", "hostname": "web-1",
                                                 "mac": "02:00:00:00:00:02"})  # fmt: skip
        operations.run(store, "block.allocate", {"block": "big", "count": 300})
        operations.run(store, "block.create", {"cidr": "2001:db8::/64", "name": "v6"})
        operations.run(store, "block.allocate", {"block": "v6", "count": 2})
        yield daemon


def signed_in(api: HttpDaemon, role: str = "reader", token: str | None = None) -> httpx.Client:
    client = api.client()
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = client.post("/ui/login", data={"csrf": csrf[1], "token": token or api.tokens[role]})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/", answer.text
    return client


def cookie(response: httpx.Response, name: str) -> SimpleCookie:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            return jar
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


def test_no_page_without_a_session(api):
    for cookies in ({}, {"melange_session": "forged-" + "x" * 40}):
        client = api.client(cookies=cookies)
        for path in PAGES:
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/ui/login", path
            assert answer.content == b"", path
        assert client.post("/ui/logout").headers["location"] == "/ui/login"
    # An API token is no session: the pages want the cookie of a sign-in.
    bearer = api.client("admin").get("/ui/")
    assert (bearer.status_code, bearer.headers["location"]) == (303, "/ui/login")


def test_sign_in_sets_a_strict_expiring_cookie_and_every_page_answers(api):
    client = api.client()
    form = client.get("/ui/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    login = cookie(form, "melange_login")["melange_login"]
    assert login["httponly"] and login["secure"] and login["samesite"].lower() == "strict"
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
    answer = client.post("/ui/login", data={"csrf": csrf, "token": api.tokens["reader"]})
    assert answer.status_code == 303
    session = cookie(answer, "melange_session")["melange_session"]
    assert len(session.value) >= 40 and session.value != api.tokens["reader"]
    assert session["httponly"] and session["secure"] and session["samesite"].lower() == "strict"
    assert session["path"] == "/ui" and int(session["max-age"]) == 8 * 3600
    assert session["expires"]
    for path in PAGES:
        page = client.get(path)
        expected = 404 if "no-such" in path else (303 if "search" in path else 200)
        assert page.status_code == expected, (path, page.text[-500:])
    assert client.get("/ui/search?q=02:00:00:00:00:02").headers["location"] == \
        "/ui/addresses/10.0.0.3?block=1"  # fmt: skip
    assert "Map of 10.8.0.0/16" in client.get("/ui/blocks/2").text
    assert "not allocated" in client.get("/ui/addresses/10.9.9.9").text


def test_addresses_come_a_page_at_a_time(api):
    client = signed_in(api)
    first = client.get("/ui/addresses?block=big")
    shown = re.findall(r">(10\.8\.[0-9.]+)</a>", first.text)
    assert len(shown) == 100 and shown[0] == "10.8.0.1"
    after = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert after is not None and "block=big" in after[1]
    second = client.get(after[1].replace("&amp;", "&"))
    following = re.findall(r">(10\.8\.[0-9.]+)</a>", second.text)
    assert len(following) == 100 and following[0] == "10.8.0.101"
    assert "Map of 2001:db8::/120" in client.get("/ui/block?ref=v6&cell=2001:db8::/120").text


def test_history_and_the_report_filter_as_the_cli_does(api):
    client = signed_in(api)
    one = client.get("/ui/history?address=10.0.0.3").text
    assert "block.allocate" in one and "block.create" not in one
    assert "block.create" in client.get("/ui/history?block=a").text
    assert client.get("/ui/history?since=nonsense").status_code == 400
    above = client.get("/ui/report?above=0.5").text
    assert ">10.0.0.0/24</a>" in above and ">10.8.0.0/16</a>" not in above  # 0.46% used
    assert "1 block over 0.5% used" in above
    assert client.get("/ui/report?above=101").status_code == 400


def test_every_answer_carries_the_security_headers(api):
    client = signed_in(api)
    for path in [*PAGES, "/ui/login", "/ui/static/ui.css"]:
        answer = client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src" not in csp and "unsafe-inline" not in csp, path
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert client.get("/ui/").headers["cache-control"] == "no-store"
    assert "<script" not in client.get("/ui/blocks/1").text  # no script of its own either


def test_sign_in_refuses_a_forged_form_and_a_bad_token(api):
    client = api.client()
    client.get("/ui/login")
    forged = client.post("/ui/login", data={"csrf": "guess", "token": api.tokens["admin"]})
    assert forged.status_code == 403 and "melange_session" not in forged.headers.get(
        "set-cookie", "")  # fmt: skip
    no_cookie = api.client().post("/ui/login", data={"csrf": "x", "token": api.tokens["admin"]})
    assert no_cookie.status_code == 403
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
    bad = client.post("/ui/login", data={"csrf": csrf, "token": "mlg_000000000000_nope"})
    assert bad.status_code == 401 and "invalid or expired token" in bad.text
    assert "melange_session" not in bad.headers.get("set-cookie", "")
    trail = operations.run(api.store, "history", {"limit": 5})
    assert trail[-1]["command"] == "ui.login" and "refused" in trail[-1]["outcome"]


def test_sign_out_needs_the_sessions_csrf_and_closes_every_page(api):
    client = signed_in(api)
    page = client.get("/ui/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    refused = client.post("/ui/logout", data={"csrf": "not-it"})
    assert refused.status_code == 403 and client.get("/ui/").status_code == 200
    out = client.post("/ui/logout", data={"csrf": csrf})
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
    assert int(cookie(out, "melange_session")["melange_session"]["max-age"]) == 0
    stale = api.client(cookies={"melange_session": page.request.headers["cookie"].split("=")[1]})
    for path in PAGES:
        assert stale.get(path).status_code == 303, path


def test_a_revoked_token_closes_its_sessions(api):
    token = api.make_token("short-lived", "reader")
    client = signed_in(api, token=token)
    assert client.get("/ui/").status_code == 200
    operations.run(api.store, "token.revoke", {"name": "short-lived"})
    assert client.get("/ui/").headers["location"] == "/ui/login"


def test_stored_values_render_as_text(api, tmp_path):
    """Names the core would refuse, written behind its back (another writer, a bug), and
    a policy description, which the core keeps as given and history shows."""
    operations.run(api.store, "policy.create", {"name": "p-hostile", "description": HOSTILE})

    def spoil(conn):
        conn.execute(update(blocks).where(blocks.c.id == 1).values(
            name=HOSTILE, tenant=HOSTILE))  # fmt: skip
        conn.execute(update(ip_addresses).values(hostname=HOSTILE))
        conn.execute(update(interfaces).values(device=HOSTILE))

    api.store.run(spoil, write=True)
    client = signed_in(api)
    pages = ["/ui/", "/ui/network?name=n1", "/ui/blocks/1", "/ui/addresses",
             "/ui/addresses/10.0.0.2", "/ui/interfaces/vif-1", "/ui/history",
             "/ui/search?q=%3Cscript", "/ui/search?q=02:00:00:00:00:01",
             "/ui/search?q=" + HOSTILE[:20], "/ui/report"]  # fmt: skip
    for path in pages:
        text = client.get(path, follow_redirects=True).text
        assert "<script>" not in text and "onmouseover=x" not in text.replace(
            "&#34;&#39; onmouseover=x", "")  # fmt: skip
    shown = client.get("/ui/blocks/1").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39; onmouseover=x &amp;amp;" in shown
    history = client.get("/ui/history").text
    assert "&lt;script&gt;" in history and "p-hostile" in history


def test_plain_http_cookies_are_not_secure_and_sessions_expire(tmp_path):
    with HttpDaemon(f"sqlite:///{tmp_path / 'store.db'}", tmp_path, tls=False) as plain:
        client = plain.client()
        form = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
        answer = client.post("/ui/login", data={"csrf": csrf, "token": plain.tokens["reader"]})
        session = cookie(answer, "melange_session")["melange_session"]
        assert session["httponly"] and not session["secure"]
    sessions = Sessions(lifetime=0.05, limit=2)
    first, _ = sessions.open("t1")
    assert sessions.get(first) is not None
    time.sleep(0.1)
    assert sessions.get(first) is None
    ids = [sessions.open(f"t{i}")[0] for i in range(3)]
    assert len(sessions) == 2 and sessions.get(ids[0]) is None  # the oldest goes first
