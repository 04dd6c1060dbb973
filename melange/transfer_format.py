"""The export document's format: its name and version, its sections, and its text as
JSON (one entity per line) or CSV (one row per entity, with a `kind` column).

This module reads no store (and imports no SQLAlchemy), so the CLI renders an
export it received through melanged's socket without loading the store's code.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

FORMAT = "melange-export"
VERSION = 1
# The document's sections, in the order they are written and imported.
SECTIONS = ("policies", "mac_ranges", "blocks", "interfaces", "nat_mappings")
# Sections written only when they hold something: a store without NAT mappings exports
# exactly what an earlier melange wrote, and a file without them still imports.
OPTIONAL = frozenset({"nat_mappings"})
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


def export_json(document: dict) -> str:
    """One JSON document, one entity per line (so import can name lines)."""
    parts = ["{", f'"format": {json.dumps(FORMAT)},', f'"version": {VERSION},']
    sections = [s for s in SECTIONS if s not in OPTIONAL or document.get(s)]
    for n, section in enumerate(sections):
        items = document[section]
        parts.append(f'"{section}": [')
        parts.extend(
            json.dumps(item, sort_keys=True) + ("," if i < len(items) - 1 else "")
            for i, item in enumerate(items)
        )
        parts.append("]" + ("," if n < len(sections) - 1 else ""))
    parts.append("}")
    return "\n".join(parts) + "\n"


def export_csv(document: dict) -> str:
    """The same content as rows with a `kind` column (lossless, spreadsheet-friendly)."""
    buffer = io.StringIO()
    fields = CSV_FIELDS + (NAT_FIELDS if document.get("nat_mappings") else [])
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in _flatten(document):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _flatten(document: dict) -> Iterator[dict]:
    """The CSV's rows: a policy's ranges and octets after it, a block's routes after it,
    an interface's allowed IPs after it, every address after every interface, and the
    NAT mappings last (import meets them in that order)."""
    for p in document["policies"]:
        yield {"kind": "policy", "name": p["name"], "description": p["description"]}
        for r in p["unusable_ranges"]:
            yield {"kind": "policy_range", "name": p["name"], **r}
        for octet in p["unusable_octets"]:
            yield {"kind": "policy_octet", "name": p["name"], "octet": octet}
    for m in document["mac_ranges"]:
        yield {"kind": "mac_range", "cidr": m["cidr"]}
    for b in document["blocks"]:
        yield {"kind": "block", **{k: v for k, v in b.items() if k not in ("routes", "addresses")}}
        for r in b["routes"]:
            yield {"kind": "route", "network": b["network"], "cidr": b["cidr"], **r}
    for i in document["interfaces"]:
        yield {"kind": "interface", **{k: v for k, v in i.items() if k != "allowed_ips"}}
        for a in i.get("allowed_ips") or []:
            yield {"kind": "allowed_ip", "vif_id": i["vif_id"], "network": i["network"], **a}
    for b in document["blocks"]:
        for a in b["addresses"]:
            yield {"kind": "address", "network": b["network"], "cidr": b["cidr"], **a}
    for m in document.get("nat_mappings") or []:
        yield {"kind": "nat_mapping", **m}
