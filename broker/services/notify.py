"""Wake-ups for inbox long-polls: a recipient's long-poll waits on an event, not on a timer.

When the log integrator commits new deliveries it publishes their recipients:

- in this process, `InboxNotifier.publish(recipients)` (thread-safe, from any thread) wakes
  every long-poll of those recipients at once;
- for other broker processes on the same PostgreSQL database, `notify_in_transaction(session,
  recipients, origin)` sends `pg_notify('msmt_inbox_<schema hash>', '<origin>|USA,JPN')` inside
  the integrator's transaction, so PostgreSQL delivers it exactly when (and only if) the
  deliveries are committed; each process's listener (`InboxNotifier.start(database_url)`, one
  daemon thread with its own connection doing `LISTEN` on that channel) turns it into a local
  `publish`, except the sending process's own (`origin`), which published already. On SQLite
  there is one broker process: both are no-ops.

The deliveries themselves travel with the wake-up in this process: `publish(recipients,
deliveries)` keeps each recipient's newest deliveries (`RecentDeliveries`, a short run of
consecutive inbox numbers, briefly), so that a woken stream or long-poll of this process sends
them without reading the database. What this process did not integrate itself (another process's
NOTIFY) or no longer holds is read from the database, as before. It also knows each recipient's
newest number it gave out (`RecentDeliveries.at_end`), until a wake-up without deliveries says
another process numbered more: a long-poll asking after exactly that number waits without
reading first.

No wake-up is lost: a long-poll takes the recipient's `generation()` *before* it checks the
database and passes it to `wait(..., since=...)`, which returns at once if the recipient was
published in between. A notification can still be missed (the listener reconnecting, another
process that does not notify): long-polls also re-check the database every
`inbox_poll_interval_s`, so a missed notification delays a delivery, it never hides one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
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


def split_origin(payload: str) -> tuple[str | None, str]:
    """A payload's sending process (`origin|`, see notify_in_transaction), if it names one, and
    the recipients part."""
    origin, bar, rest = payload.partition("|")
    return (origin, rest) if bar else (None, payload)


def notify_in_transaction(session: Session, recipients: Iterable[str], origin: str | None = None) -> None:
    """Tell every broker process listening on this PostgreSQL database that `recipients` have
    new deliveries, when (and only if) the caller's transaction commits. No-op on SQLite.
    `origin`: the sending process's notifier (InboxNotifier.origin), whose own listener then
    ignores the echo (it published the deliveries, with the deliveries, itself)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    chunks = [f"{origin}|{chunk}" if origin else chunk for chunk in payloads(recipients)]
    if not chunks:
        return
    # the channel named in the same statement: one round trip per integration, not two
    # (each chunk stands alone, so the order they go in does not matter)
    notify = text(
        "SELECT pg_notify(:channel || '_' || left(md5(current_schema()), 16), payload)"
        " FROM unnest(CAST(:payloads AS text[])) AS p(payload)"
    )
    session.execute(notify, {"channel": CHANNEL, "payloads": chunks})


def listener_conninfo(database_url: str) -> str | None:
    """The libpq URL of a PostgreSQL database URL (any SQLAlchemy driver), None for others."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


RECENT_PER_RECIPIENT = 1000  # deliveries kept per recipient: one stream event's worth
RECENT_MAX_AGE_S = 5.0  # and only this long: a waiting reader takes them within milliseconds


def encode_delivery(view: dict[str, Any]) -> bytes:
    """A delivery as JSON, exactly as the API's model encodes it (compact, UTF-8, fields
    in order, absent optional fields left out; tests/unit/test_recent_deliveries.py compares
    the two). orjson, not the model: a page of 200 envelopes (6 MB of base64url) took the
    model's validation and serialisation ~0.5 ms per delivery, two thirds of serving the page."""
    return bytes(orjson.dumps(view))


def page_json(encoded: Sequence[bytes], cursor: int) -> bytes:
    """An InboxPage as JSON, from encoded deliveries."""
    return b'{"deliveries":[' + b",".join(encoded) + b'],"cursor":%d}' % cursor


def encode_page(page: Mapping[str, Any]) -> bytes:
    """A page as `services.inbox.list_inbox` builds it, as the API's InboxPage encodes it."""
    return page_json([encode_delivery(d) for d in page["deliveries"]], int(page["cursor"]))


@dataclass(slots=True)
class Recent:
    seq: int
    kept_s: float  # time.monotonic() when it was kept
    expires_ms: int | None
    item: dict[str, Any]  # as queries.delivery_view shows it, without the seq (shared by recipients)
    encoded: bytes | None = None  # encode_delivery(view), once someone reads it

    @property
    def view(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.item}

    def shown(self, now_ms: int) -> bytes:
        """What the inbox shows of it at `now_ms`: past its expiry, listed as unavailable."""
        if self.expires_ms is not None and self.expires_ms <= now_ms:
            return encode_delivery({**self.view, "unavailable": "expired"})
        if self.encoded is None:  # two readers at once encode it twice, alike: harmless
            self.encoded = encode_delivery(self.view)
        return self.encoded


class RecentDeliveries:
    """Each recipient's newest deliveries as this process integrated them: one run of
    consecutive inbox numbers per recipient, the newest RECENT_PER_RECIPIENT, for at most
    RECENT_MAX_AGE_S. A reader asks for what follows its cursor; it gets it only if the run
    holds the very next number (so nothing between its cursor and the run is skipped), else
    None: then it reads the database. Thread-safe."""

    def __init__(
        self, *, per_recipient: int = RECENT_PER_RECIPIENT, max_age_s: float = RECENT_MAX_AGE_S
    ) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, deque[Recent]] = {}
        # recipient -> (the newest inbox number this process numbered, when): its inbox's end,
        # until a wake-up without deliveries (another process numbered more) says otherwise
        self._newest: dict[str, tuple[int, float]] = {}
        self.per_recipient = per_recipient
        self.max_age_s = max_age_s

    def keep(self, deliveries: Mapping[str, Sequence[tuple[int, dict[str, Any], int | None]]]) -> None:
        """New deliveries, just committed: recipient -> (seq, the item's view without the seq,
        its expires_ms), in seq order (services/log.py's Integrated.deliveries)."""
        now = time.monotonic()
        with self._lock:
            for recipient, views in deliveries.items():
                run = self._runs.get(recipient)
                for seq, item, expires_ms in views:
                    if run is None or (run and run[-1].seq + 1 != seq):
                        # a gap (another process numbered what lies between): start a new run
                        run = self._runs[recipient] = deque(maxlen=self.per_recipient)
                    run.append(Recent(seq, now, expires_ms, item))
                if views:
                    self._newest[recipient] = (views[-1][0], now)

    def unsure(self, recipients: Iterable[str] | None = None) -> None:
        """`recipients` (None: all) may have deliveries this process did not number: their
        newest known number is no longer their inbox's end."""
        with self._lock:
            if recipients is None:
                self._newest.clear()
            else:
                for recipient in recipients:
                    self._newest.pop(recipient, None)

    def at_end(self, recipient: str, cursor: int) -> bool:
        """Whether `cursor` is the newest number this process gave `recipient`, within the last
        RECENT_MAX_AGE_S, with no sign since of anything numbered elsewhere. True lets a
        long-poll wait without first reading the database: whatever is numbered after `cursor`
        wakes it (in this process by `publish`, from another by its NOTIFY), and its safety
        re-check reads the database all the same."""
        with self._lock:
            known = self._newest.get(recipient)
            return known is not None and known[0] == cursor and known[1] >= time.monotonic() - self.max_age_s

    def after(self, recipient: str, cursor: int, limit: int) -> list[Recent] | None:
        """The deliveries with seq > cursor, at most `limit`, if the run holds cursor + 1;
        None if it does not (or holds nothing newer): then only the database can tell."""
        oldest = time.monotonic() - self.max_age_s
        with self._lock:
            run = self._runs.get(recipient)
            if not run:
                return None
            while run and run[0].kept_s < oldest:
                run.popleft()
            if not run or not run[0].seq <= cursor + 1 <= run[-1].seq:
                return None
            start = cursor + 1 - run[0].seq
            return list(itertools.islice(run, start, start + limit))

    def forget(self, recipient: str) -> None:
        with self._lock:
            self._runs.pop(recipient, None)


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
        self.recent = RecentDeliveries()
        self.origin = secrets.token_hex(8)  # names this process's own NOTIFYs, to skip their echo
        # called (on the listener's thread) for each other process's NOTIFY: it committed an
        # integration (the sequencer's waiting items may be in it)
        self.on_foreign: list[Callable[[], None]] = []

    # --- in this process -------------------------------------------------------------------

    def generation(self, recipient: str) -> int:
        """How often `recipient` was published so far; take it before checking the database."""
        with self._lock:
            return self._generations.get(recipient, 0)

    def publish(
        self,
        recipients: Iterable[str],
        deliveries: Mapping[str, Sequence[tuple[int, dict[str, Any], int | None]]] | None = None,
    ) -> None:
        """`recipients` have new deliveries: wake their long-polls. Safe from any thread.
        `deliveries`: the new deliveries themselves (this process integrated them), kept for
        the woken readers first (services/log.py's Integrated.deliveries)."""
        recipients = set(recipients)
        if deliveries:
            self.recent.keep(deliveries)
        # (before the generation moves: a long-poll that took the generation and then saw
        # `at_end` true is woken by this publish)
        self.recent.unsure([r for r in recipients if not deliveries or not deliveries.get(r)])
        woken: list[_Waiter] = []
        with self._lock:
            for recipient in recipients:
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
        self.recent.unsure()  # notifications may have been missed: no inbox's end is known
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
                    for hook in self.on_foreign:  # and whatever else waited on a notification
                        hook()
                    self._listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            origin, listed = split_origin(note.payload)
                            if note.channel == channel and origin != self.origin:
                                self.publish(parse_payload(listed))
                                for hook in self.on_foreign:
                                    hook()
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
