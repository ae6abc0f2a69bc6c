"""Inbox: a recipient reads its own deliveries by cursor and acknowledges them."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..problems import invalid, not_found
from ..store import queries
from ..store.models import Delivery, Item


def delivery_view(delivery: Delivery, item: Item) -> dict[str, Any]:
    return {
        "seq": delivery.seq,
        "item_id": item.item_id,
        "originator": item.originator,
        "created_ms": item.created_ms,
        "received_ms": item.received_ms,
        "classification": item.classification,
        "tlp": item.tlp,
        "content_type": item.content_type,
        "size": item.size,
        "log_index": item.log_index,
        "state": delivery.state,
    }


def list_inbox(session: Session, recipient: str, after: int, limit: int) -> dict[str, Any]:
    rows = queries.inbox_page(session, recipient, after, limit)
    deliveries = [delivery_view(d, i) for d, i in rows]
    return {"deliveries": deliveries, "cursor": deliveries[-1]["seq"] if deliveries else after}


def acknowledge(session: Session, recipient: str, seqs: list[int], now_ms: int) -> dict[str, Any]:
    if not seqs:
        raise invalid("empty-ack", "give at least one sequence number to acknowledge")
    missing = queries.acknowledge(session, recipient, seqs, now_ms)
    if missing:
        raise invalid(
            "unknown-delivery",
            f"{len(missing)} sequence number(s) are not in {recipient}'s inbox; nothing was acknowledged",
            missing=missing[:100],
        )
    return {"acknowledged": sorted(set(seqs))}


def item_for(session: Session, caller: str, item_id: str) -> Item:
    """The item if `caller` originated it or is one of its recipients; otherwise 404."""
    item = session.get(Item, item_id)
    if item is None or (item.originator != caller and queries.delivery(session, item_id, caller) is None):
        raise not_found("unknown-item", f"no item {item_id} in {caller}'s view")
    return item


def item_status(session: Session, caller: str, item_id: str, is_admin: bool) -> dict[str, Any]:
    item = session.get(Item, item_id)
    if item is None or (item.originator != caller and not is_admin):
        raise not_found("unknown-item", f"no item {item_id} originated by {caller}")
    return {
        "item_id": item_id,
        "log_index": item.log_index,
        "received_ms": item.received_ms,
        "deliveries": [
            {"recipient": d.recipient, "state": d.state, "created_ms": d.created_ms, "acked_ms": d.acked_ms}
            for d in queries.deliveries_of_item(session, item_id)
        ],
    }
