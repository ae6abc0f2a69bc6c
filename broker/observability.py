"""Structured logs: one JSON line per request and per event, with secrets kept out.

Every line is a JSON object (structlog's renderer over the standard library's logging, so
uvicorn's, SQLAlchemy's and the broker's own `logging` calls come out in the same shape). A
request line carries the request id (the caller's `X-Request-ID` when it is well formed, else
a fresh one, echoed in the answer), method, route template, status, latency, the caller (a
country code or `admin:<name>`), the item id and the problem code when there are any.

What never reaches a log: payloads (the broker never holds them in clear), tokens, keys,
passphrases and database passwords. Routes do not log bodies; on top of that, every line goes
through `redact`, which masks URL passwords, anything shaped like a JWT or a PEM block, and the
values of fields named like secrets, wherever they appear.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_LOGGER = "msmt.request"
LIFECYCLE_LOGGER = "msmt.lifecycle"  # start and stop: always logged, like requests
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(?:-----END [A-Z ]+-----|$)", re.S)
_SECRET_FIELDS = re.compile(r"(password|passphrase|secret|token|authorization|private|seed)", re.I)

# The request being served: a dict the middleware creates and routes add to (`note`). A dict,
# not values, so that what a dependency running in a worker thread adds is seen here too.
_request: ContextVar[dict[str, Any] | None] = ContextVar("msmt_request", default=None)


def note(**fields: Any) -> None:
    """Add fields (caller, item, problem) to the current request's log line."""
    current = _request.get()
    if current is not None:
        current.update(fields)


def current_request_id() -> str | None:
    current = _request.get()
    return None if current is None else current.get("request_id")


def redact_text(text: str) -> str:
    # Each pattern needs its fixed part ("://", "eyJ", "-----BEGIN "): a text without any is
    # left as it is without running the three searches (a request line has seven strings).
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    if "eyJ" in text:
        text = _JWT.sub("[token]", text)
    if "-----BEGIN " in text:
        text = _PEM.sub("[key material]", text)
    return text


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every string value of the line."""
    for key, value in list(event.items()):
        if _SECRET_FIELDS.search(key) and key not in ("event",):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
]


def json_formatter() -> logging.Formatter:
    """The formatter every handler uses (named in `logging_config` for `logging.config`)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    )


def configure_structlog() -> None:
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_config(level: str = "info", requests: bool = True) -> dict[str, Any]:
    """A `logging.config.dictConfig` document (what uvicorn applies in each worker): JSON
    lines on stderr; request lines at INFO whatever `level` says, unless `requests` is off."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "broker.observability.json_formatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": upper},
        "loggers": {
            "uvicorn": {"handlers": [], "level": upper, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": upper, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
            REQUEST_LOGGER: {"handlers": [], "level": "INFO" if requests else "WARNING", "propagate": True},
            LIFECYCLE_LOGGER: {"handlers": [], "level": "INFO", "propagate": True},
        },
    }


Observer = Callable[[str, str, int, float], None]


class RequestLog:
    """ASGI middleware: the request id, and one log line when the answer has been sent."""

    def __init__(self, app: ASGIApp, observers: list[Observer] | None = None) -> None:
        self.app = app
        self.observers = observers if observers is not None else []
        self.log = structlog.get_logger(REQUEST_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(candidate):
                    request_id = candidate
                break
        fields: dict[str, Any] = {"request_id": request_id or uuid.uuid4().hex}
        token = _request.set(fields)
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", fields["request_id"].encode())

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=template,
                status=status,
                latency_ms=round(seconds * 1000, 2),
                **fields,
            )
            for observe in self.observers:
                observe(scope["method"], template, status, seconds)
            _request.reset(token)
