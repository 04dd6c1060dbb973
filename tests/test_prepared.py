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


@pytest.mark.parametrize("count", [1, 2, 166, 167, 400])
def test_many_inserts_every_row_as_sqlalchemy_would(store, count):
    """`many` (on SQLite: many rows per INSERT, a statement per 166 rows of this
    six-column table) stores exactly the rows SQLAlchemy's own executemany stores."""
    put = Prepared(insert(PROBE))
    rows = [{"id": 100 + i, "address": (2**128 - 1) - i if i % 2 else i,
             "at": datetime(2026, 1, 1, 0, 0, i % 60) if i % 3 else None,
             "label": f"row {i}" if i % 5 else None, "flag": i % 2 == 0,
             "parent_id": None if i % 7 else 1} for i in range(count)]  # fmt: skip
    store.write(lambda conn: put.many(conn, rows))
    mine = store.read(lambda conn: conn.execute(select(PROBE).where(PROBE.c.id >= 100)
                                                 .order_by(PROBE.c.id)).all())  # fmt: skip
    store.write(lambda conn: conn.execute(PROBE.delete().where(PROBE.c.id >= 100)))
    store.write(lambda conn: conn.execute(insert(PROBE), rows))
    theirs = store.read(lambda conn: conn.execute(select(PROBE).where(PROBE.c.id >= 100)
                                                   .order_by(PROBE.c.id)).all())  # fmt: skip
    assert len(mine) == count
    assert mine == theirs


def test_only_a_plain_insert_is_made_multi_row():
    from melange.prepared import _rows_form

    plain = "INSERT INTO t (a, b) VALUES (?, ?)"
    assert _rows_form(plain, 3) == "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)"
    for other in ("UPDATE t SET a = ? WHERE b = ?",
                  "INSERT INTO t (a, b) VALUES (?, ?) RETURNING a",
                  "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING",
                  "INSERT INTO t (a, b) VALUES (?, 1)",
                  "INSERT INTO t (a) SELECT a FROM u WHERE b = ?"):  # fmt: skip
        assert _rows_form(other, 3) is None, other
