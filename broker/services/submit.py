"""Submit: verify an envelope, check every recipient, and commit it in one transaction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from msmt.core import check_freshness, errors, parse, verify
from msmt.core.envelope import Envelope
from msmt.core.policy import evaluate

from ..problems import Problem, conflict, forbidden, invalid
from ..settings import Settings
from ..store import queries
from ..store.db import transaction
from ..store.models import Delivery, Item
from . import log as log_service
from .auth import Caller
from .registry import Registry, RegistryCache, signing_public_key


@dataclass(frozen=True)
class Receipt:
    item_id: str
    log_index: int | None  # None until the log integrated it
    received_ms: int
    recipients: tuple[str, ...]
    created: bool  # False when this answers an identical re-submission
    seqs: dict[str, int | None] = field(default_factory=dict)  # each recipient's inbox number

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "log_index": self.log_index,
            "received_ms": self.received_ms,
            "recipients": list(self.recipients),
            "deliveries": [{"recipient": r, "seq": self.seqs.get(r)} for r in self.recipients],
        }


def envelope_problem(exc: errors.EnvelopeError) -> Problem:
    status = 413 if isinstance(exc, errors.OversizedField) else 422
    return Problem(status, exc.code, "Envelope rejected", exc.detail)


def receipt_for(session: Session, item_id: str, *, created: bool) -> Receipt:
    """The receipt as the store holds it now (log index and inbox numbers once integrated)."""
    item = session.get(Item, item_id)
    assert item is not None
    deliveries = queries.deliveries_of_item(session, item_id)
    return Receipt(
        item_id,
        item.log_index,
        item.received_ms,
        tuple(d.recipient for d in deliveries),
        created,
        {d.recipient: d.seq for d in deliveries},
    )


def _existing(session: Session, item_id: str, digest: str) -> Receipt | None:
    item = session.get(Item, item_id)
    if item is None:
        return None
    if item.envelope_sha256 != digest:
        raise conflict("item-id-conflict", f"item {item_id} was already submitted with different bytes")
    return receipt_for(session, item_id, created=False)


def _verify_signature(registry: Registry, envelope: Envelope, now_ms: int) -> None:
    header = envelope.header
    key = registry.usable_key(header.originator_key_id, now_ms, "signing", owner=header.originator)
    if key is None:
        raise forbidden(
            "unknown-signing-key",
            f"{header.originator_key_id} is not a current signing key of {header.originator}",
        )
    try:
        verify(envelope, signing_public_key(key.raw))
    except errors.EnvelopeError as exc:
        raise envelope_problem(exc) from exc


def _recipient_refusals(
    registry: Registry, envelope: Envelope, now_ms: int
) -> dict[str, list[dict[str, str]]]:
    header = envelope.header
    refusals: dict[str, list[dict[str, str]]] = {}
    for entry in header.recipients:
        decision = evaluate(registry.policy, header.originator, entry.country, header.markings)
        reasons = [{"rule": d.rule, "reason": d.reason} for d in decision.denials]
        current = registry.current_key(entry.country, "encryption", now_ms)
        if current is None:
            reasons.append(
                {"rule": "no-encryption-key", "reason": f"{entry.country} has no current encryption key"}
            )
        elif current.key_id != entry.key_id:
            reasons.append(
                {
                    "rule": "stale-encryption-key",
                    "reason": f"sealed to key {entry.key_id}; {entry.country}'s current key is {current.key_id}",
                }
            )
        if reasons:
            refusals[entry.country] = reasons
    return refusals


def submit(
    factory: sessionmaker[Session],
    registry_cache: RegistryCache,
    settings: Settings,
    caller: Caller,
    data: bytes,
    now_ms: int,
) -> Receipt:
    """Accept the envelope or raise a Problem; nothing is written unless every check passes."""
    try:
        envelope = parse(data)
    except errors.EnvelopeError as exc:
        raise envelope_problem(exc) from exc
    header = envelope.header
    if header.originator != caller.owner:
        raise forbidden(
            "originator-mismatch",
            f"{caller.owner} may not submit an item whose originator is {header.originator}",
        )
    digest = hashlib.sha256(data).hexdigest()

    with factory() as session:
        existing = _existing(session, header.item_id, digest)
        registry = registry_cache.get(session)
    if existing is not None:
        return existing

    try:
        check_freshness(
            header,
            now_ms,
            max_age_ms=settings.max_envelope_age_s * 1000,
            max_skew_ms=settings.max_clock_skew_s * 1000,
        )
    except errors.StaleEnvelope as exc:
        raise invalid(exc.code, exc.detail) from exc
    _verify_signature(registry, envelope, now_ms)

    try:
        with transaction(factory) as session:
            # Checked again under a share lock on the registry version: no admin change can
            # commit between these checks and this transaction's commit.
            registry = registry_cache.get(session, share_lock=True)
            if (
                registry.usable_key(header.originator_key_id, now_ms, "signing", owner=header.originator)
                is None
            ):
                raise forbidden("unknown-signing-key", "the originator's signing key was revoked")
            refusals = _recipient_refusals(registry, envelope, now_ms)
            if refusals:
                raise forbidden(
                    "recipients-refused",
                    f"{len(refusals)} of {len(header.recipients)} recipients may not receive this item; nothing was stored",
                    recipients=refusals,
                )
            # No global lock here: the log index and the inbox numbers are assigned when the
            # integrator takes this item into the log (services/log.py).
            session.add(_item_row(envelope, data, digest, now_ms, caller.key_id, registry.version))
            session.flush()
            session.execute(
                insert(Delivery),
                [
                    {
                        "item_id": header.item_id,
                        "recipient": c,
                        "seq": None,
                        "state": "pending",
                        "created_ms": now_ms,
                    }
                    for c in header.recipient_countries
                ],
            )
            log_service.stage(session, "item", header.item_id, now_ms)
    except IntegrityError:
        # A concurrent submission of the same item won the race: answer as a re-submission.
        with factory() as session:
            existing = _existing(session, header.item_id, digest)
        if existing is None:
            raise
        return existing
    return Receipt(header.item_id, None, now_ms, header.recipient_countries, created=True)


def _item_row(
    envelope: Envelope,
    data: bytes,
    digest: str,
    now_ms: int,
    key_id: str,
    policy_version: int,
) -> Item:
    header = envelope.header
    return Item(
        item_id=header.item_id,
        originator=header.originator,
        originator_key_id=header.originator_key_id,
        created_ms=header.created_ms,
        received_ms=now_ms,
        classification=header.markings.classification,
        tlp=header.markings.tlp,
        content_type=header.content_type,
        supersedes=header.supersedes,
        in_reply_to=header.in_reply_to,
        expires_ms=header.expires_ms,
        size=len(data),
        envelope_sha256=digest,
        envelope=data,
        log_index=None,
        submitted_with_key=key_id,
        policy_version=policy_version,
    )
