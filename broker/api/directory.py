"""The key directory: member countries and their current public keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from msmt.core import canonical

from ..services.registry import KeyRecord
from . import schemas
from .deps import CallerDep, StateDep
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1", tags=["directory"])


@router.get("/directory", response_model=schemas.Directory, responses=PROBLEMS)
async def directory(caller: CallerDep, state: StateDep) -> Any:
    """Every member: status, groups, accreditation, all its signing keys with their validity and
    revocation (so old items stay verifiable), and the current encryption key to seal to."""
    now = state.clock()

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            registry = state.registry.get(session)

        def view(key: KeyRecord) -> dict[str, Any]:
            return {
                "key_id": key.key_id,
                "public_key": canonical.b64encode(key.raw),
                "valid_from_ms": key.valid_from_ms,
                "valid_until_ms": key.valid_until_ms,
                "revoked_ms": key.revoked_ms,
            }

        countries = []
        for code in sorted(registry.countries):
            country, member = registry.countries[code], registry.policy.members[code]
            encryption = registry.current_key(code, "encryption", now)
            countries.append(
                {
                    "code": code,
                    "name": country.name,
                    "status": country.status,
                    "accreditation": member.accreditation,
                    "groups": sorted(member.groups),
                    "signing_keys": [view(k) for k in registry.keys_of(code, "signing")],
                    "encryption_key": None if encryption is None else view(encryption),
                }
            )
        return {"countries": countries, "generated_ms": now}

    return await run_in_threadpool(load)
