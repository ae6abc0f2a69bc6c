"""A recipient's inbox: list by cursor (with long-poll, or as a stream of events) and acknowledge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from msmt.core import canonical
from msmt.core.errors import MsmtError

from .. import metrics
from ..problems import invalid
from ..services import inbox as inbox_service
from ..services import notify
from . import schemas
from .deps import BrokerState, CountryDep, StateDep, member_quota
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/inbox", tags=["inbox"])
MAX_SEQ = 2**63 - 1


@router.get("", response_model=schemas.InboxPage, response_model_exclude_none=True, responses=PROBLEMS)
async def list_inbox(
    caller: CountryDep,
    state: StateDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="cursor: the last seq already seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for new deliveries")] = 0,
    include: Annotated[
        Literal["envelope"] | None,
        Query(
            description="`envelope`: each delivery also carries its envelope (the page is capped in bytes)"
        ),
    ] = None,
    proofs: Annotated[
        int | None,
        Query(
            ge=1,
            le=2**62,
            description="a log size: each delivery in that tree also carries its leaf and inclusion proof",
        ),
    ] = None,
) -> Response:
    """Deliveries with seq > after, in seq order. With `wait`, returns as soon as any arrive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, state.settings.inbox_max_wait_s)
    max_bytes = state.settings.inbox_max_page_bytes if include == "envelope" else None

    def load() -> tuple[bool, bytes]:  # (any deliveries, the page as InboxPage encodes it)
        with state.sessions() as session:
            page = inbox_service.list_inbox(
                session,
                caller.owner,
                after,
                limit,
                max_envelope_bytes=max_bytes,
                proofs_at=proofs,
                now_ms=state.clock(),
            )
        return bool(page["deliveries"]), notify.encode_page(page)

    waiting = False
    woken = False  # by a publish: most often this process's own integration, whose deliveries it holds
    first = True
    try:
        while True:
            # taken before the check: deliveries published after it end the wait below at once
            seen = state.notifier.generation(caller.owner)
            if woken and include is None and proofs is None:
                fresh = state.notifier.recent.after(caller.owner, after, limit)
                if fresh:
                    now_ms = state.clock()
                    body = notify.page_json([r.shown(now_ms) for r in fresh], fresh[-1].seq)
                    return Response(body, media_type="application/json")
            if first and wait > 0 and proofs is None and state.notifier.recent.at_end(caller.owner, after):
                # The caller is at the end of its inbox as this process numbered it (a long-poll
                # again right after a wake-up, most often): wait at once, without a read that
                # would find nothing. Any later delivery wakes the wait; its re-check reads.
                found, body = False, notify.page_json([], after)
            else:
                found, body = await run_in_threadpool(load)
            first = False
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return Response(body, media_type="application/json")
            if not waiting:  # a long-poll holds a connection: counted, and capped
                # past the member's long_polls quota: 429 too-many-long-polls, Retry-After: 1
                state.long_polls.enter(caller.owner, member_quota(state, caller).long_polls)
                waiting = True
            # woken by the integrator's publish; the timeout is only the safety re-check
            metrics.longpoll_waiting(1)
            try:
                woken = await state.notifier.wait(
                    caller.owner, min(state.settings.inbox_poll_interval_s, remaining), since=seen
                )
            finally:
                metrics.longpoll_waiting(-1)
    finally:
        if waiting:
            state.long_polls.leave(caller.owner)


STREAM_PAGE = 1000  # deliveries per `deliveries` event at most
STREAM_RECHECK_S = 1.0  # a stream's key is checked against the database's registry this often


def _event(name: str, data: bytes, event_id: int | None = None) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _end(reason: str) -> bytes:
    return _event("end", canonical.encode({"reason": reason}))


def _still_allowed(state: BrokerState, owner: str, key_id: str, now_ms: int, *, refresh: bool) -> bool:
    """Whether the key that opened a stream is still in force and its owner still active.
    Checked at every wake against the registry this process holds, and against the database's
    (where another broker process may have recorded a revocation) when `refresh`: at most
    STREAM_RECHECK_S apart, since the version read is a query of its own."""
    registry = state.registry.latest()
    if refresh or registry is None:
        with state.sessions() as session:
            registry = state.registry.get(session)
    key = registry.keys.get(key_id)
    return key is not None and key.owner == owner and key.usable(now_ms) and registry.owner_active(owner)


@router.get(
    "/stream",
    responses={**PROBLEMS, 200: {"content": {"text/event-stream": {}}, "description": "a stream of events"}},
)
async def stream_inbox(
    request: Request,
    caller: CountryDep,
    state: StateDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="cursor: the last seq already seen")] = 0,
    lasting: Annotated[
        float | None,
        Query(
            alias="max", ge=0, le=86400, description="seconds before the stream ends, at most the broker's"
        ),
    ] = None,
) -> StreamingResponse:
    """Deliveries with seq > after as Server-Sent Events, pushed as they are logged: one request
    instead of a long-poll per wake (docs/protocol.md section 9.4). Counted as a waiting
    long-poll for its whole life; ends with an `end` event (and the connection) after `max`
    seconds (at most `inbox_stream_max_s`; `max=0`: what is there now, then the end), when the
    broker stops, or when the caller's key is no longer in force."""
    loop = asyncio.get_running_loop()
    settings = state.settings
    stopping = request.app.state.stopping
    # past the member's long_polls quota: 429 too-many-long-polls, before the stream starts
    state.long_polls.enter(caller.owner, member_quota(state, caller).long_polls)
    lasts = settings.inbox_stream_max_s if lasting is None else min(lasting, settings.inbox_stream_max_s)
    left = False

    async def leave() -> None:  # once: from the stream's end, or after the response if it never ran
        nonlocal left
        if not left:
            left = True
            state.long_polls.leave(caller.owner)

    def load(cursor: int, refresh: bool) -> tuple[bool, dict[str, Any] | None]:
        now = state.clock()
        if not _still_allowed(state, caller.owner, caller.key_id, now, refresh=refresh):
            return False, None
        with state.sessions() as session:
            return True, inbox_service.list_inbox(session, caller.owner, cursor, STREAM_PAGE, now_ms=now)

    def recent(cursor: int) -> tuple[bool, list[notify.Recent] | None]:
        """What this process just integrated for the caller after `cursor` (None: read the
        database), checked against the registry this process holds."""
        if state.registry.latest() is None:  # nothing to check against without the database
            return True, None
        if not _still_allowed(state, caller.owner, caller.key_id, state.clock(), refresh=False):
            return False, None
        return True, state.notifier.recent.after(caller.owner, cursor, STREAM_PAGE)

    async def events() -> AsyncIterator[bytes]:
        released: asyncio.Future[None] = loop.create_future()
        stopping.waiting.add(released)
        metrics.longpoll_waiting(1)
        try:
            cursor = after
            ends_at = loop.time() + lasts
            quiet_until = loop.time() + settings.inbox_stream_keepalive_s
            recheck_at = loop.time()
            woken = False  # by a publish (else: the start, a full page, or the safety re-check)
            yield b": msmt inbox stream\n\n"  # the headers and a first line go out at once
            while True:
                if stopping.requested:
                    yield _end("shutting-down")
                    return
                # taken before the check: deliveries published after it end the wait below at once
                seen = state.notifier.generation(caller.owner)
                refresh = loop.time() >= recheck_at
                if refresh:
                    recheck_at = loop.time() + STREAM_RECHECK_S
                body: bytes | None = None
                full = False
                if woken and not refresh:
                    # most wake-ups: this process's own integration, whose deliveries it holds
                    allowed, fresh = recent(cursor)
                    if not allowed:
                        yield _end("key-not-in-force")
                        return
                    if fresh:
                        now_ms = state.clock()
                        cursor = fresh[-1].seq
                        body = notify.page_json([r.shown(now_ms) for r in fresh], cursor)
                        full = len(fresh) == STREAM_PAGE
                if body is None:
                    allowed, page = await run_in_threadpool(load, cursor, refresh)
                    if not allowed or page is None:
                        yield _end("key-not-in-force")
                        return
                    if page["deliveries"]:
                        cursor = page["cursor"]
                        body = notify.encode_page(page)
                        full = len(page["deliveries"]) == STREAM_PAGE
                woken = False
                if body is not None:
                    yield _event("deliveries", body, cursor)
                    quiet_until = loop.time() + settings.inbox_stream_keepalive_s
                    if full:
                        continue  # a full page: there may be more at once
                now = loop.time()
                if now >= ends_at:
                    yield _end("max-duration")
                    return
                if now >= quiet_until:
                    yield b": keep-alive\n\n"
                    quiet_until = now + settings.inbox_stream_keepalive_s
                timeout = min(settings.inbox_poll_interval_s, ends_at - now, quiet_until - now)
                published: asyncio.Future[bool] = asyncio.ensure_future(
                    state.notifier.wait(caller.owner, timeout, since=seen)
                )
                try:
                    pending: set[asyncio.Future[Any]] = {published, released}
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    woken = published.done() and not published.cancelled() and published.result()
                finally:
                    published.cancel()
        finally:
            stopping.waiting.discard(released)
            metrics.longpoll_waiting(-1)
            await leave()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(leave),
    )


@router.post("/ack", response_model=schemas.AckResult, responses=PROBLEMS)
async def acknowledge(body: schemas.AckRequest, caller: CountryDep, state: StateDep) -> schemas.AckResult:
    """Acknowledge processed deliveries (all or none)."""
    from ..store.db import transaction

    def run() -> schemas.AckResult:
        with transaction(state.sessions) as session:
            return schemas.AckResult(
                **inbox_service.acknowledge(session, caller.owner, body.seqs, state.clock())
            )

    return await run_in_threadpool(run)


@router.post("/receipts", response_model=schemas.ReceiptsResult, responses=PROBLEMS)
async def add_receipts(
    body: schemas.ReceiptsIn, caller: CountryDep, state: StateDep
) -> schemas.ReceiptsResult:
    """Signed delivery receipts ("received and verified item X as my entry n"), kept, logged
    and shown to each item's originator as proof of delivery. All or none."""
    from ..store.db import transaction

    try:
        receipts = [canonical.b64decode(r, "receipt") for r in body.receipts]
    except MsmtError as exc:
        raise invalid("bad-receipt", exc.detail) from exc

    def run() -> schemas.ReceiptsResult:
        with transaction(state.sessions) as session:
            registry = state.registry.get(session)
            result = inbox_service.add_receipts(session, registry, caller.owner, receipts, state.clock())
            return schemas.ReceiptsResult(**result)

    return await run_in_threadpool(run)
