"""Alembic environment: the schema is created only by the revisions in versions/."""

from __future__ import annotations

from typing import Any

from alembic import context

from broker.store.db import make_engine
from broker.store.models import Base

config = context.config
target_metadata = Base.metadata


def _check_references(*, ctx: Any, step: Any, **_: Any) -> None:
    """SQLite: refuse a revision (its transaction rolls back) that leaves a broken reference."""
    broken = ctx.connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"revision {step.up_revision_id} would leave broken references: {broken[:5]}")


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not configured"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # A revision that changes a column on SQLite rebuilds its table (batch mode: copy,
                # drop, rename), and dropping a table other rows refer to fails while foreign keys
                # are enforced. Off for the migration only (a pragma takes effect only outside a
                # transaction: on the driver's connection, before any begins); every reference is
                # checked again at the end of each revision, inside its transaction.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                on_version_apply=[_check_references] if sqlite else [],
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
