"""TAXII POST: the status of what analysts sent through a writable collection.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("gateway_submissions"):
        return  # made by create_all before this revision
    op.create_table(
        "gateway_submissions",
        sa.Column("status_id", sa.String(length=36), nullable=False),
        sa.Column("profile", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("request_us", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("objects", sa.Text(), nullable=False),
        sa.Column("tlp", sa.String(length=16), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("status_id"),
    )
    op.create_index(op.f("ix_gateway_submissions_item_id"), "gateway_submissions", ["item_id"], unique=False)


def downgrade() -> None:
    op.drop_table("gateway_submissions")
