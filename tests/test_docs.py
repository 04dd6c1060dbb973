"""docs/cli.md is generated from the CLI (melange_cli/docgen.py) and kept in step with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest

from melange_cli import docgen, opdoc
from melange_cli.main import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"

# The command paths listed in the Commands block of the CLI contract (cli-contract.md).
CONTRACT_COMMANDS = [
    "db upgrade",
    "db current",
    "block create",
    "block list",
    "block show",
    "block update",
    "block delete",
    "block subnet",
    "block allocate",
    "ip list",
    "ip show",
    "ip update",
    "ip release",
    "ip restore",
    "policy create",
    "policy list",
    "policy show",
    "policy delete",
    "policy add-range",
    "policy add-octet",
    "mac-range create",
    "mac-range list",
    "mac-range delete",
    "interface create",
    "interface list",
    "interface show",
    "interface delete",
    "route add",
    "route list",
    "route delete",
    "dhcp hosts",
    "dhcp opts",
    "dhcp config",
    "dhcp sync",
    "reconcile",
    "report utilization",
    "export",
    "import",
    "history",
]


def resolve(path: str) -> click.Command | None:
    """The CLI's command at `path`, or None when the CLI does not have it (yet)."""
    command: click.Command | None = cli
    for name in path.split():
        if not isinstance(command, click.Group):
            return None
        command = command.get_command(click.Context(command), name)
        if command is None:
            return None
    return command


def headings(text: str) -> set[str]:
    return {line[3:].strip() for line in text.splitlines() if line.startswith("## ")}


def test_cli_md_is_up_to_date():
    expected = docgen.render()
    assert DOC.is_file(), "docs/cli.md is missing: run `make docs`"
    current = DOC.read_text()
    assert current == expected, "docs/cli.md is stale: run `make docs` and commit the result"


def test_render_is_deterministic_and_well_formed():
    first = docgen.render()
    assert first == docgen.render()
    assert first.startswith("# ")
    assert "make docs" in first.split("## ", 1)[0]
    assert first.count("```text\n") == first.count("\n## ") + first.startswith("## ")
    # Each section holds exactly that command's help (its Usage line names it).
    for section in first.split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        assert body.startswith("\n```text\nUsage: " + title + " "), title


def test_render_covers_every_visible_command():
    seen = headings(docgen.render())
    paths = [" ".join(("melange", *p)) for p, _ in docgen.command_paths(cli)]
    assert len(paths) == len(set(paths))
    assert seen == set(paths)
    assert "melange" in seen and "melange block allocate" in seen


def test_contract_commands_that_exist_are_documented():
    present = [path for path in CONTRACT_COMMANDS if resolve(path) is not None]
    # The core of the contract is there today; the rest must appear once implemented.
    assert {"block allocate", "ip release", "policy add-octet"} <= set(present)
    documented = headings(DOC.read_text())
    missing = [path for path in present if f"melange {path}" not in documented]
    assert not missing, f"contract commands missing from docs/cli.md (run `make docs`): {missing}"
    for path in present:  # and their parent groups
        words = path.split()
        for i in range(1, len(words)):
            assert "melange " + " ".join(words[:i]) in documented, path


def test_help_is_rendered_at_a_fixed_width():
    text = docgen.render()
    # Option descriptions are wrapped for 100 columns, whatever the terminal.
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "INI file (default /etc/melange/melange.conf when it exists)." in text


def test_every_socket_operation_is_documented():
    from melange.operations import OPERATIONS

    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    missing = [name for name in OPERATIONS if f"| `{name}` |" not in text]
    assert missing == [], f"add these operations to docs/protocol.md: {missing}"


@pytest.mark.parametrize(("name", "render"), [("protocol.md", opdoc.protocol_table),
                                              ("api.md", opdoc.api_reference)])  # fmt: skip
def test_generated_sections_are_up_to_date(name, render):
    """docs/protocol.md's table and docs/api.md's reference are the declaration's."""
    current = (DOC.parent / name).read_text()
    assert opdoc.splice(current, render()) == current, (
        f"docs/{name} is stale: run `make docs` and commit the result"
    )


def test_splice_replaces_only_the_generated_section():
    text = f"intro\n{opdoc.BEGIN}\nold\n{opdoc.END}\noutro\n"
    assert opdoc.splice(text, "new\n") == f"intro\n{opdoc.BEGIN}\nnew\n{opdoc.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        opdoc.splice("no markers here", "new")
    with pytest.raises(ValueError, match="markers"):
        opdoc.splice(f"{opdoc.END}\n{opdoc.BEGIN}", "new")


def test_the_reference_has_every_route_and_no_host_local_one():
    from melange.operations import OPERATIONS

    text = (DOC.parent / "api.md").read_text()
    reference = text.split("## Endpoint reference", 1)[1]
    headings = [line for line in reference.splitlines() if line.startswith("### `")]
    remote = [op for op in OPERATIONS.values() if op.http is not None]
    assert len(headings) == len(remote)
    for name, op in OPERATIONS.items():
        if op.http is None:
            assert f"operation `{name}`" not in reference, name
        else:
            assert f"operation `{name}`; role **{op.role}**" in reference, name


def test_the_protocol_table_shows_role_exposure_and_parameters():
    from melange.operations import OPERATIONS

    text = (DOC.parent / "protocol.md").read_text()
    rows = {cells[1].strip("` "): [c.strip() for c in cells[2:5]]
            for line in text.splitlines()
            if line.startswith("| `") and len(cells := line.split("|")) == 6}  # fmt: skip
    assert set(rows) == set(OPERATIONS)
    assert rows["block.allocate"][:2] == ["writer", "remote"]
    assert rows["block.create"][0] == "admin"
    assert rows["dhcp.sync"][1].startswith("host-local")
    assert "address, block, limit (integer)" in rows["history"][2]
    for name, (role, exposure, _) in rows.items():
        assert role == OPERATIONS[name].role
        assert exposure.startswith("remote" if OPERATIONS[name].http else "host-local")


def _route(method: str, path: str) -> str | None:
    """The operation a request of the walkthrough reaches, by the declared routes."""
    from melange.operations import OPERATIONS

    for name, op in OPERATIONS.items():
        if op.http is None or op.http.method != method:
            continue
        pattern = re.sub(r"{\w+:path}", r"[^?]+", re.sub(r"{\w+}", r"[^/?]+", op.http.path))
        if re.fullmatch(pattern, path):
            return name
    return None


def test_the_walkthroughs_requests_are_declared_routes_with_declared_parameters():
    """Every curl of docs/api.md reaches a declared route and sends only the names its
    operation declares, so the walkthrough cannot drift from the API silently."""
    from urllib.parse import parse_qs, urlsplit

    from melange.operations import OPERATIONS

    text = (DOC.parent / "api.md").read_text().split("## Endpoint reference")[0]
    commands = re.findall(r"^curl .*?(?<!\\)$", text.replace("\\\n", " "), re.M | re.S)
    assert len(commands) >= 8
    reached = set()
    for command in commands:
        url = re.search(r'"\$MELANGE_API(/[^"]*)"', command)
        assert url is not None, command
        body = re.search(r"-d '([^']*)'", command)
        method = re.search(r"-X (\w+)", command)
        verb = method.group(1) if method else ("POST" if body else "GET")
        parts = urlsplit(url.group(1))
        name = _route(verb, parts.path)
        assert name is not None, f"no declared route for {verb} {parts.path}"
        reached.add(name)
        sent = set(parse_qs(parts.query)) | set(json.loads(body.group(1)) if body else {})
        allowed = set(OPERATIONS[name].parameters()) | {"limit", "after"}
        assert sent <= allowed, (command, sent - allowed)
    assert {"block.create", "block.allocate", "ip.list", "ip.release"} <= reached


def walkthrough() -> list[tuple[str, str, str, dict | None, int, str]]:
    """docs/api.md's curl steps: (role, method, path, body, status, the documented answer)."""
    text = (DOC.parent / "api.md").read_text().split("## Endpoint reference")[0]
    steps = []
    for section in text.split("\n### ")[1:]:
        heading = section.partition("\n")[0]
        role = re.search(r"\((reader|writer|admin)\)", heading)
        joined = section.replace("\\\n", " ")
        for command, status, answer in re.findall(r"^(curl .*)\n# (\d{3}): (.*)$", joined, re.M):
            body = re.search(r"-d '([^']*)'", command)
            method = re.search(r"-X (\w+)", command)
            path = re.search(r'"\$MELANGE_API(/[^"]*)"', command)
            assert path is not None, command
            steps.append((role.group(1) if role else "admin",
                          method.group(1) if method else ("POST" if body else "GET"),
                          path.group(1), json.loads(body.group(1)) if body else None,
                          int(status), answer))  # fmt: skip
    return steps


def _pairs(value: object) -> set[tuple[str, str]]:
    """Every (key, string value) anywhere in a JSON answer."""
    if isinstance(value, dict):
        found = {(k, v) for k, v in value.items() if isinstance(v, str)}
        return found.union(*(_pairs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_pairs(v) for v in value))
    return set()


def test_the_walkthrough_runs_as_written_against_a_live_server(tmp_path):
    """Each curl of docs/api.md, sent by a client holding the role its step names, gets
    the status the text shows and every `"key": "value"` it shows (an elided `…` aside);
    the second page is fetched from the first page's `next`."""
    from tests.support.http_daemon import HttpDaemon

    steps = walkthrough()
    assert len(steps) >= 10 and {s[0] for s in steps} == {"reader", "writer", "admin"}
    with HttpDaemon(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "api") as api:
        following = None
        for role, method, path, body, status, answer in steps:
            if "after=" in path:
                assert following is not None, path
                path = following
            response = api.client(role).request(method, path, json=body)
            assert response.status_code == status, (method, path, response.text)
            result = response.json()
            if isinstance(result, dict) and result.get("next"):
                following = result["next"]
            shown = {(k, v) for k, v in re.findall(r'"(\w+)": "([^"]*)"', answer) if "…" not in v}
            assert shown <= _pairs(result), (method, path, shown - _pairs(result))
