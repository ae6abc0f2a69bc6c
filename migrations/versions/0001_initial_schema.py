"""Initial schema: countries, keys, agreements, items, deliveries, log, tokens, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-29 02:03:00.899931
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "admins",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "agreements",
        sa.Column("originator", sa.String(length=3), nullable=False),
        sa.Column("recipient", sa.String(length=3), nullable=False),
        sa.Column("ceiling", sa.String(length=32), nullable=False),
        sa.Column("topics", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("originator", "recipient"),
    )
    op.create_table(
        "broker_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "countries",
        sa.Column("code", sa.String(length=3), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("accreditation", sa.String(length=32), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "items",
        sa.Column("item_id", sa.String(length=36), nullable=False),
        sa.Column("originator", sa.String(length=3), nullable=False),
        sa.Column("originator_key_id", sa.String(length=32), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("classification", sa.String(length=32), nullable=False),
        sa.Column("tlp", sa.String(length=16), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("supersedes", sa.String(length=36), nullable=True),
        sa.Column("in_reply_to", sa.String(length=36), nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("envelope_sha256", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("submitted_with_key", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("item_id"),
        sa.UniqueConstraint("log_index"),
    )
    op.create_index(op.f("ix_items_originator"), "items", ["originator"], unique=False)
    op.create_table(
        "keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("valid_from_ms", sa.BigInteger(), nullable=False),
        sa.Column("valid_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index(op.f("ix_keys_owner"), "keys", ["owner"], unique=False)
    op.create_table(
        "log_entries",
        sa.Column("log_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("log_index"),
    )
    op.create_table(
        "log_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "used_tokens",
        sa.Column("jti", sa.String(length=128), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )
    op.create_index(op.f("ix_used_tokens_expires_ms"), "used_tokens", ["expires_ms"], unique=False)
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(length=36), nullable=False),
        sa.Column("recipient", sa.String(length=3), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("acked_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["items.item_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("item_id", "recipient", name="uq_deliveries_item_recipient"),
        sa.UniqueConstraint("recipient", "seq", name="uq_deliveries_recipient_seq"),
    )
    op.create_index("ix_deliveries_item", "deliveries", ["item_id"], unique=False)
    op.create_table(
        "group_members",
        sa.Column("group_name", sa.String(length=32), nullable=False),
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.ForeignKeyConstraint(
            ["country"],
            ["countries.code"],
        ),
        sa.PrimaryKeyConstraint("group_name", "country"),
    )
    op.create_table(
        "inbox_counters",
        sa.Column("recipient", sa.String(length=3), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient"],
            ["countries.code"],
        ),
        sa.PrimaryKeyConstraint("recipient"),
    )
    log_state = sa.table("log_state", sa.column("id", sa.Integer), sa.column("size", sa.BigInteger))
    op.bulk_insert(log_state, [{"id": 1, "size": 0}])


def downgrade() -> None:
    op.drop_table("inbox_counters")
    op.drop_table("group_members")
    op.drop_index("ix_deliveries_item", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index(op.f("ix_used_tokens_expires_ms"), table_name="used_tokens")
    op.drop_table("used_tokens")
    op.drop_table("log_state")
    op.drop_table("log_entries")
    op.drop_index(op.f("ix_keys_owner"), table_name="keys")
    op.drop_table("keys")
    op.drop_index(op.f("ix_items_originator"), table_name="items")
    op.drop_table("items")
    op.drop_table("countries")
    op.drop_table("broker_settings")
    op.drop_table("agreements")
    op.drop_table("admins")
    op.drop_table("admin_actions")
