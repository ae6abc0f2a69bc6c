"""Registry version row: bumped by every admin action so brokers reload their cached registry.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    registry_state = sa.table(
        "registry_state", sa.column("id", sa.Integer), sa.column("version", sa.BigInteger)
    )
    op.bulk_insert(registry_state, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("registry_state")
