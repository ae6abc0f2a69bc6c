"""Signed delivery receipts: "I received item X, verified, as my inbox entry n".

A recipient signs one after it verified and stored an item (not after a person read it);
the broker checks it, keeps it, logs it, and shows it to the originator as proof of
delivery. Canonical JSON signed with the recipient's composite signing key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from . import canonical
from .errors import BadReceipt, MsmtError
from .ids import is_item_id
from .keys import SigningPrivateKey, SigningPublicKey
from .markings import COUNTRY_RE

CONTEXT = b"MSMT-v1 receipt"
FORMAT = "msmt-receipt-v1"
_FIELDS = {"format", "item_id", "envelope_sha256", "recipient", "seq", "log_index", "created_ms"}


@dataclass(frozen=True)
class DeliveryReceipt:
    item_id: str
    envelope_sha256: str
    recipient: str
    seq: int
    log_index: int
    created_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "item_id": self.item_id,
            "envelope_sha256": self.envelope_sha256,
            "recipient": self.recipient,
            "seq": self.seq,
            "log_index": self.log_index,
            "created_ms": self.created_ms,
        }

    def signed_bytes(self) -> bytes:
        return canonical.encode(self.to_dict())


def sign_receipt(receipt: DeliveryReceipt, key: SigningPrivateKey) -> bytes:
    """The receipt as sent: canonical {"receipt": {...}, "key_id": ..., "sig": ...}."""
    return canonical.encode(
        {
            "receipt": receipt.to_dict(),
            "key_id": key.key_id,
            "sig": canonical.b64encode(key.sign(receipt.signed_bytes(), CONTEXT)),
        }
    )


def parse_receipt(data: bytes) -> tuple[DeliveryReceipt, str, bytes]:
    """(receipt, signing key id, signature); raises BadReceipt for anything malformed."""
    try:
        value = canonical.decode(data)
        body = value["receipt"]
        if set(value) != {"receipt", "key_id", "sig"} or set(body) != _FIELDS or body["format"] != FORMAT:
            raise BadReceipt(
                "a receipt has exactly receipt, key_id and sig, and the receipt its seven fields"
            )
        receipt = DeliveryReceipt(
            str(body["item_id"]),
            str(body["envelope_sha256"]),
            str(body["recipient"]),
            int(body["seq"]),
            int(body["log_index"]),
            int(body["created_ms"]),
        )
        signature = canonical.b64decode(value["sig"], "signature")
        key_id = str(value["key_id"])
    except BadReceipt:
        raise
    except (MsmtError, KeyError, TypeError, ValueError) as exc:
        raise BadReceipt(f"the receipt is malformed: {exc}") from exc
    if not is_item_id(receipt.item_id) or not COUNTRY_RE.fullmatch(receipt.recipient):
        raise BadReceipt("the receipt names no valid item or recipient")
    if len(receipt.envelope_sha256) != 64 or receipt.seq < 1 or receipt.log_index < 0:
        raise BadReceipt("the receipt's digest, inbox entry or log index is not valid")
    return receipt, key_id, signature


def receipt_leaf(receipt: DeliveryReceipt, data: bytes) -> bytes:
    """The log leaf for a receipt: who confirmed which item as which inbox entry."""
    return canonical.encode(
        {
            "type": "receipt",
            "item_id": receipt.item_id,
            "recipient": receipt.recipient,
            "seq": receipt.seq,
            "receipt_sha256": hashlib.sha256(data).hexdigest(),
        }
    )


def verify_receipt(data: bytes, key: SigningPublicKey) -> DeliveryReceipt:
    receipt, key_id, signature = parse_receipt(data)
    if key_id != key.key_id:
        raise BadReceipt(f"the receipt is signed with key {key_id}, not {key.key_id}")
    try:
        key.verify(signature, receipt.signed_bytes(), CONTEXT)
    except MsmtError as exc:
        raise BadReceipt(f"{receipt.recipient}'s signature on the receipt does not verify") from exc
    return receipt
