"""Inboxes leaves (docs/protocol.md 14.2, 14.7): the integrator ends every batch with a leaf
committing to every non-empty inbox's size, salted. This keeps each commitment's opening (the
size and the salt), shown only to its country and, for an item's batch, to its originator; and
a partial index on the log's inboxes leaves, so that their chain is read without a scan.

A log that predates this has no inboxes leaf: the first batch integrated after the upgrade
starts the chain (its `previous` is -1).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_commitments",
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("country", "log_index"),
    )
    op.create_index(
        "ix_log_entries_inboxes",
        "log_entries",
        ["log_index"],
        sqlite_where=sa.text("kind = 'inboxes'"),
        postgresql_where=sa.text("kind = 'inboxes'"),
    )


def downgrade() -> None:
    op.drop_index("ix_log_entries_inboxes", table_name="log_entries")
    op.drop_table("inbox_commitments")
