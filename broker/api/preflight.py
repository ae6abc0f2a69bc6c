"""Preflight: which partners may receive an item with these markings, and why not the others."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from msmt.core import Markings, errors
from msmt.core.policy import allowed_recipients, evaluate

from ..problems import invalid
from . import schemas
from .deps import CountryDep, StateDep
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/preflight", tags=["policy"], responses=PROBLEMS)


def _markings(body: dict[str, Any]) -> Markings:
    try:
        return Markings.from_dict(body)
    except errors.EnvelopeError as exc:
        raise invalid("invalid-markings", exc.detail) from exc


@router.post("", response_model=schemas.PreflightOut)
async def preflight(body: schemas.PreflightIn, caller: CountryDep, state: StateDep) -> Any:
    """Every member the caller may send these markings to, and each denied member with its reasons."""
    markings = _markings(body.markings)

    def run() -> dict[str, Any]:
        with state.sessions() as session:
            registry = state.registry.get(session)
        allowed, denied = allowed_recipients(registry.policy, caller.owner, markings)
        return {
            "allowed": allowed,
            "denied": {c: [{"rule": d.rule, "reason": d.reason} for d in ds] for c, ds in denied.items()},
        }

    return await run_in_threadpool(run)


@router.post("/explain", response_model=schemas.ExplainOut)
async def explain(body: schemas.ExplainIn, caller: CountryDep, state: StateDep) -> Any:
    """The decision for one recipient, with every rule that failed."""
    markings = _markings(body.markings)

    def run() -> dict[str, Any]:
        with state.sessions() as session:
            registry = state.registry.get(session)
        decision = evaluate(registry.policy, caller.owner, body.recipient, markings)
        return {
            "originator": caller.owner,
            "recipient": body.recipient,
            "allowed": decision.allowed,
            "denials": [{"rule": d.rule, "reason": d.reason} for d in decision.denials],
        }

    return await run_in_threadpool(run)
