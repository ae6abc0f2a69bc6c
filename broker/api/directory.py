"""The key directory: the member-signed chain clients verify, and a convenience view of it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from msmt.core import KeyKind, canonical
from msmt.core.governance import KeyEntry

from ..services import governance as governance_service
from . import schemas
from .deps import CallerDep, StateDep
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1", tags=["directory"])


@router.get("/directory/entries", response_model=schemas.DirectoryChain, responses=PROBLEMS)
async def directory_entries(
    caller: CallerDep,
    state: StateDep,
    after: Annotated[int, Query(ge=-1, le=2**53 - 1)] = -1,
    limit: Annotated[int, Query(ge=1, le=governance_service.MAX_PAGE)] = governance_service.MAX_PAGE,
) -> Any:
    """The signed directory chain after position `after` (-1: from the genesis root), exactly
    as members signed it. Clients verify it from the root they pinned; this is the only
    directory they trust."""

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            head = governance_service.head(session)
            rows = governance_service.entries(session, after, limit)
        return {
            "head": None if head is None else {"seq": head[0], "hash": head[1]},
            "entries": [{"seq": seq, "entry": canonical.b64encode(data)} for seq, data in rows],
        }

    return await run_in_threadpool(load)


@router.get("/directory", response_model=schemas.Directory, responses=PROBLEMS)
async def directory(caller: CallerDep, state: StateDep) -> Any:
    """A readable view of the verified chain: every member, its status, groups, accreditation,
    all its signing keys with their validity, and the current encryption key. Unsigned:
    clients decide from `/v1/directory/entries`, never from this."""
    now = state.clock()

    def load() -> dict[str, Any]:
        with state.sessions() as session:
            registry = state.registry.get(session)

        def view(key: KeyEntry) -> dict[str, Any]:
            return {
                "key_id": key.key_id,
                "public_key": canonical.b64encode(key.key.raw),
                "valid_from_ms": key.valid_from_ms,
                "valid_until_ms": key.valid_until_ms,
                "revoked_ms": key.revoked_ms,
            }

        countries = []
        members = {} if registry.directory is None else registry.directory.members
        for code in sorted(members):
            member = members[code]
            encryption = member.current(KeyKind.ENCRYPTION, now)
            countries.append(
                {
                    "code": code,
                    "name": member.name,
                    "status": member.status,
                    "accreditation": member.accreditation,
                    "groups": sorted(member.groups),
                    "signing_keys": [view(k) for k in member.keys if k.kind is KeyKind.SIGNING],
                    "encryption_key": None if encryption is None else view(encryption),
                }
            )
        return {"countries": countries, "generated_ms": now}

    return await run_in_threadpool(load)
