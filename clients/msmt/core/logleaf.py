"""What the transparency log commits to: typed leaves with one canonical encoding each.

A leaf is canonical JSON (the protocol's profile) and its RFC 9162 leaf hash is
SHA-256(0x00 || leaf). Three types:

- `item`: an accepted item, its envelope digest, its originator and every delivery it made
  (recipient and that recipient's inbox sequence number), so a recipient can prove which
  entry of its inbox an item is, and an originator that each recipient got one;
- `directory`: a member-signed directory entry, by position and digest;
- `policy`: a sharing-policy version, by number and document digest.

The log's signing key and the witnesses clients require are named in the member-signed
root (`extra.log`), so the operator cannot swap them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import canonical
from .errors import LeafMismatch, LogRollback, MalformedCheckpoint, MsmtError, NotWitnessed
from .markings import COUNTRY_RE
from .merkle import leaf_hash, verify_consistency, verify_inclusion
from .note import (
    Checkpoint,
    CosignatureVerifier,
    Ed25519NoteSigner,
    MLDSA65NoteSigner,
    NoteSignature,
    NoteVerifier,
    open_checkpoint,
    verifier_from_vkey,
    verify_cosignatures,
)

LEAF_TYPES = ("item", "directory", "policy")


def item_leaf(item_id: str, envelope_sha256: str, originator: str, deliveries: Mapping[str, int]) -> bytes:
    return canonical.encode(
        {
            "type": "item",
            "item_id": item_id,
            "envelope_sha256": envelope_sha256,
            "originator": originator,
            "deliveries": [{"recipient": r, "seq": deliveries[r]} for r in sorted(deliveries)],
        }
    )


def directory_leaf(seq: int, entry_sha256: str) -> bytes:
    return canonical.encode({"type": "directory", "seq": seq, "entry_sha256": entry_sha256})


def policy_leaf(version: int, document_sha256: str) -> bytes:
    return canonical.encode({"type": "policy", "version": version, "document_sha256": document_sha256})


def hash_of(leaf: bytes) -> bytes:
    return leaf_hash(leaf)


def parse_item_leaf(leaf: bytes) -> tuple[str, str, str, dict[str, int]]:
    """(item id, envelope digest, originator, {recipient: seq}) of an item leaf, which must be
    exactly what `item_leaf` makes of those values (no duplicate, extra or mistyped field)."""
    try:
        value: Any = canonical.decode(leaf)
        if not isinstance(value, dict) or value.get("type") != "item":
            raise LeafMismatch("the log leaf is not an item leaf")
        deliveries = {str(d["recipient"]): d["seq"] for d in value["deliveries"]}
        if not all(COUNTRY_RE.fullmatch(r) for r in deliveries) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in deliveries.values()
        ):
            raise LeafMismatch("an item leaf names a delivery without a valid recipient or inbox number")
        fields = (str(value["item_id"]), str(value["envelope_sha256"]), str(value["originator"]), deliveries)
    except LeafMismatch:
        raise
    except (MsmtError, KeyError, TypeError, ValueError) as exc:
        raise LeafMismatch(f"the log leaf is not a well-formed item leaf: {exc}") from exc
    if item_leaf(*fields) != leaf:
        raise LeafMismatch("the item leaf is not in its one canonical form (duplicate or extra fields)")
    return fields


def envelope_digest(envelope: bytes) -> str:
    return hashlib.sha256(envelope).hexdigest()


@dataclass(frozen=True)
class LogIdentity:
    """The log as the members' root pins it: its origin line, its note verifier keys, the
    member witnesses (country, cosignature vkey) and how many distinct members must cosign."""

    origin: str
    vkeys: tuple[str, ...]
    witnesses: tuple[tuple[str, str], ...] = ()
    threshold: int = 0

    @classmethod
    def from_root_extra(cls, extra: Mapping[str, Any]) -> LogIdentity | None:
        """The pinned log, or None when the root pins none; a malformed one is an error, never
        silently "no log"."""
        if "log" not in extra:
            return None
        log = extra["log"]
        try:
            assert isinstance(log, dict) and set(log) <= {"origin", "vkeys", "witnesses", "threshold"}
            assert isinstance(log["origin"], str) and isinstance(log["vkeys"], list) and log["vkeys"]
            assert all(isinstance(v, str) for v in log["vkeys"])
            witnesses = log.get("witnesses", [])
            assert isinstance(witnesses, list)
            pairs = tuple((w["country"], w["vkey"]) for w in witnesses)
            assert all(
                isinstance(c, str) and COUNTRY_RE.fullmatch(c) and isinstance(v, str) for c, v in pairs
            )
            threshold = log.get("threshold", 0)
            assert isinstance(threshold, int) and not isinstance(threshold, bool)
            countries = {c for c, _ in pairs}
            # more than half of the witnesses must cosign, or two halves could each be shown a history
            assert 0 <= threshold <= len(countries) and (not pairs or 2 * threshold > len(pairs))
        except (AssertionError, KeyError, TypeError) as exc:
            raise MalformedCheckpoint(
                "the members' root pins a log, but its `extra.log` is malformed"
            ) from exc
        identity = cls(log["origin"], tuple(log["vkeys"]), pairs, threshold)
        identity.verifiers()  # every key parses
        identity.cosigners()
        return identity

    def to_root_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"origin": self.origin, "vkeys": list(self.vkeys)}
        if self.witnesses:
            extra["witnesses"] = [{"country": c, "vkey": v} for c, v in self.witnesses]
            extra["threshold"] = self.threshold
        return extra

    def with_witnesses(self, witnesses: Iterable[tuple[str, str]], threshold: int) -> LogIdentity:
        return LogIdentity(self.origin, self.vkeys, tuple(witnesses), threshold)

    def verifiers(self) -> list[NoteVerifier]:
        return [verifier_from_vkey(v) for v in self.vkeys]

    def cosigners(self) -> dict[tuple[str, int], tuple[str, CosignatureVerifier]]:
        """(witness name, key id) -> (its member country, its cosignature verifier); a witness
        may hold an Ed25519 and an ML-DSA-44 key under one name."""
        found: dict[tuple[str, int], tuple[str, CosignatureVerifier]] = {}
        for country, vkey in self.witnesses:
            verifier = verifier_from_vkey(vkey)
            if not hasattr(verifier, "verify_cosignature"):
                raise MalformedCheckpoint(f"the root's witness key for {country} is not a cosignature key")
            found[(verifier.name, verifier.key_id)] = (country, verifier)  # type: ignore[assignment]
        return found

    def witness_names(self) -> list[str]:
        return sorted({name for name, _ in self.cosigners()})


def witnessed_by(
    identity: LogIdentity, checkpoint: Checkpoint, signatures: Iterable[NoteSignature]
) -> set[str]:
    """The member countries whose witness validly cosigned `checkpoint`."""
    countries: set[str] = set()
    for country, verifier in identity.cosigners().values():
        if verify_cosignatures(checkpoint, signatures, [verifier]):
            countries.add(country)
    return countries


@dataclass(frozen=True)
class LogSigner:
    """The broker's log key: an Ed25519 line (for standard note verifiers and witnesses) and
    an ML-DSA-65 line; clients require both."""

    ed25519: Ed25519NoteSigner
    mldsa65: MLDSA65NoteSigner

    @classmethod
    def from_seed(cls, origin: str, seed: bytes) -> LogSigner:
        """64 bytes: the Ed25519 private key then the ML-DSA-65 seed."""
        if len(seed) != 64:
            raise ValueError("a log key seed is 64 bytes")
        return cls(
            Ed25519NoteSigner.from_seed(origin, seed[:32]), MLDSA65NoteSigner.from_seed(origin, seed[32:])
        )

    @property
    def origin(self) -> str:
        return self.ed25519.name

    def identity(self) -> LogIdentity:
        return LogIdentity(self.origin, (self.ed25519.verifier.vkey, self.mldsa65.verifier.vkey))

    def sign(self, text: str) -> Iterable[Any]:
        return (self.ed25519.sign(text), self.mldsa65.sign(text))


def accept_checkpoint(
    identity: LogIdentity, note: bytes, previous: Checkpoint | None, consistency: list[bytes] | None
) -> Checkpoint:
    """Verify a signed checkpoint against the pinned log and against the last one accepted.

    The log's every key must have signed it; it may not be smaller than `previous`, nor show
    another root for the same size, and a larger one must come with a consistency proof.
    """
    checkpoint, signatures = open_checkpoint(note, identity.verifiers(), origin=identity.origin)
    if identity.threshold:
        members = witnessed_by(identity, checkpoint, signatures)
        if len(members) < identity.threshold:
            raise NotWitnessed(
                f"the checkpoint of {checkpoint.size} entries is cosigned by {len(members)} member witness(es) "
                f"({', '.join(sorted(members)) or 'none'}); the members' root requires {identity.threshold}"
            )
    if previous is None:
        return checkpoint
    if checkpoint.size < previous.size:
        raise LogRollback(
            f"the log shows {checkpoint.size} entries, but this agency already verified {previous.size}: "
            "it went backwards"
        )
    if checkpoint.size == previous.size:
        if checkpoint.root_hash != previous.root_hash:
            raise LogRollback(f"the log shows two different trees of {checkpoint.size} entries: a split view")
        return checkpoint
    if consistency is None:
        raise LogRollback("a larger checkpoint came without a consistency proof")
    verify_consistency(previous.size, checkpoint.size, consistency, previous.root_hash, checkpoint.root_hash)
    return checkpoint


def check_item_leaf(
    leaf: bytes,
    *,
    item_id: str,
    envelope: bytes,
    originator: str,
    recipients: Iterable[str],
    own: tuple[str, int] | None,
) -> None:
    """The log's leaf describes exactly this item: its bytes, its originator, its recipients
    and (for a recipient) this recipient's inbox number."""
    got_id, digest, got_origin, deliveries = parse_item_leaf(leaf)
    problems = []
    if got_id != item_id:
        problems.append(f"item {got_id}")
    if digest != envelope_digest(envelope):
        problems.append("other envelope bytes")
    if got_origin != originator:
        problems.append(f"originator {got_origin}")
    if set(deliveries) != set(recipients):
        problems.append(f"recipients {', '.join(sorted(deliveries))}")
    if own is not None and deliveries.get(own[0]) != own[1]:
        problems.append(f"{own[0]}'s inbox entry {deliveries.get(own[0])}, not {own[1]}")
    if problems:
        raise LeafMismatch(f"the log's entry for item {item_id} says: {'; '.join(problems)}")


def check_inclusion(leaf: bytes, index: int, checkpoint: Checkpoint, proof: list[bytes]) -> None:
    verify_inclusion(hash_of(leaf), index, checkpoint.size, proof, checkpoint.root_hash)
