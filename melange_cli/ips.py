"""`melange ip …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("ip")
def group() -> None:
    """Allocated addresses."""


@group.command("list")
@click.option("--block", metavar="B")
@click.option("--network", metavar="NET")
@click.option("--mac", metavar="MAC")
@click.option("--interface", metavar="VIF")
@click.option("--released", is_flag=True, help="List released addresses still held.")
@output_option
@pass_app
def list_(app: App, block, network, mac, interface, released):
    """List allocated addresses."""
    writer = output.ListWriter(app.output_format(), output.ADDRESS)
    app.stream("ip.list", writer, block=block, network=network, mac=mac, interface=interface,
               released=released)  # fmt: skip
    writer.finish()


@group.command("show")
@click.argument("address")
@click.option("--block", metavar="B")
@output_option
@pass_app
def show(app: App, address, block):
    """Show one address, with its NAT inside globals and inside locals."""
    output.emit(
        app.output_format(),
        app.call("ip.show", address=address, block=block),
        output.ADDRESS_SHOWN,
    )


@group.command("update")
@click.argument("address")
@click.option("--block", metavar="B")
@click.option("--mac", metavar="MAC")
@click.option("--hostname", metavar="NAME")
@output_option
@pass_app
def update(app: App, address, block, mac, hostname):
    """Change an address's MAC or hostname."""
    result = app.call("ip.update", address=address, block=block, mac=mac, hostname=hostname)
    output.emit(app.output_format(), result, output.ADDRESS)


@group.command("release")
@click.argument("address")
@click.option("--block", metavar="B")
@click.option("--now", is_flag=True, help="Free it at once instead of holding it.")
@output_option
@pass_app
def release(app: App, address, block, now):
    """Release an address (held for the release hold unless --now)."""
    result = app.call("ip.release", address=address, block=block, now=now)
    output.emit(app.output_format(), result, output.ADDRESS)


@group.command("restore")
@click.argument("address")
@click.option("--block", metavar="B")
@output_option
@pass_app
def restore(app: App, address, block):
    """Undo a release whose hold has not expired."""
    output.emit(
        app.output_format(), app.call("ip.restore", address=address, block=block), output.ADDRESS
    )
