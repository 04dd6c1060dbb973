"""Group commit in melanged: concurrent allocations share a transaction, each its own fate.

Real servers throughout: melanged's socket server and its HTTP API in this process
(their lanes are melanged.batching.GROUP, whose counters tell whether batches of
more than one happened), and a real melanged process killed with SIGKILL while
batches run. Every backend: SQLite files, MariaDB, PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from melange import operations
from melange.errors import MelangeError
from melange.models import audit_log
from melange.store import Store
from melange_cli import client
from melanged.batching import GROUP
from melanged.server import Access, SocketServer, serve_in_background
from tests.support.http_daemon import HttpDaemon
from tests.support.socket_daemon import SocketDaemon
from tests.support.stress import active, check_counters, check_outcome, create_blocks, run_workers

THREADS = 16
EACH = 20


def _mac(worker: int, n: int) -> str:
    return f"02:7a:{worker:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}:01"


def _macs_of(url: str) -> dict[str, str]:
    """MAC (colon-separated) -> address of every allocated address in the store."""
    by_mac = {}
    for _block, address, mac in active(url):
        if mac is not None:
            digits = f"{mac:012x}"
            by_mac[":".join(digits[i:i + 2] for i in range(0, 12, 2))] = address
    return by_mac


def _audit_rows(url: str, command: str = "block.allocate") -> int:
    """Audit rows of `command` in the store."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(audit_log)
                             .where(audit_log.c.command == command)).scalar()  # fmt: skip
    engine.dispose()
    return int(count or 0)


@pytest.fixture
def socket_server(store_url: str, tmp_path: Path) -> Iterator[Path]:
    """melanged's socket server on the test's store, in this process (its lanes: GROUP)."""
    store = Store(store_url, release_hold=3600)
    operations.run(store, "block.create", {"cidr": "10.77.0.0/20", "name": "g"})
    server = SocketServer(tmp_path / "run" / "melange.sock", store, Access())
    serve_in_background(server)
    try:
        yield server.path
    finally:
        server.close()
        store.close()


def _hammer(allocate: Callable[[int, int], Any], threads: int = THREADS,
            each: int = EACH) -> tuple[dict[str, str], list[str]]:  # fmt: skip
    """`threads` threads, `each` allocations each, all at once: (mac -> address, errors)."""
    answered: dict[str, str] = {}
    errors: list[str] = []
    start = threading.Barrier(threads)

    def work(worker: int) -> None:
        start.wait()
        for n in range(each):
            try:
                result = allocate(worker, n)
            except Exception as error:  # noqa: BLE001  (collected, asserted empty)
                errors.append(repr(error))
                continue
            answered[result[0]["mac"]] = result[0]["address"]

    workers = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=300)
    return answered, errors


def _counters() -> tuple[int, int]:
    return GROUP.stats.transactions, GROUP.stats.requests


def test_concurrent_socket_allocations_are_batched_without_duplicates(
    store_url: str, socket_server: Path
) -> None:
    before = _counters()
    answered, errors = _hammer(lambda w, n: client.call(
        str(socket_server), "block.allocate", {"block": "g", "mac": _mac(w, n)}))  # fmt: skip
    assert errors == []
    assert len(answered) == THREADS * EACH
    assert len(set(answered.values())) == THREADS * EACH, "an address was handed out twice"
    assert _macs_of(store_url) == answered  # every answer is in the store, with its MAC
    transactions = GROUP.stats.transactions - before[0]
    requests = GROUP.stats.requests - before[1]
    assert requests == THREADS * EACH
    assert transactions < requests, "no two requests ever shared a transaction"
    assert _audit_rows(store_url) == THREADS * EACH  # one per request, as without batching


def test_concurrent_http_allocations_are_batched_without_duplicates(
    store_url: str, tmp_path: Path
) -> None:
    with HttpDaemon(store_url, tmp_path / "api") as api:
        operations.run(api.store, "block.create", {"cidr": "10.78.0.0/20", "name": "h"})
        clients = [api.client("writer") for _ in range(THREADS)]
        before = _counters()

        def allocate(worker: int, n: int) -> Any:
            reply = clients[worker].post("/v1/blocks/h/allocations", json={"mac": _mac(worker, n)})
            assert reply.status_code == 201, reply.text
            return reply.json()

        answered, errors = _hammer(allocate)
    assert errors == []
    assert len(set(answered.values())) == THREADS * EACH
    assert _macs_of(store_url) == answered
    assert GROUP.stats.requests - before[1] == THREADS * EACH
    assert GROUP.stats.transactions - before[0] < THREADS * EACH


@contextmanager
def _lane_held(store_url: str, *blocks: str) -> Iterator[None]:
    """Hold what a leader needs first (SQLite's write lock; on a server the rows of the
    blocks named), so the requests sent meanwhile queue behind it and form the next
    batch."""
    if store_url.startswith("sqlite:"):
        holder = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(store_url, poolclass=NullPool)
    with engine.connect() as conn:
        conn.begin()
        for block in blocks:
            conn.execute(text("SELECT id FROM blocks WHERE name = :n FOR UPDATE"), {"n": block})
        yield
        conn.rollback()
    engine.dispose()


def _send_all(path: Path, requests: list[dict], queued: int, operation: str = "block.allocate"
              ) -> tuple[list[threading.Thread], list[Any]]:  # fmt: skip
    """Each request from a thread of its own, the first alone until it leads its lane
    (held up by the caller), the others then; returns once `queued` of them wait in a
    lane (the caller then lets the leader go): the threads, and where each one's
    outcome (result or MelangeError) will be, by index."""
    outcomes: list[Any] = [None] * len(requests)

    def send(index: int) -> None:
        try:
            outcomes[index] = client.call(str(path), operation, requests[index])
        except MelangeError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    _wait_for(lambda: GROUP.running() == 0, "the lanes of earlier requests to end")
    threads[0].start()
    _wait_for(lambda: GROUP.running() >= 1 and GROUP.waiting() == 0,
              "the first request to be taken by its lane's leader")  # fmt: skip
    for thread in threads[1:]:
        thread.start()
    _wait_for(lambda: GROUP.waiting() >= queued, f"{queued} requests queued")
    return threads, outcomes


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"waited 30 s for {what}"
        time.sleep(0.01)


def test_a_failing_request_in_a_batch_fails_alone(store_url: str, socket_server: Path) -> None:
    client.call(str(socket_server), "block.allocate", {"block": "g", "address": "10.77.0.9"})
    requests = [{"block": "g", "mac": _mac(1, n)} for n in range(6)]
    requests[2] = {"block": "g", "address": "10.77.0.9", "mac": _mac(2, 0)}  # taken: exit 4
    requests[4] = {"block": "g", "count": 100_000}  # more than a /20 has: exit 5
    before = _counters()
    with _lane_held(store_url, "g"):
        # The first request leads and waits for the lock; the others queue behind it.
        threads, outcomes = _send_all(socket_server, requests, queued=len(requests) - 1)
    for thread in threads:
        thread.join(timeout=60)
    assert GROUP.stats.largest >= len(requests) - 1
    assert GROUP.stats.transactions - before[0] == 2  # the leader alone, then the rest
    taken, exhausted = outcomes[2], outcomes[4]
    assert isinstance(taken, MelangeError) and taken.exit_code == 4, taken
    assert "10.77.0.9" in taken.message
    assert isinstance(exhausted, MelangeError) and exhausted.exit_code == 5, exhausted
    good = {i: outcomes[i] for i in (0, 1, 3, 5)}
    assert all(isinstance(result, list) for result in good.values()), good
    stored = _macs_of(store_url)
    for index, result in good.items():
        assert stored[requests[index]["mac"]] == result[0]["address"]
    assert _mac(2, 0) not in stored  # the failed request left nothing behind
    assert len(active(store_url)) == 1 + len(good)


def test_releases_are_batched_each_with_its_own_outcome(
    store_url: str, socket_server: Path
) -> None:
    """Releases through melanged share a transaction too, on a server across blocks (their
    blocks locked in one order); a release that fails (an address never allocated, one
    released twice in the batch) fails alone with its own exit code."""
    path = str(socket_server)
    client.call(path, "block.create", {"cidr": "10.78.0.0/24", "name": "r"})
    for address in ("10.77.0.1", "10.77.0.2", "10.77.0.3"):
        client.call(path, "block.allocate", {"block": "g", "address": address})
    for address in ("10.78.0.1", "10.78.0.2", "10.78.0.3"):
        client.call(path, "block.allocate", {"block": "r", "address": address})
    requests = [{"address": "10.77.0.1"}, {"address": "10.78.0.1"},
                {"address": "10.77.0.2", "block": "g"}, {"address": "10.78.0.2"},
                {"address": "10.77.0.9"},  # never allocated: exit 3
                {"address": "10.78.0.3"}, {"address": "10.78.0.3"}]  # fmt: skip
    before = _counters()
    with _lane_held(store_url, "g", "r"):
        threads, outcomes = _send_all(socket_server, requests, len(requests) - 1, "ip.release")
    for thread in threads:
        thread.join(timeout=60)
    assert GROUP.stats.transactions - before[0] == 2  # the leader alone, then the rest
    assert GROUP.stats.largest >= len(requests) - 1
    for index in (0, 1, 2, 3):
        assert isinstance(outcomes[index], dict), outcomes[index]
        assert outcomes[index]["address"] == requests[index]["address"]
        assert outcomes[index]["state"] == "held"
    missing = outcomes[4]
    assert isinstance(missing, MelangeError) and missing.exit_code == 3, missing
    twice = sorted((outcomes[5], outcomes[6]), key=lambda o: isinstance(o, MelangeError))
    assert isinstance(twice[0], dict) and twice[0]["state"] == "held", twice
    assert isinstance(twice[1], MelangeError) and twice[1].exit_code == 4, twice
    assert "already released" in twice[1].message
    assert [address for _, address, _ in active(store_url)] == ["10.77.0.3"]
    assert _audit_rows(store_url, "ip.release") == 5


@contextmanager
def _poisoned(store_url: str, mac: str, *,
              deadlock_once: bool = False) -> Iterator[Callable[[], int]]:  # fmt: skip
    """A trigger in the store that refuses the insert of an address with `mac`: always,
    as a constraint (unique violation), or with `deadlock_once` only the first time, as
    lock contention (a serialization failure, a deadlock) that a new attempt gets past.
    The database itself raises it, mid-batch, like a real conflict. Yields a function
    telling how often the trigger met that MAC (on the servers: a sequence counts)."""
    value = int(mac.replace(":", ""), 16)
    engine = create_engine(store_url, poolclass=NullPool)
    times = 1 if deadlock_once else 1 << 30
    if engine.dialect.name == "sqlite":
        assert not deadlock_once, "SQLite has one writer: no deadlock to raise"
        setup = [f"CREATE TRIGGER poison BEFORE INSERT ON ip_addresses WHEN NEW.mac = {value} "
                 "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"]
        teardown = ["DROP TRIGGER poison"]
    elif engine.dialect.name == "postgresql":
        code = "40001" if deadlock_once else "23505"
        setup = ["CREATE SEQUENCE poison_seq",
                 "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                 f"IF NEW.mac = {value} THEN IF nextval('poison_seq') <= {times} THEN "
                 f"RAISE EXCEPTION 'poisoned' USING ERRCODE = '{code}'; END IF; END IF; "
                 "RETURN NEW; END $$",
                 "CREATE TRIGGER poison BEFORE INSERT ON ip_addresses "
                 "FOR EACH ROW EXECUTE FUNCTION poison()"]
        teardown = ["DROP TRIGGER poison ON ip_addresses", "DROP FUNCTION poison()",
                    "DROP SEQUENCE poison_seq"]
    else:
        state, errno = ("40001", 1213) if deadlock_once else ("23000", 1062)
        setup = ["CREATE SEQUENCE poison_seq",
                 "CREATE TRIGGER poison BEFORE INSERT ON ip_addresses FOR EACH ROW BEGIN "
                 f"IF NEW.mac = {value} THEN IF NEXTVAL(poison_seq) <= {times} THEN "
                 f"SIGNAL SQLSTATE '{state}' SET MYSQL_ERRNO = {errno}, "
                 "MESSAGE_TEXT = 'poisoned'; END IF; END IF; END"]
        teardown = ["DROP TRIGGER poison", "DROP SEQUENCE poison_seq"]
    with engine.begin() as conn:
        for statement in setup:
            conn.execute(text(statement))

    def met() -> int:
        nextval = "nextval('poison_seq')" if engine.dialect.name == "postgresql" else (
            "NEXTVAL(poison_seq)")
        with engine.begin() as conn:
            return int(conn.execute(text(f"SELECT {nextval}")).scalar() or 0) - 1

    try:
        yield met
    finally:
        with engine.begin() as conn:
            for statement in teardown:
                conn.execute(text(statement))
        engine.dispose()


def _batch_of(store_url: str, socket_server: Path, requests: list[dict]) -> list[Any]:
    """The requests sent at once behind a held lane, so that all but the first form one
    batch; each one's outcome (result or MelangeError)."""
    before = _counters()
    with _lane_held(store_url, "g"):
        threads, outcomes = _send_all(socket_server, requests, queued=len(requests) - 1)
    for thread in threads:
        thread.join(timeout=120)
    assert GROUP.stats.transactions - before[0] == 2  # the leader alone, then the rest
    return outcomes


def test_a_batch_the_store_refuses_is_run_again_carefully(
    store_url: str, socket_server: Path
) -> None:
    """A request the database refuses (a constraint raised by the store, which on a server
    surfaces only with a later request's statement, failing the batch as a whole): the
    batch runs again carefully, each request confirmed before the next, so the refused
    one fails alone with exit 4 and every other one gets its address."""
    requests = [{"block": "g", "mac": _mac(6, n)} for n in range(6)]
    poison = requests[3]["mac"]
    with _poisoned(store_url, poison):
        outcomes = _batch_of(store_url, socket_server, requests)
    refused = outcomes[3]
    assert isinstance(refused, MelangeError) and refused.exit_code == 4, refused
    assert "poisoned" in refused.message
    stored = _macs_of(store_url)
    for index in (0, 1, 2, 4, 5):
        assert isinstance(outcomes[index], list), outcomes[index]
        assert stored[requests[index]["mac"]] == outcomes[index][0]["address"]
    assert poison not in stored
    assert len(stored) == 5 and _audit_rows(store_url) == 5


@pytest.mark.servers_only
def test_a_batch_aborted_by_lock_contention_is_run_again_whole(
    store_url: str, socket_server: Path
) -> None:
    """A deadlock or serialization failure mid-batch aborts the whole transaction; the
    batch runs again (carefully) and every request is answered once, with one address
    and one audit row each: nothing of the aborted attempt is left or counted twice."""
    requests = [{"block": "g", "mac": _mac(7, n)} for n in range(6)]
    with _poisoned(store_url, requests[2]["mac"], deadlock_once=True) as met:
        outcomes = _batch_of(store_url, socket_server, requests)
        assert met() == 2  # refused once (the whole batch aborted), then let through
    assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
    stored = _macs_of(store_url)
    assert {r["mac"]: o[0]["address"] for r, o in zip(requests, outcomes, strict=True)} == stored
    assert len(set(stored.values())) == len(requests)
    assert _audit_rows(store_url) == len(requests)


def _line(op: str, params: dict, request_id: int) -> bytes:
    return json.dumps({"version": 1, "id": request_id, "op": op, "params": params}).encode() + b"\n"


def test_one_connection_is_served_in_turn_whichever_way_its_requests_go(
    socket_server: Path,
) -> None:
    """melanged's front answers batched writes itself and hands everything else to a
    handler thread: on one connection, a write, a read, a write again, then two requests
    sent in one go, each answered in order with its own id."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(socket_server))
        replies = sock.makefile("rb")
        sock.sendall(_line("block.allocate", {"block": "g", "mac": _mac(8, 0)}, 1))
        first = json.loads(replies.readline())
        sock.sendall(_line("block.show", {"block": "g"}, 2))
        shown = json.loads(replies.readline())
        sock.sendall(_line("block.allocate", {"block": "g", "mac": _mac(8, 1)}, 3))
        second = json.loads(replies.readline())
        sock.sendall(_line("block.allocate", {"block": "g", "mac": _mac(8, 2)}, 4)
                     + _line("ip.show", {"address": "10.77.0.1"}, 5))  # fmt: skip
        third, show = json.loads(replies.readline()), json.loads(replies.readline())
    assert [r["id"] for r in (first, shown, second, third, show)] == [1, 2, 3, 4, 5]
    assert first["ok"] and second["ok"] and third["ok"], (first, second, third)
    assert shown["result"]["utilization"]["used"] == 1
    assert show["result"]["mac"] == _mac(8, 0)
    assert {r["result"][0]["address"] for r in (first, second, third)} == {
        "10.77.0.1", "10.77.0.2", "10.77.0.3"}  # fmt: skip


def test_a_single_request_runs_at_once(store_url: str, socket_server: Path) -> None:
    """No waiting for company: alone, each request is a transaction of its own, answered
    in about the time of a direct allocation (no timer holds it back)."""
    store = Store(store_url, release_hold=3600)
    direct = []
    for n in range(10):
        started = time.perf_counter()
        operations.run(store, "block.allocate", {"block": "g", "mac": _mac(3, n)})
        direct.append(time.perf_counter() - started)
    store.close()
    before = _counters()
    through = []
    for n in range(10):
        started = time.perf_counter()
        client.call(str(socket_server), "block.allocate", {"block": "g", "mac": _mac(4, n)})
        through.append(time.perf_counter() - started)
    assert _counters() == (before[0] + 10, before[1] + 10)
    # Generous (a loaded machine's database server varies by more than a request): a
    # timer waiting for company would add its wait to every one of these.
    assert sorted(through)[5] < 2 * sorted(direct)[5] + 0.05, (through, direct)


@pytest.mark.sqlite_only
def test_the_socket_serves_while_another_process_holds_the_write_lock(
    store_url: str, socket_server: Path
) -> None:
    """On SQLite the socket's front leads an allocation's transaction in its own thread
    (melanged.front), but never waits there for the write lock: while another process
    holds it, an allocation waits (in a runner thread) and a read through the same socket
    is answered meanwhile; once the lock is let go, the allocation is made, once."""
    outcome: list[Any] = []
    with _lane_held(store_url):
        sender = threading.Thread(target=lambda: outcome.append(client.call(
            str(socket_server), "block.allocate", {"block": "g", "mac": _mac(9, 1)})))  # fmt: skip
        sender.start()
        _wait_for(lambda: GROUP.running() >= 1, "the allocation to be taken by its lane")
        shown: list[Any] = []
        reader = threading.Thread(target=lambda: shown.append(client.call(
            str(socket_server), "block.show", {"block": "g"})), daemon=True)  # fmt: skip
        reader.start()
        reader.join(timeout=30)
        assert shown and shown[0]["name"] == "g", "the read waited for the write lock"
        assert sender.is_alive() and not outcome
    sender.join(timeout=60)
    assert len(outcome) == 1 and outcome[0][0]["mac"] == _mac(9, 1), outcome
    assert _macs_of(store_url) == {_mac(9, 1): outcome[0][0]["address"]}
    assert _audit_rows(store_url) == 1


def test_a_lane_a_runner_led_goes_back_to_the_front(tmp_path: Path) -> None:
    """An SQLite lane handed to a runner (its write lock held by another process) is
    given back to the front that claimed it once the runner has led one batch, so that
    a steady stream of requests does not keep it with the runner: the requests that came
    meanwhile are left for the front to lead (melanged.batching `reclaim`)."""
    from melanged.batching import GroupCommit

    store = Store(f"sqlite:///{tmp_path / 'm.db'}", release_hold=3600)
    operations.run(store, "block.create", {"cidr": "10.78.0.0/24", "name": "r"})
    group = GroupCommit()
    given_back: list[tuple] = []
    group.reclaim = lambda _store, key: given_back.append(key) is None  # taken: True
    answered: list[Any] = []

    def submit(n: int) -> tuple | None:
        return group.submit(store, "block.allocate", {"block": "r", "mac": _mac(11, n)},
                            actor="t", via="socket", done=answered.append, lead=False)  # fmt: skip

    try:
        with _lane_held(store.url):
            key = submit(1)
            assert key is not None  # claimed by the caller, as the front claims it
            assert group.lead_here(store, key) is False  # LockBusy: a runner has it now
            assert submit(2) is None  # joins the lane the runner leads
            assert not answered
        _wait_for(lambda: len(answered) == 1 and given_back == [key], "the runner's batch")
        assert answered[0][0]["mac"] == _mac(11, 1)
        assert group.lead_here(store, key) is False  # the front leads the rest: done
        assert [a[0]["mac"] for a in answered] == [_mac(11, 1), _mac(11, 2)]
        assert group.running() == 0 and group.waiting() == 0
    finally:
        store.close()


def test_sigkill_mid_batch_loses_no_answered_allocation(store_url: str, tmp_path: Path) -> None:
    """A real melanged, killed while sixteen clients allocate: every address a client was
    told it has is in the store with its MAC; what is stored beyond that was in flight
    (sent, unanswered) when melanged died; and every stored one has its audit row."""
    store = Store(store_url, release_hold=3600)
    operations.run(store, "block.create", {"cidr": "10.79.0.0/16", "name": "k"})
    store.close()
    answered: dict[str, str] = {}
    in_flight: set[str] = set()
    errors: list[str] = []
    for kill in range(4):
        with SocketDaemon(store_url, tmp_path / f"d{kill}") as daemon:
            stop = threading.Event()
            sent = _kill_run(daemon, kill, stop, (answered, in_flight, errors))
            settled = len(answered) + 2 * THREADS
            deadline = time.monotonic() + 60
            while len(answered) < settled and not errors and time.monotonic() < deadline:
                time.sleep(0.005)  # until batches are running
            time.sleep(0.03 * kill)  # the kill lands anywhere in a batch
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(timeout=30)
            stop.set()
            for thread in sent:
                thread.join(timeout=60)
    assert errors == []
    stored = _macs_of(store_url)
    assert answered, "no allocation was answered: the test tested nothing"
    for mac, address in answered.items():
        assert stored.get(mac) == address, f"{mac} was told {address}, store has {stored.get(mac)}"
    assert set(stored) <= set(answered) | in_flight
    assert len(set(stored.values())) == len(stored)
    assert _audit_rows(store_url) == len(stored)


def _kill_run(daemon: SocketDaemon, kill: int, stop: threading.Event,
              seen: tuple[dict[str, str], set[str], list[str]]) -> list[threading.Thread]:
    """Sixteen client threads allocating through `daemon` until it dies (or `stop`),
    noting each answer, each request in flight, and any failure but a lost melanged."""
    answered, in_flight, errors = seen
    lock = threading.Lock()

    def work(worker: int) -> None:
        for n in range(10_000):
            if stop.is_set():
                return
            mac = _mac(16 * kill + worker, n)
            with lock:
                in_flight.add(mac)
            try:
                result = client.call(str(daemon.socket), "block.allocate",
                                     {"block": "k", "mac": mac})  # fmt: skip
            except MelangeError as error:
                if error.exit_code != 6:  # lost melanged is expected, nothing else
                    errors.append(repr(error))
                return
            with lock:
                in_flight.discard(mac)
                answered[mac] = result[0]["address"]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    return threads


def test_stress_workers_through_melanged(store_url: str, tmp_path: Path) -> None:
    """The stress run of tests/test_concurrency.py, every operation through melanged's
    socket: no duplicates, no lost answers, the store exactly what the answers say."""
    create_blocks(store_url)
    with SocketDaemon(store_url, tmp_path / "daemon") as daemon:
        events = run_workers([f"socket:{daemon.socket}"], THREADS, 60)
    rows = active(store_url)
    check_outcome(events, rows)
    check_counters(store_url, rows)


@pytest.mark.servers_only
def test_a_failing_http_request_in_a_batch_gets_its_own_problem(
    store_url: str, tmp_path: Path
) -> None:
    """Over HTTP too (on the servers: there only the block's row is held to queue the
    requests; SQLite's write lock would also hold up the token check before the lane)."""
    with HttpDaemon(store_url, tmp_path / "api") as api:
        operations.run(api.store, "block.create", {"cidr": "10.80.0.0/24", "name": "e"})
        operations.run(api.store, "block.allocate", {"block": "e", "address": "10.80.0.7"})
        bodies = [{"mac": _mac(5, n)} for n in range(5)]
        bodies[3] = {"address": "10.80.0.7"}  # taken: 409, exit 4
        replies: list[Any] = [None] * len(bodies)
        clients = [api.client("writer") for _ in bodies]

        def send(index: int) -> None:
            replies[index] = clients[index].post("/v1/blocks/e/allocations", json=bodies[index])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        with _lane_held(store_url, "e"):
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while GROUP.waiting() < len(bodies) - 1:
                assert time.monotonic() < deadline, f"only {GROUP.waiting()} requests queued"
                time.sleep(0.01)
        for thread in threads:
            thread.join(timeout=60)
    problem = replies[3]
    assert problem.status_code == 409
    assert problem.json()["exit_code"] == 4 and "10.80.0.7" in problem.json()["detail"]
    stored = _macs_of(store_url)
    for index in (0, 1, 2, 4):
        assert replies[index].status_code == 201, replies[index].text
        assert stored[bodies[index]["mac"]] == replies[index].json()[0]["address"]
