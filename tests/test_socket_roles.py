"""The socket's roles come from the declaration (melange.operations): a reader reads, a
writer also allocates, releases and updates addresses and interfaces, an admin does the
rest; host-local operations (no HTTP route) are for admins only.

Real users (useradd) and real processes switched with setpriv talk to a root melanged;
each sends one request for every operation on one connection, so the whole matrix is
a handful of processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from melange import operations
from melange.localfiles import host_local
from melange.store import Store
from melanged.server import may
from tests.support.localusers import as_user, env, melange, shared_dir
from tests.support.socket_daemon import SocketDaemon
from tests.support.sql import execute_sql

# A value of each declared kind that passes validation and names nothing in the store.
SAMPLE = {str: "none-such", int: 999_999, float: 1.0, bool: False, list: ["none-such"]}

ASK_ALL = textwrap.dedent("""
    import json, socket, sys
    path, requests = sys.argv[1], json.loads(sys.stdin.read())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    answers = s.makefile("rb")
    out = {}
    for name, params in requests:
        line = {"version": 1, "id": name, "op": name, "params": params}
        s.sendall(json.dumps(line).encode() + b"\\n")
        out[name] = json.loads(answers.readline())
    print(json.dumps(out))
""")


def sample_params(name: str) -> dict:
    """The operation's required parameters, each with a harmless value of its type."""
    return {
        p.name: SAMPLE[p.kind]
        for p in operations.OPERATIONS[name].parameters().values()
        if p.required
    }


@pytest.fixture(scope="module")
def people(users):
    writers = users.group("writers")
    readers = users.group("readers")
    return {
        "admin": users.user("radmin"),
        "writer": users.user("rwriter"),
        "grouped": users.user("rgwriter", groups=[writers]),
        "reader": users.user("rreader", groups=[readers]),
        "both": users.user("rboth", groups=[readers, writers]),
        "stranger": users.user("rnobody"),
        "writers": writers,
        "readers": readers,
    }


@pytest.fixture(scope="module")
def daemon(people):
    top = shared_dir("mlg-roles-")
    url = f"sqlite:///{top / 'store.db'}"
    store = Store(url)
    operations.run(store, "block.create", {"cidr": "10.91.0.0/24", "name": "b"})
    operations.run(store, "policy.create", {"name": "keep"})
    config = top / "melange.conf"
    config.write_text(
        "[melanged]\n"
        f"admin_users = {people['admin'].name}\n"
        f"writer_users = {people['writer'].name}\n"
        f"writer_groups = {people['writers']}\n"
        f"reader_groups = {people['readers']}\n"
    )
    with SocketDaemon(url, top / "daemon", config) as running:
        os.chmod(running.socket.parent, 0o755)
        os.chmod(running.socket, 0o666)
        running.top = top
        yield running
    subprocess.run(["rm", "-rf", str(top)], check=False)


def ask_all(daemon, user) -> dict[str, dict]:
    """One request per operation (reads first, so a write cannot change what they see)."""
    names = sorted(operations.OPERATIONS, key=lambda n: (operations.OPERATIONS[n].write, n))
    requests = [(name, sample_params(name)) for name in names if name != "db.upgrade"]
    proc = subprocess.run(
        as_user(user, [sys.executable, "-c", ASK_ALL, str(daemon.socket)]),
        input=json.dumps(requests), capture_output=True, text=True, timeout=120, env=env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def refused(answer: dict) -> bool:
    return not answer["ok"] and answer["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(("who", "role"), [("reader", "reader"), ("writer", "writer"),
                                           ("grouped", "writer"), ("both", "writer"),
                                           ("admin", "admin")])  # fmt: skip
def test_each_role_runs_exactly_what_the_declaration_allows(daemon, people, who, role):
    answers = ask_all(daemon, people[who])
    for name, answer in answers.items():
        declared = operations.OPERATIONS[name]
        # A non-root admin still may not act on this host's files (check_host_local).
        expected = not may(role, name) or host_local(name, sample_params(name))
        assert refused(answer) == expected, (who, name, answer)
        if refused(answer):
            assert "\n" not in answer["error"]["message"]
            assert answer["error"]["exit_code"] == 7
        elif answer["ok"] is False:  # allowed, and failed on the harmless values
            assert answer["error"]["code"] != "internal", (name, answer)
        if declared.http is None and role != "admin":
            assert refused(answer), (who, name)


def test_the_rule_by_hand():
    """What the declaration says, spelt out: the matrix above is derived from it."""
    assert may("reader", "block.list") and may("reader", "ip.show")
    assert not may("reader", "block.allocate") and not may("reader", "ip.release")
    assert may("writer", "block.allocate") and may("writer", "ip.release")
    assert may("writer", "interface.create") and may("writer", "ip.update")
    assert not may("writer", "block.create") and not may("writer", "policy.create")
    assert not may("writer", "import") and not may("writer", "route.add")
    for host_local_op in ("db.current", "db.check", "reconcile", "dhcp.sync", "db.upgrade"):
        assert not may("reader", host_local_op) and not may("writer", host_local_op)
        assert may("admin", host_local_op)
    assert not may(None, "block.list") and not may("root", "block.list")


def test_a_writer_allocates_and_releases_through_the_cli_and_is_audited(daemon, people):
    sock = ("--socket", str(daemon.socket))
    writer = people["grouped"]
    made = melange(writer, *sock, "block", "allocate", "b", "--mac", "02:00:00:00:91:01")
    assert made.returncode == 0, made.stderr
    address = made.stdout.split()[0]
    gone = melange(writer, *sock, "ip", "release", address, "--block", "b")
    assert gone.returncode == 0, gone.stderr
    denied = melange(writer, *sock, "block", "create", "10.92.0.0/24")
    assert denied.returncode == 7, denied.stderr
    assert denied.stderr.startswith("Error: ") and denied.stderr.count("\n") == 1
    assert "admin role" in denied.stderr and "writer_users" in denied.stderr
    rows = [r for r in execute_sql(daemon.top / "store.db",
                                   "SELECT actor, via, command FROM audit_log")
            if r[0] == writer.name]  # fmt: skip
    assert sorted(r[2] for r in rows) == ["block.allocate", "ip.release"]
    assert {r[1] for r in rows} == {"socket"}


def test_a_reader_may_not_write_nor_reach_host_local_reads(daemon, people):
    sock = ("--socket", str(daemon.socket))
    reader = people["reader"]
    denied = melange(reader, *sock, "block", "allocate", "b")
    assert denied.returncode == 7, denied.stderr
    assert "writer role or a higher one" in denied.stderr
    current = melange(reader, *sock, "db", "current")
    assert current.returncode == 7, current.stderr
    assert melange(reader, *sock, "block", "list").returncode == 0


def test_a_stranger_is_turned_away_naming_every_role_key(daemon, people):
    proc = melange(people["stranger"], "--socket", str(daemon.socket), "block", "list")
    assert proc.returncode == 7, proc.stderr
    for key in ("admin_users", "writer_users", "writer_groups", "reader_groups"):
        assert key in proc.stderr
