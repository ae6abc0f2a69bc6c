"""SQLite: the WAL copied back into the database on a thread of its own, not in a commit.

SQLite's automatic checkpoint runs inside the commit that takes the WAL past
`wal_autocheckpoint` pages, on the committing thread: for the broker, the sequencer's, so every
~8th batch of 50 envelopes (~2 MB of WAL each) was answered 40-70 ms late while it copied ~16 MB
back (bench/README.md, fifteenth session). Here the server process's sequencer pokes a thread
after each commit, and that thread runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its
own: in WAL mode a checkpoint runs beside readers and the writer (SQLite lets go of Python's
GIL while it copies), and PASSIVE never waits for either. The commits' own automatic checkpoint
stays, raised to `db.WAL_BACKSTOP_PAGES`, for when this thread falls behind or is not running (the
CLI's processes, tests' apps): durability does not depend on it (the WAL is the database until
it is copied), only the WAL file's size does.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger("msmt.broker.checkpoint")

MIN_INTERVAL_S = 0.05  # a burst of commits is checkpointed once, not once each


class WalCheckpointer:
    """Checkpoints the WAL of one SQLite database after commits (`poke`), on its own thread."""

    def __init__(self, engine: Engine, *, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.engine = engine
        self.min_interval_s = min_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.runs = 0  # checkpoints run (tests, benchmarks)
        self.last: tuple[int, int, int] | None = None  # (busy, WAL frames, frames copied back)

    def poke(self, *_: Any) -> None:
        """Something was committed: checkpoint soon. Any thread; never blocks."""
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="msmt-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def run_once(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (1 if it could not finish, WAL frames, frames copied)."""
        connection = self.engine.raw_connection()  # the driver's own: no BEGIN around the PRAGMA
        try:
            cursor = connection.cursor()
            try:
                busy, frames, copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                cursor.close()
        except Exception:
            # Not back to the pool: a connection that met a read-only or failing file system
            # may stay broken after it is back (store/db.py's _stale_connection, which sees only
            # what SQLAlchemy executes, not this driver call).
            connection.invalidate()
            raise
        finally:
            connection.close()  # back to the pool, unless invalidated above
        self.runs += 1
        self.last = (int(busy), int(frames), int(copied))
        return self.last

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
                self._failing = False
            except (
                Exception
            ) as exc:  # a failed checkpoint loses nothing: the next one, or a commit's, copies it
                if not self._failing:
                    log.warning("the WAL checkpoint failed: %s", exc)
                    self._failing = True
            self._stop.wait(self.min_interval_s)
