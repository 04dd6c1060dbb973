"""named lock rows

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NAMES = ("blocks", "mac_ranges", "interfaces", "policies")


def upgrade() -> None:
    locks = op.create_table(
        "locks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_locks")),
    )
    op.bulk_insert(locks, [{"name": name, "counter": 0} for name in NAMES])


def downgrade() -> None:
    op.drop_table("locks")
