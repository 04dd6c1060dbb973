"""Each operation is declared once (melange/operations.py); everything else must agree.

- The CLI: each command that runs an operation has an option or argument for each of
  its parameters, named alike, of the same type, required alike; nothing else, unless
  listed below with the reason.
- The channels: the socket serves every operation, to the roles the declaration names
  (host-local ones to admins only); the HTTP API serves exactly the declared routes,
  and its OpenAPI document lists those and no host-local operation.
- Paged lists: the core function reads one page (melange.paging.Page: `limit` rows
  after a cursor) itself, so a million rows never sit in the server's memory at once.
"""

from __future__ import annotations

import inspect
import json
import re
import typing

import click
import pytest

from melange import operations
from melange.params import type_hints
from melange_cli import opdoc
from melange_cli.main import cli
from melanged.server import may

COMMANDS = opdoc.commands_by_operation(cli)

# (command, its option or argument) -> the operation parameters it gives, and why the
# names differ.
MAPPED = {
    ("melange block subnet", "block"): ("parent",),  # `block subnet BLOCK CIDR`: its parent
    ("melange import", "file"): ("text", "source"),  # the CLI reads FILE: content and name
}
# Options of the CLI alone, and why no operation takes them.
CLI_ONLY = {
    ("melange export", "fmt"): "the document's format is chosen by the CLI, which renders it",
}
# Declared parameters no command gives, and why (none today: keep it so).
NOT_ON_CLI: dict[str, str] = {}
CLICK_KINDS = {click.types.IntParamType: int, click.types.FloatParamType: float}


def cli_kind(param: click.Parameter) -> type:
    """The JSON kind a click parameter gives: a flag a boolean, a repeatable a list."""
    if param.multiple:
        return list
    if isinstance(param, click.Option) and param.is_flag:
        return bool
    return CLICK_KINDS.get(type(param.type), str)


def given(path: str, command: click.Command) -> dict[str, click.Parameter]:
    """Operation parameter -> the command's option or argument giving it."""
    found = {}
    for param in command.params:
        if not param.expose_value or (path, param.name) in CLI_ONLY:
            continue
        for name in MAPPED.get((path, param.name), (opdoc.option_name(param),)):
            found[name] = param
    return found


CASES = [(name, path, command) for name, commands in sorted(COMMANDS.items())
         for path, command in commands]  # fmt: skip


def test_every_operation_is_run_by_a_command():
    assert set(COMMANDS) == set(operations.OPERATIONS)
    assert [p for p, _ in COMMANDS["block.create"]] == ["melange block create",
                                                        "melange block subnet"]  # fmt: skip
    for name, commands in COMMANDS.items():
        for path, command in commands:
            assert opdoc.called_operations(command) == [name], path


@pytest.mark.parametrize(("name", "path", "command"), CASES, ids=[c[1] for c in CASES])
def test_a_commands_options_are_its_operations_parameters(name, path, command):
    declared = operations.OPERATIONS[name].parameters()
    options = given(path, command)
    unknown = sorted(set(options) - set(declared))
    assert unknown == [], f"{path}: options that {name} does not declare"
    for parameter, param in options.items():
        if (path, param.name) in MAPPED:
            continue
        assert cli_kind(param) is declared[parameter].kind, (path, parameter)
        if declared[parameter].required:
            assert param.required, f"{path}: {parameter} is required by {name}"


@pytest.mark.parametrize("name", sorted(operations.OPERATIONS))
def test_every_declared_parameter_is_reachable_from_the_cli(name):
    reachable = set()
    for path, command in COMMANDS[name]:
        reachable |= set(given(path, command))
    missing = set(operations.OPERATIONS[name].parameters()) - reachable - set(NOT_ON_CLI)
    assert missing == set(), f"no command gives {name} these: {sorted(missing)}"


def test_the_exceptions_are_still_needed():
    """An exception that no longer applies is removed, not left to excuse a later slip."""
    for (path, option), targets in MAPPED.items():
        command = dict((p, c) for cmds in COMMANDS.values() for p, c in cmds)[path]
        names = {p.name for p in command.params}
        assert option in names, (path, option)
        (operation,) = opdoc.called_operations(command)
        assert option not in operations.OPERATIONS[operation].parameters()
        assert set(targets) <= set(operations.OPERATIONS[operation].parameters())
    for path, option in CLI_ONLY:
        command = dict((p, c) for cmds in COMMANDS.values() for p, c in cmds)[path]
        assert option in {p.name for p in command.params}


# -- the channels


@pytest.mark.parametrize("name", sorted(operations.OPERATIONS))
def test_the_socket_serves_each_operation_to_its_declared_roles(name):
    declared = operations.OPERATIONS[name]
    allowed = [role for role in operations.ROLES if may(role, name)]
    if declared.http is None:
        assert allowed == ["admin"]
    else:
        assert allowed == list(operations.ROLES[operations.ROLES.index(declared.role) :])
    assert not may(None, name) and not may("root", name)


def _declared_routes() -> dict[tuple[str, str], str]:
    return {(op.http.method, op.http.path): name for name, op in operations.OPERATIONS.items()
            if op.http is not None}  # fmt: skip


def test_the_http_app_serves_exactly_the_declared_routes(tmp_path):
    from melange.store import Store
    from melanged.http.app import Service, build
    from melanged.http.listen import Limits

    app = build(Service(Store(f"sqlite:///{tmp_path / 'store.db'}"), Limits()))
    served = {(method, route.path) for route in app.routes
              for method in getattr(route, "methods", None) or () if method != "HEAD"}  # fmt: skip
    unauthenticated = {("GET", "/v1/health"), ("GET", "/openapi.json")}
    assert served == set(_declared_routes()) | unauthenticated


def test_each_declared_route_answers_on_a_live_server_and_wants_a_token(tmp_path):
    """Reached (not 404 or 405) and guarded (401 without a token), a CIDR for BLOCK."""
    from tests.support.http_daemon import HttpDaemon

    values = {"block": "10.0.0.0%2F24", "address": "10.0.0.1", "octet": "7", "range_id": "1"}
    with HttpDaemon(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "api") as api:
        anonymous = api.client()
        for method, path in _declared_routes():
            url = re.sub(r"{(\w+)(?::\w+)?}", lambda m: values.get(m.group(1), "x"), path)
            response = anonymous.request(method, url)
            assert response.status_code == 401, (method, url, response.text)
            assert response.json()["code"] == "unauthenticated"
        assert anonymous.get("/v1/health").status_code == 200
        assert anonymous.post("/v1/dhcp/sync").status_code == 404  # host-local: no route


def test_the_openapi_document_lists_the_remote_operations_and_no_host_local_one():
    from melanged.http import openapi

    document = openapi.document()
    listed = {(method.upper(), path): entry["operationId"]
              for path, item in document["paths"].items()
              for method, entry in item.items()}  # fmt: skip
    expected = {(method, openapi.path_of(path)): name.replace(".", "_")
                for (method, path), name in _declared_routes().items()}  # fmt: skip
    assert listed == {**expected, ("GET", "/v1/health"): "health"}
    for name, op in operations.OPERATIONS.items():
        if op.http is None:
            assert name.replace(".", "_") not in listed.values(), name
    text = json.dumps(document)
    for parameter in ("hostsfile", "dnsmasq_pidfile", "leasefile", "release_interface"):
        assert f'"{parameter}"' not in text, parameter


def test_host_local_means_no_route_and_whole_store_or_files():
    """The host-local ones are those that act on files, processes or the schema."""
    host_local = {name for name, op in operations.OPERATIONS.items() if op.http is None}
    assert {"dhcp.sync", "reconcile", "db.current", "db.check", "db.upgrade"} <= host_local
    for name in host_local:
        assert operations.OPERATIONS[name].whole_store, name


def test_each_route_is_declared_once_and_its_path_parameters_are_declared():
    routes = [(op.http.method, op.http.path) for op in operations.OPERATIONS.values()
              if op.http is not None]  # fmt: skip
    assert len(routes) == len(set(routes))
    for name, op in operations.OPERATIONS.items():
        if op.http is None:
            continue
        declared = op.parameters()
        for parameter in op.http.path_params():
            assert parameter in declared and declared[parameter].required, (name, parameter)
        assert re.fullmatch(r"/v1(/[\w{}:.-]+)+", op.http.path), op.http.path


PAGED = sorted(n for n, op in operations.OPERATIONS.items() if op.http and op.http.paged)


@pytest.mark.parametrize("name", PAGED)
def test_a_paged_operations_core_function_reads_one_page(name):
    """It takes a `Page` (limit, after) of its own, local to the process: the server
    reads one page from the store, never the whole list to cut it up."""
    from melange.paging import Page

    operation = operations.OPERATIONS[name]
    signature = inspect.signature(operation.function())
    assert "page" in signature.parameters and signature.parameters["page"].default is None
    hint = type_hints(operation.function())["page"]
    assert Page in typing.get_args(hint), hint
    assert "page" in operation.local() and "page" not in operation.parameters()
    assert "after" not in operation.parameters()
