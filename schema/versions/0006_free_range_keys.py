"""free ranges keyed by their last address

Revision ID: 0006
Revises: 0005

An allocation moves the first address of a free range up and keeps its last
address. With (block_id, first_addr) as the primary key, every allocation
rewrote a primary-key entry: in InnoDB a delete and an insert, whose duplicate
check locks neighbouring index entries, often another block's. On Galera those
locks made writers in different blocks abort each other. Keyed by (block_id,
last_addr), the row is updated in place and first_addr lives in a plain index;
ranges never overlap, so first_addr needs no uniqueness of its own.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In this order on MySQL, the foreign key on block_id always has an index to use.
    with op.batch_alter_table("free_ranges") as batch_op:
        batch_op.drop_constraint(batch_op.f("pk_free_ranges"), type_="primary")
        batch_op.create_primary_key(batch_op.f("pk_free_ranges"), ["block_id", "last_addr"])
        batch_op.drop_index(batch_op.f("ix_free_ranges_block_id_last_addr"))
        batch_op.create_index(
            batch_op.f("ix_free_ranges_block_id_first_addr"), ["block_id", "first_addr"]
        )


def downgrade() -> None:
    with op.batch_alter_table("free_ranges") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_free_ranges_block_id_last_addr"), ["block_id", "last_addr"], unique=True
        )
        batch_op.drop_constraint(batch_op.f("pk_free_ranges"), type_="primary")
        batch_op.create_primary_key(batch_op.f("pk_free_ranges"), ["block_id", "first_addr"])
        batch_op.drop_index(batch_op.f("ix_free_ranges_block_id_first_addr"))
