"""The policy document in the store: export, plan, apply atomically, keep every version.

Every change to countries, groups, accreditations, agreements, deny rules, quotas or the ladder is
kept as a whole document under the registry version it produced, and each accepted item
records the registry version that allowed it, so any past delivery can be explained with
the exact rules that were in force.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from msmt.core import parse
from msmt.core.policy import DEFAULT_LADDER, DEFAULT_PAIR, evaluate

from .. import policydoc
from ..policydoc import (
    AgreementDoc,
    CountryDoc,
    DefaultAgreementDoc,
    DenyRuleDoc,
    Plan,
    PolicyDocument,
    PolicyDocumentError,
    QuotasDoc,
    Topics,
)
from ..problems import gone, invalid, not_found
from ..store import queries
from ..store.models import (
    Agreement,
    BrokerSetting,
    Country,
    DenyRule,
    GroupMember,
    Item,
    PolicyVersion,
)
from . import log as log_service

LADDER_SETTING = "ladder"
QUOTAS_SETTING = "quotas"


def ladder(session: Session) -> list[str]:
    row = session.get(BrokerSetting, LADDER_SETTING)
    return list(json.loads(row.value)) if row else list(DEFAULT_LADDER)


def quotas(session: Session) -> QuotasDoc:
    """The members' quotas as stored (the defaults until a document sets them)."""
    row = session.get(BrokerSetting, QUOTAS_SETTING)
    return QuotasDoc() if row is None else QuotasDoc.model_validate_json(row.value)


def export_document(session: Session) -> PolicyDocument:
    """The policy as stored now, in canonical order."""
    groups: dict[str, list[str]] = {}
    for membership in session.scalars(select(GroupMember)):
        groups.setdefault(membership.country, []).append(membership.group_name)
    default = DefaultAgreementDoc(ceiling="UNCLASSIFIED")
    agreements = []
    for row in session.scalars(select(Agreement)):
        topics: Topics = "*" if row.topics == "*" else json.loads(row.topics)
        if (row.originator, row.recipient) == DEFAULT_PAIR:
            default = DefaultAgreementDoc(ceiling=row.ceiling, topics=topics)
        else:
            agreements.append(
                AgreementDoc(
                    originator=row.originator, recipient=row.recipient, ceiling=row.ceiling, topics=topics
                )
            )
    rules = [
        DenyRuleDoc(
            id=r.id,
            reason=r.reason,
            originator=r.originator,
            recipient=r.recipient,
            classification_at_least=r.classification_at_least,
            topics=None if r.topics is None else json.loads(r.topics),
            tlp=None if r.tlp is None else json.loads(r.tlp),
        )
        for r in session.scalars(select(DenyRule))
    ]
    countries = {
        c.code: CountryDoc(
            name=c.name,
            status="active" if c.status == "active" else "suspended",
            accreditation=c.accreditation,
            groups=groups.get(c.code, []),
        )
        for c in session.scalars(select(Country))
    }
    stored = quotas(session)
    # a member's own quotas show while it is a member (the directory decides who is)
    own = {code: q for code, q in stored.countries.items() if code in countries}
    document = PolicyDocument.model_construct(
        ladder=ladder(session),
        default_agreement=default,
        countries=countries,
        agreements=agreements,
        deny_rules=rules,
        quotas=stored.model_copy(update={"countries": own}),
    )
    return document.normalized()


def snapshot_version(session: Session, version: int, actor: str, change: str, now_ms: int) -> None:
    """Keep the whole policy as it stands after a change, under the registry version it made."""
    session.flush()
    text = policydoc.render(export_document(session))
    session.add(
        PolicyVersion(
            version=version,
            applied_ms=now_ms,
            actor=actor,
            change=change,
            document=text,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
        )
    )
    session.flush()
    log_service.stage(session, "policy", str(version), now_ms)  # every policy version is logged


def plan_document(session: Session, proposed: PolicyDocument, *, with_access: bool = True) -> Plan:
    return policydoc.plan(export_document(session), proposed, with_access=with_access)


def apply_document(
    session: Session, actor: str, proposed: PolicyDocument, now_ms: int, *, with_access: bool = True
) -> tuple[Plan, int | None]:
    """Apply atomically (the caller's transaction); returns the plan and the new version.

    Nothing is written when the plan has errors or no changes. `with_access=False` skips
    computing which pairs gain or lose access (the costly part of a plan).
    """
    result = plan_document(session, proposed, with_access=with_access)
    if result.errors:
        raise invalid("policy-refused", "the policy document cannot be applied", errors=result.errors)
    if result.empty:
        return result, None
    doc = proposed.normalized()
    _write_setting(session, LADDER_SETTING, json.dumps(doc.ladder))
    _write_setting(session, QUOTAS_SETTING, doc.quotas.model_dump_json(exclude_none=True))
    session.execute(delete(Agreement))
    session.execute(delete(DenyRule))
    session.flush()
    default = doc.default_agreement
    session.add(
        Agreement(
            originator="*",
            recipient="*",
            ceiling=default.ceiling,
            topics=_topics(default.topics),
            updated_ms=now_ms,
        )
    )
    session.add_all(
        Agreement(
            originator=a.originator,
            recipient=a.recipient,
            ceiling=a.ceiling,
            topics=_topics(a.topics),
            updated_ms=now_ms,
        )
        for a in doc.agreements
    )
    session.add_all(
        DenyRule(
            id=r.id,
            reason=r.reason,
            originator=r.originator,
            recipient=r.recipient,
            classification_at_least=r.classification_at_least,
            topics=None if r.topics is None else json.dumps(r.topics),
            tlp=None if r.tlp is None else json.dumps(r.tlp),
        )
        for r in doc.deny_rules
    )
    session.flush()
    version = queries.record_admin_action(
        session,
        actor,
        "apply-policy",
        "policy",
        {"changes": len(result.changes), "plan": result.changes[:200]},
        now_ms,
    )
    snapshot_version(session, version, actor, "apply-policy", now_ms)
    return result, version


def _topics(value: Topics) -> str:
    return "*" if value == "*" else json.dumps(sorted(set(value)))


def _write_setting(session: Session, name: str, value: str) -> None:
    row = session.get(BrokerSetting, name)
    if row is None:
        session.add(BrokerSetting(name=name, value=value))
    else:
        row.value = value


def document_at(session: Session, version: int) -> tuple[int, PolicyDocument]:
    """The policy in force at registry version `version` (the latest snapshot not after it)."""
    row = session.scalars(
        select(PolicyVersion)
        .where(PolicyVersion.version <= version)
        .order_by(PolicyVersion.version.desc())
        .limit(1)
    ).first()
    if row is None:
        raise not_found("unknown-policy-version", f"no policy was recorded at or before version {version}")
    try:
        return row.version, policydoc.parse(row.document)
    except PolicyDocumentError as exc:  # pragma: no cover - we only store what we rendered
        raise invalid("corrupt-policy-version", str(exc)) from exc


def explain_item(session: Session, item_id: str) -> dict[str, Any]:
    """Replay the decision for each recipient of a past item under the policy that allowed it."""
    item = session.get(Item, item_id)
    if item is None:
        raise not_found("unknown-item", f"no item {item_id}")
    if item.policy_version is None:
        raise not_found("unknown-policy-version", f"item {item_id} predates policy versioning")
    version, document = document_at(session, item.policy_version)
    snapshot = policydoc.to_snapshot(document)
    if item.envelope is None:
        raise gone("purged", f"item {item_id}'s envelope was purged; its decision cannot be replayed")
    header = parse(item.envelope).header
    decisions = []
    for country in header.recipient_countries:
        decision = evaluate(snapshot, header.originator, country, header.markings)
        decisions.append(
            {
                "recipient": country,
                "allowed": decision.allowed,
                "denials": [{"rule": d.rule, "reason": d.reason} for d in decision.denials],
            }
        )
    return {
        "item_id": item_id,
        "originator": header.originator,
        "markings": header.markings.to_dict(),
        "registry_version": item.policy_version,
        "policy_version": version,
        "decisions": decisions,
    }


def list_versions(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    rows = session.scalars(select(PolicyVersion).order_by(PolicyVersion.version.desc()).limit(limit))
    return [
        {
            "version": r.version,
            "applied_ms": r.applied_ms,
            "actor": r.actor,
            "change": r.change,
            "sha256": r.sha256,
        }
        for r in rows
    ]
