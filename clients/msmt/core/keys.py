"""A country's three kinds of key, their ids, and the composite signature.

- signing: composite ML-DSA-65 + Ed25519 (draft-ietf-lamps-pq-composite-sigs,
  id-MLDSA65-Ed25519-SHA512). Both halves must verify; neither is ever used alone.
- encryption: X-Wing (MLKEM768-X25519) from a 32-byte seed, used through HPKE (RFC 9180).
- api: Ed25519, only for the short-lived JWTs that authenticate API calls.

Every key is identified by `key_id`, a fingerprint of its kind and public bytes.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa, mlkem, x25519

from .errors import (
    BadSignature,
    InvalidPrivateKey,
    InvalidPublicKey,
    NonCanonicalPublicKey,
    SmallOrderPublicKey,
)


class KeyKind(StrEnum):
    SIGNING = "signing"
    ENCRYPTION = "encryption"
    API = "api"


ALGORITHMS = {
    KeyKind.SIGNING: "MLDSA65-Ed25519-SHA512",
    KeyKind.ENCRYPTION: "MLKEM768-X25519",
    KeyKind.API: "Ed25519",
}
PUBLIC_KEY_SIZES = {KeyKind.SIGNING: 1952 + 32, KeyKind.ENCRYPTION: 1184 + 32, KeyKind.API: 32}
PRIVATE_KEY_SIZES = {KeyKind.SIGNING: 32 + 32, KeyKind.ENCRYPTION: 32, KeyKind.API: 32}

_KEY_ID_DOMAIN = b"MSMT-v1 key-id\x00"


def compute_key_id(kind: KeyKind, public_bytes: bytes) -> str:
    """Fingerprint: hex of the first 16 bytes of SHA-256(domain || kind || 0x00 || public)."""
    digest = hashlib.sha256(_KEY_ID_DOMAIN + kind.value.encode() + b"\x00" + public_bytes)
    return digest.hexdigest()[:32]


def short_fingerprint(key_id: str) -> str:
    """A form to read aloud during enrolment: the first 80 bits in base32, groups of four."""
    text = base64.b32encode(bytes.fromhex(key_id)[:10]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


# --- strict import of the curve25519 halves ----------------------------------------------
#
# The library loads any 32 bytes as an Ed25519 or X25519 public key. Import is stricter: every
# key has one encoding (so one key id), and no key is a low-order point, which would let any
# signature verify (Ed25519) or make every shared secret zero (X25519).

_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
# y of the 8 points of the Ed25519 8-torsion subgroup: the identity (1), order 2 (-1), order 4
# (0, two points) and order 8 (the four points with y = +-2707...022)
_ED_ORDER8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_ED_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _ED_ORDER8_Y, _P - _ED_ORDER8_Y})
# u of the X25519 points of order 1, 2, 4 and 8 (RFC 7748: u is read mod p, top bit ignored)
_X_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


def check_ed25519_public(raw: bytes, what: str) -> None:
    """Refuse an Ed25519 public key that is low-order, not canonically encoded, or off the curve."""
    value = int.from_bytes(raw, "little")
    y = value & ((1 << 255) - 1)
    if y % _P in _ED_SMALL_ORDER_Y:
        raise SmallOrderPublicKey(f"{what} is a point of small order (the identity or an 8-torsion point)")
    if y >= _P:
        raise NonCanonicalPublicKey(f"{what} is not canonically encoded (its y is not below 2^255 - 19)")
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x2 = u * pow(v, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if x * x % _P != x2 and (x * _SQRT_M1) ** 2 % _P != x2:
        raise InvalidPublicKey(f"{what} is not a point on the Ed25519 curve")


def check_x25519_public(raw: bytes, what: str) -> None:
    """Refuse an X25519 public key of small order (in any encoding) or not canonically encoded."""
    value = int.from_bytes(raw, "little")
    if (value & ((1 << 255) - 1)) % _P in _X_SMALL_ORDER_U:
        raise SmallOrderPublicKey(f"{what} is a point of small order: every shared secret would be zero")
    if value >= _P:
        raise NonCanonicalPublicKey(f"{what} is not canonically encoded (its u is not below 2^255 - 19)")


# --- composite signature ----------------------------------------------------------------

COMPOSITE_PREFIX = b"CompositeAlgorithmSignatures2025"
COMPOSITE_LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"
MLDSA65_SIGNATURE_SIZE = 3309
COMPOSITE_SIGNATURE_SIZE = MLDSA65_SIGNATURE_SIZE + 64


def composite_message(message: bytes, context: bytes) -> bytes:
    """M' of the draft: Prefix || Label || len(ctx) || ctx || SHA-512(M)."""
    if len(context) > 255:
        raise ValueError("composite signature context is longer than 255 bytes")
    return (
        COMPOSITE_PREFIX
        + COMPOSITE_LABEL
        + bytes([len(context)])
        + context
        + hashlib.sha512(message).digest()
    )


@dataclass(frozen=True)
class SigningPublicKey:
    raw: bytes = field(repr=False)
    _mldsa: mldsa.MLDSA65PublicKey = field(repr=False, compare=False)
    _ed: ed25519.Ed25519PublicKey = field(repr=False, compare=False)
    key_id: str = ""

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningPublicKey:
        if len(raw) != PUBLIC_KEY_SIZES[KeyKind.SIGNING]:
            raise InvalidPublicKey(
                f"a signing public key is {PUBLIC_KEY_SIZES[KeyKind.SIGNING]} bytes, got {len(raw)}"
            )
        try:
            ml = mldsa.MLDSA65PublicKey.from_public_bytes(raw[:1952])
            ed = ed25519.Ed25519PublicKey.from_public_bytes(raw[1952:])
        except ValueError as exc:
            raise InvalidPublicKey("the signing public key is not a valid ML-DSA-65 + Ed25519 key") from exc
        check_ed25519_public(raw[1952:], "the Ed25519 half of the signing public key")
        return cls(raw, ml, ed, compute_key_id(KeyKind.SIGNING, raw))

    def verify(self, signature: bytes, message: bytes, context: bytes) -> None:
        """Raise BadSignature unless both the ML-DSA-65 and the Ed25519 halves verify."""
        if len(signature) != COMPOSITE_SIGNATURE_SIZE:
            raise BadSignature(f"signature is {len(signature)} bytes, not {COMPOSITE_SIGNATURE_SIZE}")
        m_prime = composite_message(message, context)
        try:
            self._mldsa.verify(signature[:MLDSA65_SIGNATURE_SIZE], m_prime, COMPOSITE_LABEL)
            self._ed.verify(signature[MLDSA65_SIGNATURE_SIZE:], m_prime)
        except InvalidSignature as exc:
            raise BadSignature("the originator's signature does not verify") from exc


@dataclass(frozen=True)
class SigningPrivateKey:
    seed: bytes = field(repr=False)
    _mldsa: mldsa.MLDSA65PrivateKey = field(repr=False, compare=False)
    _ed: ed25519.Ed25519PrivateKey = field(repr=False, compare=False)
    public_key: SigningPublicKey = field(compare=False)

    @classmethod
    def generate(cls) -> SigningPrivateKey:
        return cls.from_seed(secrets.token_bytes(64))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningPrivateKey:
        """64 bytes: the ML-DSA-65 seed followed by the Ed25519 private key."""
        if len(seed) != PRIVATE_KEY_SIZES[KeyKind.SIGNING]:
            raise InvalidPrivateKey(f"a signing private key is 64 bytes, got {len(seed)}")
        ml = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed[:32])
        ed = ed25519.Ed25519PrivateKey.from_private_bytes(seed[32:])
        public = SigningPublicKey.from_bytes(
            ml.public_key().public_bytes_raw() + ed.public_key().public_bytes_raw()
        )
        return cls(seed, ml, ed, public)

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def sign(self, message: bytes, context: bytes) -> bytes:
        m_prime = composite_message(message, context)
        return self._mldsa.sign(m_prime, COMPOSITE_LABEL) + self._ed.sign(m_prime)


# --- encryption (X-Wing) --------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptionPublicKey:
    raw: bytes = field(repr=False)
    hpke_key: hpke.MLKEM768X25519PublicKey = field(repr=False, compare=False)
    key_id: str = ""

    @classmethod
    def from_bytes(cls, raw: bytes) -> EncryptionPublicKey:
        if len(raw) != PUBLIC_KEY_SIZES[KeyKind.ENCRYPTION]:
            raise InvalidPublicKey(
                f"an encryption public key is {PUBLIC_KEY_SIZES[KeyKind.ENCRYPTION]} bytes, got {len(raw)}"
            )
        try:
            # The library reports any malformed ML-KEM key as a length error; say what it is.
            ml = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184])
            xk = x25519.X25519PublicKey.from_public_bytes(raw[1184:])
        except ValueError as exc:
            raise InvalidPublicKey("the encryption public key is not a valid X-Wing key") from exc
        check_x25519_public(raw[1184:], "the X25519 half of the encryption public key")
        return cls(raw, hpke.MLKEM768X25519PublicKey(ml, xk), compute_key_id(KeyKind.ENCRYPTION, raw))


@dataclass(frozen=True)
class EncryptionPrivateKey:
    seed: bytes = field(repr=False)
    hpke_key: hpke.MLKEM768X25519PrivateKey = field(repr=False, compare=False)
    public_key: EncryptionPublicKey = field(compare=False)

    @classmethod
    def generate(cls) -> EncryptionPrivateKey:
        return cls.from_seed(secrets.token_bytes(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> EncryptionPrivateKey:
        """X-Wing key generation from its 32-byte seed (draft-connolly-cfrg-xwing-kem)."""
        if len(seed) != PRIVATE_KEY_SIZES[KeyKind.ENCRYPTION]:
            raise InvalidPrivateKey(f"an encryption private key is 32 bytes, got {len(seed)}")
        expanded = hashlib.shake_256(seed).digest(96)
        ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        xk = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        public = EncryptionPublicKey.from_bytes(
            ml.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        )
        return cls(seed, hpke.MLKEM768X25519PrivateKey(ml, xk), public)

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


# --- API authentication (Ed25519) -----------------------------------------------------------


@dataclass(frozen=True)
class ApiPublicKey:
    raw: bytes = field(repr=False)
    ed_key: ed25519.Ed25519PublicKey = field(repr=False, compare=False)
    key_id: str = ""

    @classmethod
    def from_bytes(cls, raw: bytes) -> ApiPublicKey:
        if len(raw) != 32:
            raise InvalidPublicKey(f"an API public key is 32 bytes, got {len(raw)}")
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise InvalidPublicKey("the API public key is not a valid Ed25519 key") from exc
        check_ed25519_public(raw, "the API public key")
        return cls(raw, key, compute_key_id(KeyKind.API, raw))


@dataclass(frozen=True)
class ApiPrivateKey:
    seed: bytes = field(repr=False)
    ed_key: ed25519.Ed25519PrivateKey = field(repr=False, compare=False)
    public_key: ApiPublicKey = field(compare=False)

    @classmethod
    def generate(cls) -> ApiPrivateKey:
        return cls.from_seed(secrets.token_bytes(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> ApiPrivateKey:
        if len(seed) != 32:
            raise InvalidPrivateKey(f"an API private key is 32 bytes, got {len(seed)}")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        return cls(seed, key, ApiPublicKey.from_bytes(key.public_key().public_bytes_raw()))

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


PublicKey = SigningPublicKey | EncryptionPublicKey | ApiPublicKey
PrivateKey = SigningPrivateKey | EncryptionPrivateKey | ApiPrivateKey

PUBLIC_KEY_TYPES: dict[KeyKind, type[SigningPublicKey] | type[EncryptionPublicKey] | type[ApiPublicKey]] = {
    KeyKind.SIGNING: SigningPublicKey,
    KeyKind.ENCRYPTION: EncryptionPublicKey,
    KeyKind.API: ApiPublicKey,
}
PRIVATE_KEY_TYPES: dict[
    KeyKind, type[SigningPrivateKey] | type[EncryptionPrivateKey] | type[ApiPrivateKey]
] = {
    KeyKind.SIGNING: SigningPrivateKey,
    KeyKind.ENCRYPTION: EncryptionPrivateKey,
    KeyKind.API: ApiPrivateKey,
}


def kind_of(key: PublicKey | PrivateKey) -> KeyKind:
    if isinstance(key, SigningPublicKey | SigningPrivateKey):
        return KeyKind.SIGNING
    if isinstance(key, EncryptionPublicKey | EncryptionPrivateKey):
        return KeyKind.ENCRYPTION
    return KeyKind.API
