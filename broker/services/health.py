"""Is the broker able to serve: liveness, readiness, and database outages told once.

An outage of the database is one event, not one per request: `Outage.failed` logs when the
first failure is seen and `Outage.recovered` when a statement succeeds again, with how long it
lasted and how many requests it refused. Readiness asks the database each time (a stopped
database is seen at the next probe) and checks the schema is the one this code expects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..store.db import alembic_config

log = logging.getLogger("msmt.broker.health")


SQLITE_SETTLE_S = 1.0
RELAPSE_S = 0.25  # a failure this soon after an outage's end belongs to it (Outage.failed): ms, in practice


def is_outage(exc: BaseException) -> bool:
    """The database is unreachable or dropped the session (a network or server failure, or the
    server ending a session it found idle in a transaction: psycopg raises that as an
    InternalError, SQLSTATE 25P03, and SQLAlchemy marks the connection invalidated), as opposed
    to a statement that failed."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return exc.connection_invalidated or sqlstate == "25P03" or sqlstate.startswith(("08", "57P"))
    return False


class Outage:
    """Thread-safe record of whether the database is failing, logged once per outage."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.last_failure = 0.0
        self.refused = 0
        self.outages = 0
        # a success ends an outage only this long after its last failure (SQLite: `watch`)
        self.settle_s = 0.0
        # a failure this soon after an outage ended is the same outage relapsing (a server still
        # starting: one connection got in, the next is told "not yet accepting connections"):
        # it is refused like any, but it opens no second outage and logs no second pair of lines
        self.relapse_s = RELAPSE_S
        self._ended: tuple[float, float, int] | None = None  # (ended at, down since, refused)
        self._relapsed = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, where: str, error: BaseException) -> None:
        with self._lock:
            self.refused += 1
            self.last_failure = self._clock()
            if self.down_since is not None:
                return
            ended = self._ended
            if ended is not None and self.last_failure - ended[0] < self.relapse_s:
                self.down_since, self.refused, self._relapsed = ended[1], ended[2] + 1, True
                return
            self.down_since = self.last_failure
            self.outages += 1
            self.refused = 1
            self._relapsed = False
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
        log.error("database unavailable (first seen by %s): %s", where, reason)

    def recovered(self) -> None:
        if self.down_since is None:  # the common case: no lock taken
            return
        with self._lock:
            now = self._clock()
            if self.down_since is None or now - self.last_failure < self.settle_s:
                return
            lasted = now - self.down_since
            self._ended = (now, self.down_since, self.refused)
            refused, self.down_since, relapsed = self.refused, None, self._relapsed
        if relapsed:  # its "available again" line was logged when it first seemed over
            log.info(
                "database steady after a relapse: %.1f s in all; %d requests were refused", lasted, refused
            )
            return
        log.warning(
            "database available again after %.1f s; %d requests were refused meanwhile", lasted, refused
        )

    def watch(self, engine: Engine, sessions: sessionmaker[Session] | None = None) -> None:
        """Any statement that succeeds ends the outage. On SQLite (with `sessions`) a commit
        that comes a second or more after the last failure: a read-only file system still
        answers reads (and commits that wrote nothing), and one line per outage must not become
        a line per read that succeeds between failing writes."""
        if engine.dialect.name == "sqlite" and sessions is not None:
            self.settle_s = SQLITE_SETTLE_S

            @event.listens_for(sessions, "after_commit")
            def _committed(*_args: object) -> None:
                if self.down_since is not None:
                    self.recovered()

            return

        # A server going down closes its sessions one by one: a statement on a connection not
        # yet closed can still succeed a few milliseconds into the outage, and that is not its
        # end. A success ends it on a connection opened since it began, or a second after the
        # last failure (an outage the connections survive, such as lock timeouts).
        @event.listens_for(engine, "connect")
        def _opened(_dbapi_connection: object, record: Any) -> None:
            record.info["opened"] = self._clock()

        @event.listens_for(engine, "after_cursor_execute")
        def _succeeded(conn: Any, *_args: object) -> None:
            down_since = self.down_since
            if down_since is None:
                return
            opened = conn.info.get("opened", 0.0)
            if opened > down_since or self._clock() - self.last_failure >= SQLITE_SETTLE_S:
                self.recovered()


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]


def schema_head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def readiness(engine: Engine, head: str | None, log_key_configured: bool, log_key_loaded: bool) -> Readiness:
    checks: dict[str, str] = {}
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        checks["database"] = "ok"
        checks["schema"] = "ok" if version == head else f"at {version or 'nothing'}, expected {head}"
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        # an unmigrated database answers, but has no alembic_version table
        missing_table = "alembic_version" in reason
        checks["database"] = "ok" if missing_table else f"unreachable: {reason}"
        checks["schema"] = f"not migrated, expected {head}" if missing_table else "unknown"
    if log_key_configured:
        checks["log_key"] = "ok" if log_key_loaded else "not loaded"
    else:
        checks["log_key"] = "not configured (checkpoints are unsigned)"
    ready = checks["database"] == "ok" and checks["schema"] == "ok" and checks["log_key"] != "not loaded"
    return Readiness(ready, checks)
