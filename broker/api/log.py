"""The transparency log: signed checkpoints, proofs, and leaves for those entitled to them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from msmt.core import canonical

from ..problems import Problem, not_found
from ..services import inbox as inbox_service
from ..services import log as log_service
from . import schemas
from .deps import CallerDep, StateDep
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/log", tags=["log"], responses=PROBLEMS)
Index = Annotated[int, Query(ge=0, le=2**62)]


@router.get("/checkpoint", response_model=schemas.CheckpointOut)
async def checkpoint(
    caller: CallerDep,
    state: StateDep,
    size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    min_cosignatures: Annotated[int, Query(ge=0, le=256)] = 0,
) -> Any:
    """The newest signed checkpoint (C2SP tlog-checkpoint signed note) with at least
    `min_cosignatures` member-witness cosignatures (appended to the note), or the one of `size`."""

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            found = log_service.witnessed_note(session, min_cosignatures, size)
        if found is None:
            raise not_found(
                "no-checkpoint", "the log has no signed checkpoint of that size with that many cosignatures"
            )
        row, note = found
        return {"size": row.size, "root": canonical.b64encode(row.root), "note": note}

    return await run_in_threadpool(load)


@router.get("/proof/inclusion", response_model=schemas.ProofOut)
async def inclusion(caller: CallerDep, state: StateDep, index: Index, size: Index) -> Any:
    """The audit path of leaf `index` in the tree of `size` leaves (RFC 9162 2.1.3)."""

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            proof = log_service.inclusion(session, index, size)
        return {"proof": [canonical.b64encode(h) for h in proof]}

    return await run_in_threadpool(load)


@router.get("/proof/consistency", response_model=schemas.ProofOut)
async def consistency(caller: CallerDep, state: StateDep, first: Index, second: Index) -> Any:
    """The consistency proof between the trees of `first` and `second` leaves (RFC 9162 2.1.4)."""

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            proof = log_service.consistency(session, first, second)
        return {"proof": [canonical.b64encode(h) for h in proof]}

    return await run_in_threadpool(load)


@router.get("/leaves/{index}", response_model=schemas.LeafOut)
async def leaf(index: Annotated[int, Path(ge=0, le=2**62)], caller: CallerDep, state: StateDep) -> Any:
    """A leaf's bytes. Directory and policy leaves are public to members; an item's leaf only
    to its originator and its recipients (others learn nothing of who sent what to whom)."""

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            entry = log_service.leaf_of(session, index)
            if entry is None or entry.leaf is None:
                raise not_found("unknown-leaf", f"the log has no leaf {index}")
            if entry.kind == "item" and not caller.is_admin:
                try:
                    inbox_service.item_for(session, caller.owner, entry.ref)
                except Problem:  # not entitled looks exactly like not there
                    raise not_found("unknown-leaf", f"the log has no leaf {index}") from None
            return {"index": index, "kind": entry.kind, "leaf": canonical.b64encode(entry.leaf)}

    return await run_in_threadpool(load)


@router.get("/inboxes", response_model=schemas.InboxesChainOut)
async def inboxes(
    caller: CallerDep,
    state: StateDep,
    size: Annotated[int, Query(ge=1, le=2**62)],
    after: Annotated[int, Query(ge=-1, le=2**62)] = -1,
    before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=log_service.INBOXES_PAGE)] = 100,
) -> Any:
    """The chain of inboxes leaves (the last leaf of every batch) with `after` < index <
    min(`before`, `size`), newest first, each with its inclusion proof in the tree of `size`
    leaves and, for a member, the size and salt of its own commitment in it (never another's:
    the commitments hide everything else). `next`, when the page is full, is the `before` of
    the next page."""

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            country = None if caller.is_admin else caller.owner
            return log_service.inboxes_chain(session, country, size, after, before, limit)

    return await run_in_threadpool(load)
