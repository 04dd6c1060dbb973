"""melange on a real 3-node MariaDB Galera cluster (tests/support/galera.py starts it).

On Galera, SELECT ... FOR UPDATE locks only on the node that runs it: two
nodes can both "hold" a block's lock, and the loser learns it only at COMMIT
(certification failure, error 1213). These tests check that the store's whole-
transaction retry and the unique constraints keep allocations made at the same
moment on different nodes from colliding, that melanged notices a change made
on another node, and that losing a node costs only the clients connected to it.

The cluster is started once for this module. The tests run once each (they do
not take the `backend` fixture, so conftest does not spread them over SQLite
and PostgreSQL). A cluster that cannot start fails them in CI or as root; only a
developer machine without root skips them, saying why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest

from melange import operations
from melange.store import SCHEMA_HEAD, Store
from tests.support.galera import GaleraCluster, GaleraNode, GaleraUnavailable
from tests.support.melanged_harness import Melanged, cli, served_lines, wait_until
from tests.support.melanged_harness import env as harness_env
from tests.support.realparts import in_ci
from tests.support.sql import dump_store
from tests.support.stress import (
    active,
    check_counters,
    check_outcome,
    check_unique,
    create_blocks,
    run_workers,
)

HERE = Path(__file__).parent
ROOT = HERE.parent
STRESS_PER_NODE = 4
STRESS_OPS = 100
KILL_CLIENTS_PER_NODE = 2
MAC = "02:00:00:00:00:aa"


class Call(NamedTuple):
    """One `melange` process a client ran: when, for which MAC, and what it said."""

    started: float
    mac: str
    status: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def cluster() -> Iterator[GaleraCluster]:
    """Three Synced nodes for the module; killed and their datadirs removed afterwards."""
    galera = GaleraCluster(3)
    problem = None
    try:
        galera.start()  # stops what it started if it fails
    except GaleraUnavailable as error:
        problem = f"cannot start a Galera cluster: {error}"
    if problem and (in_ci() or os.geteuid() == 0):
        pytest.fail(f"{problem} (run 'make system-deps' as root)", pytrace=False)
    if problem:
        pytest.skip(f"{problem}; not root, skipped on this developer machine (fails in CI)")
    try:
        yield galera
    finally:
        galera.stop()


@pytest.fixture
def urls(cluster: GaleraCluster) -> Iterator[list[str]]:
    """A fresh melange store on the cluster: its URL through each node (node 1 first)."""
    for node in cluster.nodes:
        if not node.alive():  # an earlier test killed it and failed before restarting it
            cluster.restart(node)
    name = f"melange_galera_{uuid.uuid4().hex[:8]}"
    cluster.create_database(name)
    store = Store(cluster.nodes[0].url(name))
    store.ensure_schema()
    store.close()
    yield cluster.urls(name)
    if cluster.live:
        cluster.drop_database(name)


def _synced_url(url: str) -> str:
    """The URL with reads that wait until the node has applied everything committed before."""
    return f"{url}?init_command=SET+SESSION+wsrep_sync_wait%3D1"


def _active(url: str) -> list[tuple[str, str, int | None]]:
    """(block name, address, MAC) of every allocated address, read through one node."""
    return active(_synced_url(url))


def _conflicts(cluster: GaleraCluster) -> int:
    """Transactions the nodes have aborted so far: failed certification, or in the way of a
    replicated write (brute-force abort). Each one surfaced as error 1213 to its writer."""
    total = 0
    for node in cluster.live:
        status = node.status()
        total += int(status["wsrep_local_cert_failures"]) + int(status["wsrep_local_bf_aborts"])
    return total


def test_galera_connections_send_one_statement_per_query(urls, backends, tmp_path):
    """A Galera abort inside a multi-statement query can go unreported while the rest of
    the query commits (a block's counter drifted under the stress below when writes were
    batched), so writes are not batched on a Galera node; on one MariaDB server they are."""
    from melange.prepared import batches
    from melange.store import Store

    def batching(url: str) -> bool:
        store = Store(url)
        try:
            return store.run(batches, write=True)
        finally:
            store.close()

    assert [batching(url) for url in urls] == [False, False, False]
    assert batching(backends.url("mysql", tmp_path)) is True


def _busy_in(node: GaleraNode, database: str) -> bool:
    """Whether a client of `node` is running a statement in `database`."""
    conn = node.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s "
                        "AND INFO IS NOT NULL AND ID <> CONNECTION_ID()", (database,))  # fmt: skip
            return cur.fetchone()[0] > 0
    finally:
        conn.close()


def test_a_store_made_through_one_node_is_used_through_a_lagging_one(cluster):
    """A node applies what another committed a moment later, and the schema lock is
    each node's own: a first command on node 2 just after node 1 made the store saw
    its tables without their revision and refused the store as foreign (exit 6; the
    `urls` fixture met it now and then). Node 2 is held behind here (its applier
    paused by a global read lock) while node 1 makes the store; melange on node 2
    must wait for it to catch up, then use the store as made."""
    for node in cluster.nodes:
        if not node.alive():
            cluster.restart(node)
    name = f"melange_galera_{uuid.uuid4().hex[:8]}"
    cluster.create_database(name)
    cluster.wait_in_step()
    lagging = cluster.nodes[1]
    hold = lagging.connect()
    outcome: dict = {}

    def first_use() -> None:
        store = Store(lagging.url(name))
        try:
            store.ensure_schema()
            outcome["revision"] = store.current_revision()
        except Exception as error:  # noqa: BLE001  (reported by the assertion below)
            outcome["error"] = error
        finally:
            store.close()

    thread = threading.Thread(target=first_use)
    try:
        with hold.cursor() as cur:
            cur.execute("SET GLOBAL wsrep_desync = ON")
            cur.execute("FLUSH TABLES WITH READ LOCK")
        made = Store(cluster.nodes[0].url(name))
        made.ensure_schema()
        made.close()
        thread.start()
        wait_until(lambda: _busy_in(lagging, name) or not thread.is_alive(),
                   what="melange to reach node 2")  # fmt: skip
    finally:
        with hold.cursor() as cur:
            cur.execute("UNLOCK TABLES")
            cur.execute("SET GLOBAL wsrep_desync = OFF")
        hold.close()
    thread.join(60)
    cluster.drop_database(name)
    assert outcome == {"revision": SCHEMA_HEAD}


def test_twelve_processes_on_three_nodes_never_collide(cluster, urls):
    create_blocks(urls[0])
    conflicts_before = _conflicts(cluster)
    events = run_workers(urls, 3 * STRESS_PER_NODE, STRESS_OPS)
    # Writers on different nodes did collide (and were retried): the test tested something.
    assert _conflicts(cluster) > conflicts_before

    cluster.wait_in_step()
    rows = _active(urls[2])
    check_outcome(events, rows)
    # The three nodes hold the very same rows, counters and audit log.
    dumps = [dump_store(_synced_url(url)) for url in urls]
    assert dumps[0] == dumps[1] == dumps[2]
    check_counters(urls[1], rows)


def test_melanged_on_node_3_renders_what_node_1_allocates(urls, tmp_path):
    node1, node2, node3 = urls
    cli(node1, "block", "create", "10.77.0.0/24", "--name", "lan", "--network", "net1",
        "--gateway", "10.77.0.1")  # fmt: skip
    # No dnsmasq needed: the files are what is checked (a pid that does not exist).
    files = SimpleNamespace(hostsfile=tmp_path / "hosts", optsfile=tmp_path / "opts",
                            pidfile=tmp_path / "dnsmasq.pid")  # fmt: skip
    files.pidfile.write_text("999999\n")
    with Melanged(node3, files, tmp_path, network="net1") as daemon:
        daemon.wait_log("rendered", timeout=30)  # the first render: opts, no hosts yet
        assert served_lines(files.hostsfile) == set()
        mark = len(daemon.log())
        ip = cli(node1, "block", "allocate", "lan", "--mac", MAC, "--hostname", "vm1").strip()
        wait_until(lambda: f"{MAC},{ip},vm1" in served_lines(files.hostsfile), timeout=15,
                   what="node 1's allocation in node 3's melanged hosts file")  # fmt: skip
        daemon.wait_log(r"rendered 1 hosts", since=mark)
        # A release through node 2 leaves node 3's rendering as well.
        cli(node2, "ip", "release", ip, "--now")
        wait_until(lambda: served_lines(files.hostsfile) == set(), timeout=15,
                   what="node 2's release in node 3's melanged hosts file")  # fmt: skip
        assert daemon.alive()
        assert "unavailable" not in daemon.log()
    assert files.optsfile.read_text().startswith("tag:net1/10.77.0.0/24,option:router,10.77.0.1")


class CliClient(threading.Thread):
    """A provisioning script on one host: `melange block allocate` again and again, each a
    new process, against the node of its host; stops at the first failure."""

    def __init__(self, url: str, node: int, number: int, block: str) -> None:
        super().__init__(daemon=True)
        self.url, self.node, self.number, self.block = url, node, number, block
        self.stop = threading.Event()
        self.calls: list[Call] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            mac = f"02:77:{self.number:02x}:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"
            started = time.monotonic()
            proc = run_cli(self.url, "block", "allocate", self.block, "--mac", mac)
            self.calls.append(Call(started, mac, proc.returncode, proc.stdout, proc.stderr))
            if proc.returncode != 0:
                return

    def successes(self, since: float = 0.0) -> int:
        return sum(1 for call in self.calls if call.status == 0 and call.started >= since)

    def allocated(self) -> list[tuple[str, str, str]]:
        """(block, address, MAC without colons) of every allocation reported as made."""
        return [(self.block, call.stdout.strip(), call.mac.replace(":", ""))
                for call in self.calls if call.status == 0]  # fmt: skip


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `melange` command, a process of its own, as a script on a host runs it."""
    return subprocess.run(
        [sys.executable, "-m", "melange_cli.main", "--db", url, "-o", "plain", *args],
        capture_output=True, text=True, env=harness_env(), timeout=180,
    )  # fmt: skip


def _rows_in_flight(node: GaleraNode) -> int:
    """Rows changed so far by the node's largest open transaction."""
    conn = node.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COALESCE(MAX(trx_rows_modified), 0) FROM information_schema.INNODB_TRX"
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _assert_one_error_line(call: Call, pattern: str) -> None:
    assert call.status == 6, (call.status, call.stderr)
    assert call.stdout == ""
    assert len(call.stderr.splitlines()) == 1, call.stderr
    assert re.match(pattern, call.stderr), call.stderr


def test_a_killed_node_costs_only_its_own_clients(cluster, urls):
    """SIGKILL node 3 while clients on every node allocate, one of them in the middle of a
    20,000-address transaction on node 3."""
    store = Store(urls[0])
    for name, cidr in (("k1", "10.50.0.0/22"), ("k2", "10.51.0.0/22"), ("bulk", "10.52.0.0/16")):
        operations.run(store, "block.create", {"cidr": cidr, "name": name})
    store.close()
    clients = [
        CliClient(urls[c % 3], c % 3 + 1, c, ("k1", "k2")[c // 3 % 2])
        for c in range(3 * KILL_CLIENTS_PER_NODE)
    ]
    doomed = [c for c in clients if c.node == 3]
    survivors = [c for c in clients if c.node != 3]
    node3 = cluster.nodes[2]
    bulk = None
    try:
        for client in clients:
            client.start()
        wait_until(lambda: all(c.successes() >= 2 for c in doomed), timeout=120,
                   what="two allocations by every client of node 3")  # fmt: skip
        bulk = subprocess.Popen(
            [sys.executable, "-m", "melange_cli.main", "--db", urls[2], "-o", "plain",
             "block", "allocate", "bulk", "--count", "20000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=harness_env(),
        )  # fmt: skip
        # A single allocation changes a handful of rows; the bulk one 5,000 per statement.
        wait_until(lambda: _rows_in_flight(node3) >= 1000, timeout=60,
                   what="the bulk allocation's first rows")  # fmt: skip
        node3.kill()
        killed_at = time.monotonic()
        out, err = bulk.communicate(timeout=60)
        for client in doomed:
            client.join(timeout=60)
            assert not client.is_alive(), "a client of the killed node did not stop"
        wait_until(
            lambda: all(c.successes(since=killed_at) >= 3 for c in survivors),
            timeout=120,
            what="three allocations by every other client after the kill",
        )
    finally:
        if bulk is not None and bulk.poll() is None:
            bulk.kill()
            bulk.wait()
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(timeout=180)

    # Killed in the middle of its transaction: exit 6, one line, nothing stored.
    # Lost mid-transaction (nothing committed), the command tries once more on a fresh
    # connection, which the dead node refuses: either way one line and exit 6.
    _assert_one_error_line(
        Call(0, "", bulk.returncode, out, err), r"Error: (lost|cannot reach) the store "
    )
    for client in doomed:
        *before, last = client.calls
        assert [call for call in before if call.status != 0] == []
        _assert_one_error_line(last, rf"Error: (lost|cannot reach) the store \S+:{node3.port}/")
    for client in survivors:
        assert [call for call in client.calls if call.status != 0] == []

    cluster.wait_in_step()
    reported = [row for client in clients for row in client.allocated()]
    assert len(reported) >= 2 * len(doomed) + 3 * len(survivors)
    for url in urls[:2]:
        active = _active(url)
        check_unique(active)
        held = {(block, address, f"{mac:012x}") for block, address, mac in active}
        assert [row for row in reported if row not in held] == []
        assert [row for row in active if row[0] == "bulk"] == []
        survivor = Store(url)
        assert operations.run(survivor, "block.show", {"block": "bulk"})["utilization"]["used"] == 0
        survivor.close()
    assert dump_store(_synced_url(urls[0])) == dump_store(_synced_url(urls[1]))

    # The killed node comes back, catches up from the others, and holds the same rows.
    cluster.restart(node3)
    cluster.wait_in_step()
    assert dump_store(_synced_url(urls[2])) == dump_store(_synced_url(urls[0]))
