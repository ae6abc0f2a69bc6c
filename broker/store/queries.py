"""Every query the broker runs. Services call these inside their own transactions."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from msmt.core.policy import DEFAULT_PAIR, Agreement, Member, PolicySnapshot

from .models import (
    AdminAction,
    Country,
    Delivery,
    GroupMember,
    InboxCounter,
    Item,
    Key,
    LogEntry,
    LogState,
    UsedToken,
)
from .models import (
    Agreement as AgreementRow,
)


def usable_key(session: Session, key_id: str, now_ms: int) -> Key | None:
    """The key if it exists, is inside its validity period and is not revoked."""
    key = session.get(Key, key_id)
    if key is None or (key.revoked_ms is not None and key.revoked_ms <= now_ms):
        return None
    if key.valid_from_ms > now_ms or (key.valid_until_ms is not None and key.valid_until_ms <= now_ms):
        return None
    return key


def _usable(now_ms: int):  # type: ignore[no-untyped-def]
    return and_(
        or_(Key.revoked_ms.is_(None), Key.revoked_ms > now_ms),
        Key.valid_from_ms <= now_ms,
        or_(Key.valid_until_ms.is_(None), Key.valid_until_ms > now_ms),
    )


def current_keys(session: Session, kind: str, now_ms: int) -> dict[str, Key]:
    """Each owner's newest usable key of `kind` (the one senders must use)."""
    rows = session.scalars(
        select(Key).where(Key.kind == kind, _usable(now_ms)).order_by(Key.valid_from_ms, Key.created_ms)
    )
    return {row.owner: row for row in rows}


def keys_of(session: Session, owner: str) -> Sequence[Key]:
    return session.scalars(select(Key).where(Key.owner == owner).order_by(Key.created_ms)).all()


def groups_by_country(session: Session) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for row in session.scalars(select(GroupMember)):
        result.setdefault(row.country, set()).add(row.group_name)
    return result


def policy_snapshot(session: Session, originator: str | None = None) -> PolicySnapshot:
    """Members, groups and agreements as the pure evaluator sees them.

    With `originator`, only that originator's agreements are loaded (what a submission needs).
    """
    groups = groups_by_country(session)
    members = {
        c.code: Member(c.code, c.status == "active", c.accreditation, frozenset(groups.get(c.code, ())))
        for c in session.scalars(select(Country))
    }
    query = select(AgreementRow)
    if originator is not None:
        query = query.where(AgreementRow.originator.in_([originator, DEFAULT_PAIR[0]]))
    agreements: dict[tuple[str, str], Agreement] = {}
    default = Agreement(ceiling="UNCLASSIFIED")
    for row in session.scalars(query):
        topics = None if row.topics == "*" else frozenset(json.loads(row.topics))
        agreement = Agreement(row.ceiling, topics)
        if (row.originator, row.recipient) == DEFAULT_PAIR:
            default = agreement
        else:
            agreements[(row.originator, row.recipient)] = agreement
    return PolicySnapshot(members, agreements, default)


def append_log(session: Session, kind: str, ref: str, leaf_hash: bytes, now_ms: int) -> int:
    """Reserve the next log index; the row lock orders concurrent appends."""
    size = session.execute(
        update(LogState).where(LogState.id == 1).values(size=LogState.size + 1).returning(LogState.size)
    ).scalar_one()
    index = int(size) - 1
    session.add(LogEntry(log_index=index, kind=kind, ref=ref, leaf_hash=leaf_hash, created_ms=now_ms))
    return index


def next_inbox_seq(session: Session, recipient: str) -> int:
    """Next sequence number of `recipient`'s inbox, locked until this transaction ends.

    A later transaction for the same recipient waits on the row lock, so sequence order is
    commit order and a consumer reading `seq > cursor` never skips a row committed later.
    """
    return int(
        session.execute(
            update(InboxCounter)
            .where(InboxCounter.recipient == recipient)
            .values(last_seq=InboxCounter.last_seq + 1)
            .returning(InboxCounter.last_seq)
        ).scalar_one()
    )


def inbox_page(session: Session, recipient: str, after: int, limit: int) -> Sequence[tuple[Delivery, Item]]:
    rows = session.execute(
        select(Delivery, Item)
        .join(Item, Item.item_id == Delivery.item_id)
        .where(Delivery.recipient == recipient, Delivery.seq > after)
        .order_by(Delivery.seq)
        .limit(limit)
    ).all()
    return [(d, i) for d, i in rows]


def deliveries_of_item(session: Session, item_id: str) -> Sequence[Delivery]:
    return session.scalars(
        select(Delivery).where(Delivery.item_id == item_id).order_by(Delivery.recipient)
    ).all()


def delivery(session: Session, item_id: str, recipient: str) -> Delivery | None:
    return session.scalars(
        select(Delivery).where(Delivery.item_id == item_id, Delivery.recipient == recipient)
    ).first()


def acknowledge(session: Session, recipient: str, seqs: Sequence[int], now_ms: int) -> list[int]:
    """Mark the given deliveries acknowledged; returns the seqs not in `recipient`'s inbox."""
    found = set(
        session.scalars(select(Delivery.seq).where(Delivery.recipient == recipient, Delivery.seq.in_(seqs)))
    )
    missing = sorted(set(seqs) - found)
    if not missing:
        session.execute(
            update(Delivery)
            .where(Delivery.recipient == recipient, Delivery.seq.in_(seqs), Delivery.state == "pending")
            .values(state="acknowledged", acked_ms=now_ms)
        )
    return missing


def record_admin_action(
    session: Session, actor: str, action: str, target: str, details: dict[str, object], now_ms: int
) -> None:
    session.add(
        AdminAction(
            at_ms=now_ms,
            actor=actor,
            action=action,
            target=target,
            details=json.dumps(details, sort_keys=True, separators=(",", ":")),
        )
    )


def purge_used_tokens(session: Session, now_ms: int) -> None:
    session.execute(delete(UsedToken).where(UsedToken.expires_ms < now_ms))
