"""`melange policy …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("policy")
def group() -> None:
    """Policies: address ranges and last octets blocks never hand out."""


def _emit(app: App, result) -> None:
    output.emit(app.output_format(), result, output.POLICY)


@group.command("create")
@click.argument("name")
@click.option("--description", metavar="TEXT")
@output_option
@pass_app
def create(app: App, name, description):
    """Create a policy."""
    _emit(app, app.call("policy.create", name=name, description=description))


@group.command("list")
@output_option
@pass_app
def list_(app: App):
    """List policies."""
    _emit(app, app.call("policy.list"))


@group.command("show")
@click.argument("name")
@output_option
@pass_app
def show(app: App, name):
    """Show a policy."""
    _emit(app, app.call("policy.show", name=name))


@group.command("delete")
@click.argument("name")
@output_option
@pass_app
def delete(app: App, name):
    """Delete a policy no block uses."""
    _emit(app, app.call("policy.delete", name=name))


_OFFSET = click.option(
    "--offset", type=int, required=True, help="From the block's start; < 0 counts from its end."
)
_LENGTH = click.option("--length", type=int, required=True, help="Number of addresses.")


@group.command("add-range")
@click.argument("name")
@_OFFSET
@_LENGTH
@output_option
@pass_app
def add_range(app: App, name, offset, length):
    """Make LENGTH addresses from OFFSET unusable."""
    _emit(app, app.call("policy.add_range", name=name, offset=offset, length=length))


@group.command("remove-range")
@click.argument("name")
@_OFFSET
@_LENGTH
@output_option
@pass_app
def remove_range(app: App, name, offset, length):
    """Remove an unusable range."""
    _emit(app, app.call("policy.remove_range", name=name, offset=offset, length=length))


@group.command("add-octet")
@click.argument("name")
@click.argument("octet", type=int)
@output_option
@pass_app
def add_octet(app: App, name, octet):
    """Make every IPv4 address whose last octet is OCTET unusable."""
    _emit(app, app.call("policy.add_octet", name=name, octet=octet))


@group.command("remove-octet")
@click.argument("name")
@click.argument("octet", type=int)
@output_option
@pass_app
def remove_octet(app: App, name, octet):
    """Remove an unusable octet."""
    _emit(app, app.call("policy.remove_octet", name=name, octet=octet))
