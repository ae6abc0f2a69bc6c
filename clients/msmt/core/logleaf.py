"""What the transparency log commits to: typed leaves with one canonical encoding each.

A leaf is canonical JSON (the protocol's profile) and its RFC 9162 leaf hash is
SHA-256(0x00 || leaf). Three types:

- `item`: an accepted item, its envelope digest, its originator and every delivery it made
  (recipient and that recipient's inbox sequence number), so a recipient can prove which
  entry of its inbox an item is, and an originator that each recipient got one;
- `directory`: a member-signed directory entry, by position and digest;
- `policy`: a sharing-policy version, by number and document digest;
- `inboxes`: the last leaf of every integration batch: a salted commitment to the size of every
  member's inbox after the batch (0 for an empty one), and the index of the previous `inboxes` leaf, so that a
  recipient can check that its inbox is complete at its end (the broker reveals each
  country's size and salt to that country only) without learning anyone else's.

The log's signing key and the witnesses clients require are named in the member-signed
root (`extra.log`), so the operator cannot swap them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import canonical
from .errors import (
    LeafMismatch,
    LogError,
    LogRollback,
    MalformedCheckpoint,
    MsmtError,
    NotWitnessed,
)
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

LEAF_TYPES = ("item", "directory", "policy", "inboxes")


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


class _Malformed(Exception):
    pass


def _require(condition: object) -> None:
    if not condition:
        raise _Malformed


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
            # explicit checks, not `assert`: they must hold under `python -O` too
            _require(isinstance(log, dict) and set(log) <= {"origin", "vkeys", "witnesses", "threshold"})
            _require(isinstance(log["origin"], str) and isinstance(log["vkeys"], list) and log["vkeys"])
            _require(all(isinstance(v, str) for v in log["vkeys"]))
            witnesses = log.get("witnesses", [])
            _require(isinstance(witnesses, list))
            pairs = tuple((w["country"], w["vkey"]) for w in witnesses)
            _require(
                all(isinstance(c, str) and COUNTRY_RE.fullmatch(c) and isinstance(v, str) for c, v in pairs)
            )
            threshold = log.get("threshold", 0)
            _require(isinstance(threshold, int) and not isinstance(threshold, bool))
            countries = {c for c, _ in pairs}
            # more than half of the witnesses must cosign, or two halves could each be shown a history
            _require(0 <= threshold <= len(countries) and (not pairs or 2 * threshold > len(pairs)))
        except (_Malformed, KeyError, TypeError) as exc:
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
    envelope: bytes | None = None,
    envelope_sha256: str | None = None,
    originator: str,
    recipients: Iterable[str],
    own: tuple[str, int] | None,
) -> None:
    """The log's leaf describes exactly this item: its bytes (`envelope`, or their
    `envelope_digest` as `envelope_sha256` when the caller hashed them already), its originator,
    its recipients and (for a recipient) this recipient's inbox number."""
    if (envelope is None) == (envelope_sha256 is None):
        raise TypeError("give exactly one of envelope and envelope_sha256")
    expected = envelope_digest(envelope) if envelope is not None else envelope_sha256
    got_id, digest, got_origin, deliveries = parse_item_leaf(leaf)
    problems = []
    if got_id != item_id:
        problems.append(f"item {got_id}")
    if digest != expected:
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


# --- inboxes leaves: every inbox is complete at its end (docs/protocol.md 14.2, 14.8) --------

INBOX_COMMITMENT_PREFIX = b"msmt inbox commitment v1\n"
SALT_BYTES = 16
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def inbox_commitment(country: str, size: int, salt: bytes) -> str:
    """hex SHA-256("msmt inbox commitment v1\\n" || country || "\\n" || decimal(size) || "\\n" || salt):
    hides `size` from anyone without the 16-byte `salt`, binds it for whoever has it."""
    if not COUNTRY_RE.fullmatch(country) or isinstance(size, bool) or size < 0 or len(salt) != SALT_BYTES:
        raise ValueError("an inbox commitment is for a country code, a size >= 0 and a 16-byte salt")
    message = INBOX_COMMITMENT_PREFIX + f"{country}\n{size}\n".encode("ascii") + salt
    return hashlib.sha256(message).hexdigest()


def opens_commitment(commitments: Iterable[str], country: str, size: int, salt: bytes) -> bool:
    """Whether (size, salt) as shown for `country` opens one of a leaf's commitments; an
    opening that is not even well formed opens none."""
    try:
        return inbox_commitment(country, size, salt) in commitments
    except ValueError:
        return False


def inboxes_leaf(previous: int, commitments: Iterable[str]) -> bytes:
    """The leaf: the previous inboxes leaf's log index (-1 for the first) and the commitments,
    sorted so that their order says nothing about whose is whose."""
    return canonical.encode({"type": "inboxes", "previous": previous, "commitments": sorted(commitments)})


def new_inboxes_leaf(
    previous: int, sizes: Mapping[str, int], random: Callable[[int], bytes] = os.urandom
) -> tuple[bytes, dict[str, bytes]]:
    """The leaf committing to `sizes` (every member's inbox, 0 for an empty one) with a fresh salt per country,
    and those salts (kept by the broker, each shown to its country only)."""
    salts = {country: random(SALT_BYTES) for country in sorted(sizes)}
    leaf = inboxes_leaf(previous, (inbox_commitment(c, sizes[c], salts[c]) for c in salts))
    return leaf, salts


@dataclass(frozen=True)
class InboxesLeaf:
    previous: int
    commitments: tuple[str, ...]


def parse_inboxes_leaf(leaf: bytes) -> InboxesLeaf:
    """An inboxes leaf, which must be exactly what `inboxes_leaf` makes of its values: its
    three members, `previous` an integer >= -1, distinct hex digests in ascending order."""
    try:
        value: Any = canonical.decode(leaf)
        if not isinstance(value, dict) or value.get("type") != "inboxes":
            raise LeafMismatch("the log leaf is not an inboxes leaf")
        if set(value) != {"type", "previous", "commitments"}:
            raise LeafMismatch("an inboxes leaf has exactly type, previous and commitments")
        previous, commitments = value["previous"], value["commitments"]
        if isinstance(previous, bool) or not isinstance(previous, int) or previous < -1:
            raise LeafMismatch("an inboxes leaf's previous is a log index or -1")
        if not isinstance(commitments, list) or not all(
            isinstance(c, str) and _HEX_DIGEST.fullmatch(c) for c in commitments
        ):
            raise LeafMismatch("an inboxes leaf's commitments are lowercase hex SHA-256 digests")
        if commitments != sorted(set(commitments)):
            raise LeafMismatch("an inboxes leaf's commitments are distinct and in ascending order")
    except LeafMismatch:
        raise
    except (MsmtError, KeyError, TypeError, ValueError) as exc:
        raise LeafMismatch(f"the log leaf is not a well-formed inboxes leaf: {exc}") from exc
    if inboxes_leaf(previous, commitments) != leaf:
        raise LeafMismatch("the inboxes leaf is not in its one canonical form")
    return InboxesLeaf(previous, tuple(commitments))


@dataclass(frozen=True)
class InboxesLink:
    """One inboxes leaf as the broker served it: its index, bytes, inclusion proof in the
    checkpoint's tree, and the caller's own (size, salt) in it, if the broker says it has one."""

    index: int
    leaf: bytes
    proof: Sequence[bytes]
    opening: tuple[int, bytes] | None = None


@dataclass(frozen=True)
class InboxesChain:
    """What a walk down the chain established: the findings (empty when all holds), the
    newest inboxes leaf (the checkpoint's last) and the size it commits to for the country."""

    findings: tuple[str, ...]
    index: int | None
    size: int
    leaves: dict[int, InboxesLeaf]


def check_inboxes_chain(
    country: str | None,
    links: Sequence[InboxesLink],
    checkpoint: Checkpoint,
    since: tuple[int, int] | None,
    *,
    floor: int | None = None,
    max_commitments: int | None = None,
) -> InboxesChain:
    """Check the chain of inboxes leaves from the checkpoint's last leaf down to `since` (the
    index and size verified last time, or None: down to the first). `links` newest first.
    With `floor` (and no `since`), only the leaves above it: the oldest one's previous must be
    at or below it (the chain goes on below, unchecked).

    Each leaf must be included under `checkpoint`, be a canonical inboxes leaf, and link to
    the next one by `previous`; the last leaf of the tree must be one. For `country` (None:
    the chain only), the broker's opening must match a commitment of the leaf, no leaf may
    lack one after a leaf had one, and sizes never go down. Findings, never exceptions."""
    findings: list[str] = []
    leaves: dict[int, InboxesLeaf] = {}
    last = checkpoint.size - 1
    if since is not None and since[0] >= last:
        if since[0] > last:
            findings.append(
                f"the inboxes leaf {since[0]} verified before is not below the log's {checkpoint.size}"
            )
        return InboxesChain(tuple(findings), since[0], since[1], leaves)
    if since is None and floor is not None and floor >= last:
        return InboxesChain((), None, 0, leaves)
    if not links or links[0].index != last:
        found = "none" if not links else f"leaf {links[0].index}"
        findings.append(
            f"the log's last leaf ({last}) is not the inboxes leaf the broker must end each batch with "
            f"(it showed {found}): the latest inbox sizes are hidden"
        )
        return InboxesChain(tuple(findings), None, 0, leaves)
    expected_end = since[0] if since is not None else -1
    for n, link in enumerate(links):
        try:
            verify_inclusion(
                hash_of(link.leaf), link.index, checkpoint.size, list(link.proof), checkpoint.root_hash
            )
            parsed = parse_inboxes_leaf(link.leaf)
        except (LogError, ValueError) as exc:
            findings.append(f"inboxes leaf {link.index}: {exc}")
            return InboxesChain(tuple(findings), None, 0, leaves)
        if max_commitments is not None and len(parsed.commitments) > max_commitments:
            findings.append(
                f"inboxes leaf {link.index} holds {len(parsed.commitments)} commitments, more than the "
                f"{max_commitments} members: some inbox is committed twice"
            )
        leaves[link.index] = parsed
        following = links[n + 1].index if n + 1 < len(links) else expected_end
        if n + 1 == len(links) and since is None and floor is not None and -1 <= parsed.previous <= floor:
            following = parsed.previous  # the walk stops here: what lies below is not checked
        if parsed.previous != following or parsed.previous >= link.index:
            findings.append(
                f"the chain of inboxes leaves is broken at {link.index}: its previous is {parsed.previous}, "
                f"the next one down is {following}"
            )
            return InboxesChain(tuple(findings), None, 0, leaves)
    size = since[1] if since is not None else 0
    committed = since is not None  # every member's inbox, even empty, is in every leaf
    for link in reversed(links):  # oldest first
        parsed = leaves[link.index]
        if country is None:
            continue
        if link.opening is None:
            if committed:
                findings.append(
                    f"inboxes leaf {link.index} has no commitment for {country}'s inbox, which held {size} "
                    "entries before: the broker hides it"
                )
            continue
        committed = True
        got, salt = link.opening
        if not opens_commitment(parsed.commitments, country, got, salt):
            findings.append(
                f"the size ({got}) and salt the broker shows {country} for inboxes leaf {link.index} do not "
                "open any commitment of that leaf: the broker rewrote them"
            )
            continue
        if got < size:
            findings.append(
                f"{country}'s inbox went down from {size} to {got} entries at inboxes leaf {link.index}"
            )
        size = got
    return InboxesChain(tuple(findings), links[0].index, size, leaves)


def inbox_end_findings(size: int, entries: Iterable[tuple[int, int]], checkpoint_size: int) -> list[str]:
    """Compare the size the log commits to with the inbox as the broker lists it, as (inbox
    number, log index) pairs: the inbox must reach `size` (entries missing below the highest
    listed one are gaps, found by walking the inbox alone), and no entry listed under that
    checkpoint may be numbered above it."""
    listed = dict(entries)
    findings = []
    missing = list(range(max(listed, default=0) + 1, size + 1))
    if missing:
        which = f"entry {missing[0]} is" if len(missing) == 1 else f"entries {_spans(missing)} are"
        findings.append(
            f"inbox {which} committed in the log (the inbox holds {size}) but not listed by the broker: "
            "withheld or deleted"
        )
    above = sorted(n for n, index in listed.items() if n > size and index < checkpoint_size)
    if above:
        findings.append(
            f"inbox entry {above[0]} is in the log before its size {checkpoint_size}, but the log's last inboxes "
            f"leaf says the inbox holds {size}: the commitment understates it"
        )
    return findings


def _spans(numbers: Sequence[int]) -> str:
    """1, 2, 3, 7 -> "1-3, 7" (at most 20 spans)."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:20])
    return text + (", ..." if len(spans) > 20 else "")


def check_item_inboxes(
    leaf: InboxesLeaf,
    index: int,
    item_index: int,
    seqs: Mapping[str, int],
    openings: Mapping[str, tuple[int, bytes]],
) -> list[str]:
    """The originator's check: the inboxes leaf at `index` closed the batch of its item at
    `item_index` (it comes after the item and its previous before it: the first one after),
    and commits to each recipient's inbox holding at least the entry the item got."""
    findings = []
    if not leaf.previous < item_index < index:
        findings.append(
            f"inboxes leaf {index} (previous {leaf.previous}) is not the one that closed the batch of "
            f"log entry {item_index}"
        )
    for recipient, seq in sorted(seqs.items()):
        opening = openings.get(recipient)
        if opening is None:
            findings.append(f"the broker shows no inbox size for {recipient} after its entry {seq}")
            continue
        size, salt = opening
        if not opens_commitment(leaf.commitments, recipient, size, salt):
            findings.append(
                f"the size and salt shown for {recipient} do not open a commitment of inboxes leaf {index}"
            )
        elif size < seq:
            findings.append(
                f"inboxes leaf {index} commits {recipient}'s inbox to {size} entries, below its entry {seq} "
                "for this item"
            )
    return findings
