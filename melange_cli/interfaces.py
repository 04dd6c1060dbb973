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


@group.command("allow-ip")
@click.argument("vif")
@click.argument("address")
@click.option("--block", metavar="B", help="The address's block, when it is in several.")
@output_option
@pass_app
def allow_ip(app: App, vif, address, block):
    """Let VIF use ADDRESS too (a VIP or shared address); again changes nothing.

    ADDRESS is an allocated address of a block in VIF's network, not VIF's own.
    """
    result = app.call("interface.allow_ip", vif=vif, address=address, block=block)
    output.emit(app.output_format(), result, output.ALLOWED_IP)


@group.command("disallow-ip")
@click.argument("vif")
@click.argument("address")
@click.option("--block", metavar="B", help="The address's block, when it is in several.")
@output_option
@pass_app
def disallow_ip(app: App, vif, address, block):
    """Take back an address allowed on VIF."""
    result = app.call("interface.disallow_ip", vif=vif, address=address, block=block)
    output.emit(app.output_format(), result, output.ALLOWED_IP)


@group.command("allowed-ips")
@click.argument("vif")
@output_option
@pass_app
def allowed_ips(app: App, vif):
    """List the addresses VIF is allowed besides its own."""
    result = app.call("interface.allowed_ips", vif=vif)
    output.emit(app.output_format(), result, output.ALLOWED_IP)
