"""`melange nat …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("nat")
def group() -> None:
    """NAT mappings: inside-global addresses mapped to inside-local ones."""


def _pair_options(function):
    """GLOBAL LOCAL [--global-block B] [--local-block B], as add and delete take them."""
    for decorator in reversed(
        (
            click.argument("inside_global", metavar="GLOBAL"),
            click.argument("inside_local", metavar="LOCAL"),
            click.option("--global-block", metavar="B", help="GLOBAL's block, if in several."),
            click.option("--local-block", metavar="B", help="LOCAL's block, if in several."),
        )
    ):
        function = decorator(function)
    return function


@group.command("add")
@_pair_options
@output_option
@pass_app
def add(app: App, inside_global, inside_local, global_block, local_block):
    """Map GLOBAL (say a public address) to LOCAL (a private one); again changes nothing.

    Both are allocated addresses, of any blocks.
    """
    result = app.call("nat.add", inside_global=inside_global, inside_local=inside_local,
                      global_block=global_block, local_block=local_block)  # fmt: skip
    output.emit(app.output_format(), result, output.NAT)


@group.command("list")
@click.option("--address", metavar="IP", help="Only mappings IP is either side of.")
@click.option("--block", metavar="B", help="Only mappings with an address in B.")
@output_option
@pass_app
def list_(app: App, address, block):
    """List NAT mappings, by inside global."""
    output.emit(app.output_format(), app.call("nat.list", address=address, block=block),
                output.NAT)  # fmt: skip


@group.command("delete")
@_pair_options
@output_option
@pass_app
def delete(app: App, inside_global, inside_local, global_block, local_block):
    """Delete the mapping of GLOBAL to LOCAL."""
    result = app.call("nat.delete", inside_global=inside_global, inside_local=inside_local,
                      global_block=global_block, local_block=local_block)  # fmt: skip
    output.emit(app.output_format(), result, output.NAT)
