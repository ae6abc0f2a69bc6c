"""broker/store/bulk.py: many rows in one statement, on both stores, read back exactly as given.

On PostgreSQL an INSERT's rows travel as one array per column, unnested by the server: values
that need quoting inside an array (commas, quotes, braces, backslashes, NULL, the text "NULL",
bytes with zeros and quotes) must come back unchanged, and the batch must be one statement."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert, select

from broker.services.log import LOG_ENTRIES, PENDING
from broker.store.bulk import execute_many
from broker.store.db import make_engine, make_sessionmaker, migrate, transaction

AWKWARD = ["a,b", '"quoted"', "{braces}", "back\\slash", "NULL", "", " spaced ", "ünïcödé", "new\nline"]


def test_rows_come_back_exactly_and_in_one_statement(database_url: str) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "INSERT" in statement.upper():
            statements.append(statement)

    pending = [{"kind": "item", "ref": ref, "created_ms": n} for n, ref in enumerate(AWKWARD)]
    entries = [
        {
            "log_index": n,
            "kind": "item",
            "ref": str(n),
            "leaf_hash": bytes([n]) * 32,
            "created_ms": 2**53 - n,
            "leaf": None if n == 3 else b'\x00"\\{},' + bytes(range(n * 20, n * 20 + 20)),
        }
        for n in range(9)
    ]
    try:
        with transaction(make_sessionmaker(engine)) as session:
            execute_many(session, "test.pending", insert(PENDING), pending)
            execute_many(session, "test.entries", insert(LOG_ENTRIES), entries)
        # each call is one statement on PostgreSQL; SQLite's executemany shows as one call too
        assert len(statements) == 2, statements
        with engine.connect() as conn:
            got_pending = conn.execute(
                select(PENDING.c.kind, PENDING.c.ref, PENDING.c.created_ms).order_by(PENDING.c.id)
            ).all()
            got_entries = conn.execute(
                select(*(LOG_ENTRIES.c[k] for k in entries[0])).order_by(LOG_ENTRIES.c.log_index)
            ).all()
        assert [tuple(r) for r in got_pending] == [(p["kind"], p["ref"], p["created_ms"]) for p in pending]
        assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in got_entries] == [
            tuple(e.values()) for e in entries
        ]
    finally:
        engine.dispose()
