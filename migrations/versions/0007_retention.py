"""Retention: an item's envelope can be purged (acknowledged by every recipient, older than the
retention age) while its row, digest and log entry stay.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("purged_ms", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":  # batch mode recreates nothing there: keep 0006's choice
        op.execute("ALTER TABLE items ALTER COLUMN envelope SET STORAGE EXTERNAL")


def downgrade() -> None:
    # envelopes once purged cannot come back: a downgrade keeps their rows with an empty envelope
    op.execute("UPDATE items SET envelope = '' WHERE envelope IS NULL")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("purged_ms")
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=False)
