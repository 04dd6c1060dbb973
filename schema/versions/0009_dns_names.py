"""DNS names: a domain per block, a name per allocated address

Revision ID: 0009
Revises: 0008

- `blocks.domain`: the DNS domain of the block's names (a subnet without one
  inherits its nearest ancestor's).
- `ip_addresses.dns_name`: the name DNS answers for an allocated address (its
  hostname inside its block's domain), NULL while held or without a domain;
  `dns_version` its family; a unique index makes each name one address's of
  each family (an A and an AAAA). Existing hostnames get no
  name: no block had a domain before this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("blocks", sa.Column("domain", sa.String(253), nullable=True))
    op.add_column("ip_addresses", sa.Column("dns_name", sa.String(253), nullable=True))
    op.add_column("ip_addresses", sa.Column("dns_version", sa.SmallInteger(), nullable=True))
    op.create_index(
        op.f("ix_ip_addresses_dns_name_dns_version"),
        "ip_addresses",
        ["dns_name", "dns_version"],
        unique=True,
    )


def _batch(table: str):
    """A batch on `table`; on SQLite the table is rebuilt keeping AUTOINCREMENT (which
    SQLite's reflection does not carry over)."""
    if op.get_bind().dialect.name != "sqlite":
        return op.batch_alter_table(table)
    return op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ip_addresses_dns_name_dns_version"), table_name="ip_addresses")
    with _batch("ip_addresses") as batch:
        batch.drop_column("dns_version")
        batch.drop_column("dns_name")
    with _batch("blocks") as batch:
        batch.drop_column("domain")
