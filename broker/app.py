"""FastAPI application factory: routers, RFC 9457 error handlers, state."""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from msmt.core.logleaf import LogIdentity, LogSigner

from . import metrics
from .api import admin, directory, governance, inbox, items, preflight, schemas
from .api import log as log_api
from .api.deps import BodyLimit, BrokerState, LongPolls, wall_clock_ms
from .api.docs import install_docs
from .observability import LIFECYCLE_LOGGER, Observer, RequestLog, configure_structlog, note
from .problems import PROBLEM_MEDIA_TYPE, Problem, database_unavailable
from .services import maintenance
from .services.health import Readiness, is_outage, readiness, schema_head
from .services.log import Integrator
from .services.notify import notify_in_transaction
from .services.sequencer import Sequencer
from .services.signatures import SignaturePool
from .serving import (
    Draining,
    Failures,
    Stopping,
    answer_overload_with_a_problem,
    quiet_accept_errors,
    watch_stop_signals,
)
from .settings import Settings
from .store.checkpoint import WalCheckpointer
from .store.db import make_engine, make_sessionmaker, transaction

log = logging.getLogger("msmt.broker")


def _problem_response(request: Request, problem: Problem) -> JSONResponse:
    note(problem=problem.code)
    return JSONResponse(
        problem.to_dict(instance=request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers() or None,
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"location": ".".join(str(p) for p in err.get("loc", ())), "message": str(err.get("msg", ""))}
            for err in exc.errors()
        ][:50]
        return _problem_response(
            request,
            Problem(
                422, "invalid-request", "Invalid request", "the request does not match the API", errors=fields
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not-found", 405: "method-not-allowed"}
        code = codes.get(exc.status_code, f"http-{exc.status_code}")
        response = _problem_response(
            request, Problem(exc.status_code, code, str(exc.detail), str(exc.detail))
        )
        for name, value in (exc.headers or {}).items():  # e.g. Allow on 405 (RFC 9110)
            response.headers[name] = value
        return response

    @app.exception_handler(DBAPIError)
    async def on_database(request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_outage(exc):
            raise exc  # not an outage: a failure like any other (Failures answers and logs it)
        request.app.state.broker.outage.failed(f"{request.method} {request.url.path}", exc)
        return _problem_response(request, database_unavailable())

    # Any other exception: `Failures` (a middleware, so that the answer ends the exception
    # instead of Starlette's last-resort handler raising it again into the server).


def settle_collector(young_threshold: int) -> None:
    """A long-lived process's garbage collector: what is loaded so far frozen out of its passes,
    and the young generation collected only after `young_threshold` more allocations than
    deallocations (Settings.gc_young_threshold says why)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    broker: BrokerState = app.state.broker
    if broker.settings.gc_freeze:
        # Everything loaded at start-up lives as long as the server: keep it out of the garbage
        # collector's full passes, whose pauses otherwise land on requests (measured: p99
        # submit -> long-poll 99.8 -> 36 ms at 10 submits/s, bench/inbox.py). Only for a server
        # process: an app made and dropped again (tests) would leave its objects frozen.
        settle_collector(broker.settings.gc_young_threshold)
    settings = broker.settings
    structlog.get_logger(LIFECYCLE_LOGGER).info(
        "broker starting",
        database=make_url(settings.database_url).render_as_string(hide_password=True),
        log_key="loaded" if broker.log.signer is not None else "not configured",
        witnesses=len(settings.witness_map()),
        pid=os.getpid(),
    )
    broker.notifier.start(broker.settings.database_url)  # PostgreSQL: other processes' wake-ups
    if settings.signature_pool_size() > 0:
        broker.signatures = await asyncio.to_thread(SignaturePool, settings.signature_pool_size())
    if broker.checkpointer is not None:
        broker.checkpointer.start()
    broker.writer.start()
    retention = asyncio.create_task(_retention(broker)) if settings.retention_days > 0 else None
    # SIGTERM / SIGINT release the waiting long-polls before the server's graceful stop
    unwatch = watch_stop_signals(app.state.stopping)
    quiet_accept_errors(asyncio.get_running_loop())
    try:
        yield
    finally:
        unwatch()
        if retention is not None:
            retention.cancel()
        try:
            broker.writer.stop()
            broker.notifier.stop()
            if broker.checkpointer is not None:  # after the writer: nothing commits any more
                broker.checkpointer.stop()
        finally:
            broker.registry.close(for_good=True)
            if broker.signatures is not None:  # after the writer: nothing checks any more
                broker.signatures.close()
                broker.signatures = None
        structlog.get_logger(LIFECYCLE_LOGGER).info("broker stopped", pid=os.getpid())


async def _retention(broker: BrokerState) -> None:
    """Purge what the retention setting allows, now and every `retention_interval_s`."""
    age_ms = int(broker.settings.retention_days * 24 * 3600 * 1000)

    def purge_once() -> int:
        with transaction(broker.sessions) as session:
            return maintenance.purge(session, age_ms, broker.clock(), "retention")

    while True:
        try:
            purged = await run_in_threadpool(purge_once)
            if purged:
                log.info(
                    "retention purged %d envelopes older than %s days", purged, broker.settings.retention_days
                )
        except (OperationalError, InterfaceError) as exc:
            broker.outage.failed("retention", exc)
        except Exception:
            log.exception("retention failed; retrying at the next interval")
        await asyncio.sleep(broker.settings.retention_interval_s)


def load_log_signer(settings: Settings) -> LogSigner | None:
    """The log key from `log_key_file`; without one, checkpoints are not signed (and clients
    that pinned a log in their root refuse to trust the log)."""
    if not settings.log_key_file:
        log.warning("no MSMT_LOG_KEY_FILE: the transparency log's checkpoints will not be signed")
        return None
    seed = base64.b64decode(Path(settings.log_key_file).read_text().strip(), validate=True)
    return LogSigner.from_seed(settings.log_origin, seed)


def create_app(settings: Settings | None = None, clock: Callable[[], int] | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_structlog()
    answer_overload_with_a_problem()
    request_observers: list[Observer] = []
    engine = make_engine(settings.database_url)
    if settings.metrics_port:  # counted in this process, served by `serve` (broker/metrics.py)
        metrics.enable()
        request_observers.append(metrics.observe_request)  # the latency histogram, per request
    metrics.instrument_engine(engine)
    app = FastAPI(
        lifespan=_lifespan,
        title="MSMT Broker",
        version="1",
        summary="Verifies, policy-checks and fans out signed, end-to-end encrypted sanctions-monitoring reports.",
        docs_url=None,  # FastAPI's own pages load from a CDN: api/docs.py serves offline ones
        redoc_url=None,
    )
    sessions = make_sessionmaker(engine)
    broker = BrokerState(settings, sessions, clock or wall_clock_ms)
    broker.long_polls = LongPolls(settings.inbox_max_waiting_per_member, settings.inbox_max_waiting)
    checks = settings.prepare_threads()
    broker.checks = anyio.CapacityLimiter(checks) if checks is not None else None

    def pinned_log() -> LogIdentity | None:
        with sessions() as session:
            directory = broker.registry.get(session).directory
        return None if directory is None else LogIdentity.from_root_extra(directory.extra)

    broker.integrator = Integrator(
        sessions,
        load_log_signer(settings),
        broker.clock,
        identity=pinned_log,
        witness_urls=settings.witness_map(),
        witness_timeout_s=settings.witness_timeout_s,
    )
    # Long-polls wake when their recipient's inbox grows: in this process after the commit,
    # in the others by a NOTIFY that commits with the integration (services/notify.py).
    broker.integrator.in_transaction.append(
        functools.partial(notify_in_transaction, origin=broker.notifier.origin)
    )
    broker.integrator.after_commit.append(
        lambda result: broker.notifier.publish(result.recipients, result.deliveries)
    )
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        broker.checkpointer = WalCheckpointer(engine)
        broker.integrator.after_commit.append(broker.checkpointer.poke)
    broker.sequencer = Sequencer(
        sessions,
        broker.registry,
        broker.integrator,
        max_batch=settings.submit_max_batch,
        interval_s=settings.log_sweep_interval_s,
    )
    # a process whose stored items another process integrates hears of it by that NOTIFY
    broker.notifier.on_foreign.append(broker.sequencer.others_integrated)
    broker.sequencer.pushed = lambda: broker.notifier.listening
    app.state.broker = broker
    app.state.engine = engine
    outage = broker.outage
    outage.watch(engine, sessions)
    broker.sequencer.outage = outage
    broker.notifier.outage = outage
    _install_error_handlers(app)
    app.state.stopping = Stopping()
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(Draining, stopping=app.state.stopping)
    app.add_middleware(Failures)  # any exception no handler answered: a 500, connection kept
    app.add_middleware(RequestLog, observers=request_observers)  # outermost: sees every answer
    for module in (items, inbox, directory, governance, log_api, preflight, admin):
        app.include_router(module.router)
    install_docs(app)  # /docs, /redoc (no CDN) and the bearer scheme in the OpenAPI document

    @app.get("/v1/health", tags=["health"])
    async def health() -> schemas.Liveness:
        """The process answers (kept for existing probes; `/livez` says the same)."""
        return schemas.Liveness(status="ok")

    @app.get("/livez", tags=["health"])
    async def livez() -> schemas.Liveness:
        """The process is up and serving HTTP; says nothing about the database."""
        return schemas.Liveness(status="ok")

    head = schema_head()

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=schemas.ReadinessReport,
        responses={503: {"model": schemas.ReadinessReport, "description": "not ready: see `checks`"}},
    )
    async def readyz() -> JSONResponse:
        """Ready to serve: the database answers, its schema is at this code's head, and the
        log key (when configured) is loaded. 503 otherwise, with the failing checks."""
        check = functools.partial(
            readiness, engine, head, bool(settings.log_key_file), broker.log.signer is not None
        )
        try:
            result = await asyncio.wait_for(run_in_threadpool(check), settings.readiness_timeout_s)
        except TimeoutError:
            result = Readiness(False, {"database": f"no answer within {settings.readiness_timeout_s} s"})
        if result.ready and engine.dialect.name != "sqlite":  # SQLite: a committed write ends it
            outage.recovered()
        body = {"status": "ready" if result.ready else "not ready", "checks": result.checks}
        return JSONResponse(body, status_code=200 if result.ready else 503)

    return app
