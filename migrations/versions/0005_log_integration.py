"""Staged log leaves, stored Merkle subtrees and signed checkpoints; log index and inbox
sequence numbers assigned at integration.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.alter_column("log_index", existing_type=sa.BigInteger(), nullable=True)
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=True)
    with op.batch_alter_table("log_entries") as batch:
        batch.add_column(sa.Column("leaf", sa.LargeBinary(), nullable=True))
    op.create_table(
        "log_pending",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "log_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "checkpoint_cosignatures",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness", sa.String(length=200), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size", "witness"),
    )
    op.create_table(
        "delivery_receipts",
        sa.Column("item_id", sa.String(length=36), nullable=False),
        sa.Column("recipient", sa.String(length=3), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "recipient"),
    )

    _store_existing_tree()


def _store_existing_tree() -> None:
    """A log that predates this revision has leaf hashes but no stored subtrees: compute them,
    so proofs can be served and the integrator can append (no leaf changes)."""
    from msmt.core.merkle import CompactRange

    conn = op.get_bind()
    hashes = [
        bytes(h) for (h,) in conn.execute(sa.text("SELECT leaf_hash FROM log_entries ORDER BY log_index"))
    ]
    if not hashes:
        return
    _, nodes = CompactRange().append_many(hashes)
    log_nodes = sa.table(
        "log_nodes",
        sa.column("level", sa.Integer),
        sa.column("idx", sa.BigInteger),
        sa.column("hash", sa.LargeBinary),
    )
    op.bulk_insert(log_nodes, [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in nodes])


def downgrade() -> None:
    op.drop_table("delivery_receipts")
    op.drop_table("checkpoint_cosignatures")
    op.drop_table("checkpoints")
    op.drop_table("log_nodes")
    op.drop_table("log_pending")
    with op.batch_alter_table("log_entries") as batch:
        batch.drop_column("leaf")
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("items") as batch:
        batch.alter_column("log_index", existing_type=sa.BigInteger(), nullable=False)
