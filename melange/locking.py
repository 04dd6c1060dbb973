"""Locks a writer takes inside its transaction, and the one-row INSERT helper.

Apart from melange.store (which imports SQLAlchemy to open stores) so the
core modules on the hot path import no SQLAlchemy (melange.lean).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from melange.prepared import Prepared

if TYPE_CHECKING:
    from sqlalchemy import Connection, Insert


def _lock_block_statement():
    from sqlalchemy import bindparam, select

    from melange.models import blocks

    return select(blocks).where(blocks.c.id == bindparam("block_id")).with_for_update()


_LOCK_BLOCK = Prepared(_lock_block_statement, "store.lock_block")


def lock_block(conn: Connection, block_id: int):
    """Serialise writers of one block, and return its row as of holding the lock.

    SQLite's BEGIN IMMEDIATE already serialises all writers (its compiler drops
    FOR UPDATE); MySQL and PostgreSQL lock just this block's row, so other
    blocks carry on.
    """
    return _LOCK_BLOCK.first(conn, block_id=block_id)


def insert_one(conn: Connection, statement: Insert) -> int:
    """Run an INSERT of one row; the new row's id (its one-column primary key)."""
    key = conn.execute(statement).inserted_primary_key
    if key is None:
        raise TypeError("insert_one takes an INSERT of one row")
    return key[0]


def lock_named(conn: Connection, name: str) -> None:
    """Serialise a store-wide check (e.g. block overlap) among concurrent writers.

    The row's counter also counts the changes made under it, on every backend
    (SQLite's BEGIN IMMEDIATE already serialises, but the count is wanted):
    melanged's watcher reads the "blocks" one to see a block deleted and
    another created between two polls, whatever ids they had.
    """
    from sqlalchemy import update

    from melange.models import locks

    conn.execute(update(locks).where(locks.c.name == name).values(counter=locks.c.counter + 1))
