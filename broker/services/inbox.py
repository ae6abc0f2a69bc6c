"""Inbox: a recipient reads its own deliveries by cursor and acknowledges them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, select
from sqlalchemy.orm import Session

from msmt.core import canonical, errors
from msmt.core.receipt import parse_receipt, verify_receipt

from ..problems import gone, invalid, not_found
from ..store import queries
from ..store.models import DeliveryReceiptRow, Item
from . import log as log_service
from .registry import Registry, signing_public_key


def list_inbox(
    session: Session,
    recipient: str,
    after: int,
    limit: int,
    *,
    max_envelope_bytes: int | None = None,
    proofs_at: int | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """A page of the inbox. Items past their originator's `expires_ms` (at `now_ms`) are listed
    as `unavailable: expired`, without envelope: the sequence stays gap-free, and a recipient
    sees what it is no longer given."""
    page = _list_inbox(session, recipient, after, limit, max_envelope_bytes=max_envelope_bytes, now_ms=now_ms)
    if proofs_at is not None:
        # each delivery already in the tree of `proofs_at` leaves: its leaf and inclusion proof,
        # so that the recipient checks a whole page against one checkpoint (docs §14.14)
        proven = log_service.inclusions(session, [d["log_index"] for d in page["deliveries"]], proofs_at)
        for delivery in page["deliveries"]:
            found = proven.get(delivery["log_index"])
            if found is not None:
                delivery["leaf"] = canonical.b64encode(found[0])
                delivery["inclusion"] = [canonical.b64encode(h) for h in found[1]]
    return page


def _expired(row: RowMapping, now_ms: int | None) -> bool:
    return now_ms is not None and row["expires_ms"] is not None and row["expires_ms"] <= now_ms


def _list_inbox(
    session: Session,
    recipient: str,
    after: int,
    limit: int,
    *,
    max_envelope_bytes: int | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Deliveries after the cursor. With `max_envelope_bytes`, each also carries its envelope
    (base64url, 1.3), and the page ends before its envelopes would exceed that many bytes
    (at least one delivery, however large); the cursor is the last delivery returned."""
    rows = queries.inbox_page(session, recipient, after, limit)
    if max_envelope_bytes is not None and rows:
        rows = _within(rows, max_envelope_bytes)
        envelopes = queries.inbox_envelopes(session, recipient, after, int(rows[-1]["seq"]))
        deliveries = []
        for row in rows:
            if int(row["seq"]) not in envelopes:  # deleted since the first query: end the page before it
                break
            envelope = envelopes[int(row["seq"])]
            if _expired(row, now_ms):
                deliveries.append({**queries.delivery_view(row), "unavailable": "expired"})
            elif envelope is None:  # purged by retention: listed, with nothing to fetch (410)
                deliveries.append({**queries.delivery_view(row), "unavailable": "purged"})
            else:
                deliveries.append({**queries.delivery_view(row), "envelope": canonical.b64encode(envelope)})
    else:
        deliveries = [
            {**queries.delivery_view(row), "unavailable": "expired"}
            if _expired(row, now_ms)
            else queries.delivery_view(row)
            for row in rows
        ]
    return {"deliveries": deliveries, "cursor": deliveries[-1]["seq"] if deliveries else after}


def _within(rows: Sequence[RowMapping], max_bytes: int) -> Sequence[RowMapping]:
    """The longest prefix whose envelopes (`size` is the envelope's length) fit in `max_bytes`,
    and never less than the first row."""
    total = 0
    for count, row in enumerate(rows):
        total += int(row["size"])
        if total > max_bytes:
            return rows[: max(count, 1)]
    return rows


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


def add_receipts(
    session: Session, registry: Registry, recipient: str, receipts: list[bytes], now_ms: int
) -> dict[str, Any]:
    """Keep each signed delivery receipt that matches one of `recipient`'s deliveries; refuse
    the whole batch (nothing kept) if any does not."""
    accepted = 0
    for data in receipts:
        try:
            receipt, key_id, _ = parse_receipt(data)
        except errors.BadReceipt as exc:
            raise invalid(exc.code, exc.detail) from exc
        if receipt.recipient != recipient:
            raise invalid(
                "bad-receipt", f"{recipient} may only sign its own receipts, not {receipt.recipient}'s"
            )
        delivery = queries.delivery(session, receipt.item_id, recipient)
        item = session.get(Item, receipt.item_id)
        if delivery is None or item is None or delivery.seq != receipt.seq:
            raise invalid(
                "unknown-delivery", f"{receipt.item_id} is not entry {receipt.seq} of {recipient}'s inbox"
            )
        if receipt.envelope_sha256 != item.envelope_sha256 or receipt.log_index != item.log_index:
            raise invalid(
                "bad-receipt", f"the receipt for {receipt.item_id} describes other bytes or another log entry"
            )
        key = registry.usable_key(key_id, now_ms, "signing", owner=recipient)
        if key is None:
            raise invalid("bad-receipt", f"{key_id} is not a current signing key of {recipient}")
        try:
            verify_receipt(data, signing_public_key(key.raw))
        except errors.BadReceipt as exc:
            raise invalid(exc.code, exc.detail) from exc
        stored = session.get(DeliveryReceiptRow, (receipt.item_id, recipient))
        if stored is None:
            session.add(
                DeliveryReceiptRow(
                    item_id=receipt.item_id,
                    recipient=recipient,
                    seq=receipt.seq,
                    data=data,
                    created_ms=now_ms,
                )
            )
            session.flush()
            log_service.stage(session, "receipt", f"{receipt.item_id}:{recipient}", now_ms)
            accepted += 1
    return {"accepted": accepted}


def item_for(session: Session, caller: str, item_id: str) -> Item:
    """The item if `caller` originated it or is one of its recipients; otherwise 404."""
    item = session.get(Item, item_id)
    if item is None or (item.originator != caller and queries.delivery(session, item_id, caller) is None):
        raise not_found("unknown-item", f"no item {item_id} in {caller}'s view")
    return item


def envelope_for(session: Session, caller: str, item_id: str, now_ms: int) -> bytes:
    """The envelope of an item in `caller`'s view (404 otherwise); 410 once past its
    originator's `expires_ms`, or purged."""
    item = item_for(session, caller, item_id)
    if item.expires_ms is not None and item.expires_ms <= now_ms:
        raise gone(
            "expired",
            f"item {item_id} expired at {item.expires_ms} (ms since the epoch), as its originator set",
        )
    if item.envelope is None:
        raise gone(
            "purged", f"item {item_id}'s envelope was purged by the retention policy; its log entry stays"
        )
    return item.envelope


def item_status(session: Session, caller: str, item_id: str, is_admin: bool) -> dict[str, Any]:
    item = session.get(Item, item_id)
    if item is None or (item.originator != caller and not is_admin):
        raise not_found("unknown-item", f"no item {item_id} originated by {caller}")
    receipts = {
        r.recipient: r.data
        for r in session.scalars(select(DeliveryReceiptRow).where(DeliveryReceiptRow.item_id == item_id))
    }
    deliveries: list[dict[str, Any]]
    if item.log_index is None:  # not yet integrated: its deliveries, unnumbered, are to come
        deliveries = [
            {
                "recipient": r,
                "seq": None,
                "state": "pending",
                "created_ms": item.received_ms,
                "acked_ms": None,
            }
            for r in item.recipients.split(",")
        ]
    else:  # exactly the stored deliveries, written when the integrator logged the item
        deliveries = [
            {
                "recipient": d.recipient,
                "seq": d.seq,
                "state": d.state,
                "created_ms": d.created_ms,
                "acked_ms": d.acked_ms,
            }
            for d in queries.deliveries_of_item(session, item_id)
        ]
    for d in deliveries:
        receipt = receipts.get(d["recipient"])
        d["receipt"] = None if receipt is None else canonical.b64encode(receipt)
    return {
        "item_id": item_id,
        "log_index": item.log_index,
        "received_ms": item.received_ms,
        "deliveries": deliveries,
    }
