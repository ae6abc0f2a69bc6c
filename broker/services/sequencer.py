"""The sequencer: group commit and log integration, one writer thread per broker process.

A submit request does everything that needs no write on its own thread (parse, freshness,
signature, against the registry as it stands) and queues the envelope. The writer takes
whatever is queued (up to `max_batch` envelopes), and in ONE transaction stores the batch
(items with their recipients, log staging rows; the policy and key checks are
made again under a share lock on the registry) and, if it holds the integration lock,
integrates everything pending into the Merkle log: log indexes, each recipient's inbox
numbers, the stored subtrees and one signed checkpoint. One commit, one fsync and one
checkpoint signature serve the whole batch; each caller is answered only after it.

Several broker processes (PostgreSQL): acceptance takes no global lock, so every process
stores its batches concurrently (only batches with items of the same originator wait for
each other, on its stored-bytes row: services/quota.py); the integration lock (an advisory
lock) decides which one integrates. A process whose items another process integrated learns it by reading their log
indexes: when that process's NOTIFY arrives (`others_integrated`, from services/notify.py's
listener; every integration of items sends one, with its commit), and otherwise every
`PUSHED_POLL_S` while it has callers waiting (a lost notification, or an integrating process
that died: then this one integrates them); without a listener (SQLite, or while it
reconnects), every `POLL_S`. Never while nobody waits.

Without submissions the writer wakes every `interval_s`, or when `kick()`ed after a directory
statement, policy version or receipt was staged, and integrates what is pending (including
whatever a crashed process left staged). A second thread asks the member witnesses to
cosign new checkpoints, so that slow witnesses never hold up integration.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .. import metrics
from ..problems import Problem
from ..store import queries
from ..store.db import transaction
from ..store.models import Item
from .health import Outage, is_outage
from .log import Integrated, Integrator
from .quota import QuotaBook
from .registry import RegistryCache
from .submit import Prepared, Receipt, accept_batch, receipt_for

log = logging.getLogger("msmt.broker.sequencer")
POLL_S = 0.003  # how often a process looks for its items in another process's integration
# ... when other processes' integrations are pushed to it (LISTEN/NOTIFY): a backstop only. At
# POLL_S, two processes on PostgreSQL spent ~0.5 ms of broker CPU per submission (and as much of
# the server's) on look-ups while items waited (bench/README.md, eleventh session).
PUSHED_POLL_S = 0.05
FORGET_S = 120.0  # callers stop waiting long before this; then their tickets are dropped


@dataclass
class Ticket:
    """One queued envelope: `stored` resolves when its batch commits (or with the Problem that
    refused it), `logged` when it is in the log (with its index and inbox numbers)."""

    prepared: Prepared
    stored: Future[Receipt] = field(default_factory=Future)
    logged: Future[Receipt] = field(default_factory=Future)
    since: float = field(default_factory=time.monotonic)


_KICK = object()
_LOOK = object()  # another process integrated: look up the items waiting for the log


class Stopping(Exception):
    """The broker is shutting down."""


class Sequencer:
    def __init__(
        self,
        factory: sessionmaker[Session],
        registry_cache: RegistryCache,
        integrator: Integrator,
        *,
        max_batch: int = 512,
        interval_s: float = 0.5,
    ) -> None:
        self.factory = factory
        self.registry_cache = registry_cache
        self.integrator = integrator
        self.max_batch = max_batch
        self.interval_s = interval_s
        self._queue: queue.SimpleQueue[Ticket | object] = queue.SimpleQueue()
        self._waiting: dict[str, list[Ticket]] = {}  # stored, not yet seen in the log
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failing = False
        self.outage: Outage | None = None  # database outages, told once (services/health.py)
        self.quotas = QuotaBook()  # the stored-bytes quotas, as of the registry version read
        self.batches = 0  # statistics for benchmarks and tests
        self.stored = 0
        # whether other processes' integrations reach `others_integrated` (the inbox listener is
        # connected); the look-ups' backstop interval then
        self.pushed: Callable[[], bool] = lambda: False
        self.pushed_poll_s = PUSHED_POLL_S
        self._looked_at = 0.0  # when `_look_up_waiting` last ran (time.monotonic())

    # --- callers ---------------------------------------------------------------------

    def enqueue(self, prepared: Prepared) -> Ticket:
        ticket = Ticket(prepared)
        self._queue.put(ticket)
        return ticket

    def kick(self) -> None:
        """Something was staged for the log outside a submission: integrate it soon."""
        self._queue.put(_KICK)

    def others_integrated(self) -> None:
        """Another process committed an integration (its NOTIFY): if any of our stored items
        wait for the log, look them up now. Safe from any thread."""
        self._queue.put(_LOOK)

    # --- the writer ------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._write_loop, name="msmt-sequencer", daemon=True),
            threading.Thread(target=self._witness_loop, name="msmt-witnessing", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(_KICK)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        # Whoever still waits is told (503: stored or not is unknown to them; re-submitting
        # the same bytes tells) rather than left hanging through the shutdown.
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(left, Ticket) and not left.stored.done():
                metrics.submission_failed("database-unavailable")  # what its caller is told
                left.stored.set_exception(Stopping())
        for tickets in self._waiting.values():
            for ticket in tickets:
                if not ticket.logged.done():
                    ticket.logged.set_exception(Stopping())
        self._waiting.clear()

    def _take(self) -> tuple[list[Ticket], bool, bool]:
        """The next batch (possibly empty), whether to integrate now, and whether to look up
        the items waiting for another process's integration (the backstop's time came, or that
        process's NOTIFY: `others_integrated`)."""
        timeout = self.interval_s
        if self._waiting:
            timeout = self.pushed_poll_s if self.pushed() else POLL_S
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return [], True, True
        batch: list[Ticket] = []
        signals: set[object] = set() if isinstance(first, Ticket) else {first}
        if isinstance(first, Ticket):
            batch.append(first)
        while len(batch) < self.max_batch:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(more, Ticket):
                batch.append(more)
            else:
                signals.add(more)
        # a NOTIFY alone integrates nothing here (the other process did); a kick does
        return batch, bool(batch) or _KICK in signals, _LOOK in signals

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            batch, integrate, look = self._take()
            try:
                if batch:
                    self._store(batch)
                elif integrate:
                    self._integrate_pending()
                # with notifications, only when one came or the backstop's time passed (also
                # while batches keep coming, when the queue's timeout never does): after each
                # batch of its own, a process mostly finds its items still waiting
                if self._waiting and (
                    look or not self.pushed() or time.monotonic() - self._looked_at >= self.pushed_poll_s
                ):
                    self._look_up_waiting()
                if self._failing:
                    log.warning("the sequencer is writing again")
                    self._failing = False
            except Exception as exc:  # the writer must outlive a database outage
                for ticket in batch:
                    if not ticket.stored.done():
                        # counted as what its caller is told (api/items.py), before it is told
                        failure = (
                            "database-unavailable" if isinstance(exc, SQLAlchemyError) else "internal-error"
                        )
                        metrics.submission_failed(failure)
                        ticket.stored.set_exception(exc)
                if self.outage is not None and is_outage(exc):
                    self.outage.failed("the sequencer", exc)  # one line per outage, shared
                elif not self._failing:  # one line per failure spell, not one per attempt
                    log.error("the sequencer cannot write: %s", exc, exc_info=True)
                    self._failing = True
                self._stop.wait(0.05)

    def _store(self, batch: list[Ticket]) -> None:
        for attempt in range(3):
            try:
                with transaction(self.factory) as session:
                    # the new items' rows are written by the integration, with their log index
                    staged: dict[str, dict[str, Any]] = {}
                    answers = accept_batch(
                        session, self.registry_cache, [t.prepared for t in batch], self.quotas, staged
                    )
                    integrated = self.integrator.integrate_in(session, staged)
                    if staged:  # not integrated here: another process holds the lock, or a backlog
                        queries.insert_items(session, list(staged.values()))
                break
            except IntegrityError:
                # Another process stored one of these item ids after we looked, or the first
                # stored-bytes row of a member: look again (a re-submission is answered as one).
                if attempt == 2:
                    raise
        self.integrator.committed(integrated)
        if integrated is not None:  # earlier batches' items waiting for the log may be in it
            self._resolve(integrated)
        self.batches += 1
        logged = integrated.items if integrated is not None else {}
        for ticket, answer in zip(batch, answers, strict=True):
            if isinstance(answer, Problem):
                metrics.submission_refused(answer)  # counted before its caller is answered
                ticket.stored.set_exception(answer)
                continue
            self.stored += answer.created
            metrics.submission_stored(answer.created)
            ticket.stored.set_result(answer)
            if answer.log_index is not None:
                ticket.logged.set_result(answer)
            elif answer.item_id in logged:
                index, seqs = logged[answer.item_id]
                ticket.logged.set_result(replace(answer, log_index=index, seqs=dict(seqs)))
            else:  # another process holds the integration lock: it or we will log it soon
                self._waiting.setdefault(answer.item_id, []).append(ticket)

    def _integrate_pending(self) -> None:
        while True:
            result = self.integrator.run_once()
            if result is None:
                return
            self._resolve(result)

    def _resolve(self, result: Integrated) -> None:
        for item_id, (index, seqs) in result.items.items():
            for ticket in self._waiting.pop(item_id, []):
                receipt = ticket.stored.result()
                ticket.logged.set_result(replace(receipt, log_index=index, seqs=dict(seqs)))

    def _look_up_waiting(self) -> None:
        """Our stored items that another process integrated, or (after a crash of the
        integrating transaction) nobody yet: try to integrate, then read their indexes."""
        self._looked_at = time.monotonic()
        self._integrate_pending()
        if not self._waiting:
            return
        with self.factory() as session:
            done = set(
                session.scalars(
                    select(Item.item_id).where(
                        Item.item_id.in_(list(self._waiting)), Item.log_index.is_not(None)
                    )
                )
            )
            for item_id in done:
                receipt = receipt_for(session, item_id, created=True)
                for ticket in self._waiting.pop(item_id):
                    ticket.logged.set_result(replace(receipt, created=ticket.stored.result().created))
        now = time.monotonic()
        for item_id in [i for i, ts in self._waiting.items() if all(now - t.since > FORGET_S for t in ts)]:
            del self._waiting[item_id]

    # --- witnesses ---------------------------------------------------------------------

    def _witness_loop(self) -> None:
        failing = False
        while not self._stop.wait(self.interval_s):
            try:
                self.integrator.witness()
                failing = False
            except Exception as exc:  # never fatal; a failure spell is one log line
                if self.outage is not None and is_outage(exc):
                    self.outage.failed("the witness thread", exc)  # the database's outage, told once
                elif not failing:
                    log.exception("asking the witnesses failed; retrying")
                failing = True
