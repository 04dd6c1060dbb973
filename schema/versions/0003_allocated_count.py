"""allocated counter per block

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.add_column(
            sa.Column("allocated_count", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.create_check_constraint("allocated_count", "allocated_count >= 0")
    op.execute(
        "UPDATE blocks SET allocated_count = (SELECT COUNT(*) FROM ip_addresses "
        "WHERE ip_addresses.block_id = blocks.id AND ip_addresses.state = 'allocated')"
    )


def downgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.drop_constraint("ck_blocks_allocated_count", type_="check")
        batch.drop_column("allocated_count")
