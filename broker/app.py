"""FastAPI application factory: routers, RFC 9457 error handlers, state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api import admin, directory, governance, inbox, items, preflight
from .api.deps import BodyLimit, BrokerState, wall_clock_ms
from .problems import PROBLEM_MEDIA_TYPE, Problem
from .settings import Settings
from .store.db import make_engine, make_sessionmaker

log = logging.getLogger("msmt.broker")


def _problem_response(request: Request, problem: Problem) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
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

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _problem_response(
            request,
            Problem(500, "internal-error", "Internal error", "the broker failed; nothing was changed"),
        )


def create_app(settings: Settings | None = None, clock: Callable[[], int] | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    app = FastAPI(
        title="MSMT Broker",
        version="1",
        summary="Verifies, policy-checks and fans out signed, end-to-end encrypted sanctions-monitoring reports.",
    )
    app.state.broker = BrokerState(settings, make_sessionmaker(engine), clock or wall_clock_ms)
    app.state.engine = engine
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, settings=settings)
    for module in (items, inbox, directory, governance, preflight, admin):
        app.include_router(module.router)

    @app.get("/v1/health", tags=["health"])
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    return app
