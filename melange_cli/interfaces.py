"""`melange interface …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("interface")
def group() -> None:
    """Interfaces (VIFs): a MAC and an address of each family."""


@group.command("create")
@click.argument("vif")
@click.option("--network", metavar="NET", required=True)
@click.option("--device", metavar="DEV")
@click.option("--tenant", metavar="T")
@click.option("--mac", metavar="MAC", help="Use this MAC instead of one from a MAC range.")
@output_option
@pass_app
def create(app: App, vif, network, device, tenant, mac):
    """Create an interface; plain output is its address(es)."""
    result = app.call(
        "interface.create", vif=vif, network=network, device=device, tenant=tenant, mac=mac
    )
    fmt = app.output_format()
    if fmt == "plain":
        for address in result["addresses"]:
            click.echo(address)
    else:
        output.emit(fmt, result, output.INTERFACE)


@group.command("list")
@click.option("--device", metavar="DEV")
@output_option
@pass_app
def list_(app: App, device):
    """List interfaces."""
    output.emit(app.output_format(), app.call("interface.list", device=device), output.INTERFACE)


@group.command("show")
@click.argument("vif")
@output_option
@pass_app
def show(app: App, vif):
    """Show an interface."""
    output.emit(app.output_format(), app.call("interface.show", vif=vif), output.INTERFACE)


@group.command("delete")
@click.argument("vif")
@output_option
@pass_app
def delete(app: App, vif):
    """Delete an interface, releasing its addresses and MAC."""
    output.emit(app.output_format(), app.call("interface.delete", vif=vif), output.INTERFACE)
