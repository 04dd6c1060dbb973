"""The export document's format: its name and version, its sections, and its text as
JSON (one entity per line) or CSV (one row per entity, with a `kind` column).

This module reads no store (and imports no SQLAlchemy), so the CLI renders an
export it received through melanged's socket without loading the store's code.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator

FORMAT = "melange-export"
VERSION = 1
# The document's sections, in the order they are written and imported.
SECTIONS = ("policies", "mac_ranges", "blocks", "interfaces", "nat_mappings")
# Sections written only when they hold something: a store without NAT mappings exports
# exactly what an earlier melange wrote, and a file without them still imports.
OPTIONAL = frozenset({"nat_mappings"})
# The column of a block's DNS domain: in the header only when a block has one, so that
# a store without domains exports exactly what an earlier melange wrote.
DOMAIN_FIELDS = ["domain"]
# A NAT mapping's columns (at the end of a CSV's header, only when there are mappings):
# each side as (network, CIDR) of its block, and the address.
NAT_FIELDS = [
    "global_network",
    "global_cidr",
    "inside_global",
    "local_network",
    "local_cidr",
    "inside_local",
    "created_at",
]
CSV_FIELDS = [
    "kind",
    "network",
    "cidr",
    "name",
    "tenant",
    "type",
    "gateway",
    "dns",
    "policy",
    "parent",
    "generator",
    "address",
    "mac",
    "hostname",
    "interface",
    "state",
    "allocated_at",
    "released_at",
    "held_until",
    "device",
    "description",
    "offset",
    "length",
    "octet",
    "destination",
    "vif_id",
]


# Each section's entity key: an export streams as one {kind: item} per entity
# (melange.transfer_stream writes them as NDJSON lines), a block's addresses as
# {"address": ...} entities right after the block (which comes without them).
KINDS = {"policies": "policy", "mac_ranges": "mac_range", "blocks": "block",
         "interfaces": "interface", "nat_mappings": "nat_mapping"}  # fmt: skip
SECTION_OF = {kind: section for section, kind in KINDS.items()}
Write = Callable[[str], object]


def entities(document: dict) -> Iterator[dict]:
    """A whole document as the entities a streamed export hands on, in their order."""
    for section in SECTIONS:
        kind = KINDS[section]
        for item in document.get(section) or ():
            if section != "blocks":
                yield {kind: item}
                continue
            yield {kind: {k: v for k, v in item.items() if k != "addresses"}}
            for address in item.get("addresses", ()):
                yield {"address": address}


def export_json(document: dict) -> str:
    """One JSON document, one entity per line (so import can name lines)."""
    parts: list[str] = []
    writer = JsonWriter(parts.append)
    for entity in entities(document):
        writer(entity)
    writer.finish()
    return "".join(parts)


class JsonWriter:
    """export_json's text written as the entities arrive, in constant memory: a block's
    line (keys sorted, so "addresses" first) is opened when the block comes, its addresses
    follow, and its other fields close it. Each item's trailing comma waits for the next
    entity, and the NAT section is written only when one arrives (as export_json did)."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.section: str | None = None
        self.block: dict | None = None  # the open block line's other fields
        self.addresses = 0
        write("{\n" + f'"format": {json.dumps(FORMAT)},\n"version": {VERSION},')
        self.pending = "\n"  # what goes before the next item: a comma, a newline

    def __call__(self, entity: dict) -> None:
        ((kind, item),) = entity.items()
        if kind == "address":
            self.write((", " if self.addresses else "") + json.dumps(item, sort_keys=True))
            self.addresses += 1
            return
        self._close_block()
        self._enter(SECTION_OF[kind])
        if kind == "block":
            self.write(self.pending + '{"addresses": [')
            self.block, self.addresses = item, 0
        else:
            self.write(self.pending + json.dumps(item, sort_keys=True))
        self.pending = ",\n"

    def _close_block(self) -> None:
        if self.block is not None:
            rest = json.dumps(self.block, sort_keys=True)
            self.write("]" + (", " + rest[1:] if rest != "{}" else "}"))
            self.block = None

    def _enter(self, section: str | None) -> None:
        """Open every section up to `section` (None: all that are always written)."""
        start = 0 if self.section is None else SECTIONS.index(self.section) + 1
        stop = len(SECTIONS) if section is None else SECTIONS.index(section) + 1
        if self.section == section:
            return
        for name in SECTIONS[start:stop]:
            if name in OPTIONAL and name != section:
                continue
            if self.section is not None:
                self.write("\n],")
            self.write(f'\n"{name}": [')
            self.section, self.pending = name, "\n"

    def finish(self) -> None:
        self._close_block()
        self._enter(None)
        self.write("\n]\n}\n")


def export_csv(document: dict) -> str:
    """The same content as rows with a `kind` column (lossless, spreadsheet-friendly)."""
    parts: list[str] = []
    writer = CsvWriter(parts.append)
    for entity in entities(document):
        writer(entity)
    writer.finish()
    return "".join(parts)


class CsvWriter:
    """export_csv's text from entities in streamed order, in constant memory. The CSV's
    order differs (every address after every interface, NAT mappings last, their columns
    in the header only when there are some), so rows wait in temporary files (in memory
    while small) and are written, header first, at the end."""

    def __init__(self, write: Write) -> None:
        import tempfile

        self.write = write
        self.spills = [tempfile.SpooledTemporaryFile(8 << 20, "w+", encoding="utf-8")
                       for _ in range(3)]  # fmt: skip
        self.block: dict = {}
        self.nat = False
        self.domains = False

    def __call__(self, entity: dict) -> None:
        ((kind, item),) = entity.items()
        if kind == "block":
            self.block = item
            self.domains = self.domains or item.get("domain") is not None
        spill = {"address": 1, "nat_mapping": 2}.get(kind, 0)
        self.nat = self.nat or kind == "nat_mapping"
        for row in _rows(kind, item, self.block):
            self.spills[spill].write(json.dumps(row) + "\n")

    def finish(self) -> None:
        buffer = io.StringIO()
        fields = CSV_FIELDS + (DOMAIN_FIELDS if self.domains else []) + (
            NAT_FIELDS if self.nat else [])
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for spill in self.spills:
            spill.seek(0)
            for line in spill:
                writer.writerow({k: _cell(v) for k, v in json.loads(line).items()})
                if buffer.tell() > 1 << 16:
                    self.write(buffer.getvalue())
                    buffer.seek(0)
                    buffer.truncate()
            spill.close()
        self.write(buffer.getvalue())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _rows(kind: str, item: dict, block: dict) -> Iterator[dict]:
    """One entity's CSV rows: a policy's ranges and octets after it, a block's routes
    after it, an interface's allowed IPs after it; an address names its block."""
    if kind == "policy":
        yield {"kind": "policy", "name": item["name"], "description": item["description"]}
        for r in item["unusable_ranges"]:
            yield {"kind": "policy_range", "name": item["name"], **r}
        for octet in item["unusable_octets"]:
            yield {"kind": "policy_octet", "name": item["name"], "octet": octet}
    elif kind == "mac_range":
        yield {"kind": "mac_range", "cidr": item["cidr"]}
    elif kind == "block":
        yield {"kind": "block", **{k: v for k, v in item.items() if k != "routes"}}
        for r in item["routes"]:
            yield {"kind": "route", "network": item["network"], "cidr": item["cidr"], **r}
    elif kind == "interface":
        yield {"kind": "interface", **{k: v for k, v in item.items() if k != "allowed_ips"}}
        for a in item.get("allowed_ips") or []:
            yield {"kind": "allowed_ip", "vif_id": item["vif_id"], "network": item["network"],
                   **a}  # fmt: skip
    elif kind == "address":
        yield {"kind": "address", "network": block["network"], "cidr": block["cidr"], **item}
    else:
        yield {"kind": "nat_mapping", **item}
