"""Sealed and opened items without a broker, for the gateway's unit tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from msmt.client import Batch, Delivery, InboxPage, Received, Rejected
from msmt.core import Markings, open_envelope, seal
from msmt.errors import BrokerUnavailable
from tests.integration.conftest import _KEYS


def received(
    seq: int,
    payload: dict[str, Any] | bytes,
    *,
    origin: str = "KOR",
    tlp: str = "AMBER",
    releasable_to: tuple[str, ...] = ("USA",),
) -> Received:
    """An item `origin` sealed for USA, opened by USA (signature verified, payload decrypted)."""
    is_stix = isinstance(payload, dict)
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    content_type = "application/stix+json" if is_stix else "text/markdown"
    now = int(time.time() * 1000)
    envelope = seal(
        data,
        content_type=content_type,
        markings=Markings.create("RESTRICTED", tlp, list(releasable_to), topics=["maritime"]),
        recipients=[("USA", _KEYS["USA"].encryption.public_key)],
        originator=origin,
        signing_key=_KEYS[origin].signing,
        created_ms=now,
    )
    opened = open_envelope(
        envelope,
        recipient="USA",
        private_key=_KEYS["USA"].encryption,
        originator_key=_KEYS[origin].signing.public_key,
    )
    header = opened.header
    delivery = Delivery(
        seq,
        header.item_id,
        origin,
        now,
        now,
        "RESTRICTED",
        tlp,
        content_type,
        len(envelope),
        40 + seq,
        "pending",
    )
    return Received(delivery, opened, "ab" * 32)


def rejected(seq: int) -> Rejected:
    delivery = Delivery(seq, "0" * 32, "JPN", 1, 1, "RESTRICTED", "AMBER", "text/plain", 10, seq, "pending")
    return Rejected(delivery, BrokerUnavailable("bad signature"), b"\x00bytes")


def batch(items: Iterable[Received], rejects: Iterable[Rejected] = (), cursor: int | None = None) -> Batch:
    items, rejects = tuple(items), tuple(rejects)
    deliveries = tuple(r.delivery for r in items) + tuple(r.delivery for r in rejects)
    top = cursor if cursor is not None else max((d.seq for d in deliveries), default=0)
    return Batch(InboxPage(deliveries, top), items, rejects)


@dataclass
class FakeInbox:
    """An inbox that serves `pages` in turn from the cursor it is asked for, and records acks."""

    pages: list[Batch]
    acknowledged: list[int] = field(default_factory=list)
    fail_confirm: int = 0
    fail_receive: int = 0
    asked: list[int] = field(default_factory=list)
    on_confirm: Any = None

    def receive(self, after: int = 0, *, limit: int = 100, wait: float = 0) -> Batch:
        self.asked.append(after)
        if self.fail_receive:
            self.fail_receive -= 1
            raise BrokerUnavailable("cannot reach the broker")
        for page in self.pages:
            if page.cursor > after:
                return page
        return Batch(InboxPage((), after), (), ())

    def confirm(self, received: Iterable[Received], *, unavailable: Iterable[Delivery] = ()) -> list[int]:
        items = list(received)
        if self.on_confirm is not None:
            self.on_confirm(items)
        if self.fail_confirm:
            self.fail_confirm -= 1
            raise BrokerUnavailable("connection reset while acknowledging")
        seqs = [r.delivery.seq for r in items] + [d.seq for d in unavailable]
        self.acknowledged += seqs
        return seqs
