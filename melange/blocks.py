"""IP blocks: creation under the overlap rules, lookup, update and deletion."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from melange import generators, holds, subnets
from melange.clock import utcnow
from melange.errors import Conflict, InvalidInput, NotFound
from melange.exclusions import Exclusions
from melange.freespace import FreeSpace
from melange.locking import lock_block, lock_named
from melange.names import require_network
from melange.paging import Page
from melange.prepared import Prepared, is_lean
from melange.records import block_label, ip_text, iso
from melange.validate import (
    is_decimal,
    parse_cidr,
    parse_ip,
    validate_block_name,
    validate_domain,
    validate_name,
    validate_network,
)

if TYPE_CHECKING:  # SQLAlchemy is imported where a statement is built (melange.lean)
    import netaddr
    from sqlalchemy import Connection

TYPES = ("private", "public")
MAX_DNS = 8


def _lookup(column: str, lock: bool):
    """A block by one column; locked, the row also says whether the block has subnets
    (a writer needs to know, under the lock, and saves a round trip asking apart)."""
    from sqlalchemy import bindparam, select

    from melange.models import blocks

    B = blocks.c

    if not lock:
        return select(blocks).where(getattr(B, column) == bindparam("ref"))
    children = blocks.alias("children")
    has_subnets = select(children.c.id).where(children.c.parent_id == B.id).exists()
    return (
        select(blocks, has_subnets.label("has_subnets"))
        .where(getattr(B, column) == bindparam("ref"))
        .with_for_update(of=blocks)
    )


_LOOKUPS = {
    (column, lock): Prepared(
        functools.partial(_lookup, column, lock),
        f"blocks.lookup.{column}{'.locked' if lock else ''}",
    )
    for column in ("id", "name", "cidr")
    for lock in (False, True)
}


def _touch_statement():
    from sqlalchemy import Integer, bindparam, update

    from melange.models import blocks

    B = blocks.c
    return (
        update(blocks)
        .where(B.id == bindparam("block_id"))
        .values(
            generation=B.generation + 1,
            allocated_count=B.allocated_count + bindparam("allocated", type_=Integer),
        )
    )


_TOUCH = Prepared(_touch_statement, "blocks.touch")


def resolve(conn: Connection, ref: str, *, for_update: bool = False):
    """A block by id, name, or CIDR (when exactly one block has it).

    With `for_update` the row is also locked, as `lock_block` does, in the
    same statement: the allocation path saves a round trip.
    """
    ref = str(ref)
    if is_decimal(ref):
        row = _LOOKUPS["id", for_update].first(conn, ref=int(ref))
    elif "/" in ref:
        cidr = str(parse_cidr(ref))
        rows = _LOOKUPS["cidr", for_update].all(conn, ref=cidr)
        if len(rows) > 1:
            ids = ", ".join(str(r.id) for r in rows)
            raise InvalidInput(f"{cidr} names several blocks (ids {ids}); give an id or a name")
        row = rows[0] if rows else None
    else:
        row = _LOOKUPS["name", for_update].first(conn, ref=ref)
    if row is None:
        raise NotFound(f"no block {ref!r}")
    return row


def refuse_parent(block, has_subnets: bool) -> None:
    """A block with subnets hands out nothing itself (allocation and import alike)."""
    if has_subnets:
        raise Conflict(f"block {block.cidr} has subnets and hands out no addresses itself")


def check_inside(block, address: netaddr.IPAddress) -> None:
    """An address asked for by name lies in the block (allocate --address, import)."""
    if address.version != block.version or not (
        block.first_addr <= int(address) <= block.last_addr
    ):
        raise InvalidInput(f"{address} is not inside block {block.cidr}")


def touch(conn: Connection, block_id: int, *, allocated: int = 0) -> None:
    """Record a change to what the block renders (melanged watches `generation`),
    and keep its allocated counter in step; callers hold the block's lock."""
    _TOUCH.send(conn, block_id=block_id, allocated=allocated)


class PolicyRules(NamedTuple):
    name: str
    ranges: tuple[tuple[int, int], ...]  # (offset, length)
    octets: frozenset[int]


def _policy_statement(what: str):
    """One policy's name, ranges or octets, by its id (named: they run lean)."""
    from sqlalchemy import bindparam, select

    from melange.models import policies, unusable_octets, unusable_ranges

    if what == "name":
        return select(policies.c.name).where(policies.c.id == bindparam("id"))
    if what == "ranges":
        r = unusable_ranges.c
        return (select(r.start_offset, r.length).where(r.policy_id == bindparam("id"))
                .order_by(r.start_offset, r.length))  # fmt: skip
    o = unusable_octets.c
    return select(o.octet).where(o.policy_id == bindparam("id")).order_by(o.octet)


_POLICY = {what: Prepared(functools.partial(_policy_statement, what), f"blocks.policy_{what}")
           for what in ("name", "ranges", "octets")}  # fmt: skip


def policy_rules(conn: Connection, policy_ids) -> dict[int, PolicyRules]:
    """The rules of several policies in three queries (reports read thousands of blocks);
    on a lean connection, each with its own named statements."""
    ids = sorted({p for p in policy_ids if p is not None})
    if not ids:
        return {}
    if is_lean(conn):
        found = {}
        for i in ids:
            name = _POLICY["name"].scalar(conn, id=i)
            if name is not None:
                spans = _POLICY["ranges"].all(conn, id=i)
                octet_rows = _POLICY["octets"].all(conn, id=i)
                found[i] = PolicyRules(name, tuple((r.start_offset, r.length) for r in spans),
                                       frozenset(o.octet for o in octet_rows))  # fmt: skip
        return found
    from sqlalchemy import select

    from melange.models import policies, unusable_octets, unusable_ranges

    names = {
        pid: name
        for pid, name in conn.execute(
            select(policies.c.id, policies.c.name).where(policies.c.id.in_(ids))
        )
    }
    ranges: dict[int, list[tuple[int, int]]] = {i: [] for i in ids}
    r = unusable_ranges.c
    for pid, offset, length in conn.execute(
        select(r.policy_id, r.start_offset, r.length).where(r.policy_id.in_(ids))
        .order_by(r.policy_id, r.start_offset, r.length)
    ):  # fmt: skip
        ranges[pid].append((offset, length))
    octets: dict[int, set[int]] = {i: set() for i in ids}
    for pid, octet in conn.execute(
        select(unusable_octets.c.policy_id, unusable_octets.c.octet).where(
            unusable_octets.c.policy_id.in_(ids)
        )
    ):
        octets[pid].add(octet)
    return {
        i: PolicyRules(names[i], tuple(ranges[i]), frozenset(octets[i])) for i in ids if i in names
    }


def exclusions_of(block, chain, rules: dict[int, PolicyRules]) -> Exclusions:
    """What `block` never hands out, given its ancestors (`chain`, nearest first) and
    the rules of every policy among them: its network and broadcast, its gateway and
    policy (its own or the nearest ancestor's, at its own offsets), and every ancestor's
    gateway and policy (at that ancestor's offsets)."""
    gateway, _ = subnets.nearest(block, chain, "gateway")
    policy_id, _ = subnets.nearest(block, chain, "policy_id")
    outer = tuple(
        (a.first_addr, a.last_addr, a.gateway, rules.get(a.policy_id), block_label(a))
        for a in chain
        if a.gateway is not None or a.policy_id is not None
    )
    return _exclusions(
        block.version,
        block.prefixlen,
        block.first_addr,
        block.last_addr,
        gateway,
        rules.get(policy_id) if policy_id is not None else None,
        outer,
    )


def _policy_intervals(first: int, last: int, rules: PolicyRules) -> list[tuple[int, int, str]]:
    """A policy's ranges laid on [first, last]: a negative offset counts from the end."""
    size = last - first + 1
    why = f"it is unusable by policy {rules.name}"
    intervals = []
    for offset, length in rules.ranges:
        start = first + offset if offset >= 0 else first + size + offset
        intervals.append((start, start + length - 1, why))
    return intervals


@functools.lru_cache(maxsize=4096)
def _exclusions(
    version: int, prefixlen: int, first: int, last: int, gateway: int | None, rules, outer=()
) -> Exclusions:
    """Built once per distinct block shape, policy and ancestry: Exclusions are
    immutable, and every allocation in a block needs the same ones."""
    intervals: list[tuple[int, int, str]] = []
    if version == 4 and prefixlen < 31:
        intervals.append((first, first, "it is the network address"))
        intervals.append((last, last, "it is the broadcast address"))
    if version == 6 and prefixlen < 127:
        intervals.append((first, first, "it is the subnet-router anycast address"))
    if gateway is not None:
        intervals.append((gateway, gateway, "it is the block's gateway"))
    octets: set[int] = set()
    if rules is not None:
        intervals.extend(_policy_intervals(first, last, rules))
        octets |= rules.octets
    for outer_first, outer_last, outer_gateway, outer_rules, label in outer:
        if outer_gateway is not None:
            intervals.append((outer_gateway, outer_gateway, f"it is the gateway of block {label}"))
        if outer_rules is not None:
            intervals.extend(_policy_intervals(outer_first, outer_last, outer_rules))
            octets |= outer_rules.octets
    if version != 4:
        octets = set()
    return Exclusions.build(first, last, intervals, frozenset(octets))


def rules_for(conn: Connection, block, chain) -> dict[int, PolicyRules]:
    """The rules of every policy that reaches `block`: its own and its ancestors'."""
    return policy_rules(conn, [block.policy_id, *(a.policy_id for a in chain)])


def exclusions_for(conn: Connection, block) -> Exclusions:
    """A block's exclusions from the store: one query for a subnet's ancestors (none for
    a top-level block), and its policies' rules."""
    chain = subnets.ancestors(conn, block)
    return exclusions_of(block, chain, rules_for(conn, block, chain))


def free_space(conn: Connection, block) -> FreeSpace:
    return FreeSpace(conn, block.id, exclusions_for(conn, block), block.version)


def block_info(block) -> generators.BlockInfo:
    return generators.BlockInfo(
        id=block.id,
        version=block.version,
        first=block.first_addr,
        last=block.last_addr,
        prefixlen=block.prefixlen,
        tenant=block.tenant,
    )


def _overlapping(conn: Connection, version: int, first: int, last: int, *conditions):
    from sqlalchemy import select

    from melange.models import blocks

    B = blocks.c

    return conn.execute(
        select(blocks)
        .where(
            B.version == version,
            B.first_addr <= last,
            B.last_addr >= first,
            *conditions,
        )
        .order_by(B.id)
        .limit(1)
    ).first()


def _describe(row) -> str:
    where = f" in network {row.network}" if row.network else ""
    name = f" ({row.name})" if row.name else ""
    return f"block {row.id} {row.cidr}{name}{where}"


def _check_placement(conn: Connection, net: netaddr.IPNetwork, parent, network, type_) -> None:
    """The contract's overlap rules; any violation is a conflict."""
    from sqlalchemy import func, select

    from melange.models import blocks, ip_addresses

    B = blocks.c

    first, last = int(net.first), int(net.last)
    if parent is not None:
        if parent.version != net.version or not (
            parent.first_addr <= first and last <= parent.last_addr
        ):
            raise Conflict(f"{net} does not lie inside its parent {_describe(parent)}")
        if (parent.first_addr, parent.last_addr) == (first, last):
            raise Conflict(f"{net} is the whole of its parent {_describe(parent)}")
        in_use = conn.execute(
            select(func.count())
            .select_from(ip_addresses)
            .where(ip_addresses.c.block_id == parent.id)
        ).scalar()
        if in_use:
            raise Conflict(
                f"{_describe(parent)} has {in_use} allocated or held addresses; "
                "a block with addresses cannot be split into subnets"
            )
        sibling = _overlapping(conn, net.version, first, last, B.parent_id == parent.id)
        if sibling is not None:
            raise Conflict(f"{net} overlaps its sibling {_describe(sibling)}")
        return
    same_network = B.network == network if network is not None else B.network.is_(None)
    clash = _overlapping(conn, net.version, first, last, B.parent_id.is_(None), same_network)
    if clash is not None:
        raise Conflict(f"{net} overlaps {_describe(clash)}")
    if type_ == "public":
        clash = _overlapping(
            conn, net.version, first, last, B.parent_id.is_(None), B.type == "public"
        )
        if clash is not None:
            raise Conflict(f"public block {net} overlaps public {_describe(clash)}")


def _check_gateway(net: netaddr.IPNetwork, text: str) -> int:
    address = parse_ip(text, what="gateway address")
    if address.version != net.version or address not in net:
        raise InvalidInput(f"gateway {address} is not inside {net}")
    if net.version == 4 and net.prefixlen < 31 and address in (net.network, net.broadcast):
        raise InvalidInput(f"gateway {address} is the network or broadcast address of {net}")
    return int(address)


def _parse_dns(values: list[str] | tuple[str, ...]) -> list[netaddr.IPAddress]:
    if len(values) > MAX_DNS:
        raise InvalidInput(f"at most {MAX_DNS} DNS servers per block")
    parsed = [parse_ip(v, what="DNS server address") for v in values]
    if len(set(parsed)) != len(parsed):
        raise InvalidInput("a DNS server is given twice")
    return parsed


def _policy_id(conn: Connection, name: str) -> int:
    from sqlalchemy import select

    from melange.models import policies

    found = conn.execute(select(policies.c.id).where(policies.c.name == name)).scalar()
    if found is None:
        raise NotFound(f"no policy {name!r}")
    return found


def _check_name_free(conn: Connection, name: str, except_id: int | None = None) -> None:
    from sqlalchemy import select

    from melange.models import blocks

    B = blocks.c

    clash = conn.execute(select(B.id).where(B.name == name)).scalar()
    if clash is not None and clash != except_id:
        raise Conflict(f"block name {name!r} is in use by block {clash}")


def create(
    conn: Connection,
    cidr: str,
    *,
    name: str | None = None,
    network: str | None = None,
    tenant: str | None = None,
    type: str | None = None,  # noqa: A002  (the contract's option name)
    gateway: str | None = None,
    dns: list[str] | tuple[str, ...] = (),
    policy: str | None = None,
    parent: str | None = None,
    generator: str | None = None,
    domain: str | None = None,
) -> dict:
    """Create a block (a subnet when `parent` is given); all checks before any write."""
    net = parse_cidr(cidr)
    _check_fields(name, network, tenant, type)
    domain = validate_domain(domain) if domain is not None else None
    gateway_value = _check_gateway(net, gateway) if gateway else None
    dns_values = _parse_dns(dns)
    parent_row = lock_block(conn, resolve(conn, parent).id) if parent is not None else None
    network, tenant, type = _inherited(parent_row, network, tenant, type)
    generator_name = _checked_generator(net, generator, tenant)
    policy_id = _policy_id(conn, policy) if policy is not None else None
    lock_named(conn, "blocks")
    if name is not None:
        _check_name_free(conn, name)
    _check_placement(conn, net, parent_row, network, type)
    block_id = _insert_block(
        conn,
        net,
        name=name,
        network=network,
        tenant=tenant,
        type=type,
        gateway=gateway_value,
        policy_id=policy_id,
        parent_id=parent_row.id if parent_row is not None else None,
        generator=generator_name,
        domain=domain,
    )
    _set_dns(conn, block_id, dns_values)
    return record(conn, resolve(conn, str(block_id)))


def _check_fields(
    name: str | None, network: str | None, tenant: str | None, type_: str | None
) -> None:
    """The names a new block is given are well formed (2), checked before the store is read."""
    if name is not None:
        validate_block_name(name)
    if network is not None:
        validate_network(network)
    if tenant is not None:
        validate_name(tenant, "tenant")
    if type_ is not None and type_ not in TYPES:
        raise InvalidInput(f"block type must be private or public, not {type_!r}")


def _inherited(
    parent, network: str | None, tenant: str | None, type_: str | None
) -> tuple[str | None, str | None, str]:
    """(network, tenant, type) of a new block: a subnet is part of its parent's network
    (another one is refused) and takes its tenant and type unless given its own; a
    top-level block without a type is private."""
    if parent is not None:
        if network is not None and network != parent.network:
            raise InvalidInput(
                f"a subnet belongs to its parent's network ({parent.network or 'none'})"
            )
        network = parent.network
        tenant = tenant if tenant is not None else parent.tenant
        type_ = type_ or parent.type
    return network, tenant, type_ or "private"


def _checked_generator(net: netaddr.IPNetwork, generator: str | None, tenant: str | None) -> str:
    """The generator a new block uses (the default for its family and size unless named),
    once it has accepted the block: eui64 refuses a prefix longer than 64, for one."""
    name = generator or generators.default_for(net.version, net.prefixlen)
    info = generators.BlockInfo(
        0, net.version, int(net.first), int(net.last), net.prefixlen, tenant
    )
    generators.load(name).check_block(info)
    return name


def _insert_block(conn: Connection, net: netaddr.IPNetwork, **columns) -> int:
    """Insert a checked block and its free space (the whole CIDR); its id."""
    from sqlalchemy import insert

    from melange.models import blocks, free_ranges

    now = utcnow()
    key = conn.execute(
        insert(blocks).values(
            cidr=str(net),
            version=net.version,
            first_addr=int(net.first),
            last_addr=int(net.last),
            prefixlen=net.prefixlen,
            created_at=now,
            updated_at=now,
            **columns,
        )
    ).inserted_primary_key
    assert key is not None  # a one-row INSERT always reports its key
    block_id = key[0]
    conn.execute(
        insert(free_ranges).values(
            block_id=block_id, first_addr=int(net.first), last_addr=int(net.last)
        )
    )
    return block_id


def _set_dns(conn: Connection, block_id: int, values: list[netaddr.IPAddress]) -> None:
    from sqlalchemy import delete, insert

    from melange.models import block_dns_servers

    conn.execute(delete(block_dns_servers).where(block_dns_servers.c.block_id == block_id))
    if values:
        conn.execute(
            insert(block_dns_servers),
            [
                {"block_id": block_id, "position": i, "address": int(v), "version": v.version}
                for i, v in enumerate(values)
            ],
        )


def record(conn: Connection, row) -> dict:
    """One block's record (see `records`)."""
    return records(conn, [row])[0]


def records(conn: Connection, rows) -> list[dict]:
    """Records of several blocks: their policies' names, parents' CIDRs and DNS servers
    are read for all of them at once (three statements a page of blocks, however many
    blocks), so `block list` and export cost no statement per block."""
    policy_names = _column_by_id(conn, "policy", [r.policy_id for r in rows])
    parent_cidrs = _column_by_id(conn, "cidr", [r.parent_id for r in rows])
    dns = subnets.dns_lists(conn, [r.id for r in rows])
    return [
        {
            "id": row.id,
            "cidr": row.cidr,
            "name": row.name,
            "network": row.network,
            "tenant": row.tenant,
            "type": row.type,
            "version": row.version,
            "gateway": ip_text(row.gateway, row.version),
            "dns": [ip_text(address, version) for address, version in dns.get(row.id, [])],
            "policy": policy_names.get(row.policy_id),
            "parent_id": row.parent_id,
            "parent": parent_cidrs.get(row.parent_id),
            "generator": row.generator,
            "domain": row.domain,
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
        }
        for row in rows
    ]


def _column_by_id(conn: Connection, what: str, ids) -> dict:
    """id -> a policy's name (`policy`) or a block's CIDR (`cidr`) for `ids` (None ids
    skipped): a page of ids a query; on a lean connection, each by its named statement."""
    wanted = sorted({i for i in ids if i is not None})
    one = _POLICY["name"] if what == "policy" else _CIDR_OF
    if is_lean(conn):
        found = {i: one.scalar(conn, id=i) for i in wanted}
        return {i: value for i, value in found.items() if value is not None}
    from sqlalchemy import select

    from melange.models import blocks, policies

    key, column = {"policy": (policies.c.id, policies.c.name),
                   "cidr": (blocks.c.id, blocks.c.cidr)}[what]  # fmt: skip
    found = {}
    for start in range(0, len(wanted), subnets.PAGE):
        page = wanted[start : start + subnets.PAGE]
        found.update(conn.execute(select(key, column).where(key.in_(page))).all())
    return found


def _block_column_statement(what: str):
    from sqlalchemy import bindparam, select

    from melange.models import blocks

    B = blocks.c
    if what == "cidr":
        return select(B.cidr).where(B.id == bindparam("id"))
    return select(B.cidr).where(B.parent_id == bindparam("block_id")).order_by(B.first_addr)


_CIDR_OF = Prepared(functools.partial(_block_column_statement, "cidr"), "blocks.cidr_of")
_SUBNET_CIDRS = Prepared(functools.partial(_block_column_statement, "subnets"),
                         "blocks.subnet_cidrs")  # fmt: skip


def list_blocks(
    conn: Connection,
    *,
    network: str | None = None,
    tenant: str | None = None,
    type: str | None = None,  # noqa: A002
    page: Page | None = None,
) -> list[dict]:
    """Blocks by family and address; `page` reads one page of them (melange.paging)."""
    from sqlalchemy import select

    from melange.models import blocks

    B = blocks.c

    if type is not None and type not in TYPES:
        raise InvalidInput(f"block type must be private or public, not {type!r}")
    require_network(conn, network)
    order = (B.version, B.first_addr, B.id)
    query = select(blocks).order_by(*order)
    if network is not None:
        query = query.where(B.network == network)
    if tenant is not None:
        query = query.where(B.tenant == tenant)
    if type is not None:
        query = query.where(B.type == type)
    if page is None:
        return records(conn, conn.execute(query).all())
    rows = conn.execute(page.query(query, order)).all()
    return records(conn, page.rows(rows, lambda r: (r.version, r.first_addr, r.id)))


def usage(size: int, used: int, held: int, unusable: int) -> dict:
    """The utilisation record: counts, and the share of usable addresses taken."""
    usable = size - unusable
    percent = round(100.0 * (used + held) / usable, 2) if usable > 0 else 100.0
    return {
        "size": size,
        "used": used,
        "held": held,
        "free": max(0, size - used - held - unusable),
        "unusable": unusable,
        "percent_used": percent,
    }


def _held_in_block_statement():
    from sqlalchemy import bindparam, func, select

    from melange.models import ip_addresses

    ip = ip_addresses.c
    return select(func.count()).where(
        ip.block_id == bindparam("block_id"), holds.held(ip, bindparam("now"))
    )


_HELD_IN_BLOCK = Prepared(_held_in_block_statement, "blocks.held_in_block")


def held_counts(conn: Connection, block_ids=None) -> dict[int, int]:
    """Addresses still on hold, per block: one grouped query (for some blocks, or all); for
    one block (a leaf's `--count` check), or each block on a lean connection (melange.lean),
    a named statement."""
    if block_ids is not None and (len(block_ids) == 1 or is_lean(conn)):
        now = utcnow()
        counted = {i: _HELD_IN_BLOCK.scalar(conn, block_id=i, now=now) for i in block_ids}
        return {i: held for i, held in counted.items() if held}
    from sqlalchemy import func, select

    from melange.models import ip_addresses

    ip = ip_addresses.c
    query = select(ip.block_id, func.count()).where(holds.held(ip)).group_by(ip.block_id)
    if block_ids is not None:
        query = query.where(ip.block_id.in_(sorted(block_ids)))
    return dict(conn.execute(query).all())


@dataclass
class Tree:
    """Blocks read together (a chain, a subtree, a network) with their parent links, so a
    parent's utilisation and a subnet's exclusions are computed without more queries."""

    by_id: dict
    children: dict[int, list]

    @classmethod
    def of(cls, rows) -> Tree:
        by_id = {row.id: row for row in rows}
        children: dict[int, list] = {}
        for row in by_id.values():
            if row.parent_id is not None:
                children.setdefault(row.parent_id, []).append(row)
        return cls(by_id, children)

    def leaves(self, row) -> list:
        """The blocks that hand out addresses at or below `row`."""
        if row.id not in self.children:
            return [row]
        return [leaf for child in self.children[row.id] for leaf in self.leaves(child)]

    def usage(self, row, rules: dict[int, PolicyRules], held: dict[int, int]) -> dict:
        """A leaf's counts; a parent's are its leaves' together, the space no subnet
        covers counted as free (it can still be subnetted)."""
        leaves = self.leaves(row)
        unusable = sum(
            exclusions_of(leaf, subnets.chain_in(leaf, self.by_id), rules).count()
            for leaf in leaves
        )
        counts = usage(
            row.last_addr - row.first_addr + 1,
            sum(leaf.allocated_count for leaf in leaves),
            sum(held.get(leaf.id, 0) for leaf in leaves),
            unusable,
        )
        subnet_count = len(self.children.get(row.id, ()))
        return {**counts, "kind": "parent" if subnet_count else "leaf", "subnets": subnet_count}


def utilization(conn: Connection, row) -> dict:
    """Counts of the block's addresses (of its subnets', for a parent); unusable ones are
    computed, not enumerated."""
    tree = Tree.of([*subnets.ancestors(conn, row), row, *subnets.descendants(conn, row.id)])
    leaf_ids = [leaf.id for leaf in tree.leaves(row)]
    rules = policy_rules(conn, [r.policy_id for r in tree.by_id.values()])
    return tree.usage(row, rules, held_counts(conn, leaf_ids))


def show(conn: Connection, block: str) -> dict:
    """A block with its utilisation. For a subnet, `gateway`, `dns`, `policy` and
    `routes` are the values in effect, and `inherited` names the block each inherited
    one comes from (a top-level block inherits nothing: its values are its own)."""
    row = resolve(conn, block)
    result = record(conn, row)
    result.update(effective(conn, row))
    result["utilization"] = utilization(conn, row)
    result["subnets"] = [r.cidr for r in _SUBNET_CIDRS.all(conn, block_id=row.id)]
    return result


def effective(conn: Connection, row) -> dict:
    """The gateway, DNS servers, policy and routes `row` has in effect, and where the
    inherited ones come from."""
    chain = subnets.ancestors(conn, row)
    levels = [row.id, *(a.id for a in chain)]
    inherited: dict[str, str] = {}

    def note(what: str, source) -> None:
        if source is not None:
            inherited[what] = block_label(source)

    gateway, source = subnets.nearest(row, chain, "gateway")
    note("gateway", source)
    dns, source = subnets.nearest_listed(row, chain, subnets.dns_lists(conn, levels))
    note("dns", source)
    policy_id, source = subnets.nearest(row, chain, "policy_id")
    note("policy", source)
    domain, source = subnets.nearest(row, chain, "domain")
    note("domain", source)
    policy = None
    if policy_id is not None:
        policy = _POLICY["name"].scalar(conn, id=policy_id)
    route_list = []
    for destination, (via, source) in subnets.merged_routes(
        row, chain, subnets.route_lists(conn, levels)
    ).items():
        entry = {"destination": destination, "gateway": ip_text(via, row.version)}
        if source is not None:
            label = block_label(source)
            entry["inherited_from"] = label
            inherited.setdefault("routes", label)
        route_list.append(entry)
    return {
        "gateway": ip_text(gateway, row.version),
        "dns": [ip_text(address, version) for address, version in dns],
        "policy": policy,
        "domain": domain,
        "routes": sorted(route_list, key=lambda entry: entry["destination"]),
        "inherited": inherited,
    }


def update_block(
    conn: Connection,
    block: str,
    *,
    name: str | None = None,
    gateway: str | None = None,
    no_gateway: bool = False,
    dns: list[str] | tuple[str, ...] = (),
    no_dns: bool = False,
    policy: str | None = None,
    no_policy: bool = False,
    tenant: str | None = None,
    domain: str | None = None,
    no_domain: bool = False,
) -> dict:
    """Change a block; a gateway or policy change recomputes its free space, a domain
    change the DNS names of its addresses and of those below it (melange.dns)."""
    _refuse_both(gateway, no_gateway, "--gateway")
    _refuse_both(domain, no_domain, "--domain")
    domain_value = validate_domain(domain) if domain is not None else None
    _refuse_both(policy, no_policy, "--policy")
    _refuse_both(dns, no_dns, "--dns")
    row = lock_block(conn, resolve(conn, block).id)
    values: dict = {}
    if name is not None:
        validate_block_name(name)
        _check_name_free(conn, name, except_id=row.id)
        values["name"] = name
    if tenant is not None:
        values["tenant"] = validate_name(tenant, "tenant")
    below = subnets.descendants(conn, row.id)
    if (domain is not None or no_domain) and domain_value != row.domain:
        values["domain"] = domain_value
    if gateway or no_gateway or policy or no_policy or "domain" in values:
        # Subnets' exclusions change with their ancestors': lock them before looking at
        # their addresses, so no allocation in them can take the new gateway meanwhile.
        below = [lock_block(conn, block.id) for block in below]
    if gateway or no_gateway:
        values["gateway"] = _unused_gateway(conn, row, below, gateway) if gateway else None
    if policy or no_policy:
        values["policy_id"] = _policy_id(conn, policy) if policy else None
    dns_values = _parse_dns(dns) if dns else ([] if no_dns else None)
    _write_changes(conn, row.id, values, dns_values)
    fresh = resolve(conn, str(row.id))
    if "domain" in values:
        from melange import dns as names  # `dns` is this function's servers

        names.rename_blocks(conn, [fresh, *below])
        for lower in below:
            touch(conn, lower.id)
    if {"gateway", "policy_id"} & values.keys():
        # Subnets inherit both, and never hand out an ancestor's: their exclusions
        # changed too, and those that shrank must get their addresses back.
        for block in (fresh, *below):
            free_space(conn, block).rebuild()
    return record(conn, fresh)


def _refuse_both(value, clear: bool, option: str) -> None:
    """`--x` and `--no-x` together are a usage error (2), whatever else is wrong."""
    if value and clear:
        raise InvalidInput(f"{option} and --no-{option[2:]} are mutually exclusive")


def _unused_gateway(conn: Connection, row, below: list, text: str) -> int:
    """A new gateway for `row`: inside it, and not an address in use (allocated or
    still held) in it or any block below it, which would hand it out twice."""
    import netaddr
    from sqlalchemy import select

    from melange.models import ip_addresses

    gateway_value = _check_gateway(netaddr.IPNetwork(row.cidr), text)
    ip = ip_addresses.c
    taken = conn.execute(
        select(ip.state, ip.block_id).where(
            ip.block_id.in_([row.id, *(b.id for b in below)]),
            ip.address == gateway_value,
            holds.live(ip),
        )
    ).first()
    if taken:
        where = row if taken.block_id == row.id else {b.id: b for b in below}[taken.block_id]
        raise Conflict(f"{text} is {taken.state} in {_describe(where)}; it cannot be the gateway")
    return gateway_value


def _write_changes(conn: Connection, block_id: int, values: dict, dns: list | None) -> None:
    """Store a block's new values and DNS servers (None: unchanged), and bump its
    generation so melanged renders it again; nothing at all when nothing changes."""
    from sqlalchemy import update

    from melange.models import blocks

    B = blocks.c

    if not values and dns is None:
        return
    conn.execute(update(blocks).where(B.id == block_id).values(**values, updated_at=utcnow()))
    touch(conn, block_id)
    if dns is not None:
        _set_dns(conn, block_id, dns)


def delete_block(conn: Connection, block: str, *, force: bool = False) -> dict:
    """Delete a block; refuse while it holds addresses (unless forced) or has subnets."""
    from sqlalchemy import delete, func, select

    from melange.models import block_dns_servers, blocks, free_ranges, ip_addresses, routes

    B = blocks.c

    lock_named(conn, "blocks")
    row = lock_block(conn, resolve(conn, block).id)
    subnets = conn.execute(select(func.count()).where(B.parent_id == row.id)).scalar()
    if subnets:
        raise Conflict(f"{_describe(row)} has {subnets} subnets; delete them first")
    ip = ip_addresses.c
    in_use = conn.execute(
        select(func.count()).where(ip.block_id == row.id, holds.live(ip))
    ).scalar()
    if in_use and not force:
        raise Conflict(
            f"{_describe(row)} still has {in_use} allocated or held addresses; "
            "release them or use --force"
        )
    result = record(conn, row)
    conn.execute(delete(ip_addresses).where(ip.block_id == row.id))
    conn.execute(delete(free_ranges).where(free_ranges.c.block_id == row.id))
    conn.execute(delete(routes).where(routes.c.block_id == row.id))
    conn.execute(delete(block_dns_servers).where(block_dns_servers.c.block_id == row.id))
    conn.execute(delete(blocks).where(B.id == row.id))
    return result


def blocks_using_policy(conn: Connection, policy_id: int) -> list:
    """The blocks a policy's rules reach: those that name it, and every block below them
    (which inherit it, or must keep out of the addresses it reserves in an ancestor)."""
    from sqlalchemy import and_, select

    from melange.models import blocks

    B = blocks.c

    found = {}
    for row in conn.execute(select(blocks).where(and_(B.policy_id == policy_id))).all():
        found[row.id] = row
        for below in subnets.descendants(conn, row.id):
            found.setdefault(below.id, below)
    return [found[i] for i in sorted(found)]
