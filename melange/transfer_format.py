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
SECTIONS = ("policies", "mac_ranges", "blocks", "interfaces")
# Links between entities ride inside them, each key written only when it holds
# something (so a store without any exports exactly what an earlier melange wrote, and
# their files still import): an interface's `allowed_ips` [{cidr, address}], and an
# address's `inside_locals` [{network, cidr, address, created_at}], the NAT mappings
# of which it is the inside global.
# A NAT mapping's CSV columns (at the end of the header, only when there are mappings):
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
    for n, section in enumerate(SECTIONS):
        items = document[section]
        parts.append(f'"{section}": [')
        parts.extend(
            json.dumps(item, sort_keys=True) + ("," if i < len(items) - 1 else "")
            for i, item in enumerate(items)
        )
        parts.append("]" + ("," if n < len(SECTIONS) - 1 else ""))
    parts.append("}")
    return "\n".join(parts) + "\n"


def export_csv(document: dict) -> str:
    """The same content as rows with a `kind` column (lossless, spreadsheet-friendly)."""
    buffer = io.StringIO()
    mappings = list(_nat_rows(document))
    fields = CSV_FIELDS + (NAT_FIELDS if mappings else [])
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in [*_flatten(document), *mappings]:
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
            fields = {k: v for k, v in a.items() if k != "inside_locals"}
            yield {"kind": "address", "network": b["network"], "cidr": b["cidr"], **fields}


def _nat_rows(document: dict) -> Iterator[dict]:
    """The NAT mappings as rows of their own, after every address (CSV is flat)."""
    for b in document["blocks"]:
        for a in b["addresses"]:
            for local in a.get("inside_locals") or []:
                yield {
                    "kind": "nat_mapping",
                    "global_network": b["network"],
                    "global_cidr": b["cidr"],
                    "inside_global": a["address"],
                    "local_network": local["network"],
                    "local_cidr": local["cidr"],
                    "inside_local": local["address"],
                    "created_at": local["created_at"],
                }
