"""Names compared exactly on MySQL and MariaDB too

Revision ID: 0010
Revises: 0009

MySQL and MariaDB compare strings ignoring case under their default collations,
where SQLite and PostgreSQL compare them exactly: `block show WEB` found the block
`web`, `block create … --name WEB` was refused as a duplicate, and `token revoke
OPS` revoked the token `ops`. The columns that hold names a user types become
binary there (`VARCHAR(n) BINARY`: the binary collation of the column's own
character set), so every backend gives the same answer. Nothing changes on
SQLite and PostgreSQL. No stored value can clash: a unique index that ignored
case held no two names differing only in case.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (table, column, length, nullable)
COLUMNS = [
    ("policies", "name", 255, False),
    ("blocks", "name", 255, True),
    ("blocks", "network", 63, True),
    ("blocks", "tenant", 255, True),
    ("interfaces", "vif_id", 255, False),
    ("interfaces", "network", 63, False),
    ("interfaces", "device", 255, True),
    ("interfaces", "tenant", 255, True),
    ("ip_addresses", "hostname", 253, True),
    ("ip_addresses", "tenant", 255, True),
    ("api_tokens", "name", 64, False),
    ("api_tokens", "key_id", 16, False),
]


def _mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    _alter(binary=True)


def downgrade() -> None:
    _alter(binary=False)


def _alter(*, binary: bool) -> None:
    if not _mysql():
        return
    for table, column, length, nullable in COLUMNS:
        plain, exact = sa.String(length), mysql.VARCHAR(length, binary=True)
        op.alter_column(table, column, existing_type=plain if binary else exact,
                        type_=exact if binary else plain, existing_nullable=nullable)  # fmt: skip
