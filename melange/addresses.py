"""Allocated addresses: allocation, lookup, update, release and restore."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from melange import audit, dns, generators, holds, natlinks
from melange import blocks as block_ops
from melange.clock import utcnow
from melange.errors import Conflict, Exhausted, InvalidInput, NotFound
from melange.locking import lock_block
from melange.names import require_network
from melange.paging import BadCursor, Page
from melange.prepared import Prepared
from melange.records import address_record, block_label, ip_text, iso, label
from melange.subnets import PAGE
from melange.validate import (
    MAX_COUNT,
    format_mac,
    ip_value,
    parse_ip,
    parse_mac,
    validate_count,
    validate_hostname,
    validate_name,
)

if TYPE_CHECKING:  # SQLAlchemy is imported where a statement is built (melange.lean)
    import netaddr
    from sqlalchemy import Connection

INSERT_BATCH = 5000
MACS_AT_ONCE = 16  # MACs looked up by one statement of `active_macs`


def _columns():
    """The columns of an address's record: its row and its block's (see `_joined`)."""
    from sqlalchemy import select

    from melange.models import blocks, interfaces, ip_addresses

    return select(
        ip_addresses,
        blocks.c.version.label("block_version"),
        blocks.c.name.label("block_name"),
        blocks.c.cidr.label("block_cidr"),
        blocks.c.network.label("block_network"),
        interfaces.c.vif_id,
    )


def _joined():
    """Addresses with the block columns their records need."""
    from melange.models import blocks, interfaces, ip_addresses

    IP = ip_addresses.c

    return (
        _columns()
        .join(blocks, blocks.c.id == IP.block_id)
        .outerjoin(interfaces, interfaces.c.id == IP.interface_id)
    )


def _statements() -> dict:
    """The statements of the allocation and lookup paths, built on first use."""
    from sqlalchemy import bindparam, delete, insert, select, update

    from melange.models import blocks, ip_addresses

    IP = ip_addresses.c
    found = {
        "by_active_mac": _joined().where(
            IP.block_id == bindparam("block_id"), IP.active_mac == bindparam("mac")
        ),
        "expired": _expired(),
        "active_macs": select(IP.active_mac).where(
            IP.block_id == bindparam("block_id"),
            IP.active_mac.in_([bindparam(f"mac{i}") for i in range(MACS_AT_ONCE)]),
        ),
        "insert_one": insert(ip_addresses).values(
            {name: bindparam(name) for name in _INSERT_COLUMNS}
        ),
        "delete": delete(ip_addresses).where(IP.id == bindparam("id")),
        "by_id": _joined().where(IP.id == bindparam("id")),
        "hold": update(ip_addresses)
        .where(IP.id == bindparam("id"))
        .values(
            state="held",
            active_mac=None,
            dns_name=None,
            dns_version=None,
            released_at=bindparam("released_at"),
            held_until=bindparam("held_until"),
        ),
    }
    for in_block in (False, True):
        found[f"find{'.in_block' if in_block else ''}"] = _joined().where(
            IP.address == bindparam("address"),
            blocks.c.version == bindparam("version"),
            *([IP.block_id == bindparam("block_id")] if in_block else []),
            holds.live(IP, bindparam("now")),
        )
    return found


def _expired():
    from sqlalchemy import bindparam, select

    from melange.models import ip_addresses

    IP = ip_addresses.c
    return select(IP.id, IP.address).where(
        IP.block_id == bindparam("block_id"), holds.expired(IP, bindparam("now"))
    )


def _prepared(key: str) -> Prepared:
    return Prepared(lambda: _statements()[key], f"addresses.{key}")


_INSERT_COLUMNS = (
    "block_id", "address", "mac", "active_mac", "hostname", "interface_id", "tenant", "state",
    "allocated_at", "released_at", "held_until", "dns_name", "dns_version",
)  # fmt: skip
_BY_ACTIVE_MAC = _prepared("by_active_mac")
_EXPIRED = _prepared("expired")
_ACTIVE_MACS = _prepared("active_macs")
_INSERT_ONE = _prepared("insert_one")
_FIND = {
    in_block: _prepared(f"find{'.in_block' if in_block else ''}") for in_block in (False, True)
}
_DELETE = _prepared("delete")
_BY_ID = _prepared("by_id")
_HOLD = _prepared("hold")


def reclaim_expired(conn: Connection, block, space) -> list[int]:
    """Expired holds become free space again, in the caller's transaction; the addresses."""
    expired = _EXPIRED.all(conn, block_id=block.id, now=utcnow())
    if not expired:
        return []
    from sqlalchemy import delete

    from melange.models import ip_addresses

    IP = ip_addresses.c
    conn.execute(delete(ip_addresses).where(IP.id.in_([row.id for row in expired])))
    space.give_back(row.address for row in expired)
    return [row.address for row in expired]


def _interface_id(conn: Connection, vif: str) -> tuple[int, int]:
    from sqlalchemy import select

    from melange.models import interfaces

    row = conn.execute(
        select(interfaces.c.id, interfaces.c.mac).where(interfaces.c.vif_id == vif)
    ).first()
    if row is None:
        raise NotFound(f"no interface {vif!r}")
    return row.id, row.mac


@dataclass(frozen=True)
class _Request:
    """An allocation's arguments, checked and parsed before the store is read, so a
    usage error (2) wins over a missing block (3) whatever else is wrong."""

    count: int
    mac: int | None
    address: netaddr.IPAddress | None
    hostname: str | None
    tenant: str | None


def parse_request(
    mac: str | None,
    address: str | None,
    count: int | None,
    hostname: str | None,
    tenant: str | None,
) -> _Request:
    """The checked form of `allocate`'s arguments (see `_Request`); also the batched
    path's (melange.batch_allocation)."""
    if count is not None and (mac is not None or address is not None or hostname is not None):
        raise InvalidInput("--count cannot be combined with --mac, --address or --hostname")
    checked_count = validate_count(count) if count is not None else 1
    mac_value = parse_mac(mac) if mac is not None else None
    if hostname is not None:
        hostname = validate_hostname(hostname)
    if tenant is not None:
        validate_name(tenant, "tenant")
    wanted = parse_ip(address) if address is not None else None
    return _Request(checked_count, mac_value, wanted, hostname, tenant)


def allocate(
    conn: Connection,
    block: str,
    *,
    mac: str | None = None,
    address: str | None = None,
    count: int | None = None,
    hostname: str | None = None,
    interface: str | None = None,
    tenant: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Hand out addresses from a block under its lock; all of them or none.

    `progress(done, total)` is called after each insert batch, for a caller
    that shows a bar on a terminal.
    """
    request = parse_request(mac, address, count, hostname, tenant)
    row = block_ops.resolve(conn, block, for_update=True)
    interface_id = None
    if interface is not None:
        interface_id, interface_mac = _interface_id(conn, interface)
        if request.mac is None:
            request = replace(request, mac=interface_mac)
    block_ops.refuse_parent(row, row.has_subnets)
    if request.address is not None:
        block_ops.check_inside(row, request.address)
    if request.mac is not None:
        existing = _BY_ACTIVE_MAC.first(conn, block_id=row.id, mac=request.mac)
        if existing is not None:
            asked = _Asked(request.address, request.hostname, interface_id, request.tenant)
            return [_allocated_again(conn, existing, row, asked)]
    named = dns.name_for(conn, row, request.hostname)
    chosen = _choose(conn, row, request)
    rows = _insert(conn, row, chosen, request, interface_id, progress, named)
    block_ops.touch(conn, row.id, allocated=len(rows))
    audit.note(row.id, chosen)
    return new_records(rows, row, interface)


def _choose(conn: Connection, block, request: _Request) -> list[int]:
    """The addresses to hand out, claimed in the block's free space: the one asked for
    (refused when excluded or taken), else what the block's generator picks. Expired
    holds are reclaimed first, since they never block an allocation."""
    space = block_ops.free_space(conn, block)
    reclaim_expired(conn, block, space)
    wanted = request.address
    if wanted is None:
        if request.count > 1:
            _check_capacity(conn, block, request.count)
        generator = generators.load(block.generator)
        asked = generators.Request(count=request.count, mac=request.mac, tenant=request.tenant)
        return generator.choose(block_ops.block_info(block), asked, space)
    space.exclusions.refuse(int(wanted), str(wanted))
    if not space.is_free(int(wanted)):
        from sqlalchemy import select

        from melange.models import ip_addresses

        IP = ip_addresses.c
        state = conn.execute(
            select(IP.state).where(IP.block_id == block.id, IP.address == int(wanted))
        ).scalar()
        raise Conflict(f"{wanted} is already {state or 'taken'} in block {block.cidr}")
    space.claim(int(wanted))
    return [int(wanted)]


def _insert(
    conn: Connection,
    block,
    chosen: list[int],
    request: _Request,
    interface_id: int | None,
    progress: Callable[[int, int], None] | None,
    named: dict | None = None,
) -> list[dict]:
    """Insert the chosen addresses as allocated with one prepared statement, run on the
    driver: once for one address, with the driver's `executemany` in batches of
    INSERT_BATCH for many (reporting `progress` after each); the rows. `named` holds
    the DNS name columns of a single named address (melange.dns)."""
    now = utcnow()
    rows = [address_row(block.id, value, request, interface_id, now, named) for value in chosen]
    if len(rows) == 1:
        _INSERT_ONE.send(conn, **rows[0])
        return rows
    for start in range(0, len(rows), INSERT_BATCH):
        _INSERT_ONE.many(conn, rows[start : start + INSERT_BATCH])
        if progress is not None:
            progress(min(start + INSERT_BATCH, len(rows)), len(rows))
    return rows


def address_row(
    block_id: int, value: int, request: _Request, interface_id: int | None, now: Any,
    named: dict | None,
) -> dict:  # fmt: skip
    """The row of a newly allocated address; `named` its DNS name columns (melange.dns)."""
    return {
        "block_id": block_id,
        "address": value,
        "mac": request.mac,
        "active_mac": request.mac,
        "hostname": request.hostname,
        "interface_id": interface_id,
        "tenant": request.tenant,
        "state": "allocated",
        "allocated_at": now,
        "released_at": None,
        "held_until": None,
        **(named or _NO_NAME),
    }


_NO_NAME = {"dns_name": None, "dns_version": None}


def insert_many(conn: Connection, rows: list[dict]) -> None:
    """Insert rows made by `address_row` with the driver's executemany."""
    _INSERT_ONE.many(conn, rows)


def active_macs(conn: Connection, block_id: int, macs: list[int]) -> set[int]:
    """Which of `macs` hold an allocated address in the block: one statement per
    MACS_AT_ONCE of them (a batch's idempotency check, melange.batch_allocation)."""
    found: set[int] = set()
    for start in range(0, len(macs), MACS_AT_ONCE):
        chunk = macs[start : start + MACS_AT_ONCE]
        padded = chunk + [chunk[0]] * (MACS_AT_ONCE - len(chunk))
        params = {f"mac{i}": mac for i, mac in enumerate(padded)}
        found.update(row.active_mac for row in _ACTIVE_MACS.all(conn, block_id=block_id, **params))
    return found


class _Asked(NamedTuple):
    """What an allocation asked for besides the MAC, to compare with what the MAC has."""

    address: netaddr.IPAddress | None
    hostname: str | None
    interface_id: int | None
    tenant: str | None


def _allocated_again(conn: Connection, existing, block, asked: _Asked) -> dict:
    """A MAC asking again for an address in a block where it has one (idempotent by MAC).

    Never silent about a difference: a new hostname replaces the old one (and
    the hosts file follows, through the block's generation); another address,
    interface or tenant is a conflict, since the address belongs to the other.
    """
    record = address_record(existing)
    holds_it = f"MAC {record['mac']} already holds {record['address']} in block {block.cidr}"
    if asked.address is not None and int(asked.address) != existing.address:
        raise Conflict(holds_it)
    if asked.interface_id is not None and asked.interface_id != existing.interface_id:
        owner = f"interface {existing.vif_id}" if existing.vif_id else "no interface"
        raise Conflict(f"{holds_it} for {owner}; release it first")
    if asked.tenant is not None and asked.tenant != existing.tenant:
        owner = f"tenant {existing.tenant}" if existing.tenant else "no tenant"
        raise Conflict(f"{holds_it} for {owner}; release it first")
    audit.note(block.id, [existing.address])
    if asked.hostname is None or asked.hostname == existing.hostname:
        return record
    from sqlalchemy import update

    from melange.models import ip_addresses

    IP = ip_addresses.c
    named = dns.name_for(conn, block, asked.hostname, existing.id)
    conn.execute(
        update(ip_addresses).where(IP.id == existing.id).values(hostname=asked.hostname, **named)
    )
    block_ops.touch(conn, block.id)
    return {**record, "hostname": asked.hostname, "dns_name": named["dns_name"]}


def _check_capacity(conn: Connection, block, count: int) -> None:
    """Refuse a --count the block cannot hold (5) or too large for one command (2)."""
    free = block_ops.utilization(conn, block)["free"]
    if count > free:
        raise Exhausted(
            f"block {block.cidr} has {free} free addresses, fewer than the {count} asked for"
        )
    if count > MAX_COUNT:
        raise InvalidInput(f"--count {count} is more than the {MAX_COUNT} allowed in one command")


def new_records(rows: list[dict], block, vif: str | None) -> list[dict]:
    """Records of the rows just inserted, without reading them back: one template, N addresses."""
    first = rows[0]
    template = {
        "address": None,
        "block_id": block.id,
        "block": block_label(block),
        "network": block.network,
        "mac": format_mac(first["mac"]),
        "hostname": first["hostname"],
        "dns_name": first["dns_name"],
        "interface": vif,
        "tenant": first["tenant"],
        "state": "allocated",
        "allocated_at": iso(first["allocated_at"]),
        "released_at": None,
        "held_until": None,
    }
    return [{**template, "address": ip_text(row["address"], block.version)} for row in rows]


def find(conn: Connection, address: str, block_ref: str | None):
    """The one live row for ADDRESS (in BLOCK); ambiguity is a usage error."""
    number, version = ip_value(address)
    value = ip_text(number, version)
    params = {"address": number, "version": version, "now": utcnow()}
    if block_ref is not None:
        params["block_id"] = block_ops.resolve(conn, block_ref).id
    rows = _FIND[block_ref is not None].all(conn, **params)
    if not rows:
        where = f" in block {block_ref}" if block_ref is not None else ""
        raise NotFound(f"{value} is not allocated{where}")
    if len(rows) > 1:
        names = ", ".join(label(r.block_name, r.block_cidr) for r in rows)
        raise InvalidInput(f"{value} is in several blocks ({names}); choose one with --block")
    return rows[0]


def in_use(conn: Connection, address: str) -> bool:
    """Whether ADDRESS is in use in some block: allocated, or held (what `find` finds)."""
    number, version = ip_value(address)
    return bool(_FIND[False].all(conn, address=number, version=version, now=utcnow()))


def find_locked(conn: Connection, address: str, block_ref: str | None):
    """`find`, then lock the address's block and read the row again as of the lock."""
    row = find(conn, address, block_ref)
    lock_block(conn, row.block_id)
    audit.note(row.block_id, [row.address])
    return find(conn, address, str(row.block_id))


def show(conn: Connection, address: str, block: str | None = None) -> dict:
    """An address's record with its NAT links (`inside_globals`, `inside_locals`)."""
    row = find(conn, address, block)
    return {**address_record(row), **natlinks.of_address(conn, row)}


def list_addresses(
    conn: Connection,
    *,
    block: str | None = None,
    network: str | None = None,
    mac: str | None = None,
    interface: str | None = None,
    released: bool = False,
    page: Page | None = None,
) -> list[dict]:
    """Allocated addresses (or, with `released`, the ones still held), ordered by IP
    version, then address (then the row, for one address in blocks of two networks);
    `page` reads one page of them (melange.paging), in constant memory."""
    from melange.models import blocks, ip_addresses

    IP = ip_addresses.c

    require_network(conn, network)
    wanted = [holds.held(IP) if released else holds.allocated(IP)]
    if block is not None:
        wanted.append(IP.block_id == block_ops.resolve(conn, block).id)
    narrow = block is not None or mac is not None or interface is not None or released
    if network is not None:
        condition, few = _in_network(conn, network, None if narrow else page)
        wanted.append(condition)
        narrow = narrow or few
    if mac is not None:
        wanted.append(IP.mac == parse_mac(mac))
    if interface is not None:
        wanted.append(IP.interface_id == _interface_id(conn, interface)[0])
    if page is None:
        query = _joined().where(*wanted).order_by(blocks.c.version, IP.address, IP.id)
        return [address_record(row) for row in conn.execute(query)]
    return [address_record(row) for row in _page_by_version(conn, wanted, page, not narrow)]


# Up to this many blocks, a network's are named in the query itself (a server's planner
# then weighs each block's own addresses); more, and they are a subquery.
NAMED_BLOCKS = 1000


def _in_network(conn: Connection, network: str, page: Page | None) -> tuple[Any, bool]:
    """The condition "in this network", and whether the network is narrow: its
    addresses few enough to read through its blocks.

    A network's K addresses are read through its blocks and sorted on each of their
    K / limit pages, or picked out of the whole store's N on the address index (once
    over all pages, see `_page_by_version`), whichever costs less: through its blocks
    when K * K <= limit * N. A small network in a large store is then a few index
    lookups rather than a scan of every address before its own. Without a `page`
    (everything at once, or a list narrowed already) always through the blocks.
    """
    from sqlalchemy import func, select

    from melange.models import blocks, ip_addresses

    B = blocks.c
    inside = conn.execute(select(B.id, B.allocated_count).where(B.network == network)).all()
    few = True
    if page is not None:
        total = select(func.coalesce(func.sum(B.allocated_count), 0))
        everywhere = int(conn.execute(total).scalar_one())  # one row, not one per block
        few = sum(row.allocated_count for row in inside) ** 2 <= page.limit * everywhere
    if len(inside) > NAMED_BLOCKS:
        named = select(B.id).where(B.network == network)
        return (ip_addresses.c.block_id.in_(named) if few else _of_block(B.network) == network), few
    if not few and conn.dialect.name == "sqlite":
        # Named blocks would lead SQLite, which keeps no statistics, to read them block
        # by block and sort; a condition of each row leaves it the address index.
        return _of_block(B.network) == network, few
    # Named, so a server's planner weighs each block's own addresses from its statistics:
    # given a subquery, or a condition of each row, PostgreSQL guessed at their share and
    # read every address, for a network of 20 addresses and for one of 20,000 alike.
    return ip_addresses.c.block_id.in_([row.id for row in inside]), few


def _of_block(column):
    """`column` of the address's block, as a scalar subquery of the address's row: a
    condition on it keeps the paging query on the address table alone (see
    `_page_by_version`)."""
    from sqlalchemy import select

    from melange.models import blocks, ip_addresses

    return (
        select(column)
        .where(blocks.c.id == ip_addresses.c.block_id)
        .correlate(ip_addresses)
        .scalar_subquery()
    )


# The address index's name (models.NAMING), for MariaDB's hint in `_page_by_version`.
ADDRESS_INDEX = "ix_ip_addresses_address"


def _page_by_version(conn: Connection, wanted: list, page: Page, by_address: bool) -> list:
    """One page of the addresses matching `wanted`, in (IP version, address, id) order.

    Why this shape: the version is the block's column, and ordering a join by it first
    left no index to serve the order; every page sorted every matching row (1,000,000
    addresses took four minutes), and in a join MariaDB started from the blocks even
    when told the version. So each version is read on its own, and the page's rows are
    chosen in a subquery on the address table alone (the block's version a subquery of
    each row), where the address index, which holds the row id on every backend,
    serves both the order and the LIMIT; only those rows are joined to their blocks.
    `by_address`: nothing narrower than the address index serves `wanted` (no block,
    MAC, interface or small network, allocated addresses), so MariaDB is told to use
    it; on its own it chose, from one run to the next, to read and sort every row.
    """
    from sqlalchemy import literal, select

    from melange.models import blocks, interfaces, ip_addresses

    IP = ip_addresses.c
    order = (IP.address, IP.id)
    after = page.after
    if after is not None and (len(after) != 3 or after[0] not in (4, 6)):
        raise BadCursor()
    first = 4 if after is None else int(after[0])
    rows: list = []
    for version in (4, 6):
        if version < first:
            continue
        within = after[1:] if after is not None and version == after[0] else None
        part = Page(limit=page.limit - len(rows), after=within)
        chosen = select(IP.id, IP.address).where(*wanted, _of_block(blocks.c.version) == version)
        if by_address:
            for dialect in ("mysql", "mariadb"):
                chosen = chosen.with_hint(ip_addresses, f"FORCE INDEX ({ADDRESS_INDEX})", dialect)
        picked = part.query(chosen.order_by(*order), order).subquery("picked")
        query = (
            _columns()
            .add_columns(literal(version).label("version"))
            .select_from(
                picked.join(ip_addresses, IP.id == picked.c.id)
                .join(blocks, blocks.c.id == IP.block_id)
                .outerjoin(interfaces, interfaces.c.id == IP.interface_id)
            )
            .order_by(picked.c.address, picked.c.id)
        )
        rows += conn.execute(query).all()
        if len(rows) > page.limit:
            break
    return page.rows(rows, lambda r: (r.version, r.address, r.id))


def by_interface(conn: Connection, interface_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each interface's allocated addresses, in `list_addresses` order: one query per
    page of interfaces, so listing interfaces costs the same for ten as for ten thousand."""
    from melange.models import blocks, ip_addresses

    IP = ip_addresses.c

    found: dict[int, list[str]] = {interface_id: [] for interface_id in interface_ids}
    ids = list(found)
    for start in range(0, len(ids), PAGE):
        query = (
            _joined()
            .where(holds.allocated(IP), IP.interface_id.in_(ids[start : start + PAGE]))
            .order_by(blocks.c.version, IP.address, IP.id)
        )
        for row in conn.execute(query):
            found[row.interface_id].append(address_record(row)["address"])
    return found


def update_address(
    conn: Connection,
    address: str,
    *,
    block: str | None = None,
    mac: str | None = None,
    hostname: str | None = None,
) -> dict:
    from sqlalchemy import select, update

    from melange.models import ip_addresses

    IP = ip_addresses.c

    values: dict = {}
    if mac is not None:
        values["mac"] = parse_mac(mac)
    if hostname is not None:
        values["hostname"] = validate_hostname(hostname)
    row = find_locked(conn, address, block)
    if "mac" in values:
        if row.state == "allocated":
            clash = conn.execute(
                select(IP.address).where(
                    IP.block_id == row.block_id,
                    IP.active_mac == values["mac"],
                    IP.id != row.id,
                )
            ).first()
            if clash is not None:
                raise Conflict(
                    f"MAC {format_mac(values['mac'])} already holds another address in this block"
                )
            values["active_mac"] = values["mac"]
    if "hostname" in values and row.state == "allocated":
        owner = block_ops.resolve(conn, str(row.block_id))
        values.update(dns.name_for(conn, owner, values["hostname"], row.id))
    if values:
        conn.execute(update(ip_addresses).where(IP.id == row.id).values(**values))
        block_ops.touch(conn, row.block_id)
    return _reread(conn, row.id)


def _free_now(conn: Connection, row) -> None:
    """Delete the address and return it to its block's free space at once."""
    _DELETE.send(conn, id=row.id)
    if row.state == "allocated":
        block_ops.touch(conn, row.block_id, allocated=-1)
    block_row = block_ops.resolve(conn, str(row.block_id))
    block_ops.free_space(conn, block_row).give_back([row.address])


def _reread(conn: Connection, row_id: int) -> dict:
    return address_record(_BY_ID.first(conn, id=row_id))


def _hold(conn: Connection, row, hold_seconds: int) -> None:
    """Hold the address until a time fixed now, from this client's hold (see melange.holds)."""
    now = utcnow()
    _HOLD.send(conn, id=row.id, released_at=now, held_until=holds.ends(now, hold_seconds))
    block_ops.touch(conn, row.block_id, allocated=-1)


def _release_row(conn: Connection, row, hold_seconds: int, now: bool) -> None:
    if now or hold_seconds == 0:
        _free_now(conn, row)
    else:
        _hold(conn, row, hold_seconds)


def release(
    conn: Connection,
    address: str,
    *,
    hold_seconds: int,
    block: str | None = None,
    now: bool = False,
) -> dict:
    """Hold the address for the release time, or free it at once with `now`."""
    row = find_locked(conn, address, block)
    if row.state == "held" and not now:
        raise Conflict(f"{address_record(row)['address']} is already released")
    result = address_record(row)
    _release_row(conn, row, hold_seconds, now)
    if now or hold_seconds == 0:
        result.update(state="free", held_until=None)
        return result
    return _reread(conn, row.id)


def restore(conn: Connection, address: str, *, block: str | None = None) -> dict:
    """Undo a release whose hold has not expired."""
    from sqlalchemy import select, update

    from melange.models import ip_addresses

    IP = ip_addresses.c

    row = find_locked(conn, address, block)
    text = address_record(row)["address"]
    if row.state != "held":
        raise Conflict(f"{text} is allocated, not released; nothing to restore")
    if row.mac is not None:
        clash = conn.execute(
            select(IP.address).where(IP.block_id == row.block_id, IP.active_mac == row.mac)
        ).first()
        if clash is not None:
            raise Conflict(
                f"cannot restore {text}: MAC {format_mac(row.mac)} holds another address now"
            )
    named = dns.name_for(conn, block_ops.resolve(conn, str(row.block_id)), row.hostname, row.id)
    conn.execute(
        update(ip_addresses)
        .where(IP.id == row.id)
        .values(
            state="allocated",
            active_mac=row.mac,
            released_at=None,
            held_until=None,
            **named,
        )
    )
    block_ops.touch(conn, row.block_id, allocated=1)
    return _reread(conn, row.id)


def release_for_interface(conn: Connection, interface_id: int, hold_seconds: int) -> list[str]:
    """Release every allocated address of an interface being deleted (blocks locked in order)."""
    from melange.models import ip_addresses

    IP = ip_addresses.c

    rows = conn.execute(
        _joined().where(IP.interface_id == interface_id, holds.allocated(IP)).order_by(IP.block_id)
    ).all()
    for block_id in sorted({row.block_id for row in rows}):
        lock_block(conn, block_id)
    for row in rows:
        _release_row(conn, row, hold_seconds, now=False)
        audit.note(row.block_id, [row.address])
    return [address_record(row)["address"] for row in rows]
