"""Printing records as table (rich, for people), json (one document) or plain (tab-separated).

rich is imported only when a table is printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain, islice
from typing import Any, NamedTuple

import click


class View(NamedTuple):
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
        write_lines(plain_lines(records, view))
    elif isinstance(result, list):
        _table(result, view)
    else:
        _card(result, view)


def emit_addresses_only(fmt: str, result: list[dict], view: View = ADDRESS) -> None:
    """allocate/interface create: plain output is the bare address(es), one a line."""
    if fmt == "plain":
        write_lines(record["address"] for record in result)
    else:
        emit(fmt, result if len(result) != 1 or fmt == "table" else result[0], view)


def emit_text(fmt: str, text: str) -> None:
    """A file's content (dnsmasq hosts/opts/config): raw, or a JSON array of lines."""
    if fmt == "json":
        click.echo(json.dumps(text.splitlines(), indent=2))
    else:
        click.echo(text, nl=False)


def emit_rendered(fmt: str, call: Callable[..., Any]) -> None:
    """A file that grows with the store (a hosts file), from `call` (an operation's call
    that takes a `sink`): in JSON a whole array of lines; else written as it is rendered,
    in chunks of UTF-8 bytes (one str through melanged's socket), which click.echo writes
    straight to the binary stdout, a write per ~250 kB."""
    if fmt == "json":
        emit_text(fmt, call())
    else:
        call(sink=lambda chunk: click.echo(chunk, nl=False))


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


@contextmanager
def phased_bar(label: str, phases: tuple[str, ...]) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr through a work of several phases (reading, then writing,
    say), each counted from its own start; yields the `progress(done, total)` callback.
    A call whose `done` goes back or whose `total` changes starts the next phase, so the
    core reports each phase's own counts and never needs to know the others'."""
    from rich.console import Console
    from rich.progress import Progress

    state = {"phase": 0, "done": 0, "total": -1}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{label}: {phases[0]}", total=None)

        def advance(done: int, total: int) -> None:
            if state["total"] >= 0 and (done < state["done"] or total != state["total"]):
                state["phase"] = min(state["phase"] + 1, len(phases) - 1)
            state.update(done=done, total=total)
            description = f"{label}: {phases[state['phase']]}"
            bar.update(task, completed=done, total=total, description=description)

        yield advance


def _console():
    """A terminal's own width; piped tables are not squeezed to 80 columns."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


CHUNK = 64 * 1024


def write_lines(lines: Iterable[str]) -> None:
    """Lines to stdout, each ended by a newline, written in chunks of about CHUNK
    characters: one `click.echo` per line (a write and a flush each) cost a bulk
    allocation a third of its time. The bytes are the same."""
    import sys

    out = sys.stdout
    buffer: list[str] = []
    size = 0
    for line in lines:
        buffer.append(line)
        size += len(line) + 1
        if size >= CHUNK:
            buffer.append("")
            out.write("\n".join(buffer))
            buffer, size = [], 0
    if buffer:
        buffer.append("")
        out.write("\n".join(buffer))
    out.flush()


def plain_lines(records: Iterable[dict], view: View) -> Iterator[str]:
    """Each record as one tab-separated line of the view's fields (the plain format)."""
    fields = view.fields
    for record in records:
        yield "\t".join(text_of(record.get(f)) for f in fields)


# A table is drawn for at most this many rows: rich lays out the whole table before it
# prints a line (50,000 rows took over a minute); more rows are printed as plain text.
TABLE_ROWS = 2000
# Columns whose values are addresses, networks or MACs: never cut or folded, whatever the
# terminal's width (the other columns fold, or are left out when even folding cannot fit).
WHOLE = frozenset({"address", "mac", "cidr", "gateway", "inside_global", "inside_local",
                   "first", "last", "destination", "network_address"})  # fmt: skip
# Narrowest a folded column gets before it is left out instead; a cell's padding and rule.
FOLDED_MIN = 6
COLUMN_EDGE = 3


def _table(records: Iterable[dict], view: View) -> None:
    """Records as a rich table, or as plain text with a note on stderr when there are more
    than TABLE_ROWS of them (a table would take longer to draw than the command to run)."""
    rows = iter(records)
    head = list(islice(rows, TABLE_ROWS + 1))
    if len(head) > TABLE_ROWS:
        click.echo(too_many_rows_note(view), err=True)
        write_lines(plain_lines(chain(head, rows), view))
        return
    _draw_table(head, view)


def too_many_rows_note(view: View) -> str:
    """What stderr says when a table's rows are printed as plain text instead."""
    return (
        f"Note: more than {TABLE_ROWS:,} rows, printed as plain text, tab-separated: "
        f"{', '.join(view.fields)} (-o plain or -o json to choose)."
    )


def _draw_table(records: list[dict], view: View) -> None:
    from rich.console import RenderableType
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    console = _console()
    texts = [[cell_text(record.get(f)) for f in view.fields] for record in records]
    listed = frozenset(f for f in view.fields if any(isinstance(r.get(f), list) for r in records))
    shown, widths = column_widths(view.fields, texts, console.width, listed)
    left_out = [name for name in view.fields if name not in shown]
    bars = "percent_used" in view.fields
    table = Table(title=f"{view.plural} ({len(records)})", title_justify="left")
    for name in shown:
        whole = name in WHOLE
        table.add_column(name.replace("_", " "), width=widths[name], no_wrap=whole,
                         overflow="fold" if not whole else "ignore")  # fmt: skip
    if bars:
        table.add_column("", width=20, no_wrap=True)
    keep = [view.fields.index(name) for name in shown]
    for record, cells_text in zip(records, texts, strict=True):
        cells: list[RenderableType] = [cells_text[i] for i in keep]
        if bars:
            cells.append(ProgressBar(total=100.0, completed=record["percent_used"], width=20))
        table.add_row(*cells)
    console.print(table)
    if left_out:
        click.echo(f"Note: left out to fit {console.width} columns: {', '.join(left_out)}"
                   " (-o plain or -o json shows every field).", err=True)  # fmt: skip


def cell_text(value: Any) -> str:
    """A field as a table shows it: `text_of`, with a list's items after ", ", so that a
    narrow column wraps between items (addresses, say), never inside one."""
    if isinstance(value, list):
        return ", ".join(text_of(v) for v in value)
    return text_of(value)


def column_widths(
    fields: tuple[str, ...],
    texts: list[list[str]],
    width: int,
    listed: frozenset[str] = frozenset(),
) -> tuple[list[str], dict[str, int]]:
    """The columns to show and each one's width on a console `width` wide: address and
    MAC columns (WHOLE) as wide as their longest value; the others as wide as theirs when
    everything fits, else folded to the widest share that does (a column of lists, named
    in `listed`, no narrower than its longest item), and the last of them left out while
    even FOLDED_MIN each would not fit (lists and the first column last). Widths are set
    on every column, since rich, short of room, narrows every column alike, addresses
    included."""
    natural = {
        name: max([len(name)] + [len(row[i]) for row in texts], default=len(name))
        for i, name in enumerate(fields)
    }
    # What a column cannot be narrower than: its longest item (a listed address), else
    # FOLDED_MIN; below that it is left out.
    floor = {name: min(natural[name], FOLDED_MIN) for name in fields}
    for i, name in enumerate(fields):
        if name in listed:
            floor[name] = max([len(item) for row in texts for item in row[i].split(", ")])
    extra = 20 + COLUMN_EDGE if "percent_used" in fields else 0
    shown = list(fields)

    def room(columns: list[str]) -> int:
        fixed = sum(natural[n] for n in columns if n in WHOLE)
        return width - 1 - extra - COLUMN_EDGE * len(columns) - fixed

    # Left out first: the last columns; last: lists (of addresses) and the first column
    # (what names the record).
    foldable = [n for n in shown if n not in WHOLE]
    foldable.sort(key=lambda n: n != fields[0] and n not in listed)
    while foldable and room(shown) < sum(floor[n] for n in foldable):
        shown.remove(foldable.pop())
    budget = max(room(shown), 0)

    def folded(name: str, cap: int) -> int:
        return max(min(natural[name], cap), floor[name] if name in listed else 0)

    cap = max((natural[n] for n in foldable), default=0)
    while cap > 1 and sum(folded(n, cap) for n in foldable) > budget:
        cap -= 1
    widths = {n: natural[n] if n in WHOLE else folded(n, cap) for n in shown}
    return shown, widths


def _card(record: dict, view: View) -> None:
    from rich.table import Table

    table = Table(title=view.title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for name in view.fields:
        table.add_row(name.replace("_", " "), cell_text(record.get(name)))
    extra = [k for k in record if k not in view.fields and k not in ("utilization",)]
    for name in extra:
        table.add_row(name.replace("_", " "), cell_text(record[name]))
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


class ListWriter:
    """A streamed list (melange.streaming) printed as its records come, with the bytes
    `emit` prints for the whole list: plain a line each; json `[` … `]` written as it
    goes once it is known to be long (over 1000 records `emit` does not indent, so the
    first 1001 wait to learn which); a table needs every row for its widths and title,
    so its records are kept and handed to `emit` at the end."""

    def __init__(self, fmt: str, view: View) -> None:
        self.fmt, self.view = fmt, view
        self.held: list[dict] | None = []
        self.parts: list[str] = []
        self.size = 0

    def __call__(self, record: dict) -> None:
        if self.fmt == "plain":
            self.write("\t".join(text_of(record.get(f)) for f in self.view.fields) + "\n")
        elif self.fmt == "json" and self.held is None:
            self.write(", " + json.dumps(record))
        else:
            assert self.held is not None
            self.held.append(record)
            if self.fmt == "table" and len(self.held) > TABLE_ROWS:
                self._plain_from_now()
            elif self.fmt == "json" and len(self.held) > 1000:
                self.write("[" + ", ".join(json.dumps(r) for r in self.held))
                self.held = None

    def _plain_from_now(self) -> None:
        """Too many rows for a table (see `_table`): the note, the rows so far as plain
        lines, and every later row as it comes."""
        assert self.held is not None
        click.echo(too_many_rows_note(self.view), err=True)
        for line in plain_lines(self.held, self.view):
            self.write(line + "\n")
        self.fmt, self.held = "plain", None

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size >= 1 << 16:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            click.echo("".join(self.parts), nl=False)
            self.parts.clear()
            self.size = 0

    def finish(self) -> None:
        """The end of the list: the closing bracket, or the short list or table whole."""
        if self.fmt == "json" and self.held is None:
            self.write("]\n")
        self.flush()
        if self.fmt != "plain" and self.held is not None:
            emit(self.fmt, self.held, self.view)
