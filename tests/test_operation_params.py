"""Operation parameters are checked against their declaration before anything runs:
over melanged's socket (raw JSON, as any client may send it), in direct mode on every
backend, and the CLI's own commands send exactly what the operations declare."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
from pathlib import Path

import click
import pytest

from melange import operations
from melange.errors import InvalidInput, MelangeError
from melange.store import Store
from melange_cli import opdoc
from melange_cli.context import App
from melange_cli.main import cli
from tests.support.socket_daemon import SocketDaemon
from tests.support.sql import dump_store

# Raw request lines, each wrong in one way that used to reach the core (TypeError,
# OverflowError, UnicodeEncodeError, RecursionError: exit 1) instead of exit 2.
BAD_REQUESTS = {
    "missing required": '{"version": 1, "op": "block.show", "params": {}}',
    "missing required, allocate": '{"version": 1, "op": "block.allocate", "params": {}}',
    "missing address of ip.show":
        '{"version": 1, "op": "ip.show", "params": {"block": "b"}}',
    "limit a string": '{"version": 1, "op": "history", "params": {"limit": "abc"}}',
    "limit 1e400 (infinity)": '{"version": 1, "op": "history", "params": {"limit": 1e400}}',
    "limit a float": '{"version": 1, "op": "history", "params": {"limit": 2.5}}',
    "limit zero": '{"version": 1, "op": "history", "params": {"limit": 0}}',
    "limit negative": '{"version": 1, "op": "history", "params": {"limit": -1}}',
    "above a string": '{"version": 1, "op": "report.utilization", "params": {"above": "50"}}',
    "above 1e400": '{"version": 1, "op": "report.utilization", "params": {"above": 1e400}}',
    "above NaN": '{"version": 1, "op": "report.utilization", "params": {"above": NaN}}',
    "count a string": '{"version": 1, "op": "block.allocate",'
                      ' "params": {"block": "b", "count": "abc"}}',
    "count a boolean": '{"version": 1, "op": "block.allocate",'
                       ' "params": {"block": "b", "count": true}}',
    "count beyond 64 bits": '{"version": 1, "op": "block.allocate",'
                            ' "params": {"block": "b", "count": 1' + "0" * 30 + "}}",
    "range id beyond 64 bits": '{"version": 1, "op": "mac_range.delete",'
                               ' "params": {"range_id": 9' + "9" * 30 + "}}",
    "list for a string": '{"version": 1, "op": "block.show", "params": {"block": ["b"]}}',
    "object for a string": '{"version": 1, "op": "block.show", "params": {"block": {"b": 1}}}',
    "number for a string": '{"version": 1, "op": "block.allocate",'
                           ' "params": {"block": "b", "mac": 2}}',
    "string for a list": '{"version": 1, "op": "block.create",'
                         ' "params": {"cidr": "10.1.0.0/24", "dns": "10.1.0.53"}}',
    "list of numbers": '{"version": 1, "op": "block.create",'
                       ' "params": {"cidr": "10.1.0.0/24", "dns": [1]}}',
    "string for a flag": '{"version": 1, "op": "block.delete",'
                         ' "params": {"block": "b", "force": "yes"}}',
    "null for a required": '{"version": 1, "op": "block.show", "params": {"block": null}}',
    "lone surrogate": '{"version": 1, "op": "block.show", "params": {"block": "\\ud800"}}',
    "lone surrogate in a write": '{"version": 1, "op": "policy.create",'
                                 ' "params": {"name": "p", "description": "a\\udfffb"}}',
    "lone surrogate in a list": '{"version": 1, "op": "block.create",'
                                ' "params": {"cidr": "10.1.0.0/24", "dns": ["\\ud800"]}}',
    "NUL in a name": '{"version": 1, "op": "policy.create", "params": {"name": "p\\u0000q"}}',
    "NUL in a description": '{"version": 1, "op": "policy.create",'
                            ' "params": {"name": "p", "description": "a\\u0000b"}}',
    "unknown parameter": '{"version": 1, "op": "block.show", "params": {"block": "b", "x": 1}}',
    "a supplied one is not the client's":
        '{"version": 1, "op": "block.show", "params": {"block": "b", "hold_seconds": 0}}',
    "a callback is not the client's": '{"version": 1, "op": "block.allocate",'
                                      ' "params": {"block": "b", "progress": "x"}}',
    "unknown operation": '{"version": 1, "op": "block.explode", "params": {}}',
    "params not an object": '{"version": 1, "op": "block.list", "params": [1]}',
    "deep nesting in params": '{"version": 1, "op": "block.show", "params": {"block": '
                              + "[" * 100_000 + "]" * 100_000 + "}}",
    "deep nesting at the top": "[" * 100_000 + "]" * 100_000,
}  # fmt: skip


def _request(path: Path, line: str) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(line.encode("utf-8", "surrogatepass") + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, f"melanged closed the connection without an answer to {line[:80]}"
            answer += chunk
    return json.loads(answer)


@pytest.fixture(scope="module")
def daemon():
    """One melanged for every raw request (its store has a block `b` with an address)."""
    workdir = Path(tempfile.mkdtemp(prefix="mlg-params-"))
    url = f"sqlite:///{workdir / 'store.db'}"
    store = Store(url)
    operations.run(store, "block.create", {"cidr": "10.90.0.0/24", "name": "b"})
    operations.run(store, "block.allocate", {"block": "b"})
    config = workdir / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 48h\n")
    with SocketDaemon(url, workdir / "daemon", config) as running:
        yield running, workdir / "store.db"
    subprocess.run(["rm", "-rf", str(workdir)], check=False)


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_is_invalid_input_over_the_socket(daemon, case):
    running, db = daemon
    before = dump_store(db)
    response = _request(running.socket, BAD_REQUESTS[case])
    assert response["ok"] is False, case
    error = response["error"]
    assert (error["code"], error["exit_code"]) == ("invalid_input", 2), (case, error)
    assert "\n" not in error["message"] and len(error["message"]) < 300, error["message"]
    assert running.alive()
    assert dump_store(db) == before
    # The daemon goes on answering well-formed requests on its next connection.
    good = _request(running.socket, '{"version": 1, "op": "block.show", "params": {"block": "b"}}')
    assert good["ok"] is True


def test_the_messages_name_the_parameter_and_what_it_takes(daemon):
    running, _ = daemon

    def message(case: str) -> str:
        return _request(running.socket, BAD_REQUESTS[case])["error"]["message"]

    assert message("missing required") == "block.show needs the parameter(s) block"
    assert "limit must be a whole number" in message("limit a string")
    assert "limit must be a whole number" in message("limit 1e400 (infinity)")
    assert "limit is out of range (from 1 to 100000)" in message("limit zero")
    assert "above must be a number, not a string '50'" in message("above a string")
    assert "above must be a finite number" in message("above NaN")
    assert "block must be a string, not a list" in message("list for a string")
    assert "lone surrogate" in message("lone surrogate")
    assert "NUL" in message("NUL in a description")
    assert "nested too deeply" in message("deep nesting in params")


def test_good_values_of_every_type_still_pass(daemon):
    running, _ = daemon
    for line in (
        '{"version": 1, "op": "history", "params": {"limit": 5, "since": "1h"}}',
        '{"version": 1, "op": "report.utilization", "params": {"above": 0}}',
        '{"version": 1, "op": "report.utilization", "params": {"above": 99.5, "network": null}}',
        '{"version": 1, "op": "ip.list", "params": {"block": "b", "released": false}}',
        '{"version": 1, "op": "ip.show", "params": {"address": "10.90.0.1"}}',
        '{"version": 1, "op": "block.list"}',
    ):
        response = _request(running.socket, line)
        assert response["ok"] is True, (line, response)


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("policy.create", {"name": "p", "description": "a\x00b"}),
        ("policy.create", {"name": "p", "description": "a\ud800b"}),
        ("block.create", {"cidr": "10.1.0.0/24", "name": ["x"]}),
        ("history", {"limit": -1}),
        ("mac_range.delete", {"range_id": 2**64}),
        ("block.allocate", {"block": "b", "count": 2**64}),
        ("report.utilization", {"above": float("inf")}),
    ],
)
def test_direct_mode_checks_the_same_declaration(store_url, operation, params):
    """In-process callers (the CLI's direct mode) meet the same check before the store:
    a NUL reaching PostgreSQL, or an integer beyond 64 bits reaching a driver, was exit 1."""
    store = Store(store_url)
    operations.run(store, "block.create", {"cidr": "10.90.0.0/24", "name": "b"})
    before = dump_store(store_url)
    with pytest.raises(InvalidInput):
        operations.run(store, operation, params)
    assert dump_store(store_url) == before


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    context = click.Context(group)
    for name in group.list_commands(context):  # loads the lazily loaded ones
        command = group.get_command(context, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _arguments(command: click.Command, path: Path) -> list[str]:
    """Every option of the command given once, with a value of its type."""
    argv: list[str] = []
    for param in command.params:
        if not param.expose_value:
            continue
        if isinstance(param.type, click.Choice):
            value = param.type.choices[0]
        elif isinstance(param.type, click.types.IntParamType | click.types.FloatParamType):
            value = "1"
        elif isinstance(param.type, click.Path):
            value = str(path)
        else:
            value = "x"
        if isinstance(param, click.Argument):
            argv.append(value)
        elif param.is_flag:
            argv.append(param.opts[-1])
        else:
            argv += [param.opts[-1], value]
    return argv


class _Sent(MelangeError):
    exit_code = 99


def test_every_command_sends_what_its_operation_declares(monkeypatch, tmp_path):
    """Each click command, with every option given, sends its operation parameters of
    the declared names and types; and together the commands send every declared one."""
    sent: dict[str, set[str]] = {}

    def record(self, operation, **params):
        local = operations.OPERATIONS[operation].local()
        client_params = {k: v for k, v in params.items() if k not in local}
        operations.validate(operation, client_params)
        sent.setdefault(operation, set()).update(client_params)
        raise _Sent("recorded")

    monkeypatch.setattr(App, "call", record)
    monkeypatch.setattr(App, "stream", lambda self, operation, _sink, **params: record(
        self, operation, **params))  # streamed reads (melange.streaming) send the same
    path = tmp_path / "file.txt"
    path.write_text("x\n")
    for words, command in _commands(cli):
        argv = ["--db", str(tmp_path / "s.db"), *words, *_arguments(command, path)]
        result = click.testing.CliRunner().invoke(cli, argv, catch_exceptions=False)
        assert result.exit_code == 99, (words, result.exit_code, result.stderr)
    declared = {name: operations.parameters(name) for name in operations.OPERATIONS}
    declared["import"] = declared["import"] - {"text"}  # the CLI streams its file (chunks)
    assert sent == declared


def test_the_protocol_table_shows_each_declaration():
    """The generated table (melange_cli.opdoc) as docs/protocol.md holds it, cell by cell."""
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    rows = {
        cells[1].strip("` "): cells[4].strip()
        for line in text.splitlines()
        if line.startswith("| `") and len(cells := line.split("|")) == 6
    }
    wrong = {
        name: opdoc.parameter_cells(name)
        for name in operations.OPERATIONS
        if rows.get(name) != opdoc.parameter_cells(name)
    }
    assert wrong == {}, "docs/protocol.md's table should say these (the declarations)"
    assert opdoc.parameter_cells("block.delete") == "block*, force (boolean)"
    assert opdoc.parameter_cells("mac_range.list") == "—"


@pytest.mark.parametrize("old", sorted(operations.RENAMED))
def test_the_old_block_parameter_names_are_still_accepted(daemon, old):
    """Clients of an earlier protocol name the BLOCK `ref` or `block_ref`."""
    running, _ = daemon
    for op, params in (("block.show", {old: "b"}), ("ip.show", {"address": "10.90.0.1", old: "b"}),
                       ("route.list", {old: "b"})):  # fmt: skip
        line = json.dumps({"version": 1, "op": op, "params": params})
        response = _request(running.socket, line)
        assert response["ok"] is True, (op, old, response)
    shown = _request(running.socket, json.dumps({"version": 1, "op": "block.show",
                                                 "params": {old: "b"}}))  # fmt: skip
    assert shown["result"]["name"] == "b"
    # Beside the new name, the old one is an unknown parameter, not a silent override.
    both = _request(
        running.socket,
        json.dumps({"version": 1, "op": "block.show", "params": {"block": "b", old: "elsewhere"}}),
    )
    assert both["error"]["code"] == "invalid_input", both
    assert operations.validate("block.show", {old: "b"}) == {"block": "b"}


HUGE = "9" * 30
ABSURD_NUMBERS = [
    ("mac-range", "delete", HUGE),
    ("block", "allocate", "b", "--count", HUGE),
    ("policy", "add-octet", "p", HUGE),
    ("policy", "add-range", "p", "--offset", HUGE, "--length", "1"),
    ("policy", "remove-range", "p", "--offset", "1", "--length", HUGE),
    ("report", "utilization", "--above", "nan"),
    ("report", "utilization", "--above", "inf"),
    ("report", "utilization", "--above", "1e400"),
    ("history", "--limit", HUGE),
]


def test_absurd_numbers_typed_by_click_are_invalid_input(melange):
    """click turns the text into an int or float, of any size: the declaration's bounds
    and finiteness are what stop it before a driver overflows (exit 1)."""
    melange.ok("block", "create", "10.90.0.0/24", "--name", "b")
    melange.ok("policy", "create", "p")
    before = dump_store(melange.db)
    for args in ABSURD_NUMBERS:
        result = melange(*args)
        assert result.exit_code == 2, (args, result.exit_code, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
    assert dump_store(melange.db) == before
