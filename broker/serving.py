"""How a broker process fails and stops, as ASGI middleware around the app.

`Failures` answers any exception no handler answered with a complete `500 internal-error`
problem (the connection stays usable: Starlette's last-resort handler raised it again into the
server, which then dropped the keep-alive connection), logging its traceback at most once a
minute per failure site. `Draining` releases the waiting long-polls when the process is told to
stop. `answer_overload_with_a_problem` makes uvicorn's own answer past the connection cap a
problem like every other.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .observability import note
from .problems import PROBLEM_MEDIA_TYPE, Problem

log = logging.getLogger("msmt.broker")


def internal_error() -> Problem:
    """An exception no handler knew. Whether a write took effect is not known here (it may have
    committed before the failure): the problem never claims that nothing was changed."""
    return Problem(
        500,
        "internal-error",
        "Internal error",
        "the broker failed unexpectedly; a write may or may not have taken effect, and repeating "
        "the same request is safe (quote the X-Request-ID when reporting it)",
    )


def shutting_down() -> Problem:
    return Problem(
        503,
        "shutting-down",
        "Service unavailable",
        "the broker process is stopping; retry (another broker process, or this one once restarted, answers)",
    )


async def _send_problem(scope: Scope, send: Send, problem: Problem, *, close: bool = False) -> None:
    note(problem=problem.code)
    body = JSONResponse(problem.to_dict(instance=scope.get("path")), media_type=PROBLEM_MEDIA_TYPE).body
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in problem.headers().items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Failures:
    """ASGI middleware, just inside the request log: an exception that no handler answered is
    answered here, `500 internal-error`, as a complete response.

    Starlette's own last-resort handler answers and then raises the exception again, and uvicorn
    then drops the connection without `Connection: close`: a client's next request on that
    keep-alive connection got no answer at all. Here the exception ends with the answer, so the
    connection stays usable. Its traceback is logged the first time it is seen, and again at most
    once a minute; repeats in between are one line each (a request that fails the same way many
    times does not fill the disk with tracebacks)."""

    REPEAT_TRACEBACK_S = 60.0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, int], tuple[float, int]] = {}

    def _log(self, scope: Scope, exc: Exception) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = (
            (type(exc).__qualname__, frames[-1].filename, frames[-1].lineno or 0) if frames else ("", "", 0)
        )
        now = time.monotonic()
        with self._lock:
            last, repeats = self._seen.get(where, (-self.REPEAT_TRACEBACK_S, 0))
            full = now - last >= self.REPEAT_TRACEBACK_S
            self._seen[where] = (now, 0) if full else (last, repeats + 1)
            if len(self._seen) > 1000:  # bounded: forget the oldest signatures
                for key in list(self._seen)[:500]:
                    del self._seen[key]
        if full:
            extra = f" ({repeats} more since its last traceback)" if repeats else ""
            log.error(
                "unexpected error on %s %s%s", scope.get("method"), scope.get("path"), extra, exc_info=exc
            )
        else:
            log.error(
                "unexpected error on %s %s: %s: %s (traceback logged before)",
                scope.get("method"),
                scope.get("path"),
                type(exc).__qualname__,
                str(exc)[:200],
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            self._log(scope, exc)
            if started:  # half an answer went out: only closing the connection can end it
                raise
            await _send_problem(scope, send, internal_error())


def _is_long_poll(scope: Scope) -> bool:
    if scope["method"] != "GET" or scope["path"].rstrip("/") != "/v1/inbox":
        return False
    wait = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("wait", ["0"])[-1]
    try:
        return float(wait) > 0
    except ValueError:
        return False


class Stopping:
    """Whether this process was told to stop, and the long-polls to release when it is."""

    def __init__(self) -> None:
        self.requested = False
        self.waiting: set[asyncio.Future[None]] = set()

    def stop(self) -> None:
        """Release every waiting long-poll (in the event loop's thread)."""
        self.requested = True
        for released in list(self.waiting):
            if not released.done():
                released.set_result(None)


class Draining:
    """ASGI middleware: a stopping broker releases its waiting long-polls at once.

    A long-poll waits up to `inbox_max_wait_s` (30 s). When the process is told to stop (SIGTERM
    or SIGINT: `watch_stop_signals`), every long-poll that has not answered yet is ended and
    answered `503 shutting-down` with `Retry-After` and `Connection: close`, so the server's
    graceful stop ends within a second instead of waiting for the longest long-poll with its
    listener closed. A long-poll only reads: ending it changes nothing, and the client polls
    again (through the proxy another broker process answers). Other requests finish as usual."""

    def __init__(self, app: ASGIApp, stopping: Stopping) -> None:
        self.app = app
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_long_poll(scope):
            await self.app(scope, receive, send)
            return
        if self.stopping.requested:
            await _send_problem(scope, send, shutting_down(), close=True)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stopping.waiting.add(released)
        serving = asyncio.ensure_future(self.app(scope, receive, sending))
        try:
            await asyncio.wait({serving, released}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done() or started:
                await serving  # answered (or answering): its own result, or its exception
                return
            serving.cancel()
            with suppress(asyncio.CancelledError):
                await serving
            if not started:
                await _send_problem(scope, send, shutting_down(), close=True)
        except asyncio.CancelledError:
            serving.cancel()  # the server cancelled this request: the long-poll goes with it
            raise
        finally:
            self.stopping.waiting.discard(released)
            released.cancel()


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    await _send_problem(
        scope,
        send,
        Problem(
            503,
            "busy",
            "Service busy",
            "the broker process serves its maximum of connections (MSMT_MAX_CONNECTIONS); retry shortly",
        ),
        close=True,
    )


def answer_overload_with_a_problem() -> None:
    """uvicorn answers a request past its connection cap (`limit_concurrency`, which `serve`
    sets from `max_connections`) itself, in plain text; make that answer a problem like every
    other (`503 busy`, `Retry-After`, `Connection: close`). tests/e2e/test_keepalive_after_error.py
    checks it against a real server, so an uvicorn that moves this hook fails a test."""
    from uvicorn.protocols.http import h11_impl, httptools_impl

    for module in (h11_impl, httptools_impl):
        if hasattr(module, "service_unavailable"):
            module.service_unavailable = _overloaded  # type: ignore[attr-defined]


ACCEPT_FAILED = "socket.accept() out of system resource"


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, every_s: float = 60.0) -> None:
    """The asyncio loop reports each accept() that fails for want of descriptors (it then waits
    a second before accepting again: the connections wait in the kernel's backlog) with a
    traceback; under a connection storm that is thousands. Say it once a minute, with a count."""
    previous = loop.get_exception_handler()
    seen = {"last": -every_s, "since": 0}

    def handler(running: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith(ACCEPT_FAILED):
            if previous is not None:
                previous(running, context)
            else:
                running.default_exception_handler(context)
            return
        seen["since"] += 1
        now = time.monotonic()
        if now - seen["last"] >= every_s:
            log.warning(
                "out of file descriptors: accepting paused for a second at a time (%d times since the "
                "last report); connections wait in the backlog",
                seen["since"],
            )
            seen["last"], seen["since"] = now, 0

    loop.set_exception_handler(handler)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def watch_stop_signals(stopping: Stopping) -> Callable[[], None]:
    """Chain a handler for SIGTERM and SIGINT in front of the server's own (uvicorn's, which
    starts the graceful stop): it releases the long-polls first. Returns the undo. A no-op
    outside the main thread (an app under a test client has no signals)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def on_signal(sig: int, frame: FrameType | None) -> None:
        with suppress(RuntimeError):  # the loop is closed: nothing waits any more
            loop.call_soon_threadsafe(stopping.stop)
        handler = previous.get(sig)
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, on_signal)

    def undo() -> None:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is on_signal:
                signal.signal(sig, handler)

    return undo
