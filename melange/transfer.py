"""Export and import: the whole store (or a network) as one document, and back.

A block is identified by (network, CIDR), which the overlap rules make
unique, so nothing store-specific (ids) is exported and SQLite -> MariaDB ->
SQLite gives identical exports. Import is one transaction that checks every
entity first and reports every problem with its line number; one problem
means nothing is imported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from sqlalchemy import Connection, insert, select

from melange import audit, holds, macranges, policies, routes
from melange import blocks as block_ops
from melange import interfaces as interface_ops
from melange.errors import Conflict, InvalidInput, MelangeError
from melange.exclusions import Exclusions
from melange.models import blocks, interfaces, ip_addresses, mac_ranges
from melange.models import policies as policies_table
from melange.names import require_network
from melange.params import Document, check_text
from melange.records import ip_text, iso
from melange.store import utcnow
from melange.validate import (
    format_mac,
    is_decimal,
    parse_ip,
    parse_mac,
    validate_hostname,
    validate_name,
)

FORMAT = "melange-export"
VERSION = 1
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


# -- export


def export(conn: Connection, *, network: str | None = None) -> dict:
    """Everything (or one network) in a stable order, ready for json.dumps."""
    require_network(conn, network)
    query = select(blocks).order_by(
        blocks.c.network, blocks.c.version, blocks.c.first_addr, blocks.c.prefixlen
    )
    if network is not None:
        query = query.where(blocks.c.network == network)
    block_rows = conn.execute(query).all()
    cidr_of = {row.id: row.cidr for row in block_rows}
    policy_ids = {row.policy_id for row in block_rows if row.policy_id is not None}
    policy_query = select(policies_table).order_by(policies_table.c.name)
    if network is not None:
        policy_query = policy_query.where(policies_table.c.id.in_(policy_ids or {-1}))
    vifs = dict(conn.execute(select(interfaces.c.id, interfaces.c.vif_id)).all())
    out_blocks = []
    for row in block_rows:
        record = block_ops.record(conn, row)
        out_blocks.append(
            {
                "network": row.network,
                "cidr": row.cidr,
                "name": row.name,
                "tenant": row.tenant,
                "type": row.type,
                "gateway": record["gateway"],
                "dns": record["dns"],
                "policy": record["policy"],
                "parent": cidr_of.get(row.parent_id),
                "generator": row.generator,
                "routes": [
                    {"destination": r["destination"], "gateway": r["gateway"]}
                    for r in routes.list_routes(conn, str(row.id))
                ],
                "addresses": [
                    _address(a, row.version, vifs)
                    for a in conn.execute(
                        select(ip_addresses)
                        .where(ip_addresses.c.block_id == row.id)
                        .order_by(ip_addresses.c.address)
                    )
                ],
            }
        )
    iface_query = select(interfaces).order_by(interfaces.c.vif_id)
    if network is not None:
        iface_query = iface_query.where(interfaces.c.network == network)
    return {
        "format": FORMAT,
        "version": VERSION,
        "policies": [_policy(conn, row) for row in conn.execute(policy_query)],
        "mac_ranges": [
            {"cidr": cidr}
            for cidr in conn.execute(
                select(mac_ranges.c.cidr).order_by(mac_ranges.c.first_mac)
            ).scalars()
        ],
        "blocks": out_blocks,
        "interfaces": [
            {
                "vif_id": r.vif_id,
                "network": r.network,
                "device": r.device,
                "tenant": r.tenant,
                "mac": format_mac(r.mac),
            }
            for r in conn.execute(iface_query)
        ],
    }


def _policy(conn: Connection, row) -> dict:
    record = policies.record(conn, row)
    return {k: v for k, v in record.items() if k not in ("blocks", "created_at")}


def _address(row, version: int, vifs: dict[int, str]) -> dict:
    return {
        "address": ip_text(row.address, version),
        "mac": format_mac(row.mac),
        "hostname": row.hostname,
        "interface": vifs.get(row.interface_id),
        "tenant": row.tenant,
        "state": row.state,
        "allocated_at": iso(row.allocated_at),
        "released_at": iso(row.released_at),
        "held_until": iso(row.held_until),
    }


def export_json(document: dict) -> str:
    """One JSON document, one entity per line (so import can name lines)."""
    parts = ["{", f'"format": {json.dumps(FORMAT)},', f'"version": {VERSION},']
    sections = ["policies", "mac_ranges", "blocks", "interfaces"]
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
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
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
        yield {"kind": "interface", **i}
    for b in document["blocks"]:
        for a in b["addresses"]:
            yield {"kind": "address", "network": b["network"], "cidr": b["cidr"], **a}


# -- parsing, with line numbers


def parse(text: str, fmt: str = "melange") -> list[tuple[int, str, dict]]:
    """(line, kind, fields) for every entity of a melange JSON/CSV or NetBox CSV file;
    every text in them is text a parameter could be (no NUL, no lone surrogate)."""
    if fmt == "melange":
        entities = _parse_json(text) if text.lstrip().startswith("{") else _parse_csv(text)
    elif fmt in ("netbox-prefixes", "netbox-addresses"):
        entities = _parse_netbox(text, fmt)
    else:
        raise InvalidInput(
            f"unknown import format {fmt!r} (melange, netbox-prefixes, netbox-addresses)"
        )
    problems = [
        f"line {entry.get('_line', line)}: {error.message}"
        for line, _, item in entities
        for entry in (item, *_nested(item))
        for error in _text_problems(entry)
    ]
    _refuse(problems)
    return entities


def _refuse(problems: list[str]) -> None:
    """One line naming the first 20 problems, each with its line; nothing is imported."""
    if problems:
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        shown = "; ".join(problems[:20]) + more
        raise InvalidInput(f"nothing imported: {len(problems)} problem(s): {shown}")


def _nested(item: dict) -> list[dict]:
    """The addresses and routes listed inside a block (an address keeps its own line)."""
    return [
        entry
        for key in ("addresses", "routes")
        if isinstance(item.get(key), list)
        for entry in item[key]
        if isinstance(entry, dict)
    ]


def _text_problems(entry: dict) -> Iterator[InvalidInput]:
    """Each field of one entity whose text no command would take (its first problem)."""
    for key, value in entry.items():
        for text in value if isinstance(value, list) else (value,):
            if isinstance(text, str):
                try:
                    check_text(text, f"field {str(key)[:40]!r}")
                except InvalidInput as error:
                    yield error
                    break


def _parse_json(text: str) -> list[tuple[int, str, dict]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"line {error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise InvalidInput("not a melange export (its JSON is nested too deeply)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidInput(f"not a melange export (its format is not {FORMAT!r})")
    if document.get("version") != VERSION:
        raise InvalidInput(f"unsupported export version {document.get('version')!r}")
    lines = _element_lines(text)
    entities: list[tuple[int, str, dict]] = []
    kinds = {
        "policies": "policy",
        "mac_ranges": "mac_range",
        "blocks": "block",
        "interfaces": "interface",
    }
    for section, kind in kinds.items():
        for index, item in enumerate(document.get(section) or []):
            line = lines.get((section, index), 0)
            if not isinstance(item, dict):
                raise InvalidInput(f"line {line}: a {kind} must be an object")
            entities.append((line, kind, item))
    return entities


def _element_lines(text: str) -> dict[tuple[str, int], int]:
    """The line each top-level array element starts on, whatever the formatting."""
    decoder = json.JSONDecoder()
    found: dict[tuple[str, int], int] = {}
    for section in ("policies", "mac_ranges", "blocks", "interfaces"):
        key = text.find(f'"{section}"')
        start = text.find("[", key) if key >= 0 else -1
        if start < 0:
            continue
        pos, index = start + 1, 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                break
            found[(section, index)] = text.count("\n", 0, pos) + 1
            try:
                _, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break
            index += 1
    return found


def _parse_csv(text: str) -> list[tuple[int, str, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "kind" not in reader.fieldnames:
        raise InvalidInput("line 1: a melange CSV export starts with a header that has `kind`")
    grouped: dict[str, dict] = {}
    entities: list[tuple[int, str, dict]] = []
    blocks_by_key: dict[tuple, dict] = {}
    for line, fields in _csv_rows(reader):
        kind = fields.get("kind")
        if kind == "policy":
            item = {
                "name": fields.get("name"),
                "description": fields.get("description"),
                "unusable_ranges": [],
                "unusable_octets": [],
            }
            grouped[fields.get("name")] = item
            entities.append((line, "policy", item))
        elif kind in ("policy_range", "policy_octet"):
            target = grouped.get(fields.get("name"))
            if target is None:
                raise InvalidInput(f"line {line}: {kind} for unknown policy {fields.get('name')!r}")
            if kind == "policy_range":
                target["unusable_ranges"].append(
                    {"offset": fields.get("offset"), "length": fields.get("length")}
                )
            else:
                target["unusable_octets"].append(fields.get("octet"))
        elif kind == "mac_range":
            entities.append((line, "mac_range", {"cidr": fields.get("cidr")}))
        elif kind == "block":
            item = {
                k: fields.get(k)
                for k in (
                    "network",
                    "cidr",
                    "name",
                    "tenant",
                    "type",
                    "gateway",
                    "policy",
                    "parent",
                    "generator",
                )
            }
            item["dns"] = (fields.get("dns") or "").split()
            item["routes"], item["addresses"] = [], []
            blocks_by_key[(item["network"], item["cidr"])] = item
            entities.append((line, "block", item))
        elif kind in ("route", "address"):
            owner = blocks_by_key.get((fields.get("network"), fields.get("cidr")))
            if owner is None:
                raise InvalidInput(f"line {line}: {kind} for a block not listed before it")
            if kind == "route":
                owner["routes"].append(
                    {"destination": fields.get("destination"), "gateway": fields.get("gateway")}
                )
            else:
                entry = {
                    k: fields.get(k)
                    for k in (
                        "address",
                        "mac",
                        "hostname",
                        "interface",
                        "tenant",
                        "state",
                        "allocated_at",
                        "released_at",
                        "held_until",
                    )
                }
                entry["_line"] = line
                owner["addresses"].append(entry)
        elif kind == "interface":
            entities.append(
                (
                    line,
                    "interface",
                    {k: fields.get(k) for k in ("vif_id", "network", "device", "tenant", "mac")},
                )
            )
        else:
            raise InvalidInput(f"line {line}: unknown kind {kind!r}")
    return entities


def _csv_rows(reader: csv.DictReader) -> Iterator[tuple[int, dict]]:
    """(line, fields) of each row: empty cells are None, cells beyond the header dropped.
    The line is where the row starts (a quoted newline in a cell continues it)."""
    try:
        for row in reader:
            fields = {k: (v if v != "" else None) for k, v in row.items() if k}
            inner = sum(v.count("\n") for v in fields.values() if isinstance(v, str))
            yield reader.line_num - inner, fields
    except csv.Error as error:
        raise InvalidInput(f"line {reader.line_num}: not valid CSV ({error})") from None


def _int(value) -> int:
    """A whole number from JSON (a number) or CSV (decimal digits, maybe a sign), as
    `policy add-range/add-octet` take it: no 2.5, no true, no '1_000'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and is_decimal(value.removeprefix("-")):
        return int(value)
    raise InvalidInput(f"{value!r} is not a whole number")


def _parse_netbox(text: str, fmt: str) -> list[tuple[int, str, dict]]:
    """NetBox's CSV exports: prefixes become blocks (nested ones subnets), addresses
    become allocations in the deepest block of their VRF that holds them."""
    reader = csv.DictReader(io.StringIO(text))
    column = "prefix" if fmt == "netbox-prefixes" else "address"
    if not reader.fieldnames or column not in reader.fieldnames:
        raise InvalidInput(f"line 1: a NetBox {column} export needs a `{column}` column")
    entities = []
    for row in reader:
        network = (row.get("vrf") or "").strip() or None
        tenant = (row.get("tenant") or "").strip() or None
        if fmt == "netbox-prefixes":
            entities.append(
                (
                    reader.line_num,
                    "netbox_prefix",
                    {
                        "cidr": (row.get("prefix") or "").strip(),
                        "network": _tag(network),
                        "tenant": _token(tenant),
                        "status": row.get("status"),
                    },
                )
            )
        else:
            entities.append(
                (
                    reader.line_num,
                    "netbox_address",
                    {
                        "address": (row.get("address") or "").strip(),
                        "network": _tag(network),
                        "tenant": _token(tenant),
                        "hostname": (row.get("dns_name") or "").strip() or None,
                    },
                )
            )
    return entities


def _tag(name: str | None) -> str | None:
    """A NetBox VRF name as a melange network name (dnsmasq tag characters only)."""
    if name is None:
        return None
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63].strip("-") or None


def _token(name: str | None) -> str | None:
    if name is None:
        return None
    import re

    return re.sub(r"[^A-Za-z0-9_.@:-]", "-", name)[:255].strip("-") or None


# -- import


def import_entities(
    conn: Connection,
    entities: list[tuple[int, str, dict]],
    *,
    progress: Callable[[int, int], None] | None = None,
    hold_seconds: int = holds.DEFAULT_HOLD_SECONDS,
) -> dict:
    """Create everything in this transaction; collect every error with its line, then fail
    (the caller's transaction rolls back) if there was any. A held address without its
    `held_until` is held for `hold_seconds` from its release."""
    errors: list[str] = []
    block_ids: dict[tuple, int] = {}
    counts = {
        "policies": 0,
        "mac_ranges": 0,
        "blocks": 0,
        "interfaces": 0,
        "addresses": 0,
        "routes": 0,
    }
    pending_addresses: list[tuple[int, int, dict]] = []
    order = {
        "policy": 0,
        "mac_range": 1,
        "block": 2,
        "netbox_prefix": 2,
        "interface": 3,
        "netbox_address": 4,
    }
    ordered = sorted(entities, key=lambda e: (order.get(e[1], 9), _block_depth(e), e[0]))
    for done, (line, kind, item) in enumerate(ordered, start=1):
        try:
            if kind == "policy":
                _import_policy(conn, item)
                counts["policies"] += 1
            elif kind == "mac_range":
                macranges.create(conn, item["cidr"])
                counts["mac_ranges"] += 1
            elif kind in ("block", "netbox_prefix"):
                key, block_id = _import_block(conn, item, block_ids)
                block_ids[key] = block_id
                counts["blocks"] += 1
                for route in item.get("routes") or []:
                    routes.add(conn, str(block_id), route["destination"], gateway=route["gateway"])
                    counts["routes"] += 1
                for entry in item.get("addresses") or []:
                    pending_addresses.append((entry.pop("_line", line), block_id, entry))
            elif kind == "interface":
                _import_interface(conn, item)
                counts["interfaces"] += 1
            elif kind == "netbox_address":
                block_id = _netbox_block(conn, item)
                pending_addresses.append(
                    (
                        line,
                        block_id,
                        {
                            "address": item["address"].split("/")[0],
                            "hostname": item["hostname"],
                            "tenant": item["tenant"],
                        },
                    )
                )
        except MALFORMED as error:
            errors.append(_problem(line, kind, error))
        if progress is not None:
            progress(done, len(ordered))
    errors.extend(_import_addresses(conn, pending_addresses, hold_seconds))
    counts["addresses"] = len(pending_addresses)
    _refuse(errors)
    return counts


# A rule broken, or an entity of the wrong shape (a field missing, a number where a
# list belongs): each a problem of its line, never an internal error.
MALFORMED = (MelangeError, KeyError, TypeError, ValueError, AttributeError)


def _problem(line: int, kind: str, error: Exception) -> str:
    if isinstance(error, MelangeError):
        return f"line {line}: {error.message}"
    return f"line {line}: malformed {kind} ({type(error).__name__}: {str(error)[:80]!r})"


def _block_depth(entity: tuple[int, str, dict]) -> tuple[int, int]:
    """Parents before subnets, otherwise the file's order (so a clash is blamed on the later
    line). NetBox prefixes carry no parent: shorter prefixes go first, to nest the rest."""
    _, kind, item = entity
    if kind == "block" and not item.get("parent"):
        return (0, 0)
    cidr = item.get("cidr") if kind in ("block", "netbox_prefix") else None
    try:
        return (1, int(str(cidr).split("/")[1])) if cidr else (0, 0)
    except (IndexError, ValueError):
        return (1, 0)


def _import_policy(conn: Connection, item: dict) -> None:
    policies.create(conn, item["name"], description=item.get("description"))
    for r in item.get("unusable_ranges") or []:
        policies.add_range(conn, item["name"], offset=_int(r["offset"]), length=_int(r["length"]))
    for octet in item.get("unusable_octets") or []:
        policies.add_octet(conn, item["name"], _int(octet))


def _import_block(conn: Connection, item: dict, known: dict[tuple, int]) -> tuple[tuple, int]:
    parent = None
    if item.get("parent"):
        parent_id = known.get((item.get("network"), item["parent"]))
        if parent_id is None:
            raise Conflict(f"parent {item['parent']} is not in the import")
        parent = str(parent_id)
    elif item.get("status") is not None:  # NetBox: nest inside the deepest imported prefix
        parent = _netbox_parent(conn, item, known)
    created = block_ops.create(
        conn,
        item["cidr"],
        name=item.get("name"),
        network=None if parent else item.get("network"),
        tenant=item.get("tenant"),
        type=item.get("type"),
        gateway=item.get("gateway"),
        dns=item.get("dns") or [],
        policy=item.get("policy"),
        parent=parent,
        generator=item.get("generator"),
    )
    return (item.get("network"), created["cidr"]), created["id"]


def _netbox_parent(conn: Connection, item: dict, known: dict[tuple, int]) -> str | None:
    import netaddr

    from melange.validate import parse_cidr

    net = parse_cidr(item["cidr"])
    best = None
    for (network, cidr), block_id in known.items():
        if network == item.get("network") and cidr != str(net):
            candidate = netaddr.IPNetwork(cidr)
            if candidate.version == net.version and net in candidate:
                if best is None or candidate.prefixlen > best[0]:
                    best = (candidate.prefixlen, block_id)
    return str(best[1]) if best else None


def _netbox_block(conn: Connection, item: dict) -> int:
    """The deepest block of the address's VRF (network) that holds it."""
    value = parse_ip(item["address"].split("/")[0])
    query = select(blocks.c.id, blocks.c.prefixlen).where(
        blocks.c.version == value.version,
        blocks.c.first_addr <= int(value),
        blocks.c.last_addr >= int(value),
    )
    network = item.get("network")
    query = query.where(blocks.c.network == network if network else blocks.c.network.is_(None))
    rows = conn.execute(query.order_by(blocks.c.prefixlen.desc())).all()
    if not rows:
        raise InvalidInput(f"no block of network {network or '(none)'} holds {value}")
    return rows[0].id


def _import_interface(conn: Connection, item: dict) -> None:
    """An exported interface, under `interface create`'s rules, with its own MAC."""
    interface_ops.add(
        conn,
        item["vif_id"],
        network=item["network"],
        device=item.get("device"),
        tenant=item.get("tenant"),
        mac=parse_mac(item["mac"]),
    )


def _when(text: str | None) -> datetime | None:
    """An exported time (ISO 8601, UTC); naive UTC as the store keeps it."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=None)


def _import_addresses(
    conn: Connection, pending: list[tuple[int, int, dict]], hold_seconds: int
) -> list[str]:
    """Insert addresses as they were (state, times), then recompute each block's free space."""
    errors: list[str] = []
    rows: list[dict] = []
    seen: set[tuple[int, int]] = set()
    active_macs: set[tuple[int, int]] = set()
    vifs = dict(conn.execute(select(interfaces.c.vif_id, interfaces.c.id)).all())
    block_rows = {r.id: r for r in conn.execute(select(blocks)).all()}
    parents = {r.parent_id for r in block_rows.values()}
    exclusions: dict[int, Exclusions] = {}
    now = utcnow()
    for line, block_id, entry in pending:
        try:
            block = block_rows[block_id]
            value = parse_ip(entry["address"])
            block_ops.refuse_parent(block, block_id in parents)
            block_ops.check_inside(block, value)
            if block_id not in exclusions:
                exclusions[block_id] = block_ops.exclusions_for(conn, block)
            exclusions[block_id].refuse(int(value), str(value))
            if (block_id, int(value)) in seen:
                raise Conflict(f"{value} is listed twice in block {block.cidr}")
            state = entry.get("state") or "allocated"
            if state not in ("allocated", "held"):
                raise InvalidInput(f"state must be allocated or held, not {state!r}")
            mac = parse_mac(entry["mac"]) if entry.get("mac") else None
            if mac is not None and state == "allocated":
                if (block_id, mac) in active_macs:
                    raise Conflict(f"MAC {format_mac(mac)} holds two addresses in {block.cidr}")
                active_macs.add((block_id, mac))
            hostname = validate_hostname(entry["hostname"]) if entry.get("hostname") else None
            tenant = validate_name(entry["tenant"], "tenant") if entry.get("tenant") else None
            vif = entry.get("interface")
            if vif is not None and (not isinstance(vif, str) or vif not in vifs):
                raise InvalidInput(f"unknown interface {vif!r}")
            released = _when(entry.get("released_at"))
            if state == "held" and released is None:
                released = now
            held_until = _when(entry.get("held_until"))
            if state == "held" and held_until is None:
                held_until = holds.ends(released, hold_seconds)
            seen.add((block_id, int(value)))
            rows.append(
                {
                    "block_id": block_id,
                    "address": int(value),
                    "mac": mac,
                    "active_mac": mac if state == "allocated" else None,
                    "hostname": hostname,
                    "interface_id": vifs.get(vif),
                    "tenant": tenant,
                    "state": state,
                    "allocated_at": _when(entry.get("allocated_at")) or now,
                    "released_at": released if state == "held" else None,
                    "held_until": held_until if state == "held" else None,
                }
            )
        except MALFORMED as error:
            errors.append(_problem(line, "address", error))
    taken = {
        (r.block_id, r.address)
        for r in conn.execute(
            select(ip_addresses.c.block_id, ip_addresses.c.address).where(
                ip_addresses.c.block_id.in_({b for _, b, _ in pending} or {-1})
            )
        )
    }
    clash = [r for r in rows if (r["block_id"], r["address"]) in taken]
    for r in clash[:5]:
        errors.append(
            f"{ip_text(r['address'], block_rows[r['block_id']].version)} is already "
            f"allocated in {block_rows[r['block_id']].cidr}"
        )
    if errors or not rows:
        return errors
    for start in range(0, len(rows), 5000):
        conn.execute(insert(ip_addresses), rows[start : start + 5000])
    for block_id in sorted({r["block_id"] for r in rows}):
        block = block_ops.resolve(conn, str(block_id))
        allocated = sum(1 for r in rows if r["block_id"] == block_id and r["state"] == "allocated")
        block_ops.touch(conn, block_id, allocated=allocated)
        block_ops.free_space(conn, block).rebuild()
        audit.note(block_id, [r["address"] for r in rows if r["block_id"] == block_id])
    return errors


def import_text(
    store,
    *,
    text: Annotated[str, Document()],
    format: str = "melange",  # noqa: A002  (the CLI's option name)
    source: str = "-",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """`melange import FILE`: parse, then one audited write transaction."""
    entities = parse(text, format)

    def change(conn):
        with audit.noting():
            result = import_entities(
                conn, entities, progress=progress, hold_seconds=store.release_hold
            )
            audit.record(
                conn, actor=audit.who()[0], via="import", command="import",
                params={"file": source, "format": format}, result=result,
            )  # fmt: skip
        return result

    return store.write(change)
