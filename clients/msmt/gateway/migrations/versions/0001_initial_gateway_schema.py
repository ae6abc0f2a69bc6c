"""The gateway's first schema: received items, their STIX objects, rejected deliveries,
withdrawals and the inbox cursor.

A database made by `create_all` before the gateway had migrations holds some of these tables
already (`gateway_withdrawals` came later): each is created only when it is missing, so that
upgrading such a store takes it over as it is, and stamps it.

Revision ID: 0001
Revises:
Create Date: 2026-11-29 18:16:05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _missing(table: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("gateway_items"):
        op.create_table(
            "gateway_items",
            sa.Column("item_id", sa.String(length=64), nullable=False),
            sa.Column("originator", sa.String(length=16), nullable=False),
            sa.Column("signing_key_id", sa.String(length=128), nullable=False),
            sa.Column("log_index", sa.BigInteger(), nullable=True),
            sa.Column("inbox_seq", sa.BigInteger(), nullable=False),
            sa.Column("created_ms", sa.BigInteger(), nullable=False),
            sa.Column("received_ms", sa.BigInteger(), nullable=False),
            sa.Column("stored_ms", sa.BigInteger(), nullable=False),
            sa.Column("classification", sa.String(length=32), nullable=False),
            sa.Column("tlp", sa.String(length=16), nullable=False),
            sa.Column("markings", sa.Text(), nullable=False),
            sa.Column("content_type", sa.String(length=255), nullable=False),
            sa.Column("header", sa.Text(), nullable=False),
            sa.Column("envelope_sha256", sa.String(length=64), nullable=False),
            sa.Column("payload", sa.LargeBinary(), nullable=False),
            sa.Column("stix_error", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("item_id"),
        )
        op.create_index(op.f("ix_gateway_items_originator"), "gateway_items", ["originator"], unique=False)
    if _missing("gateway_rejected"):
        op.create_table(
            "gateway_rejected",
            sa.Column("inbox_seq", sa.BigInteger(), nullable=False),
            sa.Column("item_id", sa.String(length=64), nullable=False),
            sa.Column("originator", sa.String(length=16), nullable=False),
            sa.Column("code", sa.String(length=64), nullable=False),
            sa.Column("detail", sa.Text(), nullable=False),
            sa.Column("envelope", sa.LargeBinary(), nullable=True),
            sa.Column("rejected_ms", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("inbox_seq"),
        )
    if _missing("gateway_state"):
        op.create_table(
            "gateway_state",
            sa.Column("key", sa.String(length=64), nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )
    if _missing("gateway_withdrawals"):
        op.create_table(
            "gateway_withdrawals",
            sa.Column("withdrawal_item_id", sa.String(length=64), nullable=False),
            sa.Column("item_id", sa.String(length=64), nullable=False),
            sa.Column("originator", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("withdrawn_ms", sa.BigInteger(), nullable=False),
            sa.Column("stored_ms", sa.BigInteger(), nullable=False),
            sa.Column("applied_ms", sa.BigInteger(), nullable=True),
            sa.Column("refused", sa.Text(), nullable=True),
            sa.Column("revoked", sa.Integer(), nullable=False),
            sa.Column("plaintext_deleted", sa.Boolean(), nullable=False),
            sa.PrimaryKeyConstraint("withdrawal_item_id"),
        )
        op.create_index(
            op.f("ix_gateway_withdrawals_item_id"), "gateway_withdrawals", ["item_id"], unique=False
        )
    if _missing("gateway_stix_objects"):
        op.create_table(
            "gateway_stix_objects",
            sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("collection", sa.String(length=16), nullable=False),
            sa.Column("object_id", sa.String(length=300), nullable=False),
            sa.Column("object_type", sa.String(length=250), nullable=False),
            sa.Column("spec_version", sa.String(length=8), nullable=False),
            sa.Column("version", sa.String(length=40), nullable=False),
            sa.Column("added_us", sa.BigInteger(), nullable=False),
            sa.Column("item_id", sa.String(length=64), nullable=False),
            sa.Column("data", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(
                ["item_id"],
                ["gateway_items.item_id"],
            ),
            sa.PrimaryKeyConstraint("pk"),
            sa.UniqueConstraint("collection", "object_id", "version", name="uq_gateway_stix_version"),
        )
        op.create_index(
            "ix_gateway_stix_added", "gateway_stix_objects", ["collection", "added_us"], unique=False
        )
        op.create_index(
            op.f("ix_gateway_stix_objects_object_id"), "gateway_stix_objects", ["object_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("gateway_stix_objects")
    op.drop_table("gateway_withdrawals")
    op.drop_table("gateway_state")
    op.drop_table("gateway_rejected")
    op.drop_table("gateway_items")
