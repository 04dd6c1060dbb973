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
    from melange.transfer_format import CsvWriter, JsonWriter

    out = output.ListWriter("plain", output.View("Export", ()))  # its chunked writing only
    writer = (CsvWriter if fmt == "csv" else JsonWriter)(out.write)
    app.stream("export", writer, network=network)
    writer.finish()
    out.flush()


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
    fmt = app.output_format()
    if not output.wants_progress(fmt):
        text = _read(file, None)
        result = app.call("import", text=text, format=format_, source=file)
        output.emit(fmt, result, IMPORTED)
        return
    phases = ("reading (characters)", "creating (entities)", "writing (addresses)")
    with output.phased_bar(f"importing {file}", phases) as advance:
        text = _read(file, advance)
        result = app.call("import", progress=advance, text=text, format=format_, source=file)
    output.emit(fmt, result, IMPORTED)


READ_CHUNK = 1 << 20


def _read(file: str, progress) -> str:
    """The file's text, read a MiB at a time, `progress(characters read, total)` after
    each (the total is the size in bytes, which a UTF-8 file's characters never exceed;
    a bar that ends a little short of full says the file was not all ASCII)."""
    import os

    from melange.errors import InvalidInput

    try:
        size = os.path.getsize(file) if file != "-" else 0
        parts: list[str] = []
        read = 0
        with click.open_file(file, encoding="utf-8") as handle:
            while chunk := handle.read(READ_CHUNK):
                parts.append(chunk)
                read += len(chunk)
                if progress is not None and size:
                    progress(read, size)
        if progress is not None:  # standard input's size is known at its end only
            progress(read, max(size, read))
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read {file}: {error}") from None
    return "".join(parts)
