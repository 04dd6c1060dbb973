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
from melange.transfer_format import FORMAT, SECTIONS, VERSION

# Each section's line key (a section is a list of these).
KINDS = {"policies": "policy", "mac_ranges": "mac_range", "blocks": "block",
         "interfaces": "interface", "nat_mappings": "nat_mapping"}  # fmt: skip
# The last line: without it a client cannot tell a whole export from one cut off
# (a failure after the response has started can only end the stream early).
END = "end"
SECTION_OF = {kind: section for section, kind in KINDS.items()}


def to_ndjson(document: dict[str, Any]) -> Iterator[str]:
    """The document's lines, each ending in a newline: the header, then every entity."""
    yield _line({"format": document.get("format", FORMAT),
                 "version": document.get("version", VERSION)})  # fmt: skip
    lines = 1
    for section in SECTIONS:
        kind = KINDS[section]
        for item in document.get(section) or ():
            lines += 1 + len(item.get("addresses", ())) if section == "blocks" else 1
            if section != "blocks":
                yield _line({kind: item})
                continue
            yield _line({kind: {k: v for k, v in item.items() if k != "addresses"}})
            for address in item.get("addresses", ()):
                yield _line({"address": address})
    yield _line({END: {"lines": lines}})


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n"


def from_ndjson(lines: Iterable[str | bytes]) -> dict[str, Any]:
    """The document `to_ndjson` wrote; InvalidInput naming the first line that is not."""
    document: dict[str, Any] | None = None
    block: dict[str, Any] | None = None
    ended = False
    for number, raw in enumerate(lines, 1):
        text = raw.decode() if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        value = _parse(number, text)
        if document is None:
            document = _header(number, value)
            continue
        if len(value) != 1 or ended:
            raise InvalidInput(f"line {number}: not one entity, or after the end line")
        ((kind, item),) = value.items()
        if kind == END:
            ended = True
        elif kind == "address":
            if block is None:
                raise InvalidInput(f"line {number}: an address before any block")
            block["addresses"].append(item)
        elif kind in SECTION_OF and isinstance(item, dict):
            if kind == "block":
                block = {**item, "addresses": []}
                item = block
            document[SECTION_OF[kind]].append(item)
        else:
            raise InvalidInput(f"line {number}: unknown entity {kind[:40]!r}")
    if document is None:
        raise InvalidInput("the export is empty (no header line)")
    if not ended:
        raise StoreUnavailable("the export ended early (no end line): the server failed mid-way")
    return document


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
    return {"format": value["format"], "version": value["version"],
            **{section: [] for section in SECTIONS}}  # fmt: skip
