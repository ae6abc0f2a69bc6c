"""Typed dependencies shared by the routers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..observability import note
from ..policydoc import QuotasDoc
from ..problems import PROBLEM_MEDIA_TYPE, Problem, forbidden, unauthorized
from ..services import policy as policy_service
from ..services.auth import Caller, NeedsDatabase, ReplayCache, Target, authenticate, replay_checked_here
from ..services.health import Outage
from ..services.log import Integrator
from ..services.notify import InboxNotifier
from ..services.quota import Quota, QuotaBook, RateLimiter, envelope_too_large, rate_limited
from ..services.registry import RegistryCache
from ..services.sequencer import Sequencer
from ..services.signatures import SignaturePool
from ..settings import Settings
from ..store.checkpoint import WalCheckpointer


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class BrokerState:
    settings: Settings
    sessions: sessionmaker[Session]
    clock: Callable[[], int] = field(default=wall_clock_ms)
    registry: RegistryCache = field(default_factory=RegistryCache)
    replays: ReplayCache = field(default_factory=ReplayCache)
    integrator: Integrator | None = None
    # wakes inbox long-polls; the integrator publishes the recipients of what it commits
    notifier: InboxNotifier = field(default_factory=InboxNotifier)
    sequencer: Sequencer | None = None
    # database outages, logged once each (services/health.py)
    outage: Outage = field(default_factory=Outage)
    long_polls: LongPolls = field(default_factory=lambda: LongPolls(20, 800))
    # the members' quotas (the policy document's [quotas]) and their request-rate buckets
    quotas: QuotaBook = field(default_factory=QuotaBook)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    # envelope checks (parse, signatures) running at once: Settings.prepare_threads (api/items.py);
    # None: the request thread pool's limit
    checks: anyio.CapacityLimiter | None = None
    # the worker processes that verify envelopes' signatures (services/signatures.py); None:
    # verified in the request's thread
    signatures: SignaturePool | None = None
    # SQLite: the WAL copied back after the sequencer's commits, off its thread (store/checkpoint.py)
    checkpointer: WalCheckpointer | None = None

    @property
    def log(self) -> Integrator:
        assert self.integrator is not None
        return self.integrator

    @property
    def writer(self) -> Sequencer:
        assert self.sequencer is not None
        return self.sequencer


class LongPolls:
    """Waiting long-polls, per member and in all: each holds a connection (a file descriptor),
    so one member cannot take them all, and the process stays below its descriptor limit.
    Past the member's cap: 429 with Retry-After; past the process's: 503 with Retry-After.

    A member's cap is its `long_polls` quota (the policy document), and never more than
    `per_member` (MSMT_INBOX_MAX_WAITING_PER_MEMBER: this process's ceiling for any member)."""

    def __init__(self, per_member: int, total: int) -> None:
        self.per_member = per_member
        self.total = total
        self.by_member: dict[str, int] = {}
        self.count = 0

    def enter(self, member: str, quota: int | None = None) -> None:  # the event loop's thread only
        cap = self.per_member if quota is None else min(quota, self.per_member)
        if self.by_member.get(member, 0) >= cap:
            raise Problem(
                429,
                "too-many-long-polls",
                "Too many requests",
                f"{member} already has {cap} long-polls waiting (its long_polls quota); "
                "wait for one to return",
            )
        if self.count >= self.total:
            raise Problem(
                503, "busy", "Service busy", f"the broker holds {self.total} long-polls; retry shortly"
            )
        self.by_member[member] = self.by_member.get(member, 0) + 1
        self.count += 1

    def leave(self, member: str) -> None:
        self.count -= 1
        left = self.by_member[member] - 1
        if left:
            self.by_member[member] = left
        else:
            del self.by_member[member]


async def get_state(request: Request) -> BrokerState:
    """Async although it awaits nothing: FastAPI runs a plain `def` dependency on a worker
    thread, a hop per request for one attribute read."""
    state: BrokerState = request.app.state.broker
    return state


StateDep = Annotated[BrokerState, Depends(get_state)]


SHARED_REPLAY_PREFIXES = ("/v1/admin", "/v1/governance")
SUBMIT_PATHS = ("/v1/items", "/v1/items/batch")  # bodies of envelopes: the envelope size limit


def request_target(request: Request) -> Target:
    """Method, and path and query exactly as sent: what a bound token must name."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope.get("query_string", b"")
    path = (raw + (b"?" + query if query else b"")).decode("latin-1")
    shared = request.scope["path"].startswith(SHARED_REPLAY_PREFIXES)
    return Target(request.method, path, shared_replay_check=shared)


def _authenticate(state: BrokerState, token: str, now_ms: int, target: Target) -> Caller:
    caller = authenticate(
        state.sessions, state.registry, state.settings, token, now_ms, target, state.replays
    )
    registry = state.registry.latest()
    if registry is not None and not caller.is_admin:  # bring the quotas up to the registry's version

        def load() -> QuotasDoc:
            with state.sessions() as session:
                return policy_service.quotas(session)

        state.quotas.at(registry.version, load)
    return caller


def _authenticate_on_loop(state: BrokerState, token: str, now_ms: int, target: Target) -> Caller | None:
    """`_authenticate` without leaving the event loop, where it reads and writes nothing but
    the registry's version on SQLite (RegistryCache.quick): the registry and the quotas this
    process holds are current, and the token's replay check is this process's own. None where
    it would need more (then `_authenticate` on a worker thread decides). The hop to a worker
    thread and back, with the context switches and GIL hand-offs it brings, cost more than
    the check itself (bench/README.md, "Authentication on the event loop")."""
    if not replay_checked_here(token, target, state.replays):  # recorded in the database: not here
        return None
    registry = state.registry.quick(state.sessions)
    if registry is None or not state.quotas.loaded_at(registry.version):
        return None
    try:
        return authenticate(
            state.sessions,
            state.registry,
            state.settings,
            token,
            now_ms,
            target,
            state.replays,
            registry=registry,
            may_write=False,
        )
    except NeedsDatabase:
        return None


def member_quota(state: BrokerState, caller: Caller) -> Quota:
    """The caller's quotas as of the registry version its authentication read."""
    return state.quotas.latest().of(caller.owner)


async def current_caller(request: Request, state: StateDep) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("missing-token", "send 'Authorization: Bearer <JWT>' signed with your API key")
    token, now_ms, target = token.strip(), state.clock(), request_target(request)
    caller = _authenticate_on_loop(state, token, now_ms, target)
    if caller is None:
        caller = await run_in_threadpool(_authenticate, state, token, now_ms, target)
    note(caller=caller.owner)
    quota = None if caller.is_admin else member_quota(state, caller)
    if quota is not None:  # members' requests only: the admins are the operator's own
        wait = state.limiter.take(caller.owner, quota.requests_per_second, quota.burst)
        if wait > 0:
            raise rate_limited(caller.owner, quota, wait)
    if caller.body_sha256 is not None:
        # The token is good; only now is the body read (within the route's size limit, and a
        # single envelope within the member's largest_envelope quota).
        path = request.scope["path"].rstrip("/")
        limit = state.settings.max_json_bytes
        too_large: Problem | None = None
        if request.method == "POST" and path in SUBMIT_PATHS:
            limit = state.settings.max_envelope_bytes
            if path == SUBMIT_PATHS[0] and quota is not None and quota.largest_envelope < limit:
                limit, too_large = quota.largest_envelope, envelope_too_large(caller.owner, quota)
        body = await read_body(request, limit, too_large) if declares_body(request) else b""
        request._body = body
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        if not hmac.compare_digest(digest, caller.body_sha256):
            raise unauthorized("token-binding", "the token was minted for another request body")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


async def country_caller(caller: CallerDep) -> Caller:
    if caller.is_admin:
        raise forbidden("country-only", "this endpoint is for member countries, not admins")
    return caller


async def admin_caller(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise forbidden("admin-only", "this endpoint requires an admin key")
    return caller


CountryDep = Annotated[Caller, Depends(country_caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]


class BodyRefused(Problem):
    """A request body the broker stops reading: too large, or too slow."""


class BodyTooLarge(BodyRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body-too-large", "Request body too large", f"the body exceeds {limit} bytes")


class BodyTimeout(BodyRefused):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, "body-timeout", "Request body too slow", f"no part of the body arrived for {seconds:g} s"
        )


def declares_body(request: Request) -> bool:
    """Whether the request has a body at all: HTTP/1.1 frames one only with Content-Length or
    Transfer-Encoding (RFC 9112 section 6.3), so without either it is empty and nothing is read
    (most GETs: reading the empty body through the body-limit middleware's timed receive
    was a tenth of an inbox long-poll's CPU, py-spy)."""
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


async def read_body(request: Request, limit: int, too_large: Problem | None = None) -> bytes:
    """Read the raw body, refusing more than `limit` bytes before buffering them (with
    `too_large`, or `413 body-too-large`)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large or BodyTooLarge(limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large or BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimit:
    """ASGI middleware: no request body beyond its limit is ever buffered.

    Envelope submissions may be up to `max_envelope_bytes`; every other body (JSON, policy
    documents) up to `max_json_bytes`. A declared Content-Length over the limit is refused
    at once; a streamed (chunked) body is counted and refused when it passes the limit, with
    the same 413 `body-too-large`, whoever reads it: a route's own `read_body`, or the
    framework parsing a JSON body (which would otherwise turn the refusal into a 400).
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_submit = scope["method"] == "POST" and scope["path"].rstrip("/") in SUBMIT_PATHS
        limit = self.settings.max_envelope_bytes if is_submit else self.settings.max_json_bytes
        has_body = authorized = False
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_problem(send, BodyTooLarge(limit), scope["path"])
                return
            if (name == b"content-length" and value not in (b"", b"0")) or name == b"transfer-encoding":
                has_body = True
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                authorized = True
        if has_body and not authorized and scope["path"].startswith("/v1/"):
            # Every route that takes a body authenticates: an anonymous body is never read.
            await _send_problem(
                send,
                unauthorized("missing-token", "send 'Authorization: Bearer <JWT>' signed with your API key"),
                scope["path"],
            )
            return
        seen = 0
        too_large: BodyRefused | None = None
        started = replaced = complete = False
        timeout = self.settings.body_timeout_s

        async def counted() -> Message:
            nonlocal seen, too_large, complete
            if complete:  # the body is in: what follows is only a disconnect, however late
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                too_large = BodyTimeout(timeout)
                raise too_large from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = BodyTooLarge(limit)
                    raise too_large
                complete = not message.get("more_body", False)
            return message

        async def guarded(message: Message) -> None:
            # Once the body went over the limit, whatever the app answers becomes the 413.
            nonlocal started, replaced
            if too_large is not None and not started:
                if not replaced:
                    replaced = True
                    await _send_problem(send, too_large, scope["path"])
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyRefused as exc:
            if started:
                raise
            if not replaced:
                await _send_problem(send, exc, scope["path"])


async def _send_problem(send: Send, problem: Problem, path: str) -> None:
    note(problem=problem.code)
    body = json.dumps(problem.to_dict(instance=path)).encode()
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in problem.headers().items()]
    if isinstance(problem, BodyRefused):  # the rest of the body is not read: end the connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
