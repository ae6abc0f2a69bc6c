"""SQLite's file settings (store/db.py): what a new database gets, and that an existing one keeps
its page size and still works. SQLite-only by nature: PostgreSQL has no such settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from broker.store.db import make_engine


def _pragmas(path: Path) -> tuple[int, str, int]:
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS t (x BLOB)"))
            conn.execute(text("INSERT INTO t VALUES (zeroblob(40000))"))
        with engine.connect() as conn:
            page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() >= 1
        return page, journal, synchronous
    finally:
        engine.dispose()


def test_a_new_database_takes_16_kib_pages_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    assert _pragmas(tmp_path / "new.db") == (16384, "wal", 2)  # 2: FULL, a 2xx is durable


def test_an_existing_database_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # made as an earlier release made it: SQLite's 4 KiB pages
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x BLOB)")
    old.commit()
    old.close()
    assert _pragmas(path) == (4096, "wal", 2)
    assert _pragmas(path)[0] == 4096  # and again, once the broker's own connections made it
