"""A page of `ip list` costs the same in a store ten times larger.

Not timed: the work is counted as each backend counts it, deterministically:
SQLite's virtual machine steps (a progress handler), MariaDB's handler reads (rows
the engine handed over, `SHOW SESSION STATUS`) and PostgreSQL's rows read in this
transaction (`pg_stat_xact_user_tables`). Pages were ordered by the
block's IP version first, which no index serves, so every page sorted every
matching row: a million addresses took four minutes to list.
"""

from __future__ import annotations

from sqlalchemy import text

from melange import operations, paging
from melange.addresses import list_addresses
from melange.store import Store

STEP = 100  # SQLite VM instructions per progress-handler call


def _sqlite_work(conn, fn) -> int:
    raw = conn.connection.driver_connection
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    raw.set_progress_handler(tick, STEP)
    try:
        fn()
    finally:
        raw.set_progress_handler(None, STEP)
    return steps[0] * STEP


def _mysql_reads(conn) -> int:
    rows = conn.execute(text("SHOW SESSION STATUS LIKE 'Handler_read%'")).all()
    return sum(int(value) for _name, value in rows)


def _mysql_work(conn, fn) -> int:
    before = _mysql_reads(conn)
    fn()
    return _mysql_reads(conn) - before


def _postgresql_reads(conn) -> int:
    query = "SELECT sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)) " \
            "FROM pg_stat_xact_user_tables"  # fmt: skip
    return int(conn.execute(text(query)).scalar_one() or 0)


def _postgresql_work(conn, fn) -> int:
    before = _postgresql_reads(conn)
    fn()
    return _postgresql_reads(conn) - before


WORK = {"sqlite": _sqlite_work, "mysql": _mysql_work, "postgresql": _postgresql_work}


def _page_work(store: Store, backend: str, after: paging.Key | None, **filters) -> tuple[int, list]:
    """The work of reading one page of 10 after `after` (of the list `filters` narrow),
    and the page."""
    got: list = []
    if backend == "postgresql":
        # What autovacuum does within a minute of a bulk load: with no statistics at
        # all PostgreSQL guesses that few rows match and sorts them all instead.
        store.write(lambda conn: conn.execute(text("ANALYZE")))

    def read(conn) -> int:
        page = paging.Page(10, after)
        return WORK[backend](conn, lambda: got.extend(list_addresses(conn, page=page, **filters)))

    return store.read(read), got


def _statistics_of_a_small_table(store: Store) -> None:
    """What MariaDB believes until InnoDB renews its statistics in the background, some
    time after a bulk load (or after the tests' reset emptied a table): that the table
    is small. It then read and sorted every row for each page unless told the index."""
    for statement in ("ANALYZE TABLE ip_addresses, blocks",
                      "ALTER TABLE ip_addresses STATS_AUTO_RECALC=0"):  # fmt: skip
        store.write(lambda conn, sql=statement: conn.execute(text(sql)))


def _key(record: dict) -> paging.Key:
    import ipaddress

    address = ipaddress.ip_address(record["address"])
    return (address.version, int(address), 0)


def test_a_page_costs_the_same_in_a_store_ten_times_larger(store_url, backend):
    """Also for a network's list, the larger one through the address index, a small one
    through its blocks: picked out of every address on the address index, the small one
    read the whole store's addresses up to its own."""
    store = Store(store_url)
    try:
        lab = {"cidr": "192.168.0.0/24", "name": "lab", "network": "lab"}
        operations.run(store, "block.create", lab)
        operations.run(store, "block.allocate", {"block": "lab", "count": 20})
        main = {"network": "main"}
        operations.run(store, "block.create", {"cidr": "10.0.0.0/16", "name": "small", **main})
        operations.run(store, "block.allocate", {"block": "small", "count": 100})
        if backend == "mysql":
            _statistics_of_a_small_table(store)
        operations.run(store, "block.allocate", {"block": "small", "count": 1_900})
        middle = _key(operations.run(store, "ip.list", {"page": paging.Page(1000)})[-1])
        before = [_page_work(store, backend, after) for after in (None, middle)]
        before += [_page_work(store, backend, at, network="main") for at in (None, middle)]
        before.append(_page_work(store, backend, None, network="lab"))

        operations.run(store, "block.create", {"cidr": "10.1.0.0/16", "name": "large", **main})
        operations.run(store, "block.allocate", {"block": "large", "count": 20_000})
        after = [_page_work(store, backend, at) for at in (None, middle)]
        after += [_page_work(store, backend, at, network="main") for at in (None, middle)]
        after.append(_page_work(store, backend, None, network="lab"))
    finally:
        if backend == "mysql":  # the database is the next test's too
            store.write(lambda conn: conn.execute(text("ALTER TABLE ip_addresses "
                                                       "STATS_AUTO_RECALC=DEFAULT")))  # fmt: skip
        store.close()
    for (small, small_page), (large, large_page) in zip(before, after, strict=True):
        assert small_page == large_page and len(small_page) == 10
        assert large < 2 * small, (small, large)


def test_an_import_leaves_postgresql_statistics_of_what_it_loaded(tmp_path):
    """Until autovacuum's first ANALYZE, about a minute after a load, PostgreSQL knew
    nothing of the imported rows and sorted the whole address table for every page of
    `ip list` (melange.store `Store.loaded`)."""
    from melange.transfer_format import export_json
    from tests.support.backends import ServerDatabase

    source = Store(f"sqlite:///{tmp_path / 'source.db'}")
    operations.run(source, "block.create", {"cidr": "10.0.0.0/16", "name": "big"})
    operations.run(source, "block.allocate", {"block": "big", "count": 500})
    document = export_json(operations.run(source, "export", {}))
    source.close()
    database = ServerDatabase("postgresql")
    database.create()
    store = Store(database.url)
    try:
        operations.run(store, "import", {"text": document})
        query = "SELECT reltuples FROM pg_class WHERE relname = 'ip_addresses'"
        assert store.read(lambda conn: conn.execute(text(query)).scalar_one()) == 500
    finally:
        store.close()
        database.drop()
