"""Generate docs/cli.md, the CLI reference, from the commands' own `--help`.

    python -m melange_cli.docgen > docs/cli.md      (or: make docs)

The help text is rendered at a fixed width, so the output is the same on every
machine and terminal; tests/test_docs.py fails when docs/cli.md is stale.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

PROG = "melange"
WIDTH = 100

INTRO = """\
# melange command-line reference

This file is generated from each command's `--help` by `melange_cli/docgen.py`;
do not edit it by hand. Regenerate it with `make docs`.
"""


def command_paths(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """The command, then each visible subcommand, depth first, in name order."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=PROG)
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from command_paths(sub, (*path, name))


def help_text(cli: click.Command, path: tuple[str, ...]) -> str:
    """`melange PATH… --help` at a fixed width, with no environment to colour it."""
    result = CliRunner().invoke(
        cli,
        [*path, "--help"],
        prog_name=PROG,
        terminal_width=WIDTH,
        env={"MELANGE_OUTPUT": None, "MELANGE_DEBUG": None},
        catch_exceptions=False,
    )
    if result.exit_code != 0:
        raise RuntimeError(f"`{PROG} {' '.join(path)} --help` failed: {result.output}")
    return result.stdout


def render() -> str:
    from melange_cli.main import cli

    sections = [INTRO]
    for path, _command in command_paths(cli):
        title = " ".join((PROG, *path))
        body = help_text(cli, path).rstrip()
        sections.append(f"## {title}\n\n```text\n{body}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(render(), end="")
