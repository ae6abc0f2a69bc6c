"""A recipient's inbox: list by cursor (with long-poll) and acknowledge."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from msmt.core import canonical
from msmt.core.errors import MsmtError

from .. import metrics
from ..problems import invalid
from ..services import inbox as inbox_service
from . import schemas
from .deps import CountryDep, StateDep, member_quota
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
) -> schemas.InboxPage:
    """Deliveries with seq > after, in seq order. With `wait`, returns as soon as any arrive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, state.settings.inbox_max_wait_s)
    max_bytes = state.settings.inbox_max_page_bytes if include == "envelope" else None

    def load() -> schemas.InboxPage:
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
            return schemas.InboxPage(**page)

    waiting = False
    try:
        while True:
            # taken before the check: deliveries published after it end the wait below at once
            seen = state.notifier.generation(caller.owner)
            page = await run_in_threadpool(load)
            remaining = deadline - loop.time()
            if page.deliveries or remaining <= 0:
                return page
            if not waiting:  # a long-poll holds a connection: counted, and capped
                # past the member's long_polls quota: 429 too-many-long-polls, Retry-After: 1
                state.long_polls.enter(caller.owner, member_quota(state, caller).long_polls)
                waiting = True
            # woken by the integrator's publish; the timeout is only the safety re-check
            metrics.longpoll_waiting(1)
            try:
                await state.notifier.wait(
                    caller.owner, min(state.settings.inbox_poll_interval_s, remaining), since=seen
                )
            finally:
                metrics.longpoll_waiting(-1)
    finally:
        if waiting:
            state.long_polls.leave(caller.owner)


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
