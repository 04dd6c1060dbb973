"""Prepared statements give the rows SQLAlchemy itself would, on every backend.

melange.prepared reads a statement's columns through SQLAlchemy's public API
(no private compiler attributes); this holds the result to what
`Connection.execute` returns: the same names, in the same order, with the same
conversions (addresses as ints, datetimes, labels, an EXISTS as a boolean).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
)

from melange.models import Address
from melange.prepared import Prepared
from melange.store import Store

PROBE = Table(
    "prepared_probe",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("address", Address, nullable=False),
    Column("at", DateTime, nullable=True),
    Column("label", String(20)),
    Column("flag", Boolean),
    Column("parent_id", Integer),
)
ROWS = [
    {"id": 1, "address": 2**128 - 1, "at": datetime(2026, 3, 4, 5, 6, 7), "label": "one",
     "flag": True, "parent_id": None},
    {"id": 2, "address": 0xC0A80001, "at": None, "label": None, "flag": False, "parent_id": 1},
]  # fmt: skip


@pytest.fixture
def store(store_url):
    store = Store(store_url)
    store.ensure_schema()
    PROBE.create(store.engine)
    with store.engine.begin() as conn:
        conn.execute(insert(PROBE), ROWS)
    yield store
    store.close()
    PROBE.drop(store.engine)  # server databases are shared by the tests of a run
    store.close()


def _statements():
    children = PROBE.alias("children")
    has_children = select(children.c.id).where(children.c.parent_id == PROBE.c.id).exists()
    yield "whole table", select(PROBE).where(PROBE.c.id >= bindparam("low")), {"low": 1}
    yield (
        "labels and exists",
        select(
            PROBE.c.address.label("block_address"),
            (PROBE.c.id + bindparam("step", type_=Integer)).label("next_id"),
            has_children.label("has_children"),
            PROBE.c.at,
        ).where(PROBE.c.id >= bindparam("low")),
        {"step": 10, "low": 0},
    )
    yield (
        "a default bind value",
        select(PROBE.c.label).where(PROBE.c.id == bindparam("id", value=2)),
        {},
    )


@pytest.mark.parametrize("name", [name for name, _, _ in _statements()])
def test_prepared_rows_are_the_rows_sqlalchemy_gives(store, name):
    statement, params = next((s, p) for n, s, p in _statements() if n == name)
    prepared = Prepared(statement.order_by(PROBE.c.id))

    def both(conn):
        expected = conn.execute(statement.order_by(PROBE.c.id), params)
        keys = tuple(expected.keys())
        return keys, [tuple(row) for row in expected], prepared.all(conn, **params)

    keys, expected, rows = store.read(both)
    assert expected  # the statement found something to compare
    assert [row._fields for row in rows] == [keys] * len(rows)
    assert [tuple(row) for row in rows] == expected
    first = store.read(lambda conn: prepared.first(conn, **params))
    assert tuple(first) == expected[0]


def test_a_prepared_write_counts_its_rows_and_converts_its_parameters(store):
    put = Prepared(insert(PROBE).values(id=bindparam("id"), address=bindparam("address")))
    get = Prepared(select(PROBE.c.id).where(PROBE.c.address == bindparam("address")))
    assert store.write(lambda conn: put.run(conn, id=3, address=7)) == 1
    assert store.read(lambda conn: get.scalar(conn, address=7)) == 3


def test_expanding_parameters_are_refused_when_first_compiled(store):
    many = Prepared(select(PROBE.c.id).where(PROBE.c.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="plain bind parameters"):
        store.read(lambda conn: many.all(conn, ids=[1, 2]))
