"""audit log

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from melange.models import Address

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column("block_id", sa.Integer(), nullable=True),
        sa.Column("address", Address(), nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_block_id_at"), "audit_log", ["block_id", "at"])
    op.create_index(op.f("ix_audit_log_address_at"), "audit_log", ["address", "at"])


def downgrade() -> None:
    op.drop_table("audit_log")
