"""An export document as NDJSON, and back: how GET /v1/export streams it.

One JSON object per line. The first line is the header (`format`, `version`);
then one line per entity, keyed by its kind: `{"policy": {...}}`,
`{"mac_range": {...}}`, `{"block": {...}}` (its routes inside, its addresses
not), `{"address": {...}}` for each address of the block line before it, and
`{"interface": {...}}`, `{"nat_mapping": {...}}`, and last
`{"end": {"lines": N}}`, so that a stream cut short by a failure on the server is
told from a whole one (exit 6). No line grows with the store: a block of a million
addresses is a million short lines, which a client reads as they arrive.

This module reads no store and imports no SQLAlchemy: the CLI rebuilds the
document a server sent (`from_ndjson`) and renders it as direct mode does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from melange.errors import InvalidInput, StoreUnavailable
from melange.transfer_format import FORMAT, SECTION_OF, SECTIONS, VERSION, entities

# The last line: without it a client cannot tell a whole export from one cut off
# (a failure after the response has started can only end the stream early).
END = "end"


def to_ndjson(document: dict[str, Any]) -> Iterator[str]:
    """The document's lines, each ending in a newline: the header, then every entity."""
    header = {"format": document.get("format", FORMAT),
              "version": document.get("version", VERSION)}  # fmt: skip
    return ndjson_lines(entities(document), header)


def ndjson_lines(items: Iterable[dict[str, Any]], header: dict | None = None) -> Iterator[str]:
    """Streamed entities (melange.transfer_format.entities order) as NDJSON lines: the
    header, one line each, the end line; nothing held but the line being written."""
    yield _line(header or {"format": FORMAT, "version": VERSION})
    lines = 1
    for entity in items:
        lines += 1
        yield _line(entity)
    yield _line({END: {"lines": lines}})


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n"


def from_ndjson(lines: Iterable[str | bytes]) -> dict[str, Any]:
    """The document `to_ndjson` wrote; InvalidInput naming the first line that is not."""
    header: dict[str, Any] = {}
    document = None
    block: dict[str, Any] | None = None
    for kind, item in parse_ndjson(lines, header):
        if document is None:
            document = {**header, **{section: [] for section in SECTIONS}}
        if kind == "address":
            assert block is not None
            block["addresses"].append(item)
            continue
        if kind == "block":
            item = block = {**item, "addresses": []}
        document[SECTION_OF[kind]].append(item)
    return document or {**header, **{section: [] for section in SECTIONS}}


def parse_ndjson(lines: Iterable[str | bytes], header: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The entities of an NDJSON export as (kind, item), checked as they are read (so a
    client renders a million addresses without holding them); `header` is filled from the
    first line. InvalidInput naming the first line that is wrong; StoreUnavailable when
    the end line never comes (the server failed mid-way)."""
    seen_block = ended = False
    for number, raw in enumerate(lines, 1):
        text = raw.decode() if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        value = _parse(number, text)
        if not header:
            header.update(_header(number, value))
            continue
        if len(value) != 1 or ended:
            raise InvalidInput(f"line {number}: not one entity, or after the end line")
        ((kind, item),) = value.items()
        if kind == END:
            ended = True
        elif kind == "address" and not seen_block:
            raise InvalidInput(f"line {number}: an address before any block")
        elif kind == "address" or (kind in SECTION_OF and isinstance(item, dict)):
            seen_block = seen_block or kind == "block"
            yield kind, item
        else:
            raise InvalidInput(f"line {number}: unknown entity {kind[:40]!r}")
    if not header:
        raise InvalidInput("the export is empty (no header line)")
    if not ended:
        raise StoreUnavailable("the export ended early (no end line): the server failed mid-way")


def _parse(number: int, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidInput(f"line {number}: not JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"line {number}: not a JSON object")
    return value


def _header(number: int, value: dict[str, Any]) -> dict[str, Any]:
    if value.get("format") != FORMAT or not isinstance(value.get("version"), int):
        raise InvalidInput(f"line {number}: not a {FORMAT} header")
    return {"format": value["format"], "version": value["version"]}
