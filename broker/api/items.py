"""Submit items, fetch their envelopes, and see their delivery state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..services import inbox as inbox_service
from ..services import submit as submit_service
from . import schemas
from .deps import CallerDep, CountryDep, StateDep, read_body
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/items", tags=["items"])
ENVELOPE_MEDIA_TYPE = "application/vnd.msmt.envelope"
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
    receipt = await run_in_threadpool(
        submit_service.submit, state.sessions, state.registry, state.settings, caller, data, state.clock()
    )

    def settle() -> submit_service.Receipt:
        state.log.settle_item(receipt.item_id, state.settings.log_settle_timeout_s)
        with state.sessions() as session:
            return submit_service.receipt_for(session, receipt.item_id, created=receipt.created)

    if receipt.log_index is None:
        receipt = await run_in_threadpool(settle)
    if not receipt.created:
        response.status_code = 200
    elif receipt.log_index is None:
        response.status_code = 202
    return schemas.Receipt(**receipt.to_dict())


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
