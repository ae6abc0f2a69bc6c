"""Wake-ups for inbox long-polls: a recipient's long-poll waits on an event, not on a timer.

When the log integrator commits new deliveries it publishes their recipients:

- in this process, `InboxNotifier.publish(recipients)` (thread-safe, from any thread) wakes
  every long-poll of those recipients at once;
- for other broker processes on the same PostgreSQL database, `notify_in_transaction(session,
  recipients)` sends `pg_notify('msmt_inbox_<schema hash>', 'USA,JPN')` inside the integrator's transaction,
  so PostgreSQL delivers it exactly when (and only if) the deliveries are committed; each
  process's listener (`InboxNotifier.start(database_url)`, one daemon thread with its own
  connection doing `LISTEN` on that channel) turns it into a local `publish`. On SQLite there is one
  broker process: both are no-ops.

No wake-up is lost: a long-poll takes the recipient's `generation()` *before* it checks the
database and passes it to `wait(..., since=...)`, which returns at once if the recipient was
published in between. A notification can still be missed (the listener reconnecting, another
process that does not notify): long-polls also re-check the database every
`inbox_poll_interval_s`, so a missed notification delays a delivery, it never hides one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from .health import Outage

log = logging.getLogger("msmt.broker.notify")

CHANNEL = "msmt_inbox"
# One channel per schema: NOTIFY is database-wide, and brokers of other schemas in the same
# database (a test run's parallel workers, a staging copy) must not wake each other's long-polls.
# Both sides compute it on their own connection, whose search_path decides the schema.
SCHEMA_CHANNEL_SQL = "SELECT :channel || '_' || left(md5(current_schema()), 16)"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more: longer lists go in several
MAX_PAYLOAD = 7000
MAX_RECIPIENT_LENGTH = 80  # a country code; anything longer in a payload is not one of ours


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def payloads(recipients: Iterable[str]) -> list[str]:
    """The recipients as comma-joined NOTIFY payloads, each under PostgreSQL's limit."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for recipient in sorted(set(recipients)):
        if size + len(recipient) + 1 > MAX_PAYLOAD and current:
            chunks.append(",".join(current))
            current, size = [], 0
        current.append(recipient)
        size += len(recipient) + 1
    if current:
        chunks.append(",".join(current))
    return chunks


def parse_payload(payload: str) -> list[str]:
    return [r for r in (part.strip() for part in payload.split(",")) if 0 < len(r) <= MAX_RECIPIENT_LENGTH]


def notify_in_transaction(session: Session, recipients: Iterable[str]) -> None:
    """Tell every broker process listening on this PostgreSQL database that `recipients` have
    new deliveries, when (and only if) the caller's transaction commits. No-op on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return
    chunks = payloads(recipients)
    if not chunks:
        return
    channel = session.execute(text(SCHEMA_CHANNEL_SQL), {"channel": CHANNEL}).scalar_one()
    for payload in chunks:
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )


def listener_conninfo(database_url: str) -> str | None:
    """The libpq URL of a PostgreSQL database URL (any SQLAlchemy driver), None for others."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class InboxNotifier:
    """Per-recipient wake-ups for long-polls, in one process (and, with `start`, from other
    processes through PostgreSQL LISTEN/NOTIFY)."""

    def __init__(self, *, reconnect_s: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._waiters: dict[str, set[_Waiter]] = {}
        self._reconnect_s = reconnect_s
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self.backend_pid: int | None = None  # the listener's PostgreSQL backend, once connected
        self.outage: Outage | None = None  # database outages, told once (services/health.py)

    # --- in this process -------------------------------------------------------------------

    def generation(self, recipient: str) -> int:
        """How often `recipient` was published so far; take it before checking the database."""
        with self._lock:
            return self._generations.get(recipient, 0)

    def publish(self, recipients: Iterable[str]) -> None:
        """`recipients` have new deliveries: wake their long-polls. Safe from any thread."""
        woken: list[_Waiter] = []
        with self._lock:
            for recipient in set(recipients):
                self._generations[recipient] = self._generations.get(recipient, 0) + 1
                woken.extend(self._waiters.get(recipient, ()))
        for waiter in woken:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)

    def waiting(self, recipient: str) -> int:
        """How many waits for `recipient` are in progress."""
        with self._lock:
            return len(self._waiters.get(recipient, ()))

    async def wait(self, recipient: str, timeout: float, *, since: int | None = None) -> bool:
        """Wait until `recipient` is published; True then, False after `timeout` seconds.

        `since`: a `generation(recipient)` taken before the caller's last database check; if
        the recipient was published after it, return True at once (so a publish between the
        check and this call is not lost). Without it, only a publish after this call counts.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop, loop.create_future())
        with self._lock:
            current = self._generations.get(recipient, 0)
            if since is not None and current != since:
                return True
            self._waiters.setdefault(recipient, set()).add(waiter)
        try:
            done, _ = await asyncio.wait({waiter.future}, timeout=max(timeout, 0))
            return bool(done)
        finally:
            with self._lock:
                waiters = self._waiters.get(recipient)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[recipient]
            waiter.future.cancel()

    def wake_all(self) -> None:
        """Wake every waiting long-poll (to re-check the database), e.g. after notifications
        may have been missed."""
        with self._lock:
            recipients = list(self._waiters)
        self.publish(recipients)

    # --- from other processes: PostgreSQL LISTEN ------------------------------------------

    def start(self, database_url: str) -> None:
        """Listen for other processes' notifications (PostgreSQL); no-op on SQLite."""
        conninfo = listener_conninfo(database_url)
        if conninfo is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._listen, args=(conninfo,), name="msmt-inbox-listener", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._listening.clear()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        """Block until the listener's LISTEN is in place (True) or `timeout` passes."""
        return self._listening.wait(timeout)

    def _listen(self, conninfo: str) -> None:
        import psycopg
        import psycopg.sql

        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    row = conn.execute(
                        SCHEMA_CHANNEL_SQL.replace(":channel", "%(channel)s"), {"channel": CHANNEL}
                    ).fetchone()
                    channel = str(row[0]) if row else CHANNEL
                    conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
                    self.backend_pid = conn.info.backend_pid
                    # what was committed while nobody listened is found now; then (not before:
                    # whoever waits for `listening` must not see this wake-up later) say so
                    self.wake_all()
                    self._listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.channel == channel:
                                self.publish(parse_payload(note.payload))
            except Exception as exc:  # the listener must outlive a database outage
                lost = self._listening.is_set()  # a connection that worked, not a failed connect
                if self._stop.is_set():
                    pass
                elif lost:
                    # Reconnect at once before saying anything: after a server restart this
                    # connection is found dead only when it is next read, often after the
                    # database is back, and that is not a new outage. A reconnection that
                    # fails is (below).
                    log.info("inbox listener lost its connection (%s); reconnecting", exc)
                elif self.outage is not None:
                    self.outage.failed("the inbox listener", exc)  # one line per outage
                else:
                    log.warning("inbox listener cannot connect (%s); retrying", exc)
                if lost:
                    self._listening.clear()
                    continue
            finally:
                self._listening.clear()
            self._stop.wait(self._reconnect_s)
