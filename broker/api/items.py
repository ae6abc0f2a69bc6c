"""Submit items, fetch their envelopes, and see their delivery state."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from ..problems import Problem, database_unavailable
from ..services import inbox as inbox_service
from ..services import submit as submit_service
from ..services.sequencer import Stopping, Ticket
from . import schemas
from .deps import BrokerState, CallerDep, CountryDep, StateDep, read_body
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/items", tags=["items"])
ENVELOPE_MEDIA_TYPE = "application/vnd.msmt.envelope"
BATCH_MEDIA_TYPE = "application/vnd.msmt.envelope-batch"
ItemId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
]


@router.post(
    "",
    status_code=201,
    response_model=schemas.Receipt,
    responses={
        200: {"model": schemas.Receipt, "description": "identical re-submission"},
        202: {"model": schemas.Receipt, "description": "stored; the log has not integrated it yet"},
        **PROBLEMS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {ENVELOPE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def submit_item(
    request: Request, response: Response, caller: CountryDep, state: StateDep
) -> schemas.Receipt:
    """Submit a sealed envelope (docs/protocol.md). 201 when stored and in the log, 200 for an
    identical re-submission, 202 when stored but not yet integrated into the log (the item is
    durably accepted; its log index and inbox numbers follow)."""
    data = await read_body(request, state.settings.max_envelope_bytes)
    prepared = await run_in_threadpool(
        submit_service.prepare, state.sessions, state.registry, state.settings, caller, data, state.clock()
    )
    # Stored and logged by the sequencer, in a batch with whatever else is queued
    # (services/sequencer.py): answered only once that batch has committed.
    receipt = await _answer(state, state.writer.enqueue(prepared), deadline=None)
    response.status_code = _status(receipt)
    return schemas.Receipt(**receipt.to_dict())


def _status(receipt: submit_service.Receipt) -> int:
    if not receipt.created:
        return 200
    return 202 if receipt.log_index is None else 201


async def _answer(state: BrokerState, ticket: Ticket, deadline: float | None) -> submit_service.Receipt:
    """The ticket's receipt once stored, and once logged unless the settle time passes first
    (then it is stored durably all the same; log index and inbox numbers follow: 202)."""
    try:
        receipt = await asyncio.wrap_future(ticket.stored)
    except (SQLAlchemyError, Stopping) as exc:
        raise database_unavailable() from exc
    if receipt.log_index is None:
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + state.settings.log_settle_timeout_s
        with contextlib.suppress(TimeoutError, Stopping):
            receipt = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(ticket.logged)), max(0.0, deadline - loop.time())
            )
    return receipt


@router.post(
    "/batch",
    response_model=schemas.BatchResults,
    responses=PROBLEMS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {BATCH_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def submit_batch(request: Request, caller: CountryDep, state: StateDep) -> schemas.BatchResults:
    """Submit up to `submit_batch_max_items` sealed envelopes in one request (docs/protocol.md
    §4.5): each is accepted or refused on its own, exactly as if submitted alone, and each
    result carries its own status (201, 200, 202, or the problem that refused it)."""
    data = await read_body(request, state.settings.max_envelope_bytes)
    envelopes = submit_service.split_batch(data, state.settings.submit_batch_max_items)
    now = state.clock()

    def prepare_all() -> list[submit_service.Prepared | Problem]:
        out: list[submit_service.Prepared | Problem] = []
        for envelope in envelopes:
            try:
                out.append(
                    submit_service.prepare(
                        state.sessions, state.registry, state.settings, caller, envelope, now
                    )
                )
            except Problem as problem:
                out.append(problem)
        return out

    prepared = await run_in_threadpool(prepare_all)
    for answer in prepared:  # a batch carries only the caller's own envelopes: else none is stored
        if isinstance(answer, Problem) and answer.code == "originator-mismatch":
            raise answer
    tickets = [p if isinstance(p, Problem) else state.writer.enqueue(p) for p in prepared]
    deadline = asyncio.get_running_loop().time() + state.settings.log_settle_timeout_s
    results: list[schemas.BatchResult] = []
    for ticket in tickets:
        if not isinstance(ticket, Problem):
            try:
                receipt = await _answer(state, ticket, deadline)
            except Problem as problem:
                ticket = problem
            else:
                results.append(
                    schemas.BatchResult(status=_status(receipt), receipt=schemas.Receipt(**receipt.to_dict()))
                )
                continue
        results.append(schemas.BatchResult(status=ticket.status, problem=ticket.to_dict()))
    return schemas.BatchResults(results=results)


@router.get(
    "/{item_id}",
    response_class=Response,
    responses={
        200: {"content": {ENVELOPE_MEDIA_TYPE: {}}, "description": "the envelope exactly as submitted"},
        **PROBLEMS,
    },
)
async def get_item(item_id: ItemId, caller: CountryDep, state: StateDep) -> Response:
    """The envelope bytes, for its originator and its recipients only."""

    def load() -> bytes:
        with state.sessions() as session:
            return inbox_service.item_for(session, caller.owner, item_id).envelope

    return Response(await run_in_threadpool(load), media_type=ENVELOPE_MEDIA_TYPE)


@router.get("/{item_id}/status", response_model=schemas.ItemStatus, responses=PROBLEMS)
async def item_status(item_id: ItemId, caller: CallerDep, state: StateDep) -> schemas.ItemStatus:
    """Delivery state per recipient, for the item's originator (or an admin)."""

    def load() -> schemas.ItemStatus:
        with state.sessions() as session:
            return schemas.ItemStatus(
                **inbox_service.item_status(session, caller.owner, item_id, caller.is_admin)
            )

    return await run_in_threadpool(load)
