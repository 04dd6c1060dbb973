"""exact history, stored holds, ids never reused

Revision ID: 0007
Revises: 0006

- SQLite handed a deleted block's id to the next block, so the history of the
  new one showed the old one's events. Tables whose ids are referenced
  (blocks, interfaces, mac_ranges, ip_addresses, audit_log) become
  AUTOINCREMENT there: ids are never reused, as on MySQL and PostgreSQL.
  SQLite cannot alter that in place; batch mode rebuilds those tables.
- A hold's end depended on the reading client's config. `held_until` stores
  it, fixed at release; holds already in the store end 48 hours (the
  default hold) after their release.
- Audit rows name the kind of entity and its identity as it was; the addresses
  of a change that touched several are kept as runs in `audit_addresses`.
  Rows already there get their kind from their command; a MAC range's rows
  lose the block id that was really the range's own id.
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DEFAULT_HOLD = timedelta(hours=48)
KINDS = (
    ("block.allocate", "address"),
    ("block.%", "block"),
    ("ip.%", "address"),
    ("interface.%", "interface"),
    ("policy.%", "policy"),
    ("mac_range.%", "mac_range"),
    ("route.%", "route"),
)


def _batch(table: str, autoincrement: bool):
    """A batch on `table`; on SQLite the table is rebuilt with or without AUTOINCREMENT
    (which SQLite's reflection does not carry over, so every rebuild says it)."""
    if op.get_bind().dialect.name != "sqlite":
        return op.batch_alter_table(table)
    return op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    )


def _address():
    return sa.LargeBinary(16).with_variant(sa.dialects.mysql.VARBINARY(16), "mysql", "mariadb")


def upgrade() -> None:
    # Columns first (SQLite adds them in place), data, then one rebuild per table.
    op.add_column("ip_addresses", sa.Column("held_until", sa.DateTime(), nullable=True))
    _fill_held_until()
    op.add_column("audit_log", sa.Column("kind", sa.String(16), nullable=True))
    op.add_column("audit_log", sa.Column("subject_id", sa.BigInteger(), nullable=True))
    op.add_column("audit_log", sa.Column("subject", sa.String(255), nullable=True))
    _fill_kinds()
    if op.get_bind().dialect.name == "sqlite":
        for table in ("blocks", "interfaces", "mac_ranges", "audit_log"):
            with _batch(table, True):
                pass
    with _batch("ip_addresses", True) as batch:
        batch.create_check_constraint(
            "held_until",
            "(state = 'allocated' AND held_until IS NULL) OR "
            "(state = 'held' AND held_until IS NOT NULL)",
        )
        batch.drop_index(batch.f("ix_ip_addresses_block_id_state_released_at"))
        batch.create_index(
            batch.f("ix_ip_addresses_block_id_state_held_until"),
            ["block_id", "state", "held_until"],
        )
    audit_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "audit_addresses",
        sa.Column("audit_id", audit_id, nullable=False),
        sa.Column("block_id", sa.Integer(), nullable=False),
        sa.Column("first_addr", _address(), nullable=False),
        sa.Column("last_addr", _address(), nullable=False),
        sa.CheckConstraint(
            "first_addr <= last_addr", name=op.f("ck_audit_addresses_first_le_last")
        ),
        sa.ForeignKeyConstraint(
            ["audit_id"],
            ["audit_log.id"],
            name=op.f("fk_audit_addresses_audit_id_audit_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "audit_id", "block_id", "first_addr", name=op.f("pk_audit_addresses")
        ),
    )
    op.create_index(op.f("ix_audit_addresses_first_addr"), "audit_addresses", ["first_addr"])
    op.create_index(op.f("ix_audit_addresses_block_id"), "audit_addresses", ["block_id"])
    if op.get_bind().dialect.name == "sqlite":
        _seed_sequence("blocks", "kind IN ('block', 'address', 'route')", "block_id")
        _seed_sequence("mac_ranges", "kind = 'mac_range'", "subject_id")


def _seed_sequence(table: str, audited: str, column: str) -> None:
    """Start SQLite's AUTOINCREMENT after every id the audit trail names, not only the
    ids still in the table: a block deleted before this revision keeps its id too."""
    bind = op.get_bind()
    highest = max(
        bind.execute(sa.text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar(),
        bind.execute(
            sa.text(f"SELECT coalesce(max({column}), 0) FROM audit_log WHERE {audited}")
        ).scalar(),
    )
    if not highest:
        return
    known = sa.text("SELECT count(*) FROM sqlite_sequence WHERE name = :t").bindparams(t=table)
    if bind.execute(known).scalar():
        statement = "UPDATE sqlite_sequence SET seq = :n WHERE name = :t AND seq < :n"
    else:
        statement = "INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :n)"
    bind.execute(sa.text(statement).bindparams(t=table, n=highest))


def _fill_held_until() -> None:
    """Holds made before this revision end DEFAULT_HOLD after their release."""
    bind = op.get_bind()
    table = sa.table(
        "ip_addresses",
        sa.column("id", sa.Integer),
        sa.column("state", sa.String),
        sa.column("released_at", sa.DateTime),
        sa.column("held_until", sa.DateTime),
    )
    held = bind.execute(
        sa.select(table.c.id, table.c.released_at).where(table.c.state == "held")
    ).all()
    if held:
        bind.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("row_id"))
            .values(held_until=sa.bindparam("until")),
            [{"row_id": row.id, "until": row.released_at + DEFAULT_HOLD} for row in held],
        )


def _fill_kinds() -> None:
    for pattern, kind in KINDS:
        op.execute(
            sa.text(
                "UPDATE audit_log SET kind = :kind WHERE kind IS NULL AND command LIKE :p"
            ).bindparams(kind=kind, p=pattern)
        )
    op.execute("UPDATE audit_log SET kind = 'store' WHERE kind IS NULL")
    op.execute(
        "UPDATE audit_log SET subject_id = block_id, block_id = NULL WHERE kind = 'mac_range'"
    )
    op.execute("UPDATE audit_log SET subject_id = block_id WHERE kind = 'block'")


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_addresses_block_id"), table_name="audit_addresses")
    op.drop_index(op.f("ix_audit_addresses_first_addr"), table_name="audit_addresses")
    op.drop_table("audit_addresses")
    op.execute(
        "UPDATE audit_log SET block_id = subject_id WHERE kind = 'mac_range' AND block_id IS NULL"
    )
    with _batch("audit_log", False) as batch:
        batch.drop_column("subject")
        batch.drop_column("subject_id")
        batch.drop_column("kind")
    with _batch("ip_addresses", False) as batch:
        batch.drop_constraint(batch.f("ck_ip_addresses_held_until"), type_="check")
        batch.drop_index(batch.f("ix_ip_addresses_block_id_state_held_until"))
        batch.create_index(
            batch.f("ix_ip_addresses_block_id_state_released_at"),
            ["block_id", "state", "released_at"],
        )
        batch.drop_column("held_until")
    for table in ("blocks", "interfaces", "mac_ranges"):
        if op.get_bind().dialect.name == "sqlite":
            with _batch(table, False):
                pass
