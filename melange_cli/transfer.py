"""`melange export` and `melange import`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
    with _bar(fmt, file) as advance:
        # the file read a piece at a time as the import takes it: directly, uploaded
        # through melanged's socket (a streamed request) or its HTTP API (a streamed body)
        chunks = _chunks(file, advance)
        params = {"format": format_, "source": file}
        remote = None if app.socket else app.remote()
        if app.socket:
            from melange_cli import client

            result = client.upload(app.socket, "import", params, chunks)
        elif remote is not None:
            result = remote.upload("import", params, chunks)
        else:
            result = app.call("import", progress=advance, chunks=chunks, **params)
    output.emit(fmt, result, IMPORTED)


@contextmanager
def _bar(fmt: str, file: str) -> Iterator[Callable[[int, int], None] | None]:
    """The import's progress bar on a terminal (bytes read, then entities made, then
    addresses written: through melanged, its reading only), else no callback."""
    if not output.wants_progress(fmt):
        yield None
        return
    phases = ("reading (bytes)", "creating (entities)", "writing (addresses)")
    with output.phased_bar(f"importing {file}", phases) as advance:
        yield advance


READ_CHUNK = 1 << 20


def _chunks(file: str, progress) -> Iterator[str]:
    """The file's text, a MiB at a time, `progress(bytes read, size)` after each (the
    size of standard input is known at its end only). The file is opened here, before
    anything is sent: one that cannot be read is exit 2 whatever the channel."""
    import os

    from melange.errors import InvalidInput

    try:
        size = os.path.getsize(file) if file != "-" else 0
        handle = click.open_file(file, "rb")
    except OSError as error:
        raise InvalidInput(f"cannot read {file}: {error}") from None
    return _pieces(file, handle, size, progress)


def _pieces(file: str, handle, size: int, progress) -> Iterator[str]:
    import codecs

    from melange.errors import InvalidInput

    try:
        with handle:
            decoder = codecs.getincrementaldecoder("utf-8")()
            read = 0
            while chunk := handle.read(READ_CHUNK):
                read += len(chunk)
                if progress is not None and size:
                    progress(read, max(size, read))
                yield decoder.decode(chunk)
            yield decoder.decode(b"", final=True)
            if progress is not None:
                progress(read, max(size, read))
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read {file}: {error}") from None


def _read(file: str, progress) -> str:
    """The file's whole text, read as `_chunks` reads it (for a caller that wants it
    whole: a small file)."""
    return "".join(_chunks(file, progress))
