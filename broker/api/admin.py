"""Admin API: countries, keys, agreements and the audit record. Admin keys only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from .. import policydoc
from ..problems import forbidden, invalid
from ..services import admin as admin_service
from ..services import policy as policy_service
from ..store.db import transaction
from . import schemas
from .deps import AdminDep, BrokerState, StateDep, read_body
from .problem_docs import PROBLEMS

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=PROBLEMS)
Code = Annotated[str, Path(pattern=r"^([A-Z]{3}|\*)$")]
T = TypeVar("T")


async def _write(state: BrokerState, work: Callable[[Session], T]) -> T:
    def run() -> T:
        with transaction(state.sessions) as session:
            return work(session)

    return await run_in_threadpool(run)


async def _read(state: BrokerState, work: Callable[[Session], T]) -> T:
    def run() -> T:
        with state.sessions() as session:
            return work(session)

    return await run_in_threadpool(run)


@router.get("/countries", response_model=list[schemas.CountryOut])
async def list_countries(admin: AdminDep, state: StateDep) -> Any:
    return await _read(state, admin_service.list_countries)


_GOVERNED = (
    "membership, groups, accreditation and member keys change only by statements the members "
    "sign (msmt governance propose / approve); an admin can relay them but not make them"
)


@router.post("/countries", status_code=201, response_model=schemas.CountryOut)
async def enrol_country(body: schemas.CountryIn, admin: AdminDep) -> Any:
    """Gone: members enrol members, by a quorum of signatures (`/v1/governance/proposals`)."""
    raise forbidden("governed-by-members", _GOVERNED)


@router.patch("/countries/{code}", response_model=schemas.CountryOut)
async def update_country(code: Code, body: schemas.CountryPatch, admin: AdminDep) -> Any:
    """Gone: status, groups and accreditation change by a quorum of member signatures."""
    raise forbidden("governed-by-members", _GOVERNED)


@router.get("/keys", response_model=list[schemas.KeyOut])
async def list_keys(admin: AdminDep, state: StateDep) -> Any:
    return await _read(state, admin_service.list_keys)


@router.post("/keys", status_code=201, response_model=schemas.KeyOut)
async def add_key(body: schemas.KeyDocumentIn, admin: AdminDep) -> Any:
    """Gone: a country adds or rotates its own keys by a statement signed with its signing key."""
    raise forbidden("governed-by-members", _GOVERNED)


@router.post("/keys/{key_id}/revoke", response_model=schemas.KeyOut)
async def revoke_key(
    key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")], admin: AdminDep, state: StateDep
) -> Any:
    """Revoke an admin's key. A member's key is refused: the member revokes its own, or a
    quorum of members forces it."""
    return await _write(
        state, lambda s: admin_service.revoke_admin_key(s, admin.owner, key_id, state.clock())
    )


@router.get("/agreements", response_model=list[schemas.AgreementOut])
async def list_agreements(admin: AdminDep, state: StateDep) -> Any:
    return await _read(state, admin_service.list_agreements)


@router.put("/agreements/{originator}/{recipient}", response_model=schemas.AgreementOut)
async def set_agreement(
    originator: Code, recipient: Code, body: schemas.AgreementIn, admin: AdminDep, state: StateDep
) -> Any:
    """Set the originator -> recipient agreement; `*`/`*` is the default for pairs without one."""
    return await _write(
        state,
        lambda s: admin_service.set_agreement(
            s, admin.owner, originator, recipient, body.ceiling, body.topics, state.clock()
        ),
    )


@router.get("/actions", response_model=list[schemas.AdminActionOut])
async def list_actions(
    admin: AdminDep, state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Any:
    """The record of admin actions, newest first."""
    return await _read(state, lambda s: admin_service.list_actions(s, limit))


POLICY_MEDIA_TYPE = "application/toml"


async def _document(request: Request, state: BrokerState) -> policydoc.PolicyDocument:
    body = await read_body(request, state.settings.max_json_bytes)
    try:
        return policydoc.parse(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise invalid("invalid-policy", "the policy document is not UTF-8") from exc
    except policydoc.PolicyDocumentError as exc:
        raise invalid("invalid-policy", "the policy document is not valid", errors=exc.errors) from exc


def _plan_body(plan: policydoc.Plan, version: int | None = None) -> dict[str, Any]:
    return {"changes": plan.changes, "access": plan.access, "errors": plan.errors, "version": version}


_TOML_BODY = {
    "requestBody": {"required": True, "content": {POLICY_MEDIA_TYPE: {"schema": {"type": "string"}}}}
}


@router.get("/policy", response_class=Response, responses={200: {"content": {POLICY_MEDIA_TYPE: {}}}})
async def export_policy(admin: AdminDep, state: StateDep) -> Response:
    """The whole sharing policy as one TOML document (schema: `msmt-broker policy schema`)."""
    document = await _read(state, policy_service.export_document)
    return Response(policydoc.render(document), media_type=POLICY_MEDIA_TYPE)


@router.post("/policy/plan", response_model=schemas.PolicyPlan, openapi_extra=_TOML_BODY)
async def plan_policy(request: Request, admin: AdminDep, state: StateDep) -> Any:
    """What applying this document would change, and which pairs gain or lose access. Writes nothing."""
    document = await _document(request, state)
    plan = await _read(state, lambda s: policy_service.plan_document(s, document))
    return _plan_body(plan)


@router.put("/policy", response_model=schemas.PolicyPlan, openapi_extra=_TOML_BODY)
async def apply_policy(request: Request, admin: AdminDep, state: StateDep) -> Any:
    """Apply the document atomically as a new policy version; answers with the plan applied."""
    document = await _document(request, state)
    plan, version = await _write(
        state, lambda s: policy_service.apply_document(s, admin.owner, document, state.clock())
    )
    return _plan_body(plan, version)


@router.get("/policy/versions", response_model=list[schemas.PolicyVersionOut])
async def policy_versions(admin: AdminDep, state: StateDep) -> Any:
    """Every kept policy version: who changed what, when."""
    return await _read(state, policy_service.list_versions)


@router.get("/items/{item_id}/explain", response_model=schemas.ItemExplanation)
async def explain_item(
    item_id: Annotated[
        str, Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    ],
    admin: AdminDep,
    state: StateDep,
) -> Any:
    """Replay each recipient's decision under the policy version that allowed the item."""
    return await _read(state, lambda s: policy_service.explain_item(s, item_id))
