"""`melange dns …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("dns")
def group() -> None:
    """What dnsmasq answers DNS from: the names of allocated addresses."""


@group.command("hosts")
@click.option("--network", metavar="NET")
@output_option
@pass_app
def hosts(app: App, network):
    """Print the names as a hosts file (dnsmasq --addn-hosts / --hostsdir content)."""
    output.emit_rendered(app.output_format(),
                         lambda **sink: app.call("dns.hosts", network=network, **sink))


@group.command("config")
@click.option("--network", metavar="NET")
@output_option
@pass_app
def config(app: App, network):
    """Print the dnsmasq lines a deployment's DNS needs (local=, domain=, addn-hosts=…)."""
    output.emit_text(app.output_format(), app.call("dns.config", network=network))
