"""Admin operations: agreements, admins and their keys. Each is recorded with its actor.

Members and their keys are not here: they change only by member-signed directory
statements (`services/governance.py`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from msmt.core import KeyKind, canonical, errors
from msmt.core.keys import PUBLIC_KEY_TYPES
from msmt.core.markings import COUNTRY_RE, RELEASABLE_RE, TOPIC_RE
from msmt.core.policy import DEFAULT_PAIR

from ..problems import conflict, forbidden, invalid, not_found
from ..store import queries
from ..store.models import Admin, AdminAction, Agreement, Country, Key
from . import policy as policy_service

ADMIN_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")


POLICY_ACTIONS = {"enrol-country", "update-country", "set-agreement"}


def _record(
    session: Session, actor: str, action: str, target: str, details: dict[str, object], now_ms: int
) -> None:
    """Audit the action; when it changes policy, keep the new policy version too."""
    version = queries.record_admin_action(session, actor, action, target, details, now_ms)
    if action in POLICY_ACTIONS:
        policy_service.snapshot_version(session, version, actor, action, now_ms)


def _country(session: Session, code: str) -> Country:
    country = session.get(Country, code)
    if country is None:
        raise not_found("unknown-country", f"{code} is not enrolled")
    return country


def _check_level(session: Session, level: str, what: str) -> None:
    ladder = policy_service.ladder(session)
    if level not in ladder:
        raise invalid("unknown-classification", f"{what} {level!r} is not one of {', '.join(ladder)}")


def _check_groups(groups: list[str]) -> list[str]:
    for group in groups:
        if not RELEASABLE_RE.fullmatch(group) or COUNTRY_RE.fullmatch(group) or group == "ALL":
            raise invalid(
                "invalid-group", f"group name {group!r} must be 2-32 of A-Z0-9_ and not a country code"
            )
    return sorted(set(groups))


def country_view(session: Session, country: Country, groups: set[str] | None = None) -> dict[str, Any]:
    if groups is None:
        groups = queries.groups_by_country(session).get(country.code, set())
    return {
        "code": country.code,
        "name": country.name,
        "status": country.status,
        "accreditation": country.accreditation,
        "groups": sorted(groups),
    }


def key_view(key: Key) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "owner": key.owner,
        "kind": key.kind,
        "public_key": canonical.b64encode(key.public_key),
        "valid_from_ms": key.valid_from_ms,
        "valid_until_ms": key.valid_until_ms,
        "revoked_ms": key.revoked_ms,
    }


def add_key(
    session: Session,
    actor: str,
    owner: str,
    kind: str,
    public_key: bytes,
    now_ms: int,
    valid_until_ms: int | None = None,
) -> dict[str, Any]:
    if not owner.startswith("admin:"):
        raise forbidden(
            "governed-by-members",
            "member keys are added only by statements the members sign (msmt keys rotate / governance)",
        )
    if kind != "admin":
        raise invalid("invalid-key-kind", "admins hold admin keys only")
    if session.get(Admin, owner.removeprefix("admin:")) is None:
        raise not_found("unknown-admin", f"{owner} does not exist")
    key_type = PUBLIC_KEY_TYPES[KeyKind.API]
    try:
        parsed = key_type.from_bytes(public_key)
    except errors.KeyMaterialError as exc:
        raise invalid(exc.code, exc.detail) from exc
    key_id = parsed.key_id
    if session.get(Key, key_id) is not None:
        raise conflict("key-exists", f"key {key_id} is already registered")
    if valid_until_ms is not None and valid_until_ms <= now_ms:
        raise invalid("invalid-validity", "valid_until must be in the future")
    key = Key(
        key_id=key_id,
        owner=owner,
        kind=kind,
        public_key=public_key,
        valid_from_ms=now_ms,
        valid_until_ms=valid_until_ms,
        revoked_ms=None,
        created_ms=now_ms,
    )
    session.add(key)
    _record(session, actor, "add-key", key_id, {"owner": owner, "kind": kind}, now_ms)
    session.flush()
    return key_view(key)


def revoke_admin_key(session: Session, actor: str, key_id: str, now_ms: int) -> dict[str, Any]:
    """Revoke an admin's key. Member keys are revoked only by member-signed statements."""
    key = session.get(Key, key_id)
    if key is None:
        raise not_found("unknown-key", f"key {key_id} is not registered")
    if not key.owner.startswith("admin:"):
        raise forbidden(
            "governed-by-members",
            "member keys are revoked by the member itself, or by a quorum of members (msmt governance)",
        )
    if key.revoked_ms is None:
        key.revoked_ms = now_ms
        _record(session, actor, "revoke-key", key_id, {"owner": key.owner}, now_ms)
    session.flush()
    return key_view(key)


def set_agreement(
    session: Session,
    actor: str,
    originator: str,
    recipient: str,
    ceiling: str,
    topics: list[str] | None,
    now_ms: int,
) -> dict[str, Any]:
    if (originator, recipient) != DEFAULT_PAIR:
        _country(session, originator)
        _country(session, recipient)
        if originator == recipient:
            raise invalid("invalid-agreement", "an agreement joins two different countries")
    _check_level(session, ceiling, "ceiling")
    if topics is not None:
        for topic in topics:
            if not TOPIC_RE.fullmatch(topic):
                raise invalid("invalid-topic", f"topic {topic!r} is not well formed")
    stored = "*" if topics is None else json.dumps(sorted(set(topics)))
    row = session.get(Agreement, (originator, recipient))
    if row is None:
        row = Agreement(
            originator=originator, recipient=recipient, ceiling=ceiling, topics=stored, updated_ms=now_ms
        )
        session.add(row)
    else:
        row.ceiling, row.topics, row.updated_ms = ceiling, stored, now_ms
    _record(
        session,
        actor,
        "set-agreement",
        f"{originator}->{recipient}",
        {"ceiling": ceiling, "topics": topics},
        now_ms,
    )
    session.flush()
    return agreement_view(row)


def agreement_view(row: Agreement) -> dict[str, Any]:
    return {
        "originator": row.originator,
        "recipient": row.recipient,
        "ceiling": row.ceiling,
        "topics": None if row.topics == "*" else json.loads(row.topics),
    }


def create_admin(session: Session, actor: str, name: str, now_ms: int) -> None:
    if not ADMIN_NAME_RE.fullmatch(name):
        raise invalid("invalid-admin", "admin names are lowercase letters, digits, '.', '_' or '-'")
    if session.get(Admin, name) is not None:
        raise conflict("admin-exists", f"admin {name} exists")
    session.add(Admin(name=name, status="active", created_ms=now_ms))
    _record(session, actor, "create-admin", name, {}, now_ms)
    session.flush()


def list_countries(session: Session) -> list[dict[str, Any]]:
    groups = queries.groups_by_country(session)
    return [
        country_view(session, c, groups.get(c.code, set()))
        for c in session.scalars(select(Country).order_by(Country.code))
    ]


def list_agreements(session: Session) -> list[dict[str, Any]]:
    return [
        agreement_view(a)
        for a in session.scalars(select(Agreement).order_by(Agreement.originator, Agreement.recipient))
    ]


def list_keys(session: Session) -> list[dict[str, Any]]:
    return [key_view(k) for k in session.scalars(select(Key).order_by(Key.owner, Key.created_ms))]


def list_actions(session: Session, limit: int = 1000) -> list[dict[str, Any]]:
    rows = session.scalars(select(AdminAction).order_by(AdminAction.id.desc()).limit(limit))
    return [
        {
            "id": r.id,
            "at_ms": r.at_ms,
            "actor": r.actor,
            "action": r.action,
            "target": r.target,
            "details": json.loads(r.details),
        }
        for r in rows
    ]
