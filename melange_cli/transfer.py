"""`melange export` and `melange import`."""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app

IMPORTED = output.View(
    "Import",
    ("policies", "mac_ranges", "blocks", "interfaces", "addresses", "routes", "allowed_ips",
     "nat_mappings"),
)  # fmt: skip


@click.command("export")
@click.option("-o", "--output", "fmt", type=click.Choice(["json", "csv"]),
              help="json (default) or csv.")  # fmt: skip
@click.option("--network", metavar="NET", help="Only this network's blocks and interfaces.")
@pass_app
def export(app: App, fmt, network):
    """Everything in the store (or one network), for `melange import` elsewhere."""
    from melange.transfer_format import export_csv, export_json

    document = app.call("export", network=network)
    text = export_csv(document) if fmt == "csv" else export_json(document)
    click.echo(text, nl=False)


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "format_",
    type=click.Choice(["melange", "netbox-prefixes", "netbox-addresses"]),
    default="melange",
    show_default=True,
)
@output_option
@pass_app
def import_(app: App, file, format_):
    """Import a melange export (JSON or CSV) or NetBox CSV; all of it or nothing."""
    from melange.errors import InvalidInput

    try:
        with click.open_file(file, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read {file}: {error}") from None
    fmt = app.output_format()
    params = {"text": text, "format": format_, "source": file}
    if output.wants_progress(fmt):
        with output.progress_bar(f"importing {file}", 1) as advance:
            result = app.call("import", progress=advance, **params)
    else:
        result = app.call("import", **params)
    output.emit(fmt, result, IMPORTED)
