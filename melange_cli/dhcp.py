"""`melange dhcp …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("dhcp")
def group() -> None:
    """What dnsmasq reads: hosts file, opts file, configuration."""


@group.command("hosts")
@click.option("--network", metavar="NET")
@output_option
@pass_app
def hosts(app: App, network):
    """Print dnsmasq --dhcp-hostsfile content."""
    output.emit_text(app.output_format(), app.call("dhcp.hosts", network=network))


@group.command("opts")
@click.option("--network", metavar="NET")
@output_option
@pass_app
def opts(app: App, network):
    """Print dnsmasq --dhcp-optsfile content (tag:NET lines)."""
    output.emit_text(app.output_format(), app.call("dhcp.opts", network=network))


@group.command("config")
@click.option("--network", metavar="NET")
@output_option
@pass_app
def config(app: App, network):
    """Print the dnsmasq configuration a network needs."""
    output.emit_text(app.output_format(), app.call("dhcp.config", network=network))
