"""C2SP signed notes, checkpoints and cosignatures (the transparency log's signed formats).

Follows c2sp.org/signed-note (v1.0.0), c2sp.org/tlog-checkpoint (v1.0.0) and
c2sp.org/tlog-cosignature. A note is text ending in a newline, a blank line, then one or
more lines `— <key name> base64(key ID || signature)`; it is strict UTF-8 with no control
character but the newline. A key ID is the first 4 bytes (big-endian uint32) of
SHA-256(key name || 0x0A || signature type || public key), and a verifier key ("vkey") is
`<name>+<hex key ID>+base64(signature type || public key)`.

Signature types used here:

- 0x01 Ed25519 over the note text (signed-note).
- 0xff || b"msmt/ml-dsa-65/note/v1": the broker log's post-quantum signature. The type is
  the 0xff escape of signed-note followed by that 22-byte ASCII identifier; the signature
  is ML-DSA-65 (FIPS 204, pure) over the note text with the identifier as the FIPS 204
  context string, and the public key is the 1952-byte ML-DSA-65 key. Our clients accept a
  checkpoint only when both the Ed25519 and this line of the log verify (`open_checkpoint`).
- 0x04 Ed25519 `cosignature/v1`: Ed25519 over "cosignature/v1\\ntime <t>\\n" + the
  checkpoint text; signature bytes are the u64 big-endian timestamp || the 64-byte signature.
- 0x06 ML-DSA-44 `subtree/v1` cosignature: ML-DSA-44 (empty context) over the binary
  `cosigned_message` of tlog-cosignature with start 0 and end = size; signature bytes are
  the u64 timestamp || the 2420-byte signature. That message does not cover extension
  lines, so a checkpoint with extension lines is neither cosigned nor accepted this way.

Verification follows signed-note: lines from unknown keys (name and key ID) are ignored, a
line from a known key that fails rejects the whole note, and a note with no verified line
from a known key is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from .errors import (
    BadCosignature,
    BadNoteSignature,
    LogError,
    MalformedCheckpoint,
    MalformedNote,
    MalformedVerifierKey,
    UnverifiedNote,
)
from .merkle import HASH_SIZE

MAX_SIGNATURES = 64  # signed-note: verifiers must accept at least 16
MAX_TIMESTAMP = 2**63 - 1
MAX_TREE_SIZE = 2**63 - 1  # what Go's int64-based tlog code can represent

ED25519 = b"\x01"
ED25519_COSIGNATURE = b"\x04"
MLDSA44_COSIGNATURE = b"\x06"
MLDSA65_NOTE_IDENTIFIER = b"msmt/ml-dsa-65/note/v1"
MLDSA65_NOTE = b"\xff" + MLDSA65_NOTE_IDENTIFIER

ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
MLDSA44_PUBLIC_KEY_SIZE = 1312
MLDSA44_SIGNATURE_SIZE = 2420
MLDSA65_PUBLIC_KEY_SIZE = 1952
MLDSA65_SIGNATURE_SIZE = 3309
TIMESTAMP_SIZE = 8

_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
# Unicode White_Space: the set Go's unicode.IsSpace tests, which the reference
# implementation (golang.org/x/mod/sumdb/note) uses for key names.
_WHITE_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}", re.ASCII)
_U64 = struct.Struct(">Q")


# --- encoding helpers ----------------------------------------------------------------------


# Strict standard base64: the alphabet, padding, and the one canonical encoding.
def _b64decode(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _is_utf8(text: str) -> bool:
    # A Python str may hold lone surrogates, which have no UTF-8 encoding.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode space, no '+', no control character."""
    return (
        bool(name)
        and not _WHITE_SPACE.search(name)
        and "+" not in name
        and not _CONTROL.search(name)
        and _is_utf8(name)
    )


def key_id(name: str, type_and_key: bytes) -> int:
    """SHA-256(name || 0x0A || signature type || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + type_and_key).digest()
    return int.from_bytes(digest[:4], "big")


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("the note text does not end in a newline")
    if _CONTROL.search(text) or not _is_utf8(text):
        raise MalformedNote("the note text contains a control character other than newline or is not UTF-8")


# --- verifier keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierKey:
    """A parsed vkey: `<name>+<hex key ID>+base64(signature type || public key)`."""

    name: str
    key_id: int
    type_and_key: bytes = field(repr=False)

    def __str__(self) -> str:
        return format_vkey(self.name, self.type_and_key)


def format_vkey(name: str, type_and_key: bytes) -> str:
    """The vkey text of a key, with its key ID computed as signed-note recommends."""
    if not is_valid_key_name(name):
        raise MalformedVerifierKey(f"{name!r} is not a valid key name")
    return f"{name}+{key_id(name, type_and_key):08x}+{_b64encode(type_and_key)}"


def parse_vkey(text: str) -> VerifierKey:
    """Parse a vkey's three parts; the key ID is not checked here (see `verifier_from_vkey`)."""
    parts = text.split("+", 2)  # base64 has "+" too; name and key ID do not
    if len(parts) != 3:
        raise MalformedVerifierKey("a verifier key is <name>+<hex key ID>+<base64 key>")
    name, hex_id, b64 = parts
    if not is_valid_key_name(name):
        raise MalformedVerifierKey(f"{name!r} is not a valid key name")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise MalformedVerifierKey("the key ID of a verifier key is 8 lowercase hex digits")
    raw = _b64decode(b64)
    if not raw:
        raise MalformedVerifierKey("the key of a verifier key is not canonical base64")
    return VerifierKey(name, int(hex_id, 16), raw)


def verifier_from_vkey(text: str) -> NoteVerifier:
    """A verifier for a vkey of type 0x01, 0x04, 0x06 or the ML-DSA-65 note type."""
    vkey = parse_vkey(text)
    kind, raw = vkey.type_and_key[:1], vkey.type_and_key[1:]
    verifier: NoteVerifier
    try:
        if kind == ED25519:
            verifier = Ed25519NoteVerifier(vkey.name, raw)
        elif kind == ED25519_COSIGNATURE:
            verifier = Ed25519CosignatureVerifier(vkey.name, raw)
        elif kind == MLDSA44_COSIGNATURE:
            verifier = MLDSA44CosignatureVerifier(vkey.name, raw)
        elif vkey.type_and_key.startswith(MLDSA65_NOTE):
            verifier = MLDSA65NoteVerifier(vkey.name, vkey.type_and_key[len(MLDSA65_NOTE) :])
        else:
            raise MalformedVerifierKey(f"signature type 0x{vkey.type_and_key[0]:02x} is not supported")
    except ValueError as exc:
        raise MalformedVerifierKey(f"the key of {vkey.name} is not valid for its signature type") from exc
    if verifier.key_id != vkey.key_id:
        raise MalformedVerifierKey(f"the key ID {vkey.key_id:08x} of {vkey.name} does not match its key")
    return verifier


# --- signed notes --------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID, and the signature bytes after the key ID."""

    name: str
    key_id: int
    signature: bytes = field(repr=False)

    def to_line(self) -> str:
        if not is_valid_key_name(self.name):
            raise MalformedNote(f"{self.name!r} is not a valid key name")
        if not 0 <= self.key_id < 2**32:
            raise MalformedNote("a key ID is a 32-bit unsigned integer")
        if not self.signature:
            raise MalformedNote(f"the signature of {self.name} is empty")
        return (
            f"{_SIGNATURE_PREFIX}{self.name} {_b64encode(self.key_id.to_bytes(4, 'big') + self.signature)}\n"
        )


def parse_signature_lines(block: str) -> list[NoteSignature]:
    """Signature lines, each ending in a newline (a note's last block, or a witness's answer)."""
    if not block:
        raise MalformedNote("the note has no signature line")
    if not block.endswith("\n"):
        raise MalformedNote("the last signature line does not end in a newline")
    if _CONTROL.search(block):
        raise MalformedNote("a signature line contains a control character")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(
            f"the note has {len(lines)} signature lines, more than the {MAX_SIGNATURES} allowed"
        )
    signatures = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(_SIGNATURE_PREFIX):
            raise MalformedNote(f"signature line {number} does not start with an em dash and a space")
        name, _, b64 = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        if not is_valid_key_name(name):
            raise MalformedNote(f"signature line {number} has an invalid key name")
        raw = _b64decode(b64)
        if raw is None or len(raw) < 5:
            raise MalformedNote(f"signature line {number} is not a base64 key ID and signature")
        signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return signatures


def parse_note(note: bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines, checking only the format."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNote("the note is not valid UTF-8") from exc
    if _CONTROL.search(decoded):
        raise MalformedNote("the note contains a control character other than newline")
    # The text may hold blank lines itself: the last blank line is the separator.
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNote("no blank line separates the note text from its signatures")
    return decoded[: split + 1], parse_signature_lines(decoded[split + 2 :])


def format_note(text: str, signatures: Sequence[NoteSignature]) -> bytes:
    """The note's bytes: text, a blank line, then one line per signature."""
    _check_note_text(text)
    if not signatures:
        raise MalformedNote("a note needs at least one signature")
    if len(signatures) > MAX_SIGNATURES:
        raise MalformedNote(f"a note has at most {MAX_SIGNATURES} signatures")
    return (text + "\n" + "".join(s.to_line() for s in signatures)).encode("utf-8")


class NoteVerifier(Protocol):
    """A known key: `verify` checks the signature bytes (after the key ID) over the note text."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    @property
    def vkey(self) -> str: ...

    def verify(self, text: bytes, signature: bytes) -> bool: ...


def open_note(
    note: bytes, verifiers: Iterable[NoteVerifier], *, require_all: bool = False
) -> tuple[str, list[NoteSignature]]:
    """Parse and verify a note; return its text and the verified signatures (one per key).

    Raises BadNoteSignature if a line from a known key does not verify, and UnverifiedNote
    if no known key signed it or, with `require_all`, if any of `verifiers` did not.
    """
    known: dict[tuple[str, int], NoteVerifier] = {}
    for verifier in verifiers:
        previous = known.setdefault((verifier.name, verifier.key_id), verifier)
        if previous is not verifier and previous.vkey != verifier.vkey:
            raise ValueError(f"two different keys are named {verifier.name}+{verifier.key_id:08x}")
    text, signatures = parse_note(note)
    encoded = text.encode("utf-8")
    verified: dict[tuple[str, int], NoteSignature] = {}
    for signature in signatures:
        ref = (signature.name, signature.key_id)
        key = known.get(ref)
        if key is None:
            continue
        if not key.verify(encoded, signature.signature):
            raise BadNoteSignature(
                f"the signature of {signature.name}+{signature.key_id:08x} does not verify"
            )
        verified.setdefault(ref, signature)
    if not verified:
        raise UnverifiedNote("the note has no valid signature from a known key")
    if require_all:
        for ref in known:
            if ref not in verified:
                raise UnverifiedNote(f"the note has no signature from {ref[0]}+{ref[1]:08x}")
    return text, list(verified.values())


# --- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint note text: origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (
            not self.origin
            or "\n" in self.origin
            or _CONTROL.search(self.origin)
            or not _is_utf8(self.origin)
        ):
            raise MalformedCheckpoint("the origin is empty or holds a control character")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedCheckpoint(f"the tree size is not an integer from 0 to {MAX_TREE_SIZE}")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedCheckpoint(f"the root hash is {len(self.root_hash)} bytes, not {HASH_SIZE}")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL.search(line) or not _is_utf8(line):
                raise MalformedCheckpoint("an extension line is empty or holds a control character")

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint's note text strictly (decimal size, canonical base64 root)."""
        if not text.endswith("\n"):
            raise MalformedCheckpoint("the checkpoint text does not end in a newline")
        if _CONTROL.search(text):
            raise MalformedCheckpoint("the checkpoint text contains a control character other than newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedCheckpoint("a checkpoint has an origin, a size and a root hash line")
        origin, size, root_b64, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise MalformedCheckpoint("the tree size is not a decimal number without leading zeros")
        root_hash = _b64decode(root_b64)
        if root_hash is None:
            raise MalformedCheckpoint("the root hash is not canonical base64")
        if len(size) > len(str(MAX_TREE_SIZE)):
            raise MalformedCheckpoint(f"the tree size is larger than {MAX_TREE_SIZE}")
        return cls(origin, int(size), root_hash, tuple(extensions))


def open_checkpoint(
    note: bytes, log_verifiers: Sequence[NoteVerifier], *, origin: str | None = None
) -> tuple[Checkpoint, list[NoteSignature]]:
    """A checkpoint signed by EVERY one of the log's keys (our log: Ed25519 and ML-DSA-65).

    Returns the checkpoint and all its signature lines, so that cosignatures can then be
    checked with `verify_cosignatures`. With `origin`, the checkpoint must be for that log.
    """
    if not log_verifiers:
        raise ValueError("open_checkpoint needs at least one log key")
    text, _ = open_note(note, log_verifiers, require_all=True)
    checkpoint = Checkpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise MalformedCheckpoint(f"the checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint, parse_note(note)[1]


# --- Ed25519 note signatures (0x01) --------------------------------------------------------


def _ed25519_public(raw: bytes) -> ed25519.Ed25519PublicKey:
    if len(raw) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes")
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def _ed25519_verify(key: ed25519.Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Ed25519NoteVerifier:
    name: str
    public_key: bytes = field(repr=False)
    key_id: int = field(init=False)
    _key: ed25519.Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", _ed25519_public(self.public_key))
        object.__setattr__(self, "key_id", key_id(self.name, ED25519 + self.public_key))

    @property
    def vkey(self) -> str:
        return format_vkey(self.name, ED25519 + self.public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        return len(signature) == ED25519_SIGNATURE_SIZE and _ed25519_verify(self._key, signature, text)


@dataclass(frozen=True)
class Ed25519NoteSigner:
    name: str
    private_key: ed25519.Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Ed25519NoteSigner:
        return cls(name, ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def verifier(self) -> Ed25519NoteVerifier:
        return Ed25519NoteVerifier(self.name, self.private_key.public_key().public_bytes_raw())

    def sign(self, text: str) -> NoteSignature:
        _check_note_text(text)
        return NoteSignature(self.name, self.verifier.key_id, self.private_key.sign(text.encode("utf-8")))


# --- ML-DSA-65 note signatures (0xff || MLDSA65_NOTE_IDENTIFIER) ---------------------------


@dataclass(frozen=True)
class MLDSA65NoteVerifier:
    name: str
    public_key: bytes = field(repr=False)
    key_id: int = field(init=False)
    _key: mldsa.MLDSA65PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", mldsa.MLDSA65PublicKey.from_public_bytes(self.public_key))
        object.__setattr__(self, "key_id", key_id(self.name, MLDSA65_NOTE + self.public_key))

    @property
    def vkey(self) -> str:
        return format_vkey(self.name, MLDSA65_NOTE + self.public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != MLDSA65_SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, text, MLDSA65_NOTE_IDENTIFIER)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class MLDSA65NoteSigner:
    name: str
    private_key: mldsa.MLDSA65PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> MLDSA65NoteSigner:
        """From the 32-byte FIPS 204 key generation seed."""
        return cls(name, mldsa.MLDSA65PrivateKey.from_seed_bytes(seed))

    @property
    def verifier(self) -> MLDSA65NoteVerifier:
        return MLDSA65NoteVerifier(self.name, self.private_key.public_key().public_bytes_raw())

    def sign(self, text: str) -> NoteSignature:
        _check_note_text(text)
        signature = self.private_key.sign(text.encode("utf-8"), MLDSA65_NOTE_IDENTIFIER)
        return NoteSignature(self.name, self.verifier.key_id, signature)


# --- cosignatures ----------------------------------------------------------------------------


def cosignature_v1_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What an Ed25519 cosignature (0x04) signs: header, time line, whole checkpoint text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise BadCosignature(f"a cosignature timestamp is from 0 to {MAX_TIMESTAMP}")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def subtree_v1_message(
    cosigner: str, timestamp: int, origin: str, start: int, end: int, root_hash: bytes
) -> bytes:
    """The `cosigned_message` an ML-DSA-44 cosignature (0x06) signs, in TLS encoding."""
    name, log = cosigner.encode("utf-8"), origin.encode("utf-8")
    if not 1 <= len(name) <= 255 or not 1 <= len(log) <= 255:
        raise BadCosignature(
            "an ML-DSA-44 cosignature covers a cosigner name and an origin of 1 to 255 bytes"
        )
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise BadCosignature(f"a cosignature timestamp is from 0 to {MAX_TIMESTAMP}")
    if not 0 <= start <= end < 2**64:
        raise BadCosignature(f"[{start}, {end}) is not a range of a tree")
    if start and timestamp:
        raise BadCosignature("a subtree cosignature with a non-zero start has timestamp 0")
    if len(root_hash) != HASH_SIZE:
        raise BadCosignature(f"the hash is {len(root_hash)} bytes, not {HASH_SIZE}")
    return (
        b"subtree/v1\n\x00"
        + bytes([len(name)])
        + name
        + _U64.pack(timestamp)
        + bytes([len(log)])
        + log
        + _U64.pack(start)
        + _U64.pack(end)
        + root_hash
    )


def cosignature_timestamp(signature: NoteSignature) -> int:
    """The timestamp that starts a cosignature's signature bytes."""
    if len(signature.signature) < TIMESTAMP_SIZE:
        raise BadCosignature(f"the cosignature of {signature.name} is too short for a timestamp")
    return int(_U64.unpack_from(signature.signature)[0])


class CosignatureVerifier(NoteVerifier, Protocol):
    def verify_cosignature(self, checkpoint: Checkpoint, signature: bytes) -> int:
        """Return the cosignature's timestamp; raise BadCosignature if it does not verify."""
        ...


def _split_timestamp(name: str, signature: bytes, size: int) -> tuple[int, bytes]:
    if len(signature) != TIMESTAMP_SIZE + size:
        raise BadCosignature(
            f"the cosignature of {name} is {len(signature)} bytes, not {TIMESTAMP_SIZE + size}"
        )
    timestamp = int(_U64.unpack_from(signature)[0])
    if timestamp > MAX_TIMESTAMP:
        raise BadCosignature(f"the cosignature of {name} has a timestamp above 2^63 - 1")
    return timestamp, signature[TIMESTAMP_SIZE:]


def _verify_text(verifier: CosignatureVerifier, text: bytes, signature: bytes) -> bool:
    try:
        verifier.verify_cosignature(Checkpoint.parse(text.decode("utf-8")), signature)
    except (LogError, UnicodeDecodeError):
        return False
    return True


@dataclass(frozen=True)
class Ed25519CosignatureVerifier:
    name: str
    public_key: bytes = field(repr=False)
    key_id: int = field(init=False)
    _key: ed25519.Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", _ed25519_public(self.public_key))
        object.__setattr__(self, "key_id", key_id(self.name, ED25519_COSIGNATURE + self.public_key))

    @property
    def vkey(self) -> str:
        return format_vkey(self.name, ED25519_COSIGNATURE + self.public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        return _verify_text(self, text, signature)

    def verify_cosignature(self, checkpoint: Checkpoint, signature: bytes) -> int:
        timestamp, sig = _split_timestamp(self.name, signature, ED25519_SIGNATURE_SIZE)
        if not _ed25519_verify(self._key, sig, cosignature_v1_message(checkpoint.to_text(), timestamp)):
            raise BadCosignature(f"the cosignature of {self.name} does not verify")
        return timestamp


@dataclass(frozen=True)
class Ed25519Cosigner:
    name: str
    private_key: ed25519.Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Ed25519Cosigner:
        return cls(name, ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def verifier(self) -> Ed25519CosignatureVerifier:
        return Ed25519CosignatureVerifier(self.name, self.private_key.public_key().public_bytes_raw())

    def cosign(self, checkpoint: Checkpoint, timestamp: int) -> NoteSignature:
        """A `cosignature/v1` line for `checkpoint` at `timestamp` (POSIX seconds)."""
        sig = self.private_key.sign(cosignature_v1_message(checkpoint.to_text(), timestamp))
        return NoteSignature(self.name, self.verifier.key_id, _U64.pack(timestamp) + sig)


@dataclass(frozen=True)
class MLDSA44CosignatureVerifier:
    name: str
    public_key: bytes = field(repr=False)
    key_id: int = field(init=False)
    _key: mldsa.MLDSA44PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", mldsa.MLDSA44PublicKey.from_public_bytes(self.public_key))
        object.__setattr__(self, "key_id", key_id(self.name, MLDSA44_COSIGNATURE + self.public_key))

    @property
    def vkey(self) -> str:
        return format_vkey(self.name, MLDSA44_COSIGNATURE + self.public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        return _verify_text(self, text, signature)

    def verify_cosignature(self, checkpoint: Checkpoint, signature: bytes) -> int:
        if checkpoint.extensions:
            raise BadCosignature("an ML-DSA-44 cosignature does not cover extension lines")
        timestamp, sig = _split_timestamp(self.name, signature, MLDSA44_SIGNATURE_SIZE)
        message = subtree_v1_message(
            self.name, timestamp, checkpoint.origin, 0, checkpoint.size, checkpoint.root_hash
        )
        try:
            self._key.verify(sig, message)
        except InvalidSignature as exc:
            raise BadCosignature(f"the cosignature of {self.name} does not verify") from exc
        return timestamp


@dataclass(frozen=True)
class MLDSA44Cosigner:
    name: str
    private_key: mldsa.MLDSA44PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> MLDSA44Cosigner:
        """From the 32-byte FIPS 204 key generation seed."""
        return cls(name, mldsa.MLDSA44PrivateKey.from_seed_bytes(seed))

    @property
    def verifier(self) -> MLDSA44CosignatureVerifier:
        return MLDSA44CosignatureVerifier(self.name, self.private_key.public_key().public_bytes_raw())

    def cosign(self, checkpoint: Checkpoint, timestamp: int) -> NoteSignature:
        """A `subtree/v1` line for the whole tree of `checkpoint` at `timestamp`."""
        if checkpoint.extensions:
            raise BadCosignature("an ML-DSA-44 cosignature cannot cover extension lines")
        message = subtree_v1_message(
            self.name, timestamp, checkpoint.origin, 0, checkpoint.size, checkpoint.root_hash
        )
        return NoteSignature(
            self.name, self.verifier.key_id, _U64.pack(timestamp) + self.private_key.sign(message)
        )


def verify_cosignatures(
    checkpoint: Checkpoint, signatures: Iterable[NoteSignature], cosigners: Iterable[CosignatureVerifier]
) -> dict[str, int]:
    """Cosigner name -> timestamp for each known cosigner with a valid line.

    Lines from unknown keys are ignored; a known cosigner's line that does not verify
    raises BadCosignature. Quorum (how many cosigners a client demands) is the caller's.
    """
    known = {(c.name, c.key_id): c for c in cosigners}
    valid: dict[str, int] = {}
    for signature in signatures:
        cosigner = known.get((signature.name, signature.key_id))
        if cosigner is not None:
            valid[cosigner.name] = cosigner.verify_cosignature(checkpoint, signature.signature)
    return valid
