"""API tokens and NAT mappings

Revision ID: 0008
Revises: 0007

- `api_tokens`: the HTTP API's bearer tokens. A token is `mlg_<key>_<secret>`;
  the store keeps the public key (to find the row), a random salt and the
  SHA-256 of salt and secret, never the secret.
- `nat_mappings`: an inside-global address mapped to an inside-local one
  (Melange v1.0's inside_globals / inside_locals), both addresses melange
  allocated; a mapping goes with either address.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("allowed_ips", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "role IN ('reader', 'writer', 'admin')", name=op.f("ck_api_tokens_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_tokens_key_id")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "nat_mappings",
        sa.Column("inside_global_id", sa.Integer(), nullable=False),
        sa.Column("inside_local_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "inside_global_id <> inside_local_id", name=op.f("ck_nat_mappings_distinct")
        ),
        sa.ForeignKeyConstraint(
            ["inside_global_id"],
            ["ip_addresses.id"],
            name=op.f("fk_nat_mappings_inside_global_id_ip_addresses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inside_local_id"],
            ["ip_addresses.id"],
            name=op.f("fk_nat_mappings_inside_local_id_ip_addresses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "inside_global_id", "inside_local_id", name=op.f("pk_nat_mappings")
        ),
    )
    op.create_index(
        op.f("ix_nat_mappings_inside_local_id"), "nat_mappings", ["inside_local_id"]
    )
    existing = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("allowed_ips")}
    if "ix_allowed_ips_ip_address_id" not in existing:  # MySQL keeps it on downgrade
        op.create_index(
            op.f("ix_allowed_ips_ip_address_id"), "allowed_ips", ["ip_address_id"]
        )


def downgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        # MySQL keeps it: its foreign key needs an index, and it had one before 0008.
        op.drop_index(op.f("ix_allowed_ips_ip_address_id"), table_name="allowed_ips")
    op.drop_table("nat_mappings")
    op.drop_table("api_tokens")
