"""Import: a file's entities into the store, in one transaction, all or nothing.

Every entity goes through the command that would create it (`policy create`,
`block create`, `route add`, `interface create`'s checks), so an import can make
nothing a user could not; addresses are checked and inserted together
(melange.transfer_addresses). Every problem is collected with its line, and one
problem means nothing is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from sqlalchemy import Connection, select

from melange import audit, holds, macranges, policies, routes
from melange import blocks as block_ops
from melange import interfaces as interface_ops
from melange.errors import Conflict, InvalidInput
from melange.models import blocks
from melange.params import Document
from melange.transfer_addresses import import_addresses
from melange.transfer_links import Allowance, import_links
from melange.transfer_parse import MALFORMED, Entity, Parsed, Problems, problem, read, refuse
from melange.validate import is_decimal, parse_cidr, parse_ip, parse_mac

COUNTED = ("policies", "mac_ranges", "blocks", "interfaces", "addresses", "routes",
           "allowed_ips", "nat_mappings")  # fmt: skip
# Dependencies first: policies before the blocks naming them, blocks before the
# interfaces taking addresses in their network; addresses come after them all.
ORDER = {"policy": 0, "mac_range": 1, "block": 2, "netbox_prefix": 2, "interface": 3,
         "nat_mapping": 5}  # fmt: skip


def import_text(
    store,
    *,
    text: Annotated[str, Document()] = "",
    format: str = "melange",  # noqa: A002  (the CLI's option name)
    source: str = "-",
    progress: Callable[[int, int], None] | None = None,
    chunks: Iterable[str] | None = None,
) -> dict:
    """`melange import FILE`: read the file (given whole as `text`, or in `chunks` as
    it arrives: an upload, a large file), then one audited write transaction. The file
    is read before the transaction starts, its addresses spooled to disk, so memory
    stays the same whatever its size and a slow upload holds no lock."""
    with read(chunks if chunks is not None else (text,), format) as parsed:

        def change(conn):
            with audit.noting():
                result = import_entities(
                    conn, parsed, progress=progress, hold_seconds=store.release_hold
                )
                audit.record(
                    conn, actor=audit.who()[0], via="import", command="import",
                    params={"file": source, "format": format}, result=result,
                )  # fmt: skip
            return result

        result = store.write(change)
    store.loaded()
    return result


@dataclass
class _Import:
    """What one import has made so far: counts, the blocks it created (by their index
    among the file's entities, and by (network, CIDR): subnets name their parent by
    CIDR), and the allowed IPs and NAT mappings left for last."""

    conn: Connection
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    block_ids: dict[tuple, int] = field(default_factory=dict)
    made: dict[int, int] = field(default_factory=dict)  # entity index -> block id
    allowances: list[Allowance] = field(default_factory=list)
    mappings: list[tuple[int, dict]] = field(default_factory=list)


def import_entities(
    conn: Connection,
    parsed: Parsed,
    *,
    progress: Callable[[int, int], None] | None = None,
    hold_seconds: int = holds.DEFAULT_HOLD_SECONDS,
) -> dict:
    """Create everything in this transaction; collect every error with its line, then fail
    (the caller's transaction rolls back) if there was any. A held address without its
    `held_until` is held for `hold_seconds` from its release. `progress(done, total)`
    counts the entities made, then starts again from (0, total) for the addresses written."""
    run = _Import(conn)
    errors = Problems()
    entities = parsed.entities
    ordered = sorted(range(len(entities)), key=lambda i: _order(entities[i]))
    for done, index in enumerate(ordered, start=1):
        line, kind, item = entities[index]
        try:
            importer = _IMPORTERS.get(kind)
            if importer is not None:
                made = importer(run, line, item)
                if made is not None:
                    run.made[index] = made
        except MALFORMED as error:
            errors.append(problem(line, kind, error))
        if progress is not None:
            progress(done, len(ordered))
    pending = _placed(run, parsed.addresses, errors)
    run.counts["addresses"] = import_addresses(
        conn, pending, hold_seconds, errors, progress, parsed.addresses.count
    )
    if not errors:  # links name addresses: only once every address is in
        counts, problems = import_links(conn, run.allowances, run.mappings)
        run.counts.update(counts)
        errors.extend(problems)
    refuse(errors)
    return run.counts


def _placed(run: _Import, spooled: Iterable[Any], errors: Problems) -> Iterator[tuple]:
    """The spooled addresses as (line, block id, fields): an exported one in the block it
    was listed in (none if that block was refused), a NetBox one in the deepest block of
    its VRF that holds it."""
    for line, owner, entry in spooled:
        if owner >= 0:
            if owner in run.made:
                yield line, run.made[owner], entry
            continue
        try:
            block_id = _netbox_block(run.conn, entry)
            fields = {
                "address": entry["address"].split("/")[0],
                "hostname": entry["hostname"],
                "tenant": entry["tenant"],
            }
        except MALFORMED as error:
            errors.append(problem(line, "netbox_address", error))
            continue
        yield line, block_id, fields


def _order(entity: Entity) -> tuple:
    return (ORDER.get(entity[1], 9), _block_depth(entity), entity[0])


def _block_depth(entity: Entity) -> tuple[int, int]:
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


# -- one entity each


def _policy(run: _Import, line: int, item: dict) -> None:
    conn = run.conn
    policies.create(conn, item["name"], description=item.get("description"))
    for r in item.get("unusable_ranges") or []:
        policies.add_range(conn, item["name"], offset=_int(r["offset"]), length=_int(r["length"]))
    for octet in item.get("unusable_octets") or []:
        policies.add_octet(conn, item["name"], _int(octet))
    run.counts["policies"] += 1


def _int(value) -> int:
    """A whole number from JSON (a number) or CSV (decimal digits, maybe a sign), as
    `policy add-range/add-octet` take it: no 2.5, no true, no '1_000'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and is_decimal(value.removeprefix("-")):
        return int(value)
    raise InvalidInput(f"{value!r} is not a whole number")


def _mac_range(run: _Import, line: int, item: dict) -> None:
    macranges.create(run.conn, item["cidr"])
    run.counts["mac_ranges"] += 1


def _block(run: _Import, line: int, item: dict) -> int:
    """A block (or NetBox prefix) with its routes (its id); its addresses wait until
    every interface they may name exists."""
    key, block_id = _create_block(run.conn, item, run.block_ids)
    run.block_ids[key] = block_id
    run.counts["blocks"] += 1
    for route in item.get("routes") or []:
        routes.add(run.conn, str(block_id), route["destination"], gateway=route["gateway"])
        run.counts["routes"] += 1
    if item.get("addresses") is not None:  # a list streams past: anything else is wrong
        raise InvalidInput(f"addresses must be a list, not {type(item['addresses']).__name__}")
    return block_id


def _create_block(conn: Connection, item: dict, known: dict[tuple, int]) -> tuple[tuple, int]:
    parent = None
    if item.get("parent"):
        parent_id = known.get((item.get("network"), item["parent"]))
        if parent_id is None:
            raise Conflict(f"parent {item['parent']} is not in the import")
        parent = str(parent_id)
    elif item.get("status") is not None:  # NetBox: nest inside the deepest imported prefix
        parent = _netbox_parent(item, known)
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
        domain=item.get("domain"),
    )
    return (item.get("network"), created["cidr"]), created["id"]


def _netbox_parent(item: dict, known: dict[tuple, int]) -> str | None:
    """The deepest prefix of the same VRF imported so far that holds this one."""
    net = parse_cidr(item["cidr"])
    best: tuple[int, int] | None = None
    for (network, cidr), block_id in known.items():
        if network == item.get("network") and cidr != str(net):
            candidate = parse_cidr(cidr)
            if candidate.version == net.version and net in candidate:
                if best is None or candidate.prefixlen > best[0]:
                    best = (candidate.prefixlen, block_id)
    return str(best[1]) if best else None


def _interface(run: _Import, line: int, item: dict) -> None:
    """An exported interface, under `interface create`'s rules, with its own MAC; its
    allowed IPs wait for the addresses they name."""
    interface_id = interface_ops.add(
        run.conn,
        item["vif_id"],
        network=item["network"],
        device=item.get("device"),
        tenant=item.get("tenant"),
        mac=parse_mac(item["mac"]),
    )
    run.counts["interfaces"] += 1
    for entry in item.get("allowed_ips") or []:
        allowance = (entry.get("_line", line), interface_id, item["vif_id"], item["network"], entry)
        run.allowances.append(allowance)


def _nat_mapping(run: _Import, line: int, item: dict) -> None:
    """A NAT mapping, left for after the addresses it names."""
    run.mappings.append((line, item))


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


_IMPORTERS: dict[str, Callable[[_Import, int, dict], int | None]] = {
    "policy": _policy,
    "mac_range": _mac_range,
    "block": _block,
    "netbox_prefix": _block,
    "interface": _interface,
    "nat_mapping": _nat_mapping,
}
