"""Deliveries are written once, by the integrator, with their inbox numbers: an item keeps its
recipient countries (`items.recipients`, sorted and comma-joined as its envelope's header lists
them) from acceptance until its integration writes one delivery per recipient.

Before this revision a submission inserted ~11 delivery rows without numbers and the
integration updated each of them: on PostgreSQL every such update moves an indexed column, so
each delivery was written, indexed and vacuumed twice.

Filled from the deliveries already stored. Deliveries of items not yet integrated (no inbox
number) are removed: the integrator writes them. The downgrade puts them back.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from itertools import groupby

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_CHUNK = 1000


def upgrade() -> None:
    op.add_column("items", sa.Column("recipients", sa.Text(), nullable=True))
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                "UPDATE items SET recipients = d.recipients FROM (SELECT item_id,"
                " string_agg(recipient, ',' ORDER BY recipient) AS recipients FROM deliveries"
                " GROUP BY item_id) AS d WHERE items.item_id = d.item_id"
            )
        )
    else:  # SQLite 3.40 has no ordered aggregate: group in order here, write in chunks
        rows = conn.execute(
            sa.text("SELECT item_id, recipient FROM deliveries ORDER BY item_id, recipient")
        ).all()
        updates = [
            {"i": item_id, "r": ",".join(r for _, r in group)}
            for item_id, group in groupby(rows, key=lambda row: row[0])
        ]
        for start in range(0, len(updates), _CHUNK):
            conn.execute(
                sa.text("UPDATE items SET recipients = :r WHERE item_id = :i"),
                updates[start : start + _CHUNK],
            )
    missing = conn.execute(sa.text("SELECT count(*) FROM items WHERE recipients IS NULL")).scalar_one()
    if missing:
        raise RuntimeError(f"{missing} items have no deliveries: run `msmt-broker check` on 0009 first")
    conn.execute(sa.text("DELETE FROM deliveries WHERE seq IS NULL"))
    with op.batch_alter_table("items") as batch:
        batch.alter_column("recipients", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    conn = op.get_bind()
    waiting = conn.execute(
        sa.text("SELECT item_id, recipients, received_ms FROM items WHERE log_index IS NULL")
    ).all()
    rows = [
        {"i": item_id, "r": country, "t": received_ms}
        for item_id, recipients, received_ms in waiting
        for country in recipients.split(",")
    ]
    for start in range(0, len(rows), _CHUNK):
        conn.execute(
            sa.text(
                "INSERT INTO deliveries (item_id, recipient, seq, state, created_ms)"
                " VALUES (:i, :r, NULL, 'pending', :t)"
            ),
            rows[start : start + _CHUNK],
        )
    with op.batch_alter_table("items") as batch:
        batch.drop_column("recipients")
