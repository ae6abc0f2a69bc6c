"""Governance: proposals of directory statements and the members' signatures on them.

Anyone authenticated (a member, or an admin relaying) may post a statement or a signature;
what decides is whether the signatures verify and satisfy the rules, never who posted them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from msmt.core import canonical
from msmt.core.errors import MsmtError

from ..problems import invalid
from ..services import governance as governance_service
from ..store.db import transaction
from . import schemas
from .deps import CallerDep, StateDep
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/governance", tags=["governance"], responses=PROBLEMS)
ProposalId = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


def _decode(text: str) -> bytes:
    try:
        return canonical.b64decode(text, "entry")
    except MsmtError as exc:
        raise invalid("malformed-statement", exc.detail) from exc


@router.post("/proposals", response_model=schemas.ProposalOut, status_code=202)
async def propose(body: schemas.ProposalIn, caller: CallerDep, state: StateDep, response: Response) -> Any:
    """Submit a statement with the signatures it has. Applied at once (201) when they satisfy
    the rules; otherwise kept (202) with the list of signatures still missing."""
    data = _decode(body.entry)

    def run() -> tuple[bool, dict[str, Any]]:
        with transaction(state.sessions) as session:
            return governance_service.propose(session, caller.owner, data, state.clock())

    applied, view = await run_in_threadpool(run)
    response.status_code = 201 if applied else 202
    return view


@router.get("/proposals", response_model=list[schemas.ProposalOut])
async def list_proposals(
    caller: CallerDep,
    state: StateDep,
    status: Annotated[str, Query(pattern=r"^(pending|applied|stale|all)$")] = "pending",
) -> Any:
    def run() -> list[dict[str, Any]]:
        with state.sessions() as session:
            return governance_service.list_proposals(session, None if status == "all" else status)

    return await run_in_threadpool(run)


@router.get("/proposals/{pid}", response_model=schemas.ProposalOut)
async def get_proposal(pid: ProposalId, caller: CallerDep, state: StateDep) -> Any:
    def run() -> dict[str, Any]:
        with state.sessions() as session:
            return governance_service.get_proposal(session, pid)

    return await run_in_threadpool(run)


@router.post("/proposals/{pid}/signatures", response_model=schemas.ProposalOut)
async def add_signature(
    pid: ProposalId, body: schemas.SignatureIn, caller: CallerDep, state: StateDep, response: Response
) -> Any:
    """Add one member's signature over the proposal's signed part. An admin may relay it; it
    counts only if it verifies under that member's key in the directory."""

    def run() -> tuple[bool, dict[str, Any]]:
        with transaction(state.sessions) as session:
            return governance_service.add_signature(
                session, caller.owner, pid, body.model_dump(), state.clock()
            )

    applied, view = await run_in_threadpool(run)
    response.status_code = 201 if applied else 200
    return view
