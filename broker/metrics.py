"""Prometheus metrics, served on their own listener (never on the API port).

Off unless `MSMT_METRICS_PORT` is set. Then `msmt-broker serve`:

- makes a private (0700) folder, names it in `PROMETHEUS_MULTIPROC_DIR` before any worker
  starts (prometheus_client chooses its storage when it is first imported), and removes it at
  exit: every worker process (`--workers N`; with one worker, uvicorn runs in `serve`'s own
  process) writes its counters, gauges and histograms to its own memory-mapped files there;
- serves `GET /metrics` on `MSMT_METRICS_HOST:MSMT_METRICS_PORT` from the `serve` process,
  which adds up every worker's files (`MultiProcessCollector`) and computes the inbox gauges
  from the database when scraped (`InboxCollector`, cached for `MSMT_METRICS_CACHE_S`).

The instrumented code calls the functions below (`observe_request`, `submission_stored`, ...);
while metrics are off they return at once and prometheus_client is never even imported. While
on, each label combination is resolved once and kept: a call is a dict lookup and an increment.

No metric carries a country unless the operator sets `MSMT_METRICS_COUNTRY_LABELS=true` (who
sends to whom, and how much, is metadata): then the inbox gauges are labelled by recipient.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric
    from sqlalchemy import Engine

    from .problems import Problem
    from .settings import Settings

log = logging.getLogger("msmt.broker.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
# Long-polls wait up to 30 s: the latency buckets reach that far.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Label values the instrumented code cannot bound (route templates, problem codes) stop
# creating series past this many; the rest are counted under "other".
MAX_SERIES = 500
# Rules a partner is refused by: the policy rules (msmt.core.policy.RULES) and the broker's
# own key checks (services/submit.py).
KEY_RULES = ("no-encryption-key", "stale-encryption-key")


class _Instruments:
    """The process's metric objects, in a registry of their own (never the global one)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from msmt.core.policy import RULES

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.submissions: Counter = Counter(
            "msmt_submissions",
            "Envelopes submitted (single and batch, one per envelope), by outcome: accepted, "
            "duplicate (identical re-submission), refused (a problem the submitter can fix), "
            "failed (the broker could not store it); `problem` is the problem type, or none.",
            ["outcome", "problem"],
            registry=reg,
        )
        self.refusals: Counter = Counter(
            "msmt_policy_refusals",
            "Recipients refused at submission, one per refused recipient and failed rule.",
            ["rule"],
            registry=reg,
        )
        self.requests: Histogram = Histogram(
            "msmt_http_request_duration_seconds",
            "API request latency, from the first byte received to the last byte sent.",
            ["method", "route", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.longpolls: Gauge = Gauge(
            "msmt_inbox_longpolls_waiting",
            "Inbox long-polls waiting for deliveries now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.pool_checked_out: Gauge = Gauge(
            "msmt_db_pool_connections_checked_out",
            "Database connections in use by the broker's processes now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.pool_size: Gauge = Gauge(
            "msmt_db_pool_size",
            "Database connections the broker's processes keep pooled (not counting overflow).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.accepted = self.submissions.labels("accepted", "none")
        self.duplicate = self.submissions.labels("duplicate", "none")
        self.outcomes: dict[tuple[str, str], Counter] = {}
        self.known_rules = frozenset(name for name, _ in RULES) | frozenset(KEY_RULES)
        self.rules: dict[str, Counter] = {
            rule: self.refusals.labels(rule) for rule in sorted(self.known_rules | {"other"})
        }
        self.routes: dict[tuple[str, str, int], Histogram] = {}

    def outcome(self, outcome: str, problem: str) -> Counter:
        child = self.outcomes.get((outcome, problem))
        if child is None:
            label = problem if len(self.outcomes) < MAX_SERIES else "other"
            child = self.submissions.labels(outcome, label)
            if label == problem:
                self.outcomes[(outcome, problem)] = child
        return child

    def rule(self, rule: str) -> Counter:
        child = self.rules.get(rule)
        return child if child is not None else self.rules["other"]

    def request(self, method: str, route: str, status: int) -> Histogram:
        key = (method, route, status)
        child = self.routes.get(key)
        if child is None:
            verb = method if method in METHODS else "OTHER"
            klass = STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "other"
            bounded = len(self.routes) < MAX_SERIES
            child = self.requests.labels(verb, route if bounded else "other", klass)
            if bounded:
                self.routes[key] = child
        return child


_instruments: _Instruments | None = None  # None: metrics are off in this process
_enable_lock = threading.Lock()


def enable() -> None:
    """Turn metrics on in this process (create_app does when `MSMT_METRICS_PORT` is set)."""
    global _instruments
    with _enable_lock:
        if _instruments is None:
            _use_multiprocess_files()
            _instruments = _Instruments()


def enabled() -> bool:
    return _instruments is not None


def registry() -> CollectorRegistry:
    """This process's own metrics (what its files hold in multiprocess mode). Metrics must be on."""
    assert _instruments is not None, "metrics are off (broker.metrics.enable())"
    return _instruments.registry


def _use_multiprocess_files() -> None:
    """prometheus_client picks memory or files when it is first imported; `serve` names the
    folder before that, but if anything imported it earlier, switch it to the files now
    (before the first metric object is made: each takes its storage class when created)."""
    from prometheus_client import values

    if os.environ.get(MULTIPROC_ENV) and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


# --- what the broker calls (each returns at once while metrics are off) -------------------


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One API request: `route` is the route's path template (`/v1/items/{item_id}`), never the
    raw path; `status` the HTTP status sent."""
    instruments = _instruments
    if instruments is None:
        return
    instruments.request(method, route, status).observe(seconds)


def submission_stored(created: bool) -> None:
    """An envelope stored (`created`) or answered as an identical re-submission."""
    instruments = _instruments
    if instruments is None:
        return
    (instruments.accepted if created else instruments.duplicate).inc()


def submission_refused(problem: Problem) -> None:
    """An envelope refused with `problem`; for `recipients-refused`, each refused recipient's
    each failed rule is counted too."""
    instruments = _instruments
    if instruments is None:
        return
    instruments.outcome("refused", problem.code).inc()
    refused = problem.extra.get("recipients")
    if isinstance(refused, dict):
        for reasons in refused.values():
            for reason in reasons:
                instruments.rule(str(reason.get("rule"))).inc()


def submission_failed(problem_code: str, envelopes: int = 1) -> None:
    """Envelopes the broker could not store (`database-unavailable`, `internal-error`)."""
    instruments = _instruments
    if instruments is None or envelopes <= 0:
        return
    instruments.outcome("failed", problem_code).inc(envelopes)


def longpoll_waiting(delta: int) -> None:
    """+1 when an inbox long-poll starts waiting, -1 when it stops."""
    instruments = _instruments
    if instruments is None:
        return
    instruments.longpolls.inc(delta)


def instrument_engine(engine: Engine) -> None:
    """Count the engine's checked-out connections (pool checkout and checkin events) and
    record its pool size."""
    instruments = _instruments
    if instruments is None:
        return
    from sqlalchemy import event

    size = getattr(engine.pool, "size", None)
    if callable(size):
        instruments.pool_size.set(size())
    checked_out = instruments.pool_checked_out

    def checkout(*_: Any) -> None:
        checked_out.inc()

    def checkin(*_: Any) -> None:
        checked_out.dec()

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)


# --- computed when scraped, in the process that serves /metrics ---------------------------


@dataclass(frozen=True)
class _Inbox:
    unacknowledged: int
    oldest_ms: int | None  # when the oldest unacknowledged delivery was accepted


class InboxCollector:
    """`msmt_inbox_unacknowledged` and `msmt_inbox_oldest_unacknowledged_age_seconds` (the
    total and the oldest over recipients; per recipient with `country_labels`), and
    `msmt_database_up`. Read from the database at most once per `cache_s`, however often
    scraped; a database that does not answer is `msmt_database_up 0`, never an error.

    Index-friendly: per recipient, one range of the (recipient, seq) unique index, from the
    lowest seq that can still be unacknowledged. That floor only rises (seqs are handed out in
    increasing order, and an acknowledgement is never undone), so each refresh reads the
    recipient's unacknowledged deliveries and those acknowledged since the last refresh, not
    its whole history (only the first refresh of a process reads that)."""

    def __init__(
        self,
        database_url: str,
        *,
        country_labels: bool = False,
        cache_s: float = 10.0,
        timeout_s: float = 5.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.database_url = database_url
        self.country_labels = country_labels
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.refreshes = 0  # database reads so far (tests)
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._floors: dict[str, int] = {}
        self._inboxes: dict[str, _Inbox] | None = None  # None: the last read failed
        self._read_at: float | None = None
        self._down_since: float | None = None

    def describe(self) -> list[Metric]:
        return []  # no read of the database when registered

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.cache_s:
                self._refresh()
                self._read_at = time.monotonic()
            inboxes = self._inboxes
        yield GaugeMetricFamily(
            "msmt_database_up",
            "1 when the metrics listener's last read of the database succeeded, else 0.",
            value=0 if inboxes is None else 1,
        )
        if inboxes is None:
            return
        now_ms = self.clock()
        labels = ["recipient"] if self.country_labels else []
        depth = GaugeMetricFamily(
            "msmt_inbox_unacknowledged",
            "Deliveries in recipients' inboxes not yet acknowledged"
            + (" (per recipient)." if self.country_labels else " (all recipients)."),
            labels=labels,
        )
        age = GaugeMetricFamily(
            "msmt_inbox_oldest_unacknowledged_age_seconds",
            "Age of the oldest unacknowledged delivery, 0 when none"
            + (" (per recipient)." if self.country_labels else " (the oldest of any recipient)."),
            labels=labels,
        )

        def age_s(inbox: _Inbox) -> float:
            return 0.0 if inbox.oldest_ms is None else max(0, now_ms - inbox.oldest_ms) / 1000

        if self.country_labels:
            for recipient, inbox in sorted(inboxes.items()):
                depth.add_metric([recipient], inbox.unacknowledged)
                age.add_metric([recipient], age_s(inbox))
        else:
            depth.add_metric([], sum(i.unacknowledged for i in inboxes.values()))
            age.add_metric([], max((age_s(i) for i in inboxes.values()), default=0.0))
        yield depth
        yield age

    def _refresh(self) -> None:
        self.refreshes += 1
        try:
            self._inboxes = self._read()
        except Exception as exc:  # a scrape must not fail: the database is reported down
            self._inboxes = None
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("metrics: cannot read the inbox statistics: %s", str(exc).splitlines()[0])
            return
        if self._down_since is not None:
            log.warning("metrics: the database answers again")
            self._down_since = None

    def engine(self) -> Engine:
        if self._engine is None:
            from sqlalchemy.pool import NullPool

            from .store.db import is_sqlite, make_engine

            extra: dict[str, Any] = {"poolclass": NullPool}  # a connection per refresh, none idle
            if not is_sqlite(self.database_url):
                extra["connect_args"] = {"connect_timeout": max(1, round(self.timeout_s))}
            self._engine = make_engine(self.database_url, **extra)
        return self._engine

    def _read(self) -> dict[str, _Inbox]:
        from sqlalchemy import String, func, literal, select, text, union_all

        from .store.db import is_sqlite
        from .store.models import Delivery, InboxCounter

        with self.engine().connect() as conn:
            if not is_sqlite(self.database_url):
                conn.execute(text(f"SET LOCAL statement_timeout = {int(self.timeout_s * 1000)}"))
            counters = dict(conn.execute(select(InboxCounter.recipient, InboxCounter.last_seq)).all())
            inboxes: dict[str, _Inbox] = {}
            floors: dict[str, int] = {}
            recipients = sorted(counters)
            for start in range(0, len(recipients), 100):  # SQLite: at most 500 terms in a UNION
                parts = [
                    select(
                        literal(recipient, String).label("recipient"),
                        func.count().label("unacknowledged"),
                        func.min(Delivery.seq).label("first_seq"),
                        func.min(Delivery.created_ms).label("oldest_ms"),
                    ).where(
                        Delivery.recipient == recipient,
                        Delivery.seq >= self._floor(recipient, counters[recipient]),
                        Delivery.state == "pending",
                    )
                    for recipient in recipients[start : start + 100]
                ]
                for recipient, count, first_seq, oldest_ms in conn.execute(union_all(*parts)):
                    inboxes[recipient] = _Inbox(int(count), None if oldest_ms is None else int(oldest_ms))
                    # none below `last_seq` unacknowledged now: none ever will be again
                    floors[recipient] = int(first_seq) if first_seq is not None else counters[recipient] + 1
        self._floors.update(floors)
        return inboxes

    def _floor(self, recipient: str, last_seq: int) -> int:
        floor = self._floors.get(recipient, 1)
        return floor if floor <= last_seq + 1 else 1  # a counter that went back (restored database)


# --- the listener, in the `serve` process ---------------------------------------------------


class _WorkerFiles:
    """Every worker's files added up; the live gauges of workers that died are dropped first
    (uvicorn restarts a dead worker under a new process id)."""

    def __init__(self, directory: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = directory
        self._files = MultiProcessCollector(None, directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.multiprocess import mark_process_dead

        for path in glob.glob(os.path.join(self.directory, "gauge_live*_*.db")):
            pid = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                mark_process_dead(int(pid), self.directory)  # type: ignore[no-untyped-call]
        files: Iterable[Metric] = self._files.collect()  # type: ignore[no-untyped-call]
        return files


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_app(registry: CollectorRegistry) -> WSGIApplication:
    """The exposition at /metrics; 404 for any other path."""
    from prometheus_client import make_wsgi_app

    exposition = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the metrics are at /metrics\n"]
        answer: Iterable[bytes] = exposition(environ, start_response)
        return answer

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not logged
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class Listener:
    """The /metrics listener and its multiprocess folder; `close()` removes both."""

    host: str
    port: int
    directory: str
    server: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.server.shutdown()
            self.server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.environ.get(MULTIPROC_ENV) == self.directory:
            del os.environ[MULTIPROC_ENV]


def _close_on_sigterm(listener: Listener) -> None:
    """With one worker, uvicorn serves in this process and, once shut down gracefully, raises
    the SIGTERM it caught again with the handler it found: this one, which removes the folder
    (no atexit runs for a process killed by a signal) and then dies of the signal all the same."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return  # someone else handles SIGTERM: leave it to them (and atexit)

    def close_then_die(sig: int, _frame: Any) -> None:
        listener.close()
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)

    with contextlib.suppress(ValueError):  # not the main thread: atexit only
        signal.signal(signal.SIGTERM, close_then_die)


def start_listener(settings: Settings, api_port: int) -> Listener | None:
    """For `msmt-broker serve`, before its workers start: None while metrics are off. Raises
    ValueError for a port that cannot be the metrics port, OSError when it cannot listen."""
    port = settings.metrics_port
    if port == 0:
        return None
    if not 0 < port < 65536:
        raise ValueError(f"MSMT_METRICS_PORT={port} is not a port number (1-65535, or 0 for no metrics)")
    if port == api_port:
        raise ValueError(f"MSMT_METRICS_PORT={port} is the API port: metrics need a port of their own")
    directory = tempfile.mkdtemp(prefix="msmt-metrics-")  # mode 0700
    os.environ[MULTIPROC_ENV] = directory  # inherited by every worker uvicorn starts
    try:
        _use_multiprocess_files()
        from prometheus_client import CollectorRegistry

        served = CollectorRegistry(auto_describe=False)
        served.register(_WorkerFiles(directory))
        served.register(
            InboxCollector(
                settings.database_url,
                country_labels=settings.metrics_country_labels,
                cache_s=settings.metrics_cache_s,
            )
        )
        host = settings.metrics_host
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_MetricsServer", (_ThreadingServer,), {"address_family": family})
        server: WSGIServer = make_server(host, port, metrics_app(served), server_class, handler_class=_Quiet)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        del os.environ[MULTIPROC_ENV]
        raise
    thread = threading.Thread(target=server.serve_forever, name="msmt-metrics", daemon=True)
    thread.start()
    listener = Listener(host, port, directory, server, thread)
    atexit.register(listener.close)
    _close_on_sigterm(listener)
    log.info("metrics on http://%s:%d%s", host, port, METRICS_PATH)
    return listener
