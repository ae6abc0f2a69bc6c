"""The key directory: member countries and their current public keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from msmt.core import canonical

from ..services import admin as admin_service
from ..store import queries
from . import schemas
from .deps import CallerDep, StateDep
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1", tags=["directory"])


@router.get("/directory", response_model=schemas.Directory, responses=PROBLEMS)
async def directory(caller: CallerDep, state: StateDep) -> Any:
    """Every member, its status, groups, accreditation, usable signing keys and current encryption key."""
    now = state.clock()

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            encryption = queries.current_keys(session, "encryption", now)
            countries = []
            for country in admin_service.list_countries(session):
                signing = [
                    k
                    for k in queries.keys_of(session, country["code"])
                    if k.kind == "signing" and queries.usable_key(session, k.key_id, now) is not None
                ]
                enc = encryption.get(country["code"])
                countries.append(
                    {
                        **country,
                        "signing_keys": [
                            {"key_id": k.key_id, "public_key": canonical.b64encode(k.public_key)}
                            for k in signing
                        ],
                        "encryption_key": None
                        if enc is None
                        else {"key_id": enc.key_id, "public_key": canonical.b64encode(enc.public_key)},
                    }
                )
            return {"countries": countries, "generated_ms": now}

    return await run_in_threadpool(load)
