"""Per-member quotas: the bytes of envelopes each member stores, counted in one row per member
so that the stored-bytes quota is checked without summing a member's items on every submit.

Filled from the items already stored (those not purged by retention).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_usage",
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("country"),
    )
    op.execute(
        "INSERT INTO member_usage (country, stored_bytes) "
        "SELECT originator, SUM(size) FROM items WHERE purged_ms IS NULL GROUP BY originator"
    )


def downgrade() -> None:
    op.drop_table("member_usage")
