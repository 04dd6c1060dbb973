"""Printing records as table (rich, for people), json (one document) or plain (tab-separated).

rich is imported only when a table is printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class View:
    """Which fields a kind of record shows, in order, and the table's title."""

    title: str
    fields: tuple[str, ...]

    @property
    def plural(self) -> str:
        return self.title + ("es" if self.title.endswith("s") else "s")


BLOCK = View(
    "Block",
    (
        "id",
        "cidr",
        "name",
        "network",
        "tenant",
        "type",
        "gateway",
        "dns",
        "policy",
        "parent",
        "generator",
    ),
)
ADDRESS = View(
    "Address",
    (
        "address",
        "block",
        "network",
        "mac",
        "hostname",
        "interface",
        "tenant",
        "state",
        "allocated_at",
        "held_until",
    ),
)
POLICY = View("Policy", ("name", "description", "unusable_ranges", "unusable_octets", "blocks"))
MAC_RANGE = View("MAC range", ("id", "cidr", "first", "last", "size", "allocated"))
INTERFACE = View(
    "Interface", ("vif_id", "network", "device", "tenant", "mac", "addresses", "allowed_ips")
)
ROUTE = View("Route", ("block", "destination", "gateway"))
SYNC = View(
    "DHCP sync",
    ("hosts_changed", "opts_changed", "reloaded", "server_running", "lines", "added", "removed"),
)
UTILIZATION = View(
    "Utilization",
    ("block_id", "cidr", "name", "network", "size", "used", "held", "free", "unusable",
     "percent_used", "kind", "subnets"),
)  # fmt: skip
HISTORY = View(
    "Change",
    ("id", "at", "actor", "via", "command", "block_id", "address", "params", "outcome"),
)
# `ip show`: an address with its NAT links (a listing leaves them out: see melange.natlinks).
ADDRESS_SHOWN = View("Address", (*ADDRESS.fields, "inside_globals", "inside_locals"))
ALLOWED_IP = View("Allowed IP", ("vif_id", "address", "block", "network", "owner"))
NAT = View(
    "NAT mapping",
    ("inside_global", "inside_global_block", "inside_local", "inside_local_block", "created_at"),
)
REVISION = View("Schema", ("revision", "head", "up_to_date"))
CHECK = View("Store check", ("status", "tables"))
TOKEN = View(
    "API token",
    ("name", "key_id", "role", "created_at", "expires_at", "expired", "allowed_ips",
     "last_used_at"),
)  # fmt: skip


def text_of(value: Any) -> str:
    """One field as plain text: lists comma-joined, ranges as offset+length, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(text_of(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"offset", "length"}:
            return f"{value['offset']}+{value['length']}"
        return ",".join(f"{k}={text_of(v)}" for k, v in value.items())
    return str(value)


def emit(fmt: str, result: Any, view: View) -> None:
    """Print one record or a list of records in the chosen format."""
    if fmt == "json":
        # Long lists skip indentation: only then does json use its C encoder.
        big = isinstance(result, list) and len(result) > 1000
        click.echo(json.dumps(result, indent=None if big else 2))
    elif fmt == "plain":
        records = result if isinstance(result, list) else [result]
        for record in records:
            click.echo("\t".join(text_of(record.get(f)) for f in view.fields))
    elif isinstance(result, list):
        _table(result, view)
    else:
        _card(result, view)


def emit_addresses_only(fmt: str, result: list[dict], view: View = ADDRESS) -> None:
    """allocate/interface create: plain output is the bare address(es), one a line."""
    if fmt == "plain":
        for record in result:
            click.echo(record["address"])
    else:
        emit(fmt, result if len(result) != 1 or fmt == "table" else result[0], view)


def emit_text(fmt: str, text: str) -> None:
    """A file's content (dnsmasq hosts/opts/config): raw, or a JSON array of lines."""
    if fmt == "json":
        click.echo(json.dumps(text.splitlines(), indent=2))
    else:
        click.echo(text, nl=False)


PROGRESS_FROM = 10_000


def wants_progress(fmt: str) -> bool:
    """Bars only for people: table output with a terminal on stderr."""
    import sys

    return fmt == "table" and sys.stderr.isatty()


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields the `progress(done, total)` callback."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _console():
    """A terminal's own width; piped tables are not squeezed to 80 columns."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _table(records: list[dict], view: View) -> None:
    from rich.console import RenderableType
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    bars = "percent_used" in view.fields
    table = Table(title=f"{view.plural} ({len(records)})", title_justify="left")
    for name in view.fields:
        table.add_column(name.replace("_", " "))
    if bars:
        table.add_column("")
    for record in records:
        cells: list[RenderableType] = [text_of(record.get(f)) for f in view.fields]
        if bars:
            cells.append(ProgressBar(total=100.0, completed=record["percent_used"], width=20))
        table.add_row(*cells)
    _console().print(table)


def _card(record: dict, view: View) -> None:
    from rich.table import Table

    table = Table(title=view.title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for name in view.fields:
        table.add_row(name.replace("_", " "), text_of(record.get(name)))
    extra = [k for k in record if k not in view.fields and k not in ("utilization",)]
    for name in extra:
        table.add_row(name.replace("_", " "), text_of(record[name]))
    console = _console()
    console.print(table)
    if "utilization" in record:
        _utilization(console, record["utilization"])


def _utilization(console, usage: dict) -> None:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(title="Utilization", show_header=True, title_justify="left")
    for name in ("size", "used", "held", "free", "unusable", "percent used", ""):
        table.add_column(name)
    bar = ProgressBar(total=100.0, completed=usage["percent_used"], width=30)
    table.add_row(
        *(str(usage[k]) for k in ("size", "used", "held", "free", "unusable")),
        f"{usage['percent_used']}%",
        bar,
    )
    console.print(table)
