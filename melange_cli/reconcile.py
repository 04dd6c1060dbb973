"""`melange reconcile`: drift between the store, dnsmasq's files and its leases (for cron)."""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app

FINDING = output.View("Finding", ("kind", "details"))
FIXED = output.View("Finding", ("kind", "details", "fixed"))


@click.command("reconcile")
@click.option(
    "--hostsfile", metavar="PATH", help="Compare dnsmasq's --dhcp-hostsfile with the store."
)
@click.option(
    "--leasefile", metavar="PATH", help="Check dnsmasq's --dhcp-leasefile against the store."
)
@click.option(
    "--fix",
    is_flag=True,
    help="Repair what can be: hosts file, stale leases, counters, references.",
)
@click.option(
    "--dnsmasq-pidfile",
    metavar="PATH",
    help="SIGHUP this dnsmasq (once idle) when --fix rewrites the hosts file.",
)
@click.option(
    "--release-interface",
    metavar="IFACE",
    help="--fix runs dhcp_release on IFACE for stale leases (root, beside dnsmasq).",
)
@click.option("--network", metavar="NET", help="Only this network's blocks, files and leases.")
@click.option(
    "--hostsdir",
    metavar="DIR",
    help="dnsmasq --dhcp-hostsdir: its files count as part of the hosts file.",
)
@click.option("--dns-hostsdir", metavar="DIR", help="dnsmasq --hostsdir of the DNS names.")
@click.option("--addn-hosts", metavar="FILE", help="dnsmasq --addn-hosts of the DNS names.")
@click.option(
    "--backend", default="dnsmasq", show_default=True, metavar="NAME",
    help="The DHCP server's backend (dnsmasq, or one installed as a plugin).",
)  # fmt: skip
@click.option(
    "--backend-option", metavar="KEY=VALUE", multiple=True,
    help="A setting of the backend's own (kea: host_db=URL, control_socket=PATH).",
)  # fmt: skip
@output_option
@pass_app
def reconcile(
    app: App,
    hostsfile,
    leasefile,
    fix,
    dnsmasq_pidfile,
    release_interface,
    network,
    hostsdir,
    dns_hostsdir,
    addn_hosts,
    backend,
    backend_option,
):
    """Purge expired holds, then find (and with --fix repair) drift between the store, the
    hosts file and dnsmasq's leases. Exit 8 while drift remains.

    Output: one finding per record, `kind` first (holds_purged is housekeeping, not drift).
    --fix repairs counter_mismatch, interface_missing, active_mac_missing, the hosts_* kinds
    (rewrite, SIGHUP) and the lease_* kinds when given an interface to run dhcp_release on;
    address_outside_block, address_excluded and mac_duplicate need an operator.
    With --dns-hostsdir/--addn-hosts, dns_missing and dns_extra compare the DNS names'
    files; --fix rewrites them (folded, and a SIGHUP, when there is an addn-hosts file).
    """
    from melange.errors import DriftFound

    result = app.call(
        "reconcile",
        hostsfile=hostsfile,
        leasefile=leasefile,
        fix=fix,
        dnsmasq_pidfile=dnsmasq_pidfile,
        release_interface=release_interface,
        network=network,
        hostsdir=hostsdir,
        backend=backend,
        backend_option=list(backend_option),
        dns_hostsdir=dns_hostsdir,
        addn_hosts=addn_hosts,
    )
    records = _records(result)
    _emit(app.output_format(), records, fix)
    remaining = len(result["remaining"])
    if remaining:
        noun = "finding" if remaining == 1 else "findings"
        if fix:
            verb = "remains" if remaining == 1 else "remain"
            raise DriftFound(f"{remaining} {noun} of drift {verb} after --fix")
        raise DriftFound(f"{remaining} {noun} of drift; run with --fix")


def _records(result: dict) -> list[dict]:
    """The purge count, then each finding (with --fix: whether the re-check still sees it)."""
    records = [{"kind": "holds_purged", "count": result["purged"]}] if result["purged"] else []
    if not result["fix"]:
        return records + result["findings"]
    remaining = result["remaining"]
    records += [{**f, "fixed": f not in remaining} for f in result["findings"]]
    return records + [{**f, "fixed": False} for f in remaining if f not in result["findings"]]


def _emit(fmt: str, records: list[dict], fix: bool) -> None:
    if fmt == "json":
        output.emit(fmt, records, FINDING)
    elif fmt == "plain":
        for record in records:
            click.echo("\t".join(output.text_of(value) for value in record.values()))
    else:
        rows = [
            {"kind": r["kind"], "details": _details(r), "fixed": r.get("fixed")} for r in records
        ]
        if rows:
            output.emit(fmt, rows, FIXED if fix else FINDING)
        else:
            click.echo("No drift.")


def _details(record: dict) -> str:
    shown = {k: v for k, v in record.items() if k not in ("kind", "fixed") and v is not None}
    return "  ".join(f"{k}={output.text_of(v)}" for k, v in shown.items())
