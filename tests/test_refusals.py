"""A flood of refused HTTP requests: each refused, but the audit trail takes a bounded
number of rows from one client and from all, and says how many it left out."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest

from melange import operations
from melange.store import Store
from melanged.http import auth
from melanged.http.refusals import RefusalBudget


def test_a_clients_refusals_past_its_burst_are_counted_not_written():
    budget = RefusalBudget(burst=3, per_second=1.0, total_burst=100, total_per_second=100.0)
    taken = [budget.take("198.51.100.7", 10.0) for _ in range(8)]
    assert taken == [0, 0, 0, None, None, None, None, None]
    # A second later one more may be written, and it says how many were left out.
    assert budget.take("198.51.100.7", 11.0) == 5
    assert budget.take("198.51.100.7", 11.0) is None
    assert budget.take("198.51.100.7", 13.5) == 1  # 2.5 s refilled 2: the first says 1...
    assert budget.take("198.51.100.7", 13.5) == 0  # ...and the next nothing left out
    # Another client has its own bucket.
    assert budget.take("203.0.113.9", 13.5) == 0


def test_all_clients_together_are_bounded_and_a_refused_one_keeps_its_token():
    budget = RefusalBudget(burst=2, per_second=0.0, total_burst=4, total_per_second=1.0)
    written = [budget.take(f"192.0.2.{n}", 0.0) for n in range(10)]
    assert written == [0, 0, 0, 0] + [None] * 6  # many addresses buy no more
    assert budget.take("192.0.2.9", 1.0) == 1  # the shared bucket refilled one
    # 192.0.2.5 was refused by the shared bucket only: its own (which never refills
    # here) still holds both its tokens.
    later = [budget.take("192.0.2.5", 100.0) for _ in range(3)]
    assert later == [1, 0, None]


def test_the_clients_remembered_are_bounded():
    budget = RefusalBudget(burst=1, per_second=0.0, total_burst=10**6,
                           total_per_second=0.0, clients=100)  # fmt: skip
    for n in range(1000):
        assert budget.take(f"10.{n // 256}.{n % 256}.1", 0.0) == 0
    assert len(budget._known) == 100


def test_refusals_past_the_bound_are_answered_401_and_not_written(
    http_server, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """Through melanged's HTTP API: 40 requests without a token, all 401; the trail holds
    the five its bound lets through, and the API goes on serving a good token."""
    config = tmp_path / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 48h\n")
    url = f"sqlite:///{tmp_path / 'melange.db'}"
    monkeypatch.setattr(auth, "REFUSALS", RefusalBudget(burst=5, per_second=0.0))
    with http_server.serving(url, config, tmp_path / "token") as endpoint:
        token = (tmp_path / "token").read_text().strip()
        trust = ssl.create_default_context(cafile=str(endpoint.ca_file))
        with httpx.Client(base_url=endpoint.url, verify=trust) as client:
            statuses = {client.get("/v1/blocks").status_code for _ in range(40)}
            good = client.post("/v1/blocks", json={"cidr": "10.9.0.0/24", "name": "ok"},
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert statuses == {401}
    assert good.status_code == 201, good.text
    store = Store(url)
    rows = operations.run(store, "history", {"limit": 100})
    store.close()
    refused = [json.loads(r["outcome"]) for r in rows if r["actor"] == "anonymous"]
    assert len(refused) == 5 and all(o["refused"] == "unauthenticated" for o in refused)
    assert [r["command"] for r in rows if r["actor"] != "anonymous"] == ["block.create"]
