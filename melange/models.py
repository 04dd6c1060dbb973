"""The store's tables, as SQLAlchemy Core (no ORM: fewer imports, faster start).

Constraints live in the database, not only in Python, so that a second writer
(another host, a bad import, a bug) cannot store what the CLI would refuse.
Addresses are 16-byte big-endian integers: they sort and compare as numbers
for both families on SQLite, MariaDB and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class Address(TypeDecorator):
    """An IP address as a Python int, stored as 16 big-endian bytes."""

    impl = LargeBinary(16)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.VARBINARY(16))
        return dialect.type_descriptor(LargeBinary(16))

    def process_bind_param(self, value, dialect):
        return None if value is None else int(value).to_bytes(16, "big")

    def process_result_value(self, value, dialect):
        return None if value is None else int.from_bytes(bytes(value), "big")


def _name(length: int = 255) -> String:
    """A name a user types, compared exactly on every backend: MySQL and MariaDB compare
    strings ignoring case by default, so there `web` and `WEB` were one block, and
    `token revoke OPS` revoked the token `ops` (schema 0010 makes these columns binary)."""
    return String(length).with_variant(mysql.VARCHAR(length, binary=True), "mysql", "mariadb")


policies = Table(
    "policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", _name(), nullable=False, unique=True),
    Column("description", Text),
    Column("created_at", DateTime, nullable=False),
)

unusable_ranges = Table(
    "unusable_ranges",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("policy_id", ForeignKey("policies.id", ondelete="CASCADE"), nullable=False),
    Column("start_offset", BigInteger, nullable=False),
    Column("length", BigInteger, nullable=False),
    CheckConstraint("length > 0", name="length_positive"),
    UniqueConstraint("policy_id", "start_offset", "length"),
)

unusable_octets = Table(
    "unusable_octets",
    metadata,
    Column("policy_id", ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True),
    Column("octet", SmallInteger, primary_key=True),
    CheckConstraint("octet >= 0 AND octet <= 255", name="octet_range"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cidr", String(43), nullable=False),
    Column("version", SmallInteger, nullable=False),
    Column("first_addr", Address, nullable=False),
    Column("last_addr", Address, nullable=False),
    Column("prefixlen", SmallInteger, nullable=False),
    Column("name", _name(), unique=True),
    Column("network", _name(63)),
    Column("tenant", _name()),
    Column("type", String(8), nullable=False),
    Column("gateway", Address),
    Column("policy_id", ForeignKey("policies.id", ondelete="RESTRICT")),
    Column("parent_id", ForeignKey("blocks.id", ondelete="RESTRICT")),
    Column("generator", String(64), nullable=False),
    # The DNS domain of the block's names (schema 0009); a subnet without one
    # inherits its nearest ancestor's (melange.dns).
    Column("domain", String(253)),
    # Addresses in state 'allocated', kept in step under the block's lock, so
    # utilisation of a /8 costs what it costs for a /24.
    Column("allocated_count", BigInteger, nullable=False, server_default="0"),
    # Bumped by every change to what the block renders for DHCP; melanged's
    # watcher compares (count, sum of ids, sum of generations) per network.
    Column("generation", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    CheckConstraint("version IN (4, 6)", name="version"),
    CheckConstraint("type IN ('private', 'public')", name="type"),
    CheckConstraint("first_addr <= last_addr", name="first_le_last"),
    CheckConstraint("allocated_count >= 0", name="allocated_count"),
    Index(None, "network"),
    Index(None, "parent_id"),
    Index(None, "version", "first_addr"),
    sqlite_autoincrement=True,
)

block_dns_servers = Table(
    "block_dns_servers",
    metadata,
    Column("block_id", ForeignKey("blocks.id", ondelete="CASCADE"), primary_key=True),
    Column("position", SmallInteger, primary_key=True),
    Column("address", Address, nullable=False),
    Column("version", SmallInteger, nullable=False),
)

interfaces = Table(
    "interfaces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("vif_id", _name(), nullable=False, unique=True),
    Column("network", _name(63), nullable=False),
    Column("device", _name()),
    Column("tenant", _name()),
    Column("mac", BigInteger, nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    sqlite_autoincrement=True,
)

ip_addresses = Table(
    "ip_addresses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("block_id", ForeignKey("blocks.id", ondelete="RESTRICT"), nullable=False),
    Column("address", Address, nullable=False),
    Column("mac", BigInteger),
    # Equal to mac while allocated, NULL while held: a portable partial unique
    # index ("one active address per MAC and block") that MySQL can enforce too.
    Column("active_mac", BigInteger),
    Column("hostname", _name(253)),
    Column("interface_id", ForeignKey("interfaces.id", ondelete="SET NULL")),
    Column("tenant", _name()),
    Column("state", String(9), nullable=False),
    Column("allocated_at", DateTime, nullable=False),
    Column("released_at", DateTime),
    # When a hold ends, fixed at release from the releasing client's hold time
    # (schema 0007): every reader agrees on it, whatever its own config says.
    Column("held_until", DateTime),
    # The name DNS answers for the address (hostname within the block's domain,
    # lower case) and its family, set only while allocated and the block has a
    # domain (schema 0009): the unique index makes a name one address's of each
    # family (one A, one AAAA: a dual-stack machine), on every backend.
    Column("dns_name", String(253)),
    Column("dns_version", SmallInteger),
    UniqueConstraint("block_id", "address"),
    UniqueConstraint("block_id", "active_mac"),
    CheckConstraint("state IN ('allocated', 'held')", name="state"),
    CheckConstraint(
        "(state = 'allocated' AND released_at IS NULL) OR "
        "(state = 'held' AND released_at IS NOT NULL)",
        name="state_release",
    ),
    CheckConstraint(
        "active_mac IS NULL OR (state = 'allocated' AND active_mac = mac)",
        name="active_mac",
    ),
    CheckConstraint(
        "(state = 'allocated' AND held_until IS NULL) OR "
        "(state = 'held' AND held_until IS NOT NULL)",
        name="held_until",
    ),
    Index(None, "block_id", "state", "held_until"),
    Index(None, "mac"),
    Index(None, "interface_id"),
    Index(None, "address"),
    Index(None, "dns_name", "dns_version", unique=True),
    sqlite_autoincrement=True,
)

free_ranges = Table(
    "free_ranges",
    metadata,
    Column("block_id", ForeignKey("blocks.id", ondelete="CASCADE"), primary_key=True),
    Column("first_addr", Address, nullable=False),
    # Keyed by the last address, which an allocation leaves alone (schema 0006).
    Column("last_addr", Address, primary_key=True),
    CheckConstraint("first_addr <= last_addr", name="first_le_last"),
    Index(None, "block_id", "first_addr"),
)

mac_ranges = Table(
    "mac_ranges",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cidr", String(24), nullable=False, unique=True),
    Column("first_mac", BigInteger, nullable=False),
    Column("last_mac", BigInteger, nullable=False),
    Column("created_at", DateTime, nullable=False),
    CheckConstraint("first_mac <= last_mac", name="first_le_last"),
    sqlite_autoincrement=True,
)

allocated_macs = Table(
    "allocated_macs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("mac_range_id", ForeignKey("mac_ranges.id", ondelete="RESTRICT"), nullable=False),
    Column("mac", BigInteger, nullable=False, unique=True),
    Column("interface_id", ForeignKey("interfaces.id", ondelete="CASCADE")),
    Index(None, "mac_range_id", "mac"),
)

routes = Table(
    "routes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("block_id", ForeignKey("blocks.id", ondelete="CASCADE"), nullable=False),
    Column("destination", String(43), nullable=False),
    Column("gateway", Address, nullable=False),
    UniqueConstraint("block_id", "destination"),
)

allowed_ips = Table(
    "allowed_ips",
    metadata,
    Column("interface_id", ForeignKey("interfaces.id", ondelete="CASCADE"), primary_key=True),
    Column("ip_address_id", ForeignKey("ip_addresses.id", ondelete="CASCADE"), primary_key=True),
    # Freeing an address deletes its allowances by cascade: found by this index (0008).
    Index(None, "ip_address_id"),
)


# The HTTP API's bearer tokens (schema 0008): `mlg_<key_id>_<secret>`. Only a
# random salt and SHA-256(salt + secret) are kept; the key finds the row.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", _name(64), nullable=False, unique=True),
    Column("key_id", _name(16), nullable=False, unique=True),
    Column("role", String(8), nullable=False),
    Column("salt", String(32), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("allowed_ips", Text),  # CIDRs, comma-separated; NULL: any address
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime),
    Column("last_used_at", DateTime),
    CheckConstraint("role IN ('reader', 'writer', 'admin')", name="role"),
    sqlite_autoincrement=True,
)

# An inside-global address mapped to an inside-local one (schema 0008).
nat_mappings = Table(
    "nat_mappings",
    metadata,
    Column(
        "inside_global_id",
        ForeignKey("ip_addresses.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "inside_local_id",
        ForeignKey("ip_addresses.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("created_at", DateTime, nullable=False),
    CheckConstraint("inside_global_id <> inside_local_id", name="distinct"),
    Index(None, "inside_local_id"),
)


# Named rows that writers UPDATE to serialise store-wide checks (such as the
# overlap rules of block creation) on MySQL and PostgreSQL. An UPDATE, unlike
# SELECT ... FOR UPDATE, also conflicts across Galera nodes at certification.
# The named rows a new store starts with (schema 0002 created them).
LOCK_NAMES = ("blocks", "mac_ranges", "interfaces", "policies")
locks = Table(
    "locks",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("counter", BigInteger, nullable=False),
)


# One row per change, written in the change's own transaction (so a failed
# command leaves none): who, through what, which command, and what it did.
# `kind`, `subject_id` and `subject` name the entity as it was (schema 0007):
# `block_id` is set only for changes to a block or to its addresses and
# routes, never to another kind's id. Ids are never reused (AUTOINCREMENT on
# SQLite, sequences on the servers), so a block's history is its own.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("via", String(16), nullable=False),
    Column("command", String(64), nullable=False),
    Column("block_id", Integer),
    Column("address", Address),
    Column("params", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("kind", String(16)),
    Column("subject_id", BigInteger),
    Column("subject", String(255)),
    Index(None, "at"),
    Index(None, "block_id", "at"),
    Index(None, "address", "at"),
    sqlite_autoincrement=True,
)

# The addresses a change touched when there was more than one, as runs of
# consecutive addresses per block: `--count 50000` costs a few rows. A run
# never spans more than audit.MAX_RUN addresses, so "which runs hold A" is a
# bounded range scan of the first_addr index.
audit_addresses = Table(
    "audit_addresses",
    metadata,
    Column(
        "audit_id",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("audit_log.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("block_id", Integer, primary_key=True),
    Column("first_addr", Address, primary_key=True),
    Column("last_addr", Address, nullable=False),
    CheckConstraint("first_addr <= last_addr", name="first_le_last"),
    Index(None, "first_addr"),
    Index(None, "block_id"),
)
