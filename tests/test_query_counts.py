"""Listing blocks costs a fixed number of statements, whatever the number of blocks.

Counted on a real SQLite store with the engine's `before_cursor_execute` event: a
listing of 30 blocks (with policies, parents and DNS servers) runs exactly as many
statements as a listing of 3 of the same kinds.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from melange import blocks, policies
from melange.store import Store


def _store_with(path: Path, groups: int) -> Store:
    """`groups` × (a top-level block with a policy and DNS servers, one of its subnets
    with its own DNS server, a plain block): every per-block lookup a record needs."""
    store = Store(f"sqlite:///{path}")

    def fill(conn) -> None:
        policies.create(conn, "edge")
        for i in range(groups):
            dns = [f"10.{i}.0.53", f"10.{i}.0.54"]
            top = blocks.create(
                conn,
                f"10.{i}.0.0/16",
                name=f"top-{i}",
                policy="edge",
                dns=dns,
                gateway=f"10.{i}.0.1",
            )
            blocks.create(conn, f"10.{i}.1.0/24", parent=str(top["id"]), dns=[f"10.{i}.1.53"])
            blocks.create(conn, f"172.16.{i}.0/24", network="other")

    store.write(fill)
    return store


def _statements(store: Store, fn) -> tuple[int, object]:
    """How many statements `fn` runs in one read transaction, and what it returns."""
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    store.read(lambda conn: None)  # the schema check is done before counting
    event.listen(store.engine, "before_cursor_execute", count)
    try:
        result = store.read(fn)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    return len(seen), result


def test_block_list_runs_as_many_statements_for_30_blocks_as_for_3(tmp_path):
    few = _store_with(tmp_path / "few.db", 1)
    many = _store_with(tmp_path / "many.db", 10)
    few_count, few_listed = _statements(few, blocks.list_blocks)
    many_count, many_listed = _statements(many, blocks.list_blocks)
    assert (len(few_listed), len(many_listed)) == (3, 30)
    assert many_listed[0]["policy"] == "edge" and many_listed[1]["parent"] == "10.0.0.0/16"
    assert many_listed[0]["dns"] == ["10.0.0.53", "10.0.0.54"]
    assert many_count == few_count, (few_count, many_count)
    print(f"block list: {few_count} statements for 3 blocks, {many_count} for 30")
