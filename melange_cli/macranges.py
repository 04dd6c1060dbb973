"""`melange mac-range …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("mac-range")
def group() -> None:
    """MAC address ranges for interfaces."""


@group.command("create")
@click.argument("cidr")
@output_option
@pass_app
def create(app: App, cidr):
    """Create a MAC range such as 02:16:3e:00:00:00/24."""
    output.emit(app.output_format(), app.call("mac_range.create", cidr=cidr), output.MAC_RANGE)


@group.command("list")
@output_option
@pass_app
def list_(app: App):
    """List MAC ranges."""
    output.emit(app.output_format(), app.call("mac_range.list"), output.MAC_RANGE)


@group.command("delete")
@click.argument("range_id", metavar="ID", type=int)
@output_option
@pass_app
def delete(app: App, range_id):
    """Delete a MAC range none of whose MACs is in use."""
    result = app.call("mac_range.delete", range_id=range_id)
    output.emit(app.output_format(), result, output.MAC_RANGE)
