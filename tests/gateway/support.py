"""Sealed and opened items without a broker, for the gateway's unit tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from msmt.client import Batch, Delivery, InboxPage, Received, Rejected
from msmt.core import Markings, SigningPrivateKey, SigningPublicKey, open_envelope, seal
from msmt.core import report as rp
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


def withdrawal(
    seq: int,
    item_id: str,
    *,
    origin: str = "KOR",
    country: str | None = None,
    signer: SigningPrivateKey | None = None,
    reason: str = "Mis-sent: the vessel was misidentified.",
    in_reply_to: str | None = None,
) -> Received:
    """A withdrawal of `item_id` sent by `origin`, opened by USA. By default the statement is
    `origin`'s own, signed with its key; `country`, `signer` and `in_reply_to` forge it."""
    now = int(time.time() * 1000)
    statement = rp.withdraw(
        item_id, country or origin, signer or _KEYS[country or origin].signing, now, reason
    )
    envelope = seal(
        statement,
        content_type=rp.WITHDRAWAL_MEDIA_TYPE,
        markings=Markings.create("RESTRICTED", "AMBER", ["USA"], topics=["maritime"]),
        recipients=[("USA", _KEYS["USA"].encryption.public_key)],
        originator=origin,
        signing_key=_KEYS[origin].signing,
        created_ms=now,
        in_reply_to=in_reply_to or item_id,
    )
    opened = open_envelope(
        envelope,
        recipient="USA",
        private_key=_KEYS["USA"].encryption,
        originator_key=_KEYS[origin].signing.public_key,
    )
    delivery = Delivery(
        seq,
        opened.header.item_id,
        origin,
        now,
        now,
        "RESTRICTED",
        "AMBER",
        rp.WITHDRAWAL_MEDIA_TYPE,
        len(envelope),
        40 + seq,
        "pending",
    )
    return Received(delivery, opened, "cd" * 32)


@dataclass(frozen=True)
class _State:
    """The members' signing keys, as a verified directory would give them."""

    seq: int = 1

    def signing_key(self, country: str, key_id: str, at_ms: int) -> SigningPublicKey | None:
        keys = _KEYS.get(country)
        if keys is None or keys.signing.public_key.key_id != key_id:
            return None
        return keys.signing.public_key


@dataclass(frozen=True)
class FakeDirectory:
    state: Any = field(default_factory=_State)


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

    def receive(
        self, after: int = 0, *, limit: int = 100, wait: float = 0, read_ahead: bool = False
    ) -> Batch:
        self.asked.append(after)
        if self.fail_receive:
            self.fail_receive -= 1
            raise BrokerUnavailable("cannot reach the broker")
        for page in self.pages:
            if page.cursor > after:
                return page
        return Batch(InboxPage((), after), (), ())

    def directory(self, *, refresh: bool = False) -> FakeDirectory:
        return FakeDirectory()

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
