"""`melange block …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("block")
def group() -> None:
    """IP blocks (CIDRs) and allocation from them."""


@group.command("create")
@click.argument("cidr")
@click.option("--name")
@click.option("--network", metavar="NET")
@click.option("--tenant", metavar="T")
@click.option("--type", "type_", type=click.Choice(["private", "public"]), default=None)
@click.option("--gateway", metavar="IP")
@click.option("--dns", multiple=True, metavar="IP", help="DNS server (repeatable).")
@click.option("--policy", metavar="POLICY")
@click.option("--parent", metavar="BLOCK", help="Create the block as a subnet of BLOCK.")
@click.option("--generator", metavar="NAME", help="Address generator (lowest-free, eui64, …).")
@click.option("--domain", metavar="DOMAIN", help="DNS domain of its addresses' names.")
@output_option
@pass_app
def create(
    app: App, cidr, name, network, tenant, type_, gateway, dns, policy, parent, generator, domain
):
    """Create a block."""
    result = app.call(
        "block.create",
        cidr=cidr,
        name=name,
        network=network,
        tenant=tenant,
        type=type_,
        gateway=gateway,
        dns=list(dns),
        policy=policy,
        parent=parent,
        generator=generator,
        domain=domain,
    )
    output.emit(app.output_format(), result, output.BLOCK)


@group.command("list")
@click.option("--network", metavar="NET")
@click.option("--tenant", metavar="T")
@click.option("--type", "type_", type=click.Choice(["private", "public"]), default=None)
@output_option
@pass_app
def list_(app: App, network, tenant, type_):
    """List blocks."""
    result = app.call("block.list", network=network, tenant=tenant, type=type_)
    output.emit(app.output_format(), result, output.BLOCK)


@group.command("show")
@click.argument("block")
@output_option
@pass_app
def show(app: App, block):
    """Show a block with its utilisation."""
    output.emit(app.output_format(), app.call("block.show", block=block), output.BLOCK)


@group.command("update")
@click.argument("block")
@click.option("--name")
@click.option("--tenant", metavar="T")
@click.option("--gateway", metavar="IP")
@click.option("--no-gateway", is_flag=True, help="Remove the gateway.")
@click.option("--dns", multiple=True, metavar="IP", help="Replace the DNS servers (repeatable).")
@click.option("--no-dns", is_flag=True, help="Remove all DNS servers.")
@click.option("--policy", metavar="P")
@click.option("--no-policy", is_flag=True, help="Remove the policy.")
@click.option("--domain", metavar="DOMAIN", help="DNS domain of its addresses' names.")
@click.option("--no-domain", is_flag=True, help="Remove the domain (its names leave DNS).")
@output_option
@pass_app
def update(
    app: App, block, name, tenant, gateway, no_gateway, dns, no_dns, policy, no_policy, domain,
    no_domain,
):
    """Change a block's name, gateway, DNS servers, policy or domain."""
    result = app.call(
        "block.update",
        block=block,
        name=name,
        tenant=tenant,
        gateway=gateway,
        no_gateway=no_gateway,
        dns=list(dns),
        no_dns=no_dns,
        policy=policy,
        no_policy=no_policy,
        domain=domain,
        no_domain=no_domain,
    )
    output.emit(app.output_format(), result, output.BLOCK)


@group.command("delete")
@click.argument("block")
@click.option("--force", is_flag=True, help="Delete even with allocated addresses.")
@output_option
@pass_app
def delete(app: App, block, force):
    """Delete a block (refused while it holds addresses, unless --force)."""
    result = app.call("block.delete", block=block, force=force)
    output.emit(app.output_format(), result, output.BLOCK)


@group.command("subnet")
@click.argument("block")
@click.argument("cidr")
@click.option("--name")
@click.option("--gateway", metavar="IP", help="Its own gateway (else BLOCK's is inherited).")
@click.option("--dns", multiple=True, metavar="IP", help="Its own DNS server (repeatable).")
@click.option("--policy", metavar="POLICY", help="Its own policy (else BLOCK's is inherited).")
@click.option("--tenant", metavar="T")
@click.option("--generator", metavar="NAME", help="Address generator (lowest-free, eui64, …).")
@click.option("--domain", metavar="DOMAIN", help="Its own DNS domain (else BLOCK's is inherited).")
@output_option
@pass_app
def subnet(app: App, block, cidr, name, gateway, dns, policy, tenant, generator, domain):
    """Create a subnet CIDR inside BLOCK; it inherits what it is not given (see the guide)."""
    result = app.call(
        "block.create",
        cidr=cidr,
        name=name,
        parent=block,
        gateway=gateway,
        dns=list(dns),
        policy=policy,
        tenant=tenant,
        generator=generator,
        domain=domain,
    )
    output.emit(app.output_format(), result, output.BLOCK)


@group.command("allocate")
@click.argument("block")
@click.option("--mac", metavar="MAC")
@click.option("--address", metavar="IP", help="Ask for this address.")
@click.option("--count", type=int, metavar="N", help="Allocate N addresses, all or none.")
@click.option("--hostname", metavar="NAME")
@click.option("--interface", metavar="VIF")
@click.option("--tenant", metavar="T")
@output_option
@pass_app
def allocate(app: App, block, mac, address, count, hostname, interface, tenant):
    """Allocate address(es) from BLOCK; plain output is the bare address."""
    fmt = app.output_format()
    params = dict(block=block, mac=mac, address=address, count=count, hostname=hostname,
                  interface=interface, tenant=tenant)  # fmt: skip
    if count is not None and count >= output.PROGRESS_FROM and output.wants_progress(fmt):
        with output.progress_bar(f"allocating {count} addresses", count) as advance:
            result = app.call("block.allocate", progress=advance, **params)
    else:
        result = app.call("block.allocate", **params)
    if fmt == "plain":
        output.emit_addresses_only(fmt, result)
    else:
        output.emit(fmt, result if count is not None else result[0], output.ADDRESS)
