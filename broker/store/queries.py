"""Every query the broker runs. Services call these inside their own transactions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from .bulk import execute_many
from .models import (
    AdminAction,
    Delivery,
    GroupMember,
    Item,
    RegistryState,
    UsedToken,
)


def groups_by_country(session: Session) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for row in session.scalars(select(GroupMember)):
        result.setdefault(row.country, set()).add(row.group_name)
    return result


# What an inbox page shows of each delivery: never `items.envelope` (envelopes are loaded
# separately, and only when asked for, by `inbox_envelopes`).
INBOX_COLUMNS = (
    Delivery.seq,
    Delivery.state,
    Item.item_id,
    Item.originator,
    Item.created_ms,
    Item.received_ms,
    Item.classification,
    Item.tlp,
    Item.content_type,
    Item.size,
    Item.log_index,
    Item.expires_ms,
)


def delivery_view(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A delivery as the inbox shows it, from a row of INBOX_COLUMNS (the API's `Delivery`,
    in its field order: the stream of a process's own new deliveries encodes this directly)."""
    return {
        "seq": row["seq"],
        "item_id": row["item_id"],
        "originator": row["originator"],
        "created_ms": row["created_ms"],
        "received_ms": row["received_ms"],
        "classification": row["classification"],
        "tlp": row["tlp"],
        "content_type": row["content_type"],
        "size": row["size"],
        "log_index": row["log_index"],
        "state": row["state"],
    }


_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_ITEMS: Table = Item.__table__  # type: ignore[assignment]
# Built once, on the tables (Core, not the ORM): every long-poll wake and stream event runs it,
# and per execution the ORM's compile state and a fresh statement's cache key cost more than
# the query itself (py-spy --gil on a broker serving 11 streams: 16% of its time in this call).
_INBOX_PAGE = (
    select(*(_DELIVERIES.c[c.key] if c.class_ is Delivery else _ITEMS.c[c.key] for c in INBOX_COLUMNS))
    .join(_ITEMS, _ITEMS.c.item_id == _DELIVERIES.c.item_id)
    .where(_DELIVERIES.c.recipient == bindparam("recipient"), _DELIVERIES.c.seq > bindparam("after"))
    .order_by(_DELIVERIES.c.seq)
    .limit(bindparam("limit"))
)


# (item_id, recipients comma-joined) of the items named by the expanding parameter `ids`: read
# by every submission batch with references (the items it refers to).
RECIPIENTS_OF = select(_ITEMS.c.item_id, _ITEMS.c.recipients).where(
    _ITEMS.c.item_id.in_(bindparam("ids", expanding=True))
)


def insert_items(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Item rows as acceptance builds them (services/submit.py `_item_row`), with their log
    index or without it."""
    # not as arrays on PostgreSQL: a bytea array travels as hex text, and the envelopes
    # (~23 KB each) made that dearer than SQLAlchemy's executemany (bench/store.py)
    execute_many(session, "items", insert(_ITEMS), rows, arrays=False)


def inbox_page(session: Session, recipient: str, after: int, limit: int) -> Sequence[RowMapping]:
    """The recipient's numbered deliveries after `after`, in seq order, without envelopes."""
    return (
        session.connection()
        .execute(_INBOX_PAGE, {"recipient": recipient, "after": after, "limit": limit})
        .mappings()
        .all()
    )


def inbox_envelopes(session: Session, recipient: str, after: int, last: int) -> dict[int, bytes | None]:
    """The envelope bytes of the recipient's deliveries with after < seq <= last, by seq (None:
    purged by retention)."""
    rows = session.execute(
        select(Delivery.seq, Item.envelope)
        .join(Item, Item.item_id == Delivery.item_id)
        .where(Delivery.recipient == recipient, Delivery.seq > after, Delivery.seq <= last)
    ).all()
    return {
        int(seq): None if envelope is None else bytes(envelope) for seq, envelope in rows if seq is not None
    }


def deliveries_of_item(session: Session, item_id: str) -> Sequence[Delivery]:
    return session.scalars(
        select(Delivery).where(Delivery.item_id == item_id).order_by(Delivery.recipient)
    ).all()


def delivery(session: Session, item_id: str, recipient: str) -> Delivery | None:
    return session.scalars(
        select(Delivery).where(Delivery.item_id == item_id, Delivery.recipient == recipient)
    ).first()


def acknowledge(session: Session, recipient: str, seqs: Sequence[int], now_ms: int) -> list[int]:
    """Mark the given deliveries acknowledged; returns the seqs not in `recipient`'s inbox.

    Two statements whatever the number of seqs (the API caps a batch at 1000): one to find
    them, and, only when all are there, one to acknowledge the pending ones."""
    wanted = sorted(set(seqs))
    found = set(
        session.scalars(select(Delivery.seq).where(Delivery.recipient == recipient, Delivery.seq.in_(wanted)))
    )
    missing = [seq for seq in wanted if seq not in found]
    if not missing:
        session.execute(
            update(Delivery)
            .where(Delivery.recipient == recipient, Delivery.seq.in_(wanted), Delivery.state == "pending")
            .values(state="acknowledged", acked_ms=now_ms)
            .execution_options(synchronize_session=False)
        )
    return missing


def record_admin_action(
    session: Session, actor: str, action: str, target: str, details: dict[str, object], now_ms: int
) -> int:
    """Record an admin action and bump the registry version; returns the new version.

    The bump takes the version row's write lock, so it waits for submissions in flight
    (which hold a share lock on it) and every broker process reloads its registry after.
    """
    version = session.execute(
        update(RegistryState)
        .where(RegistryState.id == 1)
        .values(version=RegistryState.version + 1)
        .returning(RegistryState.version)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    session.add(
        AdminAction(
            at_ms=now_ms,
            actor=actor,
            action=action,
            target=target,
            details=json.dumps(details, sort_keys=True, separators=(",", ":")),
        )
    )
    return int(version)


def lock_registry_version(session: Session) -> None:
    """Take the registry version row's write lock until the transaction ends."""
    session.execute(select(RegistryState.version).where(RegistryState.id == 1).with_for_update()).scalar_one()


def purge_used_tokens(session: Session, now_ms: int) -> None:
    session.execute(delete(UsedToken).where(UsedToken.expires_ms < now_ms))
