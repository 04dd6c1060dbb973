"""Kea's host database (MySQL/MariaDB or PostgreSQL), as melange keeps it.

Kea 2.2 reads reservations from its `hosts` table at each DHCP exchange (no host
cache without the commercial hook), so a committed row is served with no reload
and a deleted one is gone at the client's next request. melange never creates
or migrates Kea's tables (the operator runs `kea-admin db-init`); it checks the
schema version it was written for and touches only the rows it wrote, which
carry a user context naming melange (and its network, when it serves one).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, LargeBinary, bindparam, create_engine, exc, text
from sqlalchemy.engine import URL

from melange.errors import InvalidInput, StoreUnavailable
from melange.kea.render import Reservation
from melange.urls import parse_store_url, safe_url

# Schema versions of Kea's host tables this module was written for and tested on
# (kea-admin db-version): Kea 2.2's MySQL and PostgreSQL schemas.
SUPPORTED = {"mysql": {(14, 0)}, "postgresql": {(13, 0)}}
DRIVERS = {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql", "postgresql": "postgresql+psycopg"}
BATCH = 1000  # changes per transaction
HW_ADDRESS = 0  # Kea's host identifier type `hw-address`


class SchemaUnsupported(StoreUnavailable):
    """Kea's host database has no schema, or one of a version melange was not written
    for (exit 6, as for melange's own store at a revision it does not know)."""


@dataclass(frozen=True)
class Changes:
    """The difference between the rows Kea's table holds and those it should. A row is
    known by (subnet id, MAC), Kea's unique key: the same MAC in the same subnet with
    another address or hostname is an update of its row."""

    delete: list[Reservation]
    update: list[Reservation]
    insert: list[Reservation]

    def __len__(self) -> int:
        return len(self.delete) + len(self.update) + len(self.insert)


def parse_url(url: str) -> URL:
    """The host database's URL with a driver melange ships (mysql:// → PyMySQL,
    postgresql:// → psycopg); any other kind is refused (exit 6)."""
    parsed = parse_store_url(url) if "+" in url.partition("://")[0] else None
    if parsed is None:
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except exc.ArgumentError:
            raise InvalidInput(f"{safe_url(url)} is not a Kea host database URL") from None
    kind = parsed.get_backend_name()
    if kind not in DRIVERS:
        raise InvalidInput(
            f"Kea's host database must be MySQL/MariaDB or PostgreSQL, not {kind!r}"
        )
    return parsed.set(drivername=DRIVERS[kind])


def kea_type(url: URL) -> str:
    """Kea's name for the database kind (`type` in hosts-databases)."""
    return "postgresql" if url.get_backend_name() == "postgresql" else "mysql"


def stanza(url: URL) -> dict:
    """The `hosts-databases` entry that points Kea at this database."""
    entry: dict = {"type": kea_type(url), "name": url.database or ""}
    socket = url.query.get("unix_socket") or url.query.get("host")
    if isinstance(socket, tuple):
        socket = socket[0]
    if socket and entry["type"] == "mysql":
        entry["host"] = "localhost"  # the client library's own socket
    elif socket:
        entry["host"] = socket  # libpq: a directory holding the socket
    elif url.host:
        entry["host"] = url.host
    if url.port:
        entry["port"] = url.port
    if url.username:
        entry["user"] = url.username
    if url.password:
        entry["password"] = str(url.password)
    return entry


class HostDatabase:
    """One connection pool to Kea's host database, and the rows melange owns there."""

    def __init__(self, url: str, network: str | None) -> None:
        self.url = parse_url(url)
        self.safe = safe_url(url)
        self.marker = json.dumps({"melange": network or ""}, separators=(",", ":"))
        self.engine: Engine = create_engine(self.url, pool_pre_ping=True, pool_size=2)

    def close(self) -> None:
        self.engine.dispose()

    def _unavailable(self, error: Exception) -> StoreUnavailable:
        detail = str(getattr(error, "orig", error)).splitlines()[0][:200]
        return StoreUnavailable(f"Kea's host database {self.safe} is unavailable: {detail}")

    def check_schema(self) -> tuple[int, int]:
        """The schema version, if one this module knows; else InvalidInput (exit 6)."""
        kind = kea_type(self.url)
        try:
            with self.engine.connect() as conn:
                row = conn.execute(text("SELECT version, minor FROM schema_version")).first()
        except exc.ProgrammingError:
            row = None
        except exc.DBAPIError as error:
            if "schema_version" in str(error.orig):
                row = None
            else:
                raise self._unavailable(error) from None
        supported = ", ".join(f"{v}.{m}" for v, m in sorted(SUPPORTED[kind]))
        if row is None:
            raise SchemaUnsupported(
                f"{self.safe} has no Kea schema (run `kea-admin db-init {kind}` first); "
                f"melange supports Kea {kind} host schema {supported}"
            )
        version = (int(row[0]), int(row[1]))
        if version not in SUPPORTED[kind]:
            raise SchemaUnsupported(
                f"Kea host schema {version[0]}.{version[1]} in {self.safe} is not one melange "
                f"supports ({kind}: {supported})"
            )
        return version

    def owned(self) -> set[Reservation]:
        """The reservations melange wrote (and still there)."""
        query = text(
            "SELECT dhcp4_subnet_id, dhcp_identifier, ipv4_address, hostname "
            "FROM hosts WHERE user_context = :marker"
        )
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"marker": self.marker}).all()
        except exc.DBAPIError as error:
            raise self._unavailable(error) from None
        return {
            Reservation(int(sid or 0), int.from_bytes(bytes(mac), "big"), int(address or 0),
                        hostname or None)
            for sid, mac, address, hostname in rows
        }

    def apply(self, changes: Changes, batch: int = BATCH) -> int:
        """Deletes, then hostname updates, then inserts, `batch` rows per transaction
        (a transaction never long enough to stall Kea's reads). The number of
        transactions committed."""
        key = ("dhcp_identifier = :mac AND dhcp_identifier_type = :kind AND "
               "dhcp4_subnet_id = :sid AND user_context = :marker")
        steps: list[tuple[str, list[Reservation]]] = [
            (f"DELETE FROM hosts WHERE {key}", changes.delete),
            (f"UPDATE hosts SET ipv4_address = :address, hostname = :hostname WHERE {key}",
             changes.update),
            ("INSERT INTO hosts (dhcp_identifier, dhcp_identifier_type, dhcp4_subnet_id, "
             "ipv4_address, hostname, user_context) VALUES (:mac, :kind, :sid, :address, "
             ":hostname, :marker)", changes.insert),
        ]  # fmt: skip
        work = [
            (sql, [self._params(r) for r in rows[i : i + batch]])
            for sql, rows in steps
            for i in range(0, len(rows), batch)
        ]
        committed = 0
        for group in _transactions(work, batch):
            try:
                with self.engine.begin() as conn:
                    for sql, rows in group:
                        statement = text(sql).bindparams(bindparam("mac", type_=LargeBinary()))
                        conn.execute(statement, rows)
            except exc.DBAPIError as error:
                raise self._unavailable(error) from None
            committed += 1
        return committed

    def _params(self, r: Reservation) -> dict:
        return {"mac": r.mac.to_bytes(6, "big"), "kind": HW_ADDRESS, "sid": r.subnet_id,
                "address": r.address, "hostname": r.hostname, "marker": self.marker}  # fmt: skip


def _transactions(work: list[tuple[str, list[dict]]], batch: int) -> Iterable[list]:
    """Consecutive statement groups of at most `batch` rows in all."""
    group: list[tuple[str, list[dict]]] = []
    size = 0
    for sql, rows in work:
        if size + len(rows) > batch and group:
            yield group
            group, size = [], 0
        group.append((sql, rows))
        size += len(rows)
    if group:
        yield group


def difference(have: set[Reservation], want: Iterable[Reservation]) -> Changes:
    """What turns the rows `have` into `want`, by Kea's key (subnet id, MAC)."""
    wanted = set(want)
    old = {(r.subnet_id, r.mac): r for r in have - wanted}
    new = {(r.subnet_id, r.mac): r for r in wanted - have}
    return Changes(
        delete=sorted(r for key, r in old.items() if key not in new),
        update=sorted(r for key, r in new.items() if key in old),
        insert=sorted(r for key, r in new.items() if key not in old),
    )
