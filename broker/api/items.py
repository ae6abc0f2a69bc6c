"""Submit items, fetch their envelopes, and see their delivery state."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from concurrent.futures import Future
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import exists, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .. import metrics
from ..observability import note
from ..problems import Problem, conflict, database_unavailable, invalid, not_found
from ..services import inbox as inbox_service
from ..services import log as log_service
from ..services import signatures
from ..services import submit as submit_service
from ..services.auth import Caller
from ..services.health import is_outage
from ..services.quota import envelope_too_large
from ..services.sequencer import Stopping, Ticket
from ..store.models import Delivery, Item
from . import schemas
from .deps import BrokerState, CallerDep, CountryDep, StateDep, member_quota, read_body
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/items", tags=["items"])
ENVELOPE_MEDIA_TYPE = "application/vnd.msmt.envelope"
BATCH_MEDIA_TYPE = "application/vnd.msmt.envelope-batch"
CHECKS_PER_TURN = 10  # a batch's envelopes checked per turn, where the checks have slots of their own
PARTS_AT_ONCE = 2  # a batch's turns checked at once: one parsed while the other's signatures are verified
ITEM_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
ItemId = Annotated[str, Path(pattern=ITEM_ID_PATTERN)]
# the status route also takes a unique prefix of an id: 8 hex digits at least (`msmt status 01a2260c`)
ItemIdOrPrefix = Annotated[str, Path(pattern=r"^[0-9a-f]{8}[0-9a-f-]{0,28}$")]
MAX_PREFIX_MATCHES = 100


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
    quota = member_quota(state, caller)
    limit = min(state.settings.max_envelope_bytes, quota.largest_envelope)
    data = await read_body(request, limit, envelope_too_large(caller.owner, quota))
    prepared = await anyio.to_thread.run_sync(
        _prepare, state, caller, data, state.clock(), limiter=state.checks
    )
    note(item=prepared.envelope.header.item_id)
    # Stored and logged by the sequencer, in a batch with whatever else is queued
    # (services/sequencer.py): answered only once that batch has committed.
    receipt = await _answer(state, state.writer.enqueue(prepared), deadline=None)
    response.status_code = _status(receipt)
    return schemas.Receipt(**receipt.to_dict())


def _status(receipt: submit_service.Receipt) -> int:
    if not receipt.created:
        return 200
    return 202 if receipt.log_index is None else 201


def _prepare(state: BrokerState, caller: Caller, data: bytes, now_ms: int) -> submit_service.Prepared:
    """Every check of one envelope that needs no write, counting what refuses it (what the
    sequencer stores or refuses is counted there: broker/metrics.py). Raises the Problem."""
    (answer,) = _signed(state, caller, [_unsigned(state, caller, data, now_ms)], now_ms)
    if isinstance(answer, Problem):
        raise answer
    return answer


def _unsigned(state: BrokerState, caller: Caller, data: bytes, now_ms: int) -> submit_service.Unsigned:
    """`submit_service.prepare_unsigned`, counting what it refuses or fails."""
    try:
        return submit_service.prepare_unsigned(
            state.sessions, state.registry, state.settings, caller, data, now_ms
        )
    except Problem as problem:
        metrics.submission_refused(problem)
        raise
    except Exception as exc:
        metrics.submission_failed(_failure(exc))
        raise


def _signed(
    state: BrokerState, caller: Caller, unsigned: list[submit_service.Unsigned], now_ms: int
) -> list[submit_service.Prepared | Problem]:
    """Their signatures, all at once (in the signature workers, where there are: services/
    signatures.py), counting what they refuse; if the check itself fails, every one of them is
    counted as failed."""
    check = state.signatures.check if state.signatures is not None else signatures.check_here
    try:
        answers = submit_service.check_signatures(unsigned, now_ms, caller.key_id, check)
    except Exception as exc:
        metrics.submission_failed(_failure(exc), len(unsigned))
        raise
    for answer in answers:
        if isinstance(answer, Problem):
            metrics.submission_refused(answer)
    return answers


def _failure(exc: Exception) -> str:
    """The problem an unexpected exception is answered with (app.py's handlers)."""
    return "database-unavailable" if is_outage(exc) else "internal-error"


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
async def submit_batch(request: Request, caller: CountryDep, state: StateDep) -> Response:
    """Submit up to `submit_batch_max_items` sealed envelopes in one request (docs/protocol.md
    §4.5): each is accepted or refused on its own, exactly as if submitted alone, and each
    result carries its own status (201, 200, 202, or the problem that refused it)."""
    data = await read_body(request, state.settings.max_envelope_bytes)
    envelopes = submit_service.split_batch(data, state.settings.submit_batch_max_items)
    now = state.clock()
    quota = member_quota(state, caller)
    turn = CHECKS_PER_TURN if state.checks is not None else max(1, len(envelopes))

    # each part's answers, and how many of its envelopes are counted in the metrics already
    # (refused, or failed where the check itself failed): the rest, if the batch fails
    parts = [envelopes[i : i + turn] for i in range(0, len(envelopes), turn)]
    checked: list[list[submit_service.Prepared | submit_service.Unsigned | Problem]] = [[] for _ in parts]
    counted = [0] * len(parts)

    def prepare(n: int) -> None:
        out = checked[n]
        for envelope in parts[n]:
            if len(envelope) > quota.largest_envelope:  # refused alone, as if submitted alone
                refusal = envelope_too_large(caller.owner, quota, len(envelope))
                metrics.submission_refused(refusal)
                out.append(refusal)
                continue
            try:
                out.append(_unsigned(state, caller, envelope, now))
            except Problem as problem:
                out.append(problem)
            except Exception:  # counted by _unsigned; the whole batch fails
                counted[n] = sum(isinstance(answer, Problem) for answer in out) + 1
                raise
        # the part's signatures in one go (spread over the signature workers, where there are)
        unsigned = [(i, u) for i, u in enumerate(out) if isinstance(u, submit_service.Unsigned)]
        refused = len(out) - len(unsigned)
        try:
            signed = _signed(state, caller, [u for _, u in unsigned], now)
        except Exception:  # counted by _signed, each of them; the whole batch fails
            counted[n] = refused + len(unsigned)
            raise
        for (i, _), answer in zip(unsigned, signed, strict=True):
            out[i] = answer
        counted[n] = sum(isinstance(answer, Problem) for answer in out)

    # Where the checks have slots of their own (Settings.prepare_threads), in parts of
    # CHECKS_PER_TURN, at most PARTS_AT_ONCE of one batch at a time: a lone submission waits
    # behind a part or two of a large batch, never the whole batch; and while one part's
    # signatures are verified (in the signature workers), the next one is parsed.
    at_once = asyncio.Semaphore(PARTS_AT_ONCE)

    async def check(n: int) -> None:
        async with at_once:
            await anyio.to_thread.run_sync(prepare, n, limiter=state.checks)

    outcomes = await asyncio.gather(*(check(n) for n in range(len(parts))), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:  # the whole batch fails: every envelope not counted yet is counted as failed
        first = failures[0]
        if isinstance(first, Exception):
            metrics.submission_failed(_failure(first), len(envelopes) - sum(counted))
        raise first
    prepared = [p for part in checked for p in part if not isinstance(p, submit_service.Unsigned)]
    assert len(prepared) == len(envelopes)  # every part's signatures were checked
    for answer in prepared:  # a batch carries only the caller's own envelopes: else none is stored
        if isinstance(answer, Problem) and answer.code == "originator-mismatch":
            for _ in range(sum(not isinstance(p, Problem) for p in prepared)):
                metrics.submission_refused(answer)  # refused with the batch
            raise answer
    tickets = [p if isinstance(p, Problem) else state.writer.enqueue(p) for p in prepared]
    answers = await _answers(state, tickets)
    return Response(_batch_json(answers), media_type="application/json")


async def _answers(
    state: BrokerState, tickets: list[Ticket | Problem]
) -> list[submit_service.Receipt | Problem]:
    """What `_answer` gives each ticket of a batch (or the Problem that refused it), waiting for
    all of them at once: the writer thread wakes this request's event loop once per batch it
    commits, not twice per envelope."""
    queued = [t for t in tickets if isinstance(t, Ticket)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.log_settle_timeout_s
    await _all_done([t.stored for t in queued])
    answers: dict[int, submit_service.Receipt | Problem] = {}
    for ticket in queued:
        error = ticket.stored.exception()
        if isinstance(error, SQLAlchemyError | Stopping):
            answers[id(ticket)] = database_unavailable()
        elif isinstance(error, Problem):
            answers[id(ticket)] = error
        elif error is not None:
            raise error  # the whole request fails, as a lone submission would (api/app.py's handlers)
        else:
            answers[id(ticket)] = ticket.stored.result()
    # stored, not yet in the log (another process integrates it): wait until the settle time
    unlogged = [t for t in queued if not isinstance(answers[id(t)], Problem) and not t.logged.done()]
    if unlogged:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_all_done([t.logged for t in unlogged]), max(0.0, deadline - loop.time()))
    for ticket in queued:  # the log index and inbox numbers, where the log has them (else 202)
        answer = answers[id(ticket)]
        logged = ticket.logged
        if isinstance(answer, submit_service.Receipt) and answer.log_index is None and logged.done():
            answers[id(ticket)] = answer if logged.exception() is not None else logged.result()
    return [t if isinstance(t, Problem) else answers[id(t)] for t in tickets]


def _all_done(futures: list[Future[Any]]) -> asyncio.Future[None]:
    """An asyncio future done once every one of these (the writer thread's) futures is done."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    left = [len(futures)]
    lock = threading.Lock()

    def wake(_: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_result(None)

    def one_done(_: Future[Any]) -> None:  # on the thread that completed it
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(wake, waiter)

    if not futures:
        waiter.set_result(None)
    for future in futures:
        future.add_done_callback(one_done)
    return waiter


def _batch_json(answers: list[submit_service.Receipt | Problem]) -> bytes:
    """`schemas.BatchResults` as the response model encodes it (tests/integration/
    test_submit_pipeline.py compares them): built directly, a batch of 50 answers is ~50 model
    instances and a validation pass fewer."""
    results = [
        {"status": a.status, "receipt": None, "problem": a.to_dict()}
        if isinstance(a, Problem)
        else {"status": _status(a), "receipt": a.to_dict(), "problem": None}
        for a in answers
    ]
    return bytes(orjson.dumps({"results": results}))


@router.get(
    "/{item_id}",
    response_class=Response,
    responses={
        200: {"content": {ENVELOPE_MEDIA_TYPE: {}}, "description": "the envelope exactly as submitted"},
        **PROBLEMS,
    },
)
async def get_item(item_id: ItemIdOrPrefix, caller: CountryDep, state: StateDep) -> Response:
    """The envelope bytes, for its originator and its recipients only. `item_id` may be a
    unique prefix (8 hex digits at least) among the items the caller sent or received."""

    def load() -> bytes:
        with state.sessions() as session:
            full = resolve_prefix(session, caller.owner, item_id, False, received=True)
            return inbox_service.envelope_for(session, caller.owner, full, state.clock())

    return Response(await run_in_threadpool(load), media_type=ENVELOPE_MEDIA_TYPE)


ITEM_ID_LENGTH = 36


def resolve_prefix(
    session: Session, caller: str, prefix: str, is_admin: bool, *, received: bool = False
) -> str:
    """The one item id starting with `prefix` among the items `caller` may see the status of
    (its own; every item for an admin), or with `received` also those delivered to it. Others'
    items are never counted: no existence oracle."""
    if re.fullmatch(ITEM_ID_PATTERN, prefix):
        return prefix
    if len(prefix) == ITEM_ID_LENGTH:  # a whole id, but not a UUIDv7 (e.g. a v4): not a prefix
        raise invalid("invalid-request", f"{prefix} is not an item id (a lowercase UUIDv7)")
    query = select(Item.item_id).where(Item.item_id.startswith(prefix, autoescape=True))
    if received:
        delivered = exists().where(Delivery.item_id == Item.item_id, Delivery.recipient == caller)
        query = query.where(or_(Item.originator == caller, delivered))
    elif not is_admin:
        query = query.where(Item.originator == caller)
    matches = list(session.scalars(query.order_by(Item.item_id).limit(MAX_PREFIX_MATCHES + 1)))
    if not matches:
        seen = "sent or received" if received else "originated"
        raise not_found("unknown-item", f"no item whose id starts with {prefix} {seen} by {caller}")
    if len(matches) > 1:
        count = f"more than {MAX_PREFIX_MATCHES}" if len(matches) > MAX_PREFIX_MATCHES else str(len(matches))
        raise conflict(
            "ambiguous-item-id", f"{count} of the items you may see start with {prefix}: give more of the id"
        )
    return matches[0]


@router.get("/{item_id}/inboxes", response_model=schemas.ItemInboxesOut, responses=PROBLEMS)
async def item_inboxes(item_id: ItemId, caller: CountryDep, state: StateDep) -> Any:
    """For the item's originator only: the inboxes leaf that closed the item's batch (the first
    after its log index) and each recipient's inbox size and salt in it, so that the originator
    checks the log commits every recipient's inbox to at least the entry the item got.
    `409 not-integrated` before the item is in the log."""

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            return log_service.item_inboxes(session, caller.owner, item_id)

    return await run_in_threadpool(load)


@router.get("/{item_id}/status", response_model=schemas.ItemStatus, responses=PROBLEMS)
async def item_status(item_id: ItemIdOrPrefix, caller: CallerDep, state: StateDep) -> schemas.ItemStatus:
    """Delivery state per recipient, for the item's originator (or an admin). `item_id` may be
    a unique prefix (8 hex digits at least) among the caller's own items (all items for an
    admin); several matches are `409 ambiguous-item-id`, none `404 unknown-item`."""

    def load() -> schemas.ItemStatus:
        with state.sessions() as session:
            full = resolve_prefix(session, caller.owner, item_id, caller.is_admin)
            return schemas.ItemStatus(
                **inbox_service.item_status(session, caller.owner, full, caller.is_admin)
            )

    return await run_in_threadpool(load)
