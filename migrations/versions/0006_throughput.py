"""Throughput (issue 14): no compression attempt on envelopes, one index fewer per delivery.

- `items.envelope` on PostgreSQL is stored EXTERNAL (out of line, never compressed): envelopes
  are mostly ciphertext, which pglz only burns CPU on (a quarter of a batch's insert time,
  measured) and cannot shrink.
- `ix_deliveries_item` repeated the leading column of `uq_deliveries_item_recipient`, whose
  index serves every lookup by item; no query used it, and every delivery paid to maintain it.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE items ALTER COLUMN envelope SET STORAGE EXTERNAL")
    op.drop_index("ix_deliveries_item", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_item", "deliveries", ["item_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE items ALTER COLUMN envelope SET STORAGE EXTENDED")
