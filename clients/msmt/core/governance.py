"""The member-governed directory: a trust root and a chain of signed statements.

Pure: parse, check, sign and apply entries; no network or disk. The broker stores the chain
and relays proposals; every client replays it from the root it pinned, so neither the
operator nor anyone who can write the broker's database can add a member or a key.

An entry is canonical JSON `{"signed": {...}, "signatures": [...]}`. Entry 0 is the genesis
root; every later entry names the SHA-256 of the previous entry's bytes (`prev`) and its own
position (`seq`), so the chain can neither be reordered nor forked without detection.

Who must sign (see `requirements`):
- `root` (genesis): every founding member, each with its own signing key in the root.
- `root` (rotation): a quorum of the current active members AND a quorum of the new root's.
- `rotate-key`, `revoke-key`: the country itself, with a current signing key; a new signing
  key also signs (proof of possession).
- `enrol-member`, `recover-member`: a quorum of active members, plus the new signing key.
- `update-member`, `force-revoke-key`: a quorum of active members.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import canonical
from .errors import (
    BadStatementSignature,
    BrokenChain,
    InvalidStatement,
    MalformedStatement,
    MsmtError,
    QuorumNotMet,
)
from .keys import PUBLIC_KEY_TYPES, KeyKind, PublicKey, SigningPrivateKey, SigningPublicKey
from .markings import CLASSIFICATION_RE, COUNTRY_RE, RELEASABLE_RE

ROOT_FORMAT = "msmt-root-v1"
STATEMENT_FORMAT = "msmt-statement-v1"
SIGNATURE_CONTEXT = b"MSMT-v1 directory"
GENESIS_PREV = "0" * 64
MAX_ENTRY_BYTES = 4 * 1024 * 1024
MAX_MEMBERS = 256
MAX_TIME_MS = 2**48  # about the year 10889: dates beyond are not dates

SELF_TYPES = frozenset({"rotate-key", "revoke-key"})
QUORUM_TYPES = frozenset({"enrol-member", "update-member", "recover-member", "force-revoke-key"})
STATEMENT_TYPES = SELF_TYPES | QUORUM_TYPES
STATUSES = ("active", "suspended")
_PLAIN_MAX = 200


# --- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntry:
    """A member's public key as the chain introduced it, with its lifetime."""

    kind: KeyKind
    key: PublicKey
    valid_from_ms: int
    valid_until_ms: int | None = None
    revoked_ms: int | None = None
    introduced_seq: int = 0

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def usable_at(self, when_ms: int) -> bool:
        if self.revoked_ms is not None and self.revoked_ms <= when_ms:
            return False
        return self.valid_from_ms <= when_ms and (
            self.valid_until_ms is None or when_ms < self.valid_until_ms
        )


@dataclass(frozen=True)
class MemberState:
    code: str
    name: str
    status: str
    accreditation: str
    groups: tuple[str, ...]
    keys: tuple[KeyEntry, ...]

    @property
    def active(self) -> bool:
        return self.status == "active"

    def key(self, key_id: str) -> KeyEntry | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def current(self, kind: KeyKind, at_ms: int) -> KeyEntry | None:
        """The newest key of `kind` usable at `at_ms`: the one others seal or verify with."""
        usable = [k for k in self.keys if k.kind == kind and k.usable_at(at_ms)]
        return max(usable, key=lambda k: (k.valid_from_ms, k.introduced_seq), default=None)


@dataclass(frozen=True)
class Quorum:
    numerator: int = 2
    denominator: int = 3

    def size(self, voters: int) -> int:
        """Signatures needed out of `voters`: ceil(voters * n / d), at least 1."""
        return max(1, math.ceil(voters * self.numerator / self.denominator))

    def to_dict(self) -> dict[str, int]:
        return {"numerator": self.numerator, "denominator": self.denominator}


@dataclass(frozen=True)
class DirectoryState:
    """Members and keys after verifying the chain up to `seq`, whose last entry hashes to `head`."""

    seq: int
    head: str
    root_version: int
    quorum: Quorum
    members: Mapping[str, MemberState]
    updated_ms: int
    extra: Mapping[str, Any] = field(default_factory=dict)  # root fields kept for later features

    def active_members(self) -> list[str]:
        return sorted(code for code, m in self.members.items() if m.active)

    def signing_key(self, country: str, key_id: str, at_ms: int) -> SigningPublicKey | None:
        """A signing key of `country` with this id, usable at `at_ms`."""
        member = self.members.get(country)
        entry = member.key(key_id) if member else None
        if entry is None or entry.kind is not KeyKind.SIGNING or not entry.usable_at(at_ms):
            return None
        assert isinstance(entry.key, SigningPublicKey)
        return entry.key


@dataclass(frozen=True)
class Requirement:
    """What signatures an entry needs, and which it still lacks."""

    quorum_of: tuple[str, ...]  # voters; `needed` distinct of them must sign
    needed: int
    also_new_root: tuple[str, ...] = ()  # root rotation: the new root's voters
    needed_new_root: int = 0
    must_sign: tuple[tuple[str, str], ...] = ()  # exact (country, key_id) signatures required
    self_signer: str | None = None  # the country that must sign with a current signing key


# --- entry encoding ---------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    signer: str
    key_id: str
    sig: bytes

    def to_dict(self) -> dict[str, str]:
        return {"signer": self.signer, "key_id": self.key_id, "sig": canonical.b64encode(self.sig)}


@dataclass(frozen=True)
class Entry:
    signed: Mapping[str, Any]
    signatures: tuple[Signature, ...]

    @property
    def type(self) -> str:
        return str(self.signed["type"])

    @property
    def seq(self) -> int:
        return int(self.signed["seq"])

    def signed_bytes(self) -> bytes:
        return canonical.encode(dict(self.signed))

    def to_bytes(self) -> bytes:
        ordered = sorted(self.signatures, key=lambda s: (s.signer, s.key_id))
        return canonical.encode({"signed": dict(self.signed), "signatures": [s.to_dict() for s in ordered]})

    def digest(self) -> str:
        return entry_hash(self.to_bytes())

    def with_signature(self, signature: Signature) -> Entry:
        others = tuple(
            s for s in self.signatures if (s.signer, s.key_id) != (signature.signer, signature.key_id)
        )
        return Entry(self.signed, (*others, signature))


def entry_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def proposal_id(signed: Mapping[str, Any]) -> str:
    """What members approve: the hash of the signed part (signatures are collected on it)."""
    return hashlib.sha256(canonical.encode(dict(signed))).hexdigest()


def sign(signed: Mapping[str, Any], signer: str, key: SigningPrivateKey) -> Signature:
    return Signature(signer, key.key_id, key.sign(canonical.encode(dict(signed)), SIGNATURE_CONTEXT))


def _is_key_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _fail(cls: type[MsmtError], seq: Any, text: str) -> MsmtError:
    return cls(f"directory entry {seq}: {text}")


def parse_entry(data: bytes) -> Entry:
    """Strict decoding of an entry's canonical bytes; semantic checks come in `apply`."""
    if len(data) > MAX_ENTRY_BYTES:
        raise MalformedStatement(f"directory entry is {len(data)} bytes, more than {MAX_ENTRY_BYTES}")
    try:
        value = canonical.decode(data)
    except MsmtError as exc:
        raise MalformedStatement(f"directory entry is not canonical JSON: {exc.detail}") from exc
    if not isinstance(value, dict) or set(value) != {"signed", "signatures"}:
        raise MalformedStatement("a directory entry is an object with exactly 'signed' and 'signatures'")
    signed, raw_sigs = value["signed"], value["signatures"]
    if not isinstance(signed, dict) or not isinstance(raw_sigs, list):
        raise MalformedStatement("'signed' must be an object and 'signatures' a list")
    seq = signed.get("seq", "?")
    signatures = []
    seen = set()
    for item in raw_sigs:
        if not isinstance(item, dict) or set(item) != {"signer", "key_id", "sig"}:
            raise _fail(MalformedStatement, seq, "each signature has exactly signer, key_id and sig")
        signer, key_id = item["signer"], item["key_id"]
        if not isinstance(signer, str) or not COUNTRY_RE.fullmatch(signer):
            raise _fail(MalformedStatement, seq, f"signer {str(signer)[:8]!r} is not a country code")
        if not _is_key_id(key_id):
            raise _fail(MalformedStatement, seq, "a signature's key_id is 32 lowercase hex characters")
        if (signer, key_id) in seen:
            raise _fail(MalformedStatement, seq, f"{signer} signed twice with key {key_id}")
        seen.add((signer, key_id))
        try:
            sig = canonical.b64decode(item["sig"], "signature")
        except MsmtError as exc:
            raise _fail(MalformedStatement, seq, exc.detail) from exc
        signatures.append(Signature(signer, key_id, sig))
    entry = Entry(signed, tuple(signatures))
    if entry.to_bytes() != data:
        raise _fail(MalformedStatement, seq, "signatures are not sorted by signer and key id")
    _check_shape(signed)
    return entry


# --- shape checks -------------------------------------------------------------------------


def _int(signed: Mapping[str, Any], name: str, *, minimum: int = 0) -> int:
    value = signed.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(MalformedStatement, signed.get("seq", "?"), f"{name} must be an integer >= {minimum}")
    return value


def _str(value: Any, seq: Any, name: str, pattern: Any = None, maximum: int = _PLAIN_MAX) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > maximum
        or any(
            ord(c) < 32
            or 127 <= ord(c) < 160
            or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
            for c in value
        )
        or (pattern is not None and not pattern.fullmatch(value))
    ):
        raise _fail(MalformedStatement, seq, f"{name} {str(value)[:40]!r} is not valid")
    return value


def _groups(value: Any, seq: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 64:
        raise _fail(MalformedStatement, seq, "groups must be a list of at most 64 names")
    groups = []
    for group in value:
        _str(group, seq, "group", RELEASABLE_RE)
        if COUNTRY_RE.fullmatch(group) or group == "ALL":
            raise _fail(MalformedStatement, seq, f"group {group!r} may not look like a country code or ALL")
        groups.append(group)
    if groups != sorted(set(groups)):
        raise _fail(MalformedStatement, seq, "groups must be sorted and unique")
    return tuple(groups)


def _keys(value: Any, seq: Any, kinds: Iterable[KeyKind] = tuple(KeyKind)) -> dict[KeyKind, PublicKey]:
    wanted = set(kinds)
    if not isinstance(value, dict) or set(value) != {k.value for k in wanted}:
        raise _fail(
            MalformedStatement, seq, f"keys must name exactly {', '.join(sorted(k.value for k in wanted))}"
        )
    keys: dict[KeyKind, PublicKey] = {}
    for kind in wanted:
        keys[kind] = _public_key(kind, value[kind.value], seq)
    return keys


def _public_key(kind: KeyKind, text: Any, seq: Any) -> PublicKey:
    try:
        return PUBLIC_KEY_TYPES[kind].from_bytes(canonical.b64decode(text, f"{kind.value} key"))
    except MsmtError as exc:
        raise _fail(MalformedStatement, seq, f"{kind.value} key: {exc.detail}") from exc


_COMMON = {"format", "type", "seq", "prev", "created_ms"}
_FIELDS = {
    "root": _COMMON | {"version", "quorum", "members", "extra"},
    "rotate-key": _COMMON | {"country", "kind", "public_key", "retire", "overlap_ms"},
    "revoke-key": _COMMON | {"country", "key_id"},
    "enrol-member": _COMMON | {"country", "member"},
    "update-member": _COMMON | {"country", "changes"},
    "recover-member": _COMMON | {"country", "keys"},
    "force-revoke-key": _COMMON | {"country", "key_id"},
}
_MEMBER_FIELDS = {"name", "status", "accreditation", "groups", "keys"}


def _check_shape(signed: Mapping[str, Any]) -> None:
    seq = signed.get("seq", "?")
    kind = signed.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise _fail(MalformedStatement, seq, f"unknown entry type {str(kind)[:40]!r}")
    if set(signed) != _FIELDS[kind]:
        missing, extra = _FIELDS[kind] - set(signed), set(signed) - _FIELDS[kind]
        raise _fail(
            MalformedStatement,
            seq,
            f"{kind} fields wrong: missing {sorted(missing)}, unexpected {sorted(extra)}",
        )
    wanted_format = ROOT_FORMAT if kind == "root" else STATEMENT_FORMAT
    if signed["format"] != wanted_format:
        raise _fail(MalformedStatement, seq, f"format must be {wanted_format}")
    _int(signed, "seq")
    if _int(signed, "created_ms", minimum=1) >= MAX_TIME_MS:
        raise _fail(MalformedStatement, seq, "created_ms is beyond any plausible date")
    prev = signed["prev"]
    if not isinstance(prev, str) or len(prev) != 64 or any(c not in "0123456789abcdef" for c in prev):
        raise _fail(MalformedStatement, seq, "prev must be 64 lowercase hex characters")
    if kind == "root":
        _root_shape(signed)
        return
    _str(signed["country"], seq, "country", COUNTRY_RE)
    if signed["country"] == "ALL":
        raise _fail(MalformedStatement, seq, "ALL is reserved and cannot be a member")
    if kind == "rotate-key":
        if not isinstance(signed["kind"], str) or signed["kind"] not in {k.value for k in KeyKind}:
            raise _fail(MalformedStatement, seq, "kind must be signing, encryption or api")
        _public_key(KeyKind(signed["kind"]), signed["public_key"], seq)
        if signed["retire"] != "" and not _is_key_id(signed["retire"]):
            raise _fail(MalformedStatement, seq, "retire is the key id being replaced, or empty")
        _int(signed, "overlap_ms")
    elif kind in ("revoke-key", "force-revoke-key"):
        if not _is_key_id(signed["key_id"]):
            raise _fail(MalformedStatement, seq, "key_id is 32 lowercase hex characters")
    elif kind == "enrol-member":
        _member_shape(signed["member"], seq)
    elif kind == "recover-member":
        _keys(signed["keys"], seq)
    elif kind == "update-member":
        _changes_shape(signed["changes"], seq)


def _member_shape(value: Any, seq: Any) -> None:
    if not isinstance(value, dict) or set(value) != _MEMBER_FIELDS:
        raise _fail(MalformedStatement, seq, f"a member has exactly {sorted(_MEMBER_FIELDS)}")
    _str(value["name"], seq, "name")
    if value["status"] not in STATUSES:
        raise _fail(MalformedStatement, seq, "status must be active or suspended")
    _str(value["accreditation"], seq, "accreditation", CLASSIFICATION_RE)
    _groups(value["groups"], seq)
    _keys(value["keys"], seq)


def _changes_shape(value: Any, seq: Any) -> None:
    allowed = {"name", "status", "accreditation", "groups"}
    if not isinstance(value, dict) or not value or not set(value) <= allowed:
        raise _fail(MalformedStatement, seq, f"changes is a non-empty object of {sorted(allowed)}")
    if "name" in value:
        _str(value["name"], seq, "name")
    if "status" in value and value["status"] not in STATUSES:
        raise _fail(MalformedStatement, seq, "status must be active or suspended")
    if "accreditation" in value:
        _str(value["accreditation"], seq, "accreditation", CLASSIFICATION_RE)
    if "groups" in value:
        _groups(value["groups"], seq)


def _root_shape(signed: Mapping[str, Any]) -> None:
    seq = signed["seq"]
    _int(signed, "version", minimum=1)
    quorum = signed["quorum"]
    if (
        not isinstance(quorum, dict)
        or set(quorum) != {"numerator", "denominator"}
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in quorum.values())
        or not 1 <= quorum["numerator"] <= quorum["denominator"] <= 100
        or quorum["numerator"] * 2 <= quorum["denominator"]
    ):
        raise _fail(MalformedStatement, seq, "quorum must be a fraction n/d with 1/2 < n/d <= 1")
    members = signed["members"]
    if not isinstance(members, dict) or not 1 <= len(members) <= MAX_MEMBERS:
        raise _fail(MalformedStatement, seq, f"a root lists 1 to {MAX_MEMBERS} members")
    for code, member in members.items():
        _str(code, seq, "member code", COUNTRY_RE)
        if code == "ALL":
            raise _fail(MalformedStatement, seq, "ALL is reserved and cannot be a member")
        _member_shape(member, seq)
    if not isinstance(signed["extra"], dict):
        raise _fail(MalformedStatement, seq, "extra must be an object")


# --- building entries ---------------------------------------------------------------------


def member_body(
    name: str,
    accreditation: str,
    groups: Iterable[str],
    keys: Mapping[KeyKind, PublicKey],
    status: str = "active",
) -> dict[str, Any]:
    return {
        "name": name,
        "status": status,
        "accreditation": accreditation,
        "groups": sorted(set(groups)),
        "keys": {kind.value: canonical.b64encode(key.raw) for kind, key in keys.items()},
    }


def root_statement(
    members: Mapping[str, Mapping[str, Any]],
    created_ms: int,
    *,
    quorum: Quorum = Quorum(),
    version: int = 1,
    after: DirectoryState | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The signed part of a root: genesis when `after` is None, else a rotation of `after`'s root."""
    return {
        "format": ROOT_FORMAT,
        "type": "root",
        "seq": 0 if after is None else after.seq + 1,
        "prev": GENESIS_PREV if after is None else after.head,
        "created_ms": created_ms,
        "version": version,
        "quorum": quorum.to_dict(),
        "members": {code: dict(body) for code, body in members.items()},
        "extra": dict(extra or {}),
    }


def statement(state: DirectoryState, type_: str, created_ms: int, **body: Any) -> dict[str, Any]:
    """The signed part of a statement that follows `state`'s head."""
    if type_ not in STATEMENT_TYPES:
        raise ValueError(f"unknown statement type {type_!r}")
    return {
        "format": STATEMENT_FORMAT,
        "type": type_,
        "seq": state.seq + 1,
        "prev": state.head,
        "created_ms": created_ms,
        **body,
    }


def rotate_key(
    state: DirectoryState, country: str, new_key: PublicKey, created_ms: int, *, overlap_ms: int = 0
) -> dict[str, Any]:
    """A country replaces its current key of that kind; the old one stays valid `overlap_ms`."""
    kind = _kind_of(new_key)
    member = state.members.get(country)
    current = member.current(kind, created_ms) if member else None
    return statement(
        state,
        "rotate-key",
        created_ms,
        country=country,
        kind=kind.value,
        public_key=canonical.b64encode(new_key.raw),
        retire="" if current is None else current.key_id,
        overlap_ms=overlap_ms,
    )


def _kind_of(key: PublicKey) -> KeyKind:
    for kind, cls in PUBLIC_KEY_TYPES.items():
        if isinstance(key, cls):
            return kind
    raise TypeError(f"not a public key: {type(key).__name__}")


# --- verification ---------------------------------------------------------------------------


def _member_from(code: str, body: Mapping[str, Any], seq: int, at_ms: int) -> MemberState:
    keys = _keys(body["keys"], seq)
    return MemberState(
        code,
        body["name"],
        body["status"],
        body["accreditation"],
        tuple(body["groups"]),
        tuple(KeyEntry(kind, key, at_ms, introduced_seq=seq) for kind, key in sorted(keys.items())),
    )


def _voters(state: DirectoryState) -> tuple[str, ...]:
    return tuple(state.active_members())


def requirements(state: DirectoryState | None, entry: Entry) -> Requirement:
    """Whose signatures `entry` needs on top of `state` (None: it must be a genesis root)."""
    signed = entry.signed
    kind, seq = entry.type, signed.get("seq")
    if kind == "root":
        members = signed["members"]
        new_voters = tuple(sorted(c for c, m in members.items() if m["status"] == "active"))
        pop = tuple(
            (code, _public_key(KeyKind.SIGNING, m["keys"]["signing"], seq).key_id)
            for code, m in members.items()
        )
        if state is None:  # genesis: every founder, with the key it is founding with
            return Requirement((), 0, must_sign=tuple(sorted(pop)))
        new_quorum = Quorum(signed["quorum"]["numerator"], signed["quorum"]["denominator"])
        voters = _voters(state)
        known = {(c, k.key_id) for c, m in state.members.items() for k in m.keys}
        return Requirement(
            voters,
            state.quorum.size(len(voters)),
            also_new_root=new_voters,
            needed_new_root=new_quorum.size(len(new_voters)),
            must_sign=tuple(sorted(p for p in pop if p not in known)),  # a new key proves possession
        )
    assert state is not None
    country = signed["country"]
    if kind in SELF_TYPES:
        must: tuple[tuple[str, str], ...] = ()
        if kind == "rotate-key" and signed["kind"] == KeyKind.SIGNING.value:
            must = ((country, _public_key(KeyKind.SIGNING, signed["public_key"], seq).key_id),)
        return Requirement((), 0, must_sign=must, self_signer=country)
    voters = _voters(state)
    must = ()
    if kind == "enrol-member":
        must = ((country, _public_key(KeyKind.SIGNING, signed["member"]["keys"]["signing"], seq).key_id),)
    elif kind == "recover-member":
        must = ((country, _public_key(KeyKind.SIGNING, signed["keys"]["signing"], seq).key_id),)
    return Requirement(voters, state.quorum.size(len(voters)), must_sign=must)


def _new_signing_keys(entry: Entry) -> dict[tuple[str, str], SigningPublicKey]:
    """Signing keys the entry itself introduces, by (country, key id): they may sign it too."""
    signed, seq = entry.signed, entry.signed.get("seq")
    new: list[tuple[str, Any]] = []
    if entry.type == "root":
        new = [(c, m["keys"]["signing"]) for c, m in signed["members"].items()]
    elif entry.type == "enrol-member":
        new = [(signed["country"], signed["member"]["keys"]["signing"])]
    elif entry.type == "recover-member":
        new = [(signed["country"], signed["keys"]["signing"])]
    elif entry.type == "rotate-key" and signed["kind"] == KeyKind.SIGNING.value:
        new = [(signed["country"], signed["public_key"])]
    keys: dict[tuple[str, str], SigningPublicKey] = {}
    for country, text in new:
        key = _public_key(KeyKind.SIGNING, text, seq)
        assert isinstance(key, SigningPublicKey)
        keys[(country, key.key_id)] = key
    return keys


def verified_signers(state: DirectoryState | None, entry: Entry) -> set[tuple[str, str]]:
    """(country, key id) of every signature that verifies; a bad signature is an error."""
    message = entry.signed_bytes()
    at_ms = int(entry.signed["created_ms"])
    introduced = _new_signing_keys(entry)
    good = set()
    for signature in entry.signatures:
        key = introduced.get((signature.signer, signature.key_id))
        if key is None and state is not None:
            key = state.signing_key(signature.signer, signature.key_id, at_ms)
        if key is None:
            raise _fail(
                BadStatementSignature,
                entry.signed.get("seq"),
                f"{signature.signer}'s signature is by key {signature.key_id}, which is not a usable "
                f"signing key of {signature.signer} at that time",
            )
        try:
            key.verify(signature.sig, message, SIGNATURE_CONTEXT)
        except MsmtError as exc:
            raise _fail(
                BadStatementSignature,
                entry.signed.get("seq"),
                f"{signature.signer}'s signature does not verify",
            ) from exc
        good.add((signature.signer, signature.key_id))
    return good


def missing(state: DirectoryState | None, entry: Entry) -> list[str]:
    """Sentences naming the signatures `entry` still lacks (empty when it may be applied)."""
    need = requirements(state, entry)
    signed_by = verified_signers(state, entry)
    at_ms = int(entry.signed["created_ms"])
    # only keys already in the directory vote: a newcomer's or a recovered member's new key
    # proves possession, it does not count towards the quorum
    countries = {c for c, k in signed_by if state is not None and state.signing_key(c, k, at_ms) is not None}
    new_root_countries: set[str] = set()
    if entry.type == "root":
        new_keys = _new_signing_keys(entry)
        new_root_countries = {c for c, k in signed_by if (c, k) in new_keys}
    gaps = [
        f"{country} must sign with its key {key_id}"
        for country, key_id in need.must_sign
        if (country, key_id) not in signed_by
    ]
    if need.self_signer is not None and state is not None:
        member = state.members.get(need.self_signer)
        current = member.current(KeyKind.SIGNING, int(entry.signed["created_ms"])) if member else None
        if current is None or (need.self_signer, current.key_id) not in signed_by:
            gaps.append(f"{need.self_signer} must sign with its current signing key")
    for voters, needed, label, voted in (
        (need.quorum_of, need.needed, "active members", countries),
        (need.also_new_root, need.needed_new_root, "members of the new root", new_root_countries),
    ):
        have = sorted(voted & set(voters))
        if len(have) < needed:
            lacking = sorted(set(voters) - voted)
            gaps.append(
                f"{needed} of the {len(voters)} {label} must sign, {len(have)} did "
                f"({', '.join(have) or 'none'}); not yet: {', '.join(lacking)}"
            )
    return gaps


def genesis(data: bytes) -> DirectoryState:
    """Verify a genesis root (every founder signed) and return the state it starts."""
    entry = parse_entry(data)
    if entry.type != "root" or entry.seq != 0 or entry.signed["prev"] != GENESIS_PREV:
        raise _fail(BrokenChain, entry.signed.get("seq"), "a trust root is a root entry at position 0")
    gaps = missing(None, entry)
    if gaps:
        raise _fail(QuorumNotMet, 0, "; ".join(gaps))
    _check_root_keys(None, entry)
    return _state_from_root(entry, entry_hash(data))


def _state_from_root(entry: Entry, head: str, previous: DirectoryState | None = None) -> DirectoryState:
    signed = entry.signed
    at_ms = int(signed["created_ms"])
    members = {code: _member_from(code, body, entry.seq, at_ms) for code, body in signed["members"].items()}
    if previous is not None:  # keys a member had keep their history: old items stay verifiable
        for code, member in members.items():
            old = previous.members.get(code)
            if old is None:
                continue
            new_ids = {k.key_id for k in member.keys}
            kept = tuple(
                k
                if k.revoked_ms is not None or k.valid_until_ms is not None
                else replace(k, valid_until_ms=at_ms)
                for k in old.keys
                if k.key_id not in new_ids
            )
            members[code] = replace(member, keys=kept + tuple(old.key(k.key_id) or k for k in member.keys))
    quorum = Quorum(signed["quorum"]["numerator"], signed["quorum"]["denominator"])
    return DirectoryState(
        entry.seq, head, int(signed["version"]), quorum, members, at_ms, dict(signed["extra"])
    )


def check(state: DirectoryState, entry: Entry) -> None:
    """Everything but the signatures: position, previous hash, date, and applicability."""
    signed, seq = entry.signed, entry.seq
    if seq != state.seq + 1:
        raise _fail(BrokenChain, seq, f"expected entry {state.seq + 1} after {state.seq}")
    if signed["prev"] != state.head:
        raise _fail(
            BrokenChain,
            seq,
            f"it names {signed['prev'][:16]}… as previous, but entry {state.seq} is {state.head[:16]}…",
        )
    if int(signed["created_ms"]) < state.updated_ms:
        raise _fail(InvalidStatement, seq, "it is dated before the entry it follows")
    if entry.type == "root" and int(signed["version"]) != state.root_version + 1:
        raise _fail(InvalidStatement, seq, f"root version must be {state.root_version + 1}")
    _check_semantics(state, entry)


def check_date(entry: Entry, now_ms: int, skew_ms: int) -> None:
    """Refuse an entry dated in the future: a far-future date would hold back every later
    entry (a revocation takes effect only at its own date, which must follow it)."""
    if int(entry.signed["created_ms"]) > now_ms + skew_ms:
        raise _fail(InvalidStatement, entry.seq, "it is dated in the future; check the signer's clock")


def apply(state: DirectoryState, data: bytes) -> DirectoryState:
    """Verify the entry that follows `state` and return the new state; raise naming what failed."""
    entry = parse_entry(data)
    signed, seq = entry.signed, entry.seq
    at_ms = int(signed["created_ms"])
    check(state, entry)
    gaps = missing(state, entry)
    if gaps:
        raise _fail(QuorumNotMet, seq, "; ".join(gaps))
    head = entry_hash(data)
    if entry.type == "root":
        return _state_from_root(entry, head, state)
    members = dict(state.members)
    members[signed["country"]] = _changed_member(state, entry)
    return replace(state, seq=seq, head=head, members=members, updated_ms=at_ms)


def _check_semantics(state: DirectoryState, entry: Entry) -> None:
    signed, seq = entry.signed, entry.seq
    if entry.type == "root":
        _check_root_keys(state, entry)
        return
    country = signed["country"]
    member = state.members.get(country)
    if entry.type == "enrol-member":
        if member is not None:
            raise _fail(InvalidStatement, seq, f"{country} is already a member")
        if len(state.members) >= MAX_MEMBERS:
            raise _fail(InvalidStatement, seq, f"the directory is limited to {MAX_MEMBERS} members")
        new_ids = {k.key_id for k in _keys(signed["member"]["keys"], seq).values()}
        _check_unused(state, new_ids, seq)
        return
    if member is None:
        raise _fail(InvalidStatement, seq, f"{country} is not a member")
    if entry.type in SELF_TYPES and not member.active:
        raise _fail(InvalidStatement, seq, f"{country} is suspended; only a quorum may change its keys")
    if entry.type == "rotate-key":
        key = _public_key(KeyKind(signed["kind"]), signed["public_key"], seq)
        _check_unused(state, {key.key_id}, seq)
        retire = signed["retire"]
        current = member.current(KeyKind(signed["kind"]), int(signed["created_ms"]))
        if retire != ("" if current is None else current.key_id):
            raise _fail(
                InvalidStatement,
                seq,
                f"it retires {retire or 'no key'}, but {country}'s current key is "
                f"{current.key_id if current else 'none'}",
            )
    elif entry.type in ("revoke-key", "force-revoke-key"):
        key_entry = member.key(signed["key_id"])
        if key_entry is None or key_entry.revoked_ms is not None:
            raise _fail(InvalidStatement, seq, f"{signed['key_id']} is not an unrevoked key of {country}")
    elif entry.type == "recover-member":
        _check_unused(state, {k.key_id for k in _keys(signed["keys"], seq).values()}, seq)


def _check_root_keys(state: DirectoryState | None, entry: Entry) -> None:
    """Every key in a root belongs to one member only, and never to another member before."""
    owners: dict[str, str] = {}
    for code, body in entry.signed["members"].items():
        for key in _keys(body["keys"], entry.seq).values():
            if owners.setdefault(key.key_id, code) != code or (
                state is not None
                and any(k.key_id == key.key_id for c, m in state.members.items() if c != code for k in m.keys)
            ):
                raise _fail(
                    InvalidStatement, entry.seq, f"key {key.key_id} is listed for more than one member"
                )
            owners[key.key_id] = code


def _check_unused(state: DirectoryState, key_ids: set[str], seq: int) -> None:
    for member in state.members.values():
        for key in member.keys:
            if key.key_id in key_ids:
                raise _fail(InvalidStatement, seq, f"key {key.key_id} already belongs to {member.code}")


def _changed_member(state: DirectoryState, entry: Entry) -> MemberState:
    signed, seq = entry.signed, entry.seq
    at_ms = int(signed["created_ms"])
    country = signed["country"]
    if entry.type == "enrol-member":
        return _member_from(country, signed["member"], seq, at_ms)
    member = state.members[country]
    if entry.type == "update-member":
        changes = signed["changes"]
        return replace(
            member,
            name=changes.get("name", member.name),
            status=changes.get("status", member.status),
            accreditation=changes.get("accreditation", member.accreditation),
            groups=tuple(changes.get("groups", member.groups)),
        )
    if entry.type in ("revoke-key", "force-revoke-key"):
        keys = tuple(replace(k, revoked_ms=at_ms) if k.key_id == signed["key_id"] else k for k in member.keys)
        return replace(member, keys=keys)
    if entry.type == "recover-member":
        revoked = tuple(k if k.revoked_ms is not None else replace(k, revoked_ms=at_ms) for k in member.keys)
        new = tuple(
            KeyEntry(kind, key, at_ms, introduced_seq=seq)
            for kind, key in sorted(_keys(signed["keys"], seq).items())
        )
        return replace(member, keys=revoked + new)
    # rotate-key: the new key starts now; the retired one ends after the overlap
    kind = KeyKind(signed["kind"])
    new_key = KeyEntry(kind, _public_key(kind, signed["public_key"], seq), at_ms, introduced_seq=seq)
    until = at_ms + int(signed["overlap_ms"])
    keys = tuple(
        replace(k, valid_until_ms=until if k.valid_until_ms is None else min(k.valid_until_ms, until))
        if k.key_id == signed["retire"]
        else k
        for k in member.keys
    )
    return replace(member, keys=(*keys, new_key))


def verify_chain(entries: Iterable[bytes]) -> DirectoryState:
    """Replay a whole chain from its genesis root."""
    iterator = iter(entries)
    state = genesis(next(iterator))
    for data in iterator:
        state = apply(state, data)
    return state


def signed_entry(signed: Mapping[str, Any], signers: Iterable[tuple[str, SigningPrivateKey]]) -> bytes:
    """Sign `signed` by each (country, key) and return the entry's canonical bytes."""
    return Entry(signed, tuple(sign(signed, country, key) for country, key in signers)).to_bytes()
