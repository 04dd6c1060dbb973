"""`melange route …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("route")
def group() -> None:
    """Static routes of a block."""


@group.command("add")
@click.argument("block")
@click.argument("destination")
@click.option("--gateway", metavar="IP", required=True)
@output_option
@pass_app
def add(app: App, block, destination, gateway):
    """Add a route to DESTINATION via --gateway."""
    result = app.call("route.add", block=block, destination=destination, gateway=gateway)
    output.emit(app.output_format(), result, output.ROUTE)


@group.command("list")
@click.argument("block")
@output_option
@pass_app
def list_(app: App, block):
    """List a block's routes."""
    output.emit(app.output_format(), app.call("route.list", block=block), output.ROUTE)


@group.command("delete")
@click.argument("block")
@click.argument("destination")
@output_option
@pass_app
def delete(app: App, block, destination):
    """Delete a route."""
    result = app.call("route.delete", block=block, destination=destination)
    output.emit(app.output_format(), result, output.ROUTE)
