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
    output.emit_rendered(app.output_format(),
                         lambda **sink: app.call("dhcp.hosts", network=network, **sink))


@group.command("opts")
@click.option("--network", metavar="NET")
@output_option
@pass_app
def opts(app: App, network):
    """Print dnsmasq --dhcp-optsfile content (tag:NET lines)."""
    output.emit_text(app.output_format(), app.call("dhcp.opts", network=network))


@group.command("config")
@click.option("--network", metavar="NET")
@click.option(
    "--backend", default="dnsmasq", show_default=True, metavar="NAME",
    help="Whose configuration: dnsmasq's options, or Kea's Dhcp4 fragment (kea).",
)  # fmt: skip
@output_option
@pass_app
def config(app: App, network, backend):
    """Print the DHCP server configuration a network needs."""
    result = app.call("dhcp.config", network=network, backend=backend)
    output.emit_text(app.output_format(), result)


@group.command("sync")
@click.option("--hostsfile", metavar="PATH", required=True, help="dnsmasq --dhcp-hostsfile.")
@click.option("--dnsmasq-pidfile", metavar="PATH", help="SIGHUP this dnsmasq when needed.")
@click.option("--network", metavar="NET", help="Only this network's reservations.")
@click.option("--optsfile", metavar="PATH", help="Also write dnsmasq --dhcp-optsfile.")
@click.option(
    "--hostsdir", metavar="DIR", help="dnsmasq --dhcp-hostsdir: additions without reload."
)
@click.option("--release-interface", metavar="IFACE", help="dhcp_release leases of removed hosts.")
@click.option("--dns-hostsdir", metavar="DIR", help="dnsmasq --hostsdir of the DNS names.")
@click.option("--addn-hosts", metavar="FILE", help="dnsmasq --addn-hosts of the DNS names.")
@click.option(
    "--backend", default="dnsmasq", show_default=True, metavar="NAME",
    help="The DHCP server's backend (dnsmasq, or one installed as a plugin).",
)  # fmt: skip
@output_option
@pass_app
def sync(app: App, hostsfile, dnsmasq_pidfile, network, optsfile, hostsdir, release_interface,
         dns_hostsdir, addn_hosts, backend):  # fmt: skip
    """One pass: write the files atomically, SIGHUP dnsmasq only if they changed. With
    --dns-hostsdir/--addn-hosts, the DNS names' files too (all names folded into the
    addn-hosts file, as melanged's first pass does)."""
    result = app.call(
        "dhcp.sync",
        backend=backend,
        hostsfile=hostsfile,
        dnsmasq_pidfile=dnsmasq_pidfile,
        network=network,
        optsfile=optsfile,
        hostsdir=hostsdir,
        release_interface=release_interface,
        dns_hostsdir=dns_hostsdir,
        addn_hosts=addn_hosts,
    )
    output.emit(app.output_format(), result, output.SYNC)
