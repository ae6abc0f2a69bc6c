"""SQLite's WAL copied back into the database on a thread of its own (store/checkpoint.py), not
inside the sequencer's commits; PostgreSQL has no such thing, and its broker runs none."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from broker.store.checkpoint import WalCheckpointer
from broker.store.db import WAL_BACKSTOP_PAGES, make_engine, make_sessionmaker, transaction

from .conftest import World

PAGE = 16384


def _fill(engine: Engine, pages: int) -> None:
    with transaction(make_sessionmaker(engine)) as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x BLOB)"))
        for _ in range(pages):
            session.execute(text("INSERT INTO t VALUES (randomblob(:n))"), {"n": PAGE - 200})


def test_a_commit_leaves_the_copying_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == WAL_BACKSTOP_PAGES
        # past SQLite's default backstop (1,000 pages), which would copy it back in the commit
        _fill(engine, 1200)
        assert path.stat().st_size < 100 * PAGE  # still in the WAL: the commit copied nothing
        checkpointer = WalCheckpointer(engine)
        busy, frames, copied = checkpointer.run_once()
        assert (busy, copied) == (0, frames) and frames >= 1200
        assert path.stat().st_size >= 1200 * PAGE  # copied back, by the checkpointer
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1200
    finally:
        engine.dispose()


def test_the_thread_checkpoints_after_a_poke_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "poked.db"
    engine = make_engine(f"sqlite:///{path}")
    checkpointer = WalCheckpointer(engine, min_interval_s=0.01)
    checkpointer.start()
    try:
        _fill(engine, 50)
        assert checkpointer.runs == 0  # nothing without a poke
        checkpointer.poke()
        deadline = time.monotonic() + 10
        while checkpointer.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.last is not None and checkpointer.last[2] >= 50
        assert path.stat().st_size >= 50 * PAGE
    finally:
        checkpointer.stop()
        engine.dispose()
    assert not any(t.name == "msmt-checkpoint" for t in threading.enumerate())


def test_the_broker_checkpoints_after_its_commits_on_sqlite_only(world: World) -> None:
    checkpointer = world.client.app.state.broker.checkpointer  # type: ignore[attr-defined]
    if world.url.startswith("postgresql"):
        assert checkpointer is None
        return
    assert checkpointer is not None
    before = checkpointer.runs
    r = world.submit("KOR", world.seal("KOR", ["USA", "JPN"]))
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 10
    while checkpointer.runs == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.runs > before  # the sequencer's commit poked it
    assert any(t.name == "msmt-checkpoint" for t in threading.enumerate())


def test_a_failed_checkpoint_does_not_give_its_connection_back(tmp_path: Path) -> None:
    """A connection that met a failing file system may stay broken: the pool must not hand it
    to the sequencer afterwards."""
    engine = make_engine(f"sqlite:///{tmp_path / 'failing.db'}")
    _fill(engine, 1)

    class Failing:  # the pool's connection, whose driver call fails as on an I/O error
        def __init__(self, real: Any) -> None:
            self.real = real

        def cursor(self) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        def invalidate(self) -> None:
            self.real.invalidate()

        def close(self) -> None:
            self.real.close()

    def raw_connection() -> Any:
        return Failing(engine.pool.connect())

    held = engine.pool.connect()
    failed = held.driver_connection  # the one connection the pool has, and will hand out next
    held.close()

    checkpointer = WalCheckpointer(engine)
    checkpointer.engine = type("E", (), {"raw_connection": staticmethod(raw_connection)})()  # type: ignore[assignment]
    try:
        with pytest.raises(sqlite3.OperationalError):
            checkpointer.run_once()
        assert checkpointer.runs == 0
        again = engine.pool.connect()  # the pool's next connection is a new one
        try:
            assert again.driver_connection is not failed
        finally:
            again.close()
    finally:
        engine.dispose()
