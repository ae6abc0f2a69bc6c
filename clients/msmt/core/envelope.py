"""The sealed envelope: `seal` (originator), `verify` (broker), `open` (recipient).

Wire format (docs/protocol.md is normative):

    "MSMT" | version (1 byte) | header length (4 bytes, big-endian) | header | signature | ciphertext

The header is canonical JSON (see `canonical`). The signature is the composite
ML-DSA-65 + Ed25519 signature over the header bytes. The ciphertext is the payload under
AES-256-GCM with a key derived from a fresh 32-byte content key, which is wrapped for each
recipient with HPKE (X-Wing, HKDF-SHA256, AES-256-GCM). Every check here is pure: no clock,
no network, no storage.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import canonical
from .errors import (
    InvalidHeader,
    KeyCommitmentMismatch,
    KeyUnwrapFailed,
    MalformedEnvelope,
    NotARecipient,
    OversizedField,
    PayloadDecryptionFailed,
    PayloadMismatch,
    RecipientKeyMismatch,
    StaleEnvelope,
    UnknownSigningKey,
    UnsupportedSuite,
    UnsupportedVersion,
)
from .ids import is_item_id, item_id_time_ms, new_item_id
from .keys import (
    COMPOSITE_SIGNATURE_SIZE,
    EncryptionPrivateKey,
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
)
from .markings import COUNTRY_RE, Markings

MAGIC = b"MSMT"
VERSION = 1
SUITE = "MSMT-v1/X-Wing+HKDF-SHA256+AES-256-GCM/MLDSA65-Ed25519-SHA512"
SIGNATURE_CONTEXT = b"MSMT-v1 envelope"
SIGNATURE_SIZE = COMPOSITE_SIGNATURE_SIZE
WRAPPED_KEY_SIZE = 1120 + 32 + 16  # X-Wing enc || AES-256-GCM(content key) || tag
CONTENT_KEY_SIZE = 32
GCM_TAG_SIZE = 16

MAX_HEADER_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
MAX_RECIPIENTS = 256
MAX_CONTENT_TYPE = 127

_PREFIX = struct.Struct(">4sBI")
_HPKE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_KEY_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_HEADER_FIELDS = {
    "version",
    "suite",
    "item_id",
    "originator",
    "created_ms",
    "markings",
    "content_type",
    "recipients",
    "payload",
    "key_commitment",
}
_OPTIONAL_FIELDS = {"supersedes", "in_reply_to", "expires_ms"}


@dataclass(frozen=True)
class RecipientEntry:
    """One recipient's entry. The wrapped key is kept as its checked base64url text and decoded
    only when read: the broker checks and stores it but never opens it."""

    country: str
    key_id: str
    wrapped_text: str

    @cached_property
    def wrapped_key(self) -> bytes:
        return canonical.b64decode(self.wrapped_text, "wrapped_key")


@dataclass(frozen=True)
class Header:
    """The signed header, checked field by field."""

    item_id: str
    originator: str
    originator_key_id: str
    created_ms: int
    markings: Markings
    content_type: str
    recipients: tuple[RecipientEntry, ...]
    payload_size: int
    payload_sha256: bytes
    key_commitment: bytes
    supersedes: str | None = None
    in_reply_to: str | None = None
    expires_ms: int | None = None
    version: int = VERSION
    suite: str = SUITE

    @property
    def recipient_countries(self) -> tuple[str, ...]:
        return tuple(entry.country for entry in self.recipients)

    def recipient(self, country: str) -> RecipientEntry | None:
        for entry in self.recipients:
            if entry.country == country:
                return entry
        return None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": self.version,
            "suite": self.suite,
            "item_id": self.item_id,
            "originator": {"country": self.originator, "key_id": self.originator_key_id},
            "created_ms": self.created_ms,
            "markings": self.markings.to_dict(),
            "content_type": self.content_type,
            "recipients": [
                {"country": r.country, "key_id": r.key_id, "wrapped_key": r.wrapped_text}
                for r in self.recipients
            ],
            "payload": {"size": self.payload_size, "sha256": canonical.b64encode(self.payload_sha256)},
            "key_commitment": canonical.b64encode(self.key_commitment),
        }
        for name in ("supersedes", "in_reply_to", "expires_ms"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Header:
        if not isinstance(data, dict):
            raise InvalidHeader("header must be a JSON object")
        # Version and suite first: a future version may change everything else.
        if data.get("version") != VERSION:
            raise UnsupportedVersion(
                f"header version {data.get('version')!r} is not supported (expected {VERSION})"
            )
        if data.get("suite") != SUITE:
            raise UnsupportedSuite(
                f"suite {str(data.get('suite'))[:80]!r} is not supported (expected {SUITE!r})"
            )
        missing = _HEADER_FIELDS - set(data)
        unknown = set(data) - _HEADER_FIELDS - _OPTIONAL_FIELDS
        if missing:
            raise InvalidHeader(f"header is missing {sorted(missing)}")
        if unknown:
            raise InvalidHeader(f"header has unknown fields {sorted(unknown)[:5]}")

        item_id = data["item_id"]
        if not is_item_id(item_id):
            raise InvalidHeader("item_id must be a lowercase UUIDv7")
        originator = _object(data["originator"], "originator", {"country", "key_id"})
        _country(originator["country"], "originator.country")
        _key_id(originator["key_id"], "originator.key_id")
        created_ms = _timestamp(data["created_ms"], "created_ms")
        content_type = data["content_type"]
        if not isinstance(content_type, str):
            raise InvalidHeader("content_type must be a string")
        if len(content_type) > MAX_CONTENT_TYPE:
            raise OversizedField(f"content_type is longer than {MAX_CONTENT_TYPE} characters")
        if not _CONTENT_TYPE_RE.fullmatch(content_type):
            raise InvalidHeader(f"content_type {content_type!r} is not a lowercase type/subtype media type")

        recipients_raw = data["recipients"]
        if not isinstance(recipients_raw, list):
            raise InvalidHeader("recipients must be a list")
        if len(recipients_raw) > MAX_RECIPIENTS:
            raise OversizedField(f"{len(recipients_raw)} recipients; at most {MAX_RECIPIENTS} are allowed")
        if not recipients_raw:
            raise InvalidHeader("recipients must not be empty")
        recipients = _recipients_fast(recipients_raw) or _recipients_one_by_one(recipients_raw)
        countries = [r.country for r in recipients]
        if countries != sorted(set(countries)):
            raise InvalidHeader("recipients must be sorted by country with no country twice")

        payload = _object(data["payload"], "payload", {"size", "sha256"})
        size = payload["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < GCM_TAG_SIZE:
            raise InvalidHeader("payload.size must be an integer of at least 16 (the GCM tag)")
        if size > MAX_PAYLOAD_BYTES + GCM_TAG_SIZE:
            raise OversizedField(f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")
        digest = canonical.b64decode(payload["sha256"], "payload.sha256")
        commitment = canonical.b64decode(data["key_commitment"], "key_commitment")
        if len(digest) != 32 or len(commitment) != 32:
            raise InvalidHeader("payload.sha256 and key_commitment must be 32 bytes")

        if item_id_time_ms(item_id) != created_ms:
            raise InvalidHeader("item_id's UUIDv7 timestamp must equal created_ms")
        for name in ("supersedes", "in_reply_to"):
            if name in data and (not is_item_id(data[name]) or data[name] == item_id):
                raise InvalidHeader(f"{name} must be the UUIDv7 of another item")
        expires_ms = _timestamp(data["expires_ms"], "expires_ms") if "expires_ms" in data else None
        if expires_ms is not None and expires_ms <= created_ms:
            raise InvalidHeader("expires_ms must be later than created_ms")

        return cls(
            item_id=item_id,
            originator=originator["country"],
            originator_key_id=originator["key_id"],
            created_ms=created_ms,
            markings=Markings.from_dict(data["markings"]),
            content_type=content_type,
            recipients=tuple(recipients),
            payload_size=size,
            payload_sha256=digest,
            key_commitment=commitment,
            supersedes=data.get("supersedes"),
            in_reply_to=data.get("in_reply_to"),
            expires_ms=expires_ms,
        )


def _object(value: Any, name: str, fields: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidHeader(f"{name} must be an object")
    if set(value) != fields:
        raise InvalidHeader(f"{name} must have exactly the fields {sorted(fields)}")
    return value


def _country(value: Any, name: str) -> str:
    if not isinstance(value, str) or not COUNTRY_RE.fullmatch(value):
        raise InvalidHeader(f"{name} must be an ISO 3166-1 alpha-3 code")
    return value


def _key_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _KEY_ID_RE.fullmatch(value):
        raise InvalidHeader(f"{name} must be 32 lowercase hex digits")
    return value


def _timestamp(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**48:
        raise InvalidHeader(f"{name} must be Unix time in milliseconds")
    return value


def _recipients_one_by_one(raw: list[Any]) -> list[RecipientEntry]:
    """The recipients, each entry checked in turn: the first fault found is the one reported."""
    recipients = []
    for index, item in enumerate(raw):
        name = f"recipients[{index}]"
        entry = _object(item, name, {"country", "key_id", "wrapped_key"})
        wrapped = canonical.check_b64(entry["wrapped_key"], WRAPPED_KEY_SIZE, f"{name}.wrapped_key")
        recipients.append(
            RecipientEntry(
                _country(entry["country"], f"{name}.country"),
                _key_id(entry["key_id"], f"{name}.key_id"),
                wrapped,
            )
        )
    return recipients


_RECIPIENT_FIELDS = frozenset({"country", "key_id", "wrapped_key"})
_WRAPPED_TEXT_SIZE = canonical.b64_length(WRAPPED_KEY_SIZE)
# A wrapped key's text ends 2 characters into a base64 quantum, so its last character carries
# 4 unused bits, which must be zero: one of these four (canonical.check_b64).
_WRAPPED_LAST = frozenset("AQgw")
_COUNTRIES_RE = re.compile(r"[A-Z]{3}(?:,[A-Z]{3})*")
_KEY_IDS_RE = re.compile(r"[0-9a-f]{32}(?:,[0-9a-f]{32})*")


def _recipients_fast(raw: list[Any]) -> list[RecipientEntry] | None:
    """The recipients if every entry is well formed, or None: then `_recipients_one_by_one`
    finds and reports the fault. Accepts exactly what it accepts (tests/unit/
    test_envelope_fast_path.py), checked in a few C calls over all entries at once instead of
    five per entry: the entries of an envelope for 11 recipients were ~40 us of its ~100 us of
    parsing, the broker's most frequent work after the signatures (bench/README.md)."""
    countries, key_ids, wrapped = [], [], []
    for entry in raw:
        if type(entry) is not dict or entry.keys() != _RECIPIENT_FIELDS:
            return None
        country, key_id, text = entry["country"], entry["key_id"], entry["wrapped_key"]
        if (
            type(country) is not str
            or type(key_id) is not str
            or type(text) is not str
            or len(country) != 3  # each of fixed length: the joined text's separators cannot shift
            or len(key_id) != 32
            or len(text) != _WRAPPED_TEXT_SIZE
            or text[-1] not in _WRAPPED_LAST
        ):
            return None
        countries.append(country)
        key_ids.append(key_id)
        wrapped.append(text)
    if not _COUNTRIES_RE.fullmatch(",".join(countries)) or not _KEY_IDS_RE.fullmatch(",".join(key_ids)):
        return None
    joined = "".join(wrapped)
    if not joined.isascii() or joined.encode("ascii").translate(None, canonical.B64URL_ALPHABET):
        return None
    return list(map(RecipientEntry, countries, key_ids, wrapped))


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope whose structure is valid; its signature is not yet checked."""

    header: Header
    header_bytes: bytes
    signature: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return (
            _PREFIX.pack(MAGIC, self.header.version, len(self.header_bytes))
            + self.header_bytes
            + self.signature
            + self.ciphertext
        )


@dataclass(frozen=True)
class Opened:
    header: Header
    payload: bytes


def parse(data: bytes) -> Envelope:
    """Split and structurally check an envelope. No signature check: use `verify`."""
    header_bytes, signature, ciphertext = split(data)
    return Envelope(Header.from_dict(canonical.decode(header_bytes)), header_bytes, signature, ciphertext)


def split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The envelope's header bytes, signature and ciphertext, its framing checked but its header
    not decoded (`parse` does that)."""
    if len(data) < _PREFIX.size:
        raise MalformedEnvelope("envelope is shorter than its fixed prefix")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise MalformedEnvelope("not an MSMT envelope (bad magic)")
    if version != VERSION:
        raise UnsupportedVersion(f"envelope version {version} is not supported (expected {VERSION})")
    if header_len > MAX_HEADER_BYTES:
        raise OversizedField(f"header of {header_len} bytes exceeds {MAX_HEADER_BYTES}")
    body = memoryview(data)[_PREFIX.size :]
    if len(body) < header_len + SIGNATURE_SIZE:
        raise MalformedEnvelope("envelope is truncated (header or signature incomplete)")
    if len(body) - header_len - SIGNATURE_SIZE > MAX_PAYLOAD_BYTES + GCM_TAG_SIZE:
        raise OversizedField(f"payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    return (
        bytes(body[:header_len]),
        bytes(body[header_len : header_len + SIGNATURE_SIZE]),
        bytes(body[header_len + SIGNATURE_SIZE :]),
    )


KeyLookup = Callable[[str, str], SigningPublicKey | None]


def verify(data: bytes | Envelope, originator_key: SigningPublicKey | KeyLookup) -> Envelope:
    """Broker-side verification with public keys only; returns the verified envelope.

    `originator_key` is the originator's signing key, or a lookup (country, key_id) -> key
    over the caller's directory of currently valid keys. In order: the key, the signature
    (`verify_signature`), the payload (`check_payload`).
    """
    envelope = data if isinstance(data, Envelope) else parse(data)
    header = envelope.header
    if isinstance(originator_key, SigningPublicKey):
        key: SigningPublicKey | None = originator_key
    else:
        key = originator_key(header.originator, header.originator_key_id)
    if key is None:
        raise UnknownSigningKey(_unknown_key(header.originator, header.originator_key_id))
    verify_signature(
        envelope.header_bytes, envelope.signature, key, header.originator, header.originator_key_id
    )
    check_payload(envelope)
    return envelope


def _unknown_key(originator: str, key_id: str) -> str:
    return f"{originator}'s signing key {key_id} is not known or not valid"


def verify_signature(
    header_bytes: bytes, signature: bytes, key: SigningPublicKey, originator: str, key_id: str
) -> None:
    """The step of `verify` that costs (~0.3 ms: ML-DSA-65 and Ed25519), alone, for a caller
    that checks the payload itself after (`check_payload`, or `check_ciphertext` given the
    header's two fields): `key` must be the key `key_id` of the header's `originator`, and
    `signature` must be its signature over `header_bytes`. Needs no parse, so it can run where
    the header is not at hand (the broker's signature workers)."""
    if key.key_id != key_id:
        raise UnknownSigningKey(_unknown_key(originator, key_id))
    key.verify(signature, header_bytes, SIGNATURE_CONTEXT)


def check_payload(envelope: Envelope) -> None:
    """The ciphertext is the one whose size and SHA-256 the (signed) header states."""
    check_ciphertext(envelope.ciphertext, envelope.header.payload_size, envelope.header.payload_sha256)


def check_ciphertext(ciphertext: bytes, payload_size: int, payload_sha256: bytes) -> None:
    """`check_payload` given the header's two fields, for a caller that has them without the
    parsed envelope (the broker's signature workers, which are sent them with the envelope)."""
    if len(ciphertext) != payload_size:
        raise PayloadMismatch(f"ciphertext is {len(ciphertext)} bytes but the header says {payload_size}")
    if not hmac.compare_digest(hashlib.sha256(ciphertext).digest(), payload_sha256):
        raise PayloadMismatch("ciphertext does not match the signed payload hash")


def check_freshness(header: Header, now_ms: int, *, max_age_ms: int, max_skew_ms: int) -> None:
    """Reject envelopes created too long ago, in the future, or already expired."""
    if header.created_ms > now_ms + max_skew_ms:
        raise StaleEnvelope("envelope is dated in the future beyond the allowed clock skew")
    if header.created_ms < now_ms - max_age_ms:
        raise StaleEnvelope("envelope was created too long ago to be accepted")
    if header.expires_ms is not None and header.expires_ms <= now_ms:
        raise StaleEnvelope("envelope has expired")


def wrap_info(header_fields: dict[str, str]) -> bytes:
    """HPKE `info` for one recipient: binds suite, item, originator and recipient."""
    return b"MSMT-v1 wrap\x00" + canonical.encode(header_fields)


def _info(item_id: str, originator: str, originator_key_id: str, country: str, key_id: str) -> bytes:
    return wrap_info(
        {
            "suite": SUITE,
            "item_id": item_id,
            "originator": originator,
            "originator_key_id": originator_key_id,
            "recipient": country,
            "recipient_key_id": key_id,
        }
    )


def _payload_key(content_key: bytes) -> bytes:
    return hmac.new(content_key, b"MSMT-v1 payload-key", hashlib.sha256).digest()


def _commitment(content_key: bytes, item_id: str) -> bytes:
    return hmac.new(content_key, b"MSMT-v1 key-commitment\x00" + item_id.encode(), hashlib.sha256).digest()


def _payload_aad(item_id: str) -> bytes:
    return b"MSMT-v1 payload\x00" + item_id.encode()


_ZERO_NONCE = bytes(12)  # safe: every payload key encrypts exactly one message


def seal(
    payload: bytes,
    *,
    content_type: str,
    markings: Markings,
    recipients: Iterable[tuple[str, EncryptionPublicKey]],
    originator: str,
    signing_key: SigningPrivateKey,
    item_id: str | None = None,
    created_ms: int | None = None,
    supersedes: str | None = None,
    in_reply_to: str | None = None,
    expires_ms: int | None = None,
) -> bytes:
    """Encrypt `payload` for `recipients`, sign the header, and return the envelope bytes."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise OversizedField(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    created = int(time.time() * 1000) if created_ms is None else created_ms
    item = new_item_id(created) if item_id is None else item_id
    targets = sorted(recipients, key=lambda pair: pair[0])
    content_key = secrets.token_bytes(CONTENT_KEY_SIZE)
    ciphertext = AESGCM(_payload_key(content_key)).encrypt(_ZERO_NONCE, payload, _payload_aad(item))
    header_dict: dict[str, Any] = {
        "version": VERSION,
        "suite": SUITE,
        "item_id": item,
        "originator": {"country": originator, "key_id": signing_key.key_id},
        "created_ms": created,
        "markings": markings.to_dict(),
        "content_type": content_type,
        "recipients": [
            {
                "country": country,
                "key_id": key.key_id,
                "wrapped_key": canonical.b64encode(
                    _HPKE.encrypt(
                        content_key,
                        key.hpke_key,
                        info=_info(item, originator, signing_key.key_id, country, key.key_id),
                    )
                ),
            }
            for country, key in targets
        ],
        "payload": {
            "size": len(ciphertext),
            "sha256": canonical.b64encode(hashlib.sha256(ciphertext).digest()),
        },
        "key_commitment": canonical.b64encode(_commitment(content_key, item)),
    }
    for name, value in (("supersedes", supersedes), ("in_reply_to", in_reply_to), ("expires_ms", expires_ms)):
        if value is not None:
            header_dict[name] = value
    header = Header.from_dict(header_dict)  # seal never emits what verify would refuse
    header_bytes = canonical.encode(header_dict)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise OversizedField(f"header of {len(header_bytes)} bytes exceeds {MAX_HEADER_BYTES}")
    signature = signing_key.sign(header_bytes, SIGNATURE_CONTEXT)
    return Envelope(header, header_bytes, signature, ciphertext).to_bytes()


def open_envelope(
    data: bytes | Envelope,
    *,
    recipient: str,
    private_key: EncryptionPrivateKey,
    originator_key: SigningPublicKey | KeyLookup,
) -> Opened:
    """Verify, then decrypt as `recipient`. Raises a specific EnvelopeError on any failure."""
    envelope = verify(data, originator_key)
    header = envelope.header
    entry = header.recipient(recipient)
    if entry is None:
        raise NotARecipient(f"{recipient} is not among this item's recipients")
    if entry.key_id != private_key.key_id:
        raise RecipientKeyMismatch(
            f"item was sealed to {recipient}'s key {entry.key_id}, not to key {private_key.key_id}"
        )
    info = _info(header.item_id, header.originator, header.originator_key_id, recipient, entry.key_id)
    try:
        content_key = _HPKE.decrypt(entry.wrapped_key, private_key.hpke_key, info=info)
    except (InvalidTag, ValueError) as exc:
        raise KeyUnwrapFailed(
            "cannot unwrap the content key: it was not sealed by this originator for this recipient"
        ) from exc
    if len(content_key) != CONTENT_KEY_SIZE or not hmac.compare_digest(
        _commitment(content_key, header.item_id), header.key_commitment
    ):
        raise KeyCommitmentMismatch("content key does not match the signed key commitment")
    try:
        payload = AESGCM(_payload_key(content_key)).decrypt(
            _ZERO_NONCE, envelope.ciphertext, _payload_aad(header.item_id)
        )
    except InvalidTag as exc:
        raise PayloadDecryptionFailed("payload does not decrypt under the committed content key") from exc
    return Opened(header, payload)
