"""FastAPI application factory: routers, RFC 9457 error handlers, state."""

from __future__ import annotations

import base64
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from msmt.core.logleaf import LogIdentity, LogSigner

from .api import admin, directory, governance, inbox, items, preflight
from .api import log as log_api
from .api.deps import BodyLimit, BrokerState, wall_clock_ms
from .problems import PROBLEM_MEDIA_TYPE, Problem, database_unavailable
from .services.log import Integrator
from .services.notify import notify_in_transaction
from .services.sequencer import Sequencer
from .settings import Settings
from .store.db import make_engine, make_sessionmaker

log = logging.getLogger("msmt.broker")


def _problem_response(request: Request, problem: Problem) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    if problem.status == 503:
        headers = {"Retry-After": "1"}
    return JSONResponse(
        problem.to_dict(instance=request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
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
        if not isinstance(exc, OperationalError | InterfaceError):
            return await on_unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc.orig)
        return _problem_response(request, database_unavailable())

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _problem_response(
            request,
            Problem(500, "internal-error", "Internal error", "the broker failed; nothing was changed"),
        )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    broker: BrokerState = app.state.broker
    if broker.settings.gc_freeze:
        # Everything loaded at start-up lives as long as the server: keep it out of the garbage
        # collector's full passes, whose pauses otherwise land on requests (measured: p99
        # submit -> long-poll 99.8 -> 36 ms at 10 submits/s, bench/inbox.py). Only for a server
        # process: an app made and dropped again (tests) would leave its objects frozen.
        gc.collect()
        gc.freeze()
    broker.notifier.start(broker.settings.database_url)  # PostgreSQL: other processes' wake-ups
    broker.writer.start()
    try:
        yield
    finally:
        broker.writer.stop()
        broker.notifier.stop()


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
    engine = make_engine(settings.database_url)
    app = FastAPI(
        lifespan=_lifespan,
        title="MSMT Broker",
        version="1",
        summary="Verifies, policy-checks and fans out signed, end-to-end encrypted sanctions-monitoring reports.",
    )
    sessions = make_sessionmaker(engine)
    broker = BrokerState(settings, sessions, clock or wall_clock_ms)

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
    broker.integrator.in_transaction.append(notify_in_transaction)
    broker.integrator.after_commit.append(lambda result: broker.notifier.publish(result.recipients))
    broker.sequencer = Sequencer(
        sessions,
        broker.registry,
        broker.integrator,
        max_batch=settings.submit_max_batch,
        interval_s=settings.log_sweep_interval_s,
    )
    app.state.broker = broker
    app.state.engine = engine
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, settings=settings)
    for module in (items, inbox, directory, governance, log_api, preflight, admin):
        app.include_router(module.router)

    @app.get("/v1/health", tags=["health"])
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    return app
