"""The bulk path hands rows to the driver's own `executemany` (Prepared.many); what it
leaves in the store is exactly what SQLAlchemy's executemany left, on every backend."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from sqlalchemy import exc, insert, select

from melange import addresses, operations
from melange.models import audit_addresses, audit_log, free_ranges, ip_addresses
from melange.store import Store

NOW = datetime(2026, 11, 29, 12, 0, 0, 123456)


class _Fixed:
    def now(self) -> datetime:
        return NOW


class _SqlAlchemyInsert:
    """The bulk insert as it was: SQLAlchemy's own executemany of the row dicts."""

    def send(self, conn, **row) -> None:
        conn.execute(insert(ip_addresses), [row])

    def many(self, conn, rows) -> None:
        conn.execute(insert(ip_addresses), list(rows))


def _allocate(store: Store, name: str, cidr: str) -> list[dict]:
    operations.run(store, "block.create", {"cidr": cidr, "name": name, "tenant": "t1"})
    operations.run(store, "block.allocate", {"block": name, "address": cidr[:5] + "0.40"})
    params = {"block": name, "count": 7_500, "tenant": "t1"}
    return operations.run(store, "block.allocate", params)


def _same(text: str, name: str, prefix: str) -> str:
    """An audit field with what differs between the two blocks (name, CIDR, ids) masked."""
    masked = text.replace(name, "B").replace(prefix, "P.")
    return re.sub(r'"(id|block_id)": \d+', r'"\1": _', masked)


def _state(store: Store, name: str) -> dict:
    """The block's rows, free ranges and audit, with addresses as offsets in the block."""
    block = operations.run(store, "block.show", {"block": name})
    with store.engine.connect() as conn:
        ip = ip_addresses.c
        rows = conn.execute(
            select(ip_addresses).where(ip.block_id == block["id"]).order_by(ip.address)
        ).all()
        base = rows[0].address - 40 if rows else 0
        kept = [(r.address - base, r.mac, r.active_mac, r.hostname, r.interface_id, r.tenant,
                 r.state, r.allocated_at, r.released_at, r.held_until) for r in rows]  # fmt: skip
        free = conn.execute(
            select(free_ranges.c.first_addr, free_ranges.c.last_addr)
            .where(free_ranges.c.block_id == block["id"])
            .order_by(free_ranges.c.first_addr)
        ).all()
        noted = conn.execute(
            select(audit_log.c.at, audit_log.c.actor, audit_log.c.via, audit_log.c.command,
                   audit_log.c.params, audit_log.c.outcome)
            .where(audit_log.c.block_id == block["id"]).order_by(audit_log.c.id)
        ).all()  # fmt: skip
        touched = conn.execute(
            select(audit_addresses.c.first_addr, audit_addresses.c.last_addr)
            .where(audit_addresses.c.block_id == block["id"])
            .order_by(audit_addresses.c.first_addr)
        ).all()
    return {
        "rows": kept,
        "free": [(a - base, b - base) for a, b in free],
        "audit": [tuple(_same(str(v), name, block["cidr"][:5]) for v in row) for row in noted],
        "audit_addresses": [(a - base, b - base) for a, b in touched],
        "utilization": block["utilization"],
    }


def test_driver_executemany_leaves_what_sqlalchemy_left(store_url, monkeypatch):
    store = Store(store_url, clock=_Fixed())
    new_records = _allocate(store, "new", "10.1.0.0/16")
    with monkeypatch.context() as patch:
        patch.setattr(addresses, "_INSERT_ONE", _SqlAlchemyInsert())
        old_records = _allocate(store, "old", "10.2.0.0/16")
    new, old = _state(store, "new"), _state(store, "old")
    store.close()
    assert len(new["rows"]) == 7_501 and new["rows"][0][0] == 40
    assert new["rows"][1][7] == NOW.replace(microsecond=new["rows"][1][7].microsecond)
    for part in ("rows", "free", "audit", "audit_addresses", "utilization"):
        assert new[part] == old[part], part
    assert len(new["free"]) == 1 and len(new["audit"]) == 3
    strip = [{**r, "address": r["address"][5:], "block": None, "block_id": None}
             for r in new_records]  # fmt: skip
    assert strip == [{**r, "address": r["address"][5:], "block": None, "block_id": None}
                     for r in old_records]  # fmt: skip


def test_a_driver_error_in_executemany_is_sqlalchemys_and_rolls_back(store_url):
    """A failing row in a bulk insert raises SQLAlchemy's IntegrityError (what the store
    maps to its errors) and the transaction leaves nothing behind."""
    store = Store(store_url)
    block = operations.run(store, "block.create", {"cidr": "10.3.0.0/20", "name": "f"})
    row = {"block_id": block["id"], "mac": None, "active_mac": None, "hostname": None,
           "interface_id": None, "tenant": None, "state": "allocated", "allocated_at": NOW,
           "released_at": None, "held_until": None, "dns_name": None,
           "dns_version": None}  # fmt: skip
    rows = [{**row, "address": 0x0A030001 + i} for i in range(10)]
    rows.append({**row, "address": 0x0A030001})  # the first address again
    with pytest.raises(exc.IntegrityError), store.engine.begin() as conn:
        addresses._INSERT_ONE.many(conn, rows)
    with store.engine.connect() as conn:
        assert conn.execute(select(ip_addresses.c.id)).first() is None
        addresses._INSERT_ONE.many(conn, rows[:3])
        assert len(conn.execute(select(ip_addresses.c.id)).all()) == 3
        conn.rollback()
    store.close()
