"""Joint reports: drafts, endorsements, withdrawals and the offline-verifiable publication.

Pure: no network, no disk, no clock (every time is an argument). docs/reports.md is normative.

- A **report document** (`msmt-report-v1`) is one version of a draft: canonical JSON holding a
  manifest (report id, version number, hash of the previous version, title, participants,
  endorsement rule, and the size and SHA-256 of the Markdown body and of each attachment), the
  body, and the attachments. It travels as the payload of an item of type
  `application/vnd.msmt.report+json`.
- Its **content hash** is SHA-256 over a domain string and the canonical manifest, so it covers
  the body, every attachment, the participants and the rule.
- An **endorsement** (`msmt-endorsement-v1`) is a statement by one country, signed with its
  composite signing key under the context `"MSMT-v1 report-endorsement"`, that it endorses one
  exact version (report id, version, content hash), with an optional reservation.
- A **withdrawal** (`msmt-withdrawal-v1`) is a statement by an originator that it withdraws one
  of its items (a draft version, a comment, an endorsement), under `"MSMT-v1 withdrawal"`.
- A **publication bundle** (`msmt-publication-v1`) is one canonical JSON file: the report
  document, the endorsements, the public keys they were made with, and the members' directory
  chain from its genesis root. `verify_bundle` checks it offline, in the order documented in
  docs/reports.md, replaying the chain with `governance.verify_chain`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import canonical
from . import governance as gov
from .errors import MsmtError
from .ids import is_item_id, new_item_id
from .keys import SigningPrivateKey, SigningPublicKey
from .markings import COUNTRY_RE

REPORT_FORMAT = "msmt-report-v1"
ENDORSEMENT_FORMAT = "msmt-endorsement-v1"
WITHDRAWAL_FORMAT = "msmt-withdrawal-v1"
BUNDLE_FORMAT = "msmt-publication-v1"

REPORT_MEDIA_TYPE = "application/vnd.msmt.report+json"
ENDORSEMENT_MEDIA_TYPE = "application/vnd.msmt.endorsement+json"
WITHDRAWAL_MEDIA_TYPE = "application/vnd.msmt.withdrawal+json"
PUBLICATION_MEDIA_TYPE = "application/vnd.msmt.publication+json"

CONTENT_HASH_DOMAIN = b"MSMT-v1 report-content\x00"
ENDORSEMENT_CONTEXT = b"MSMT-v1 report-endorsement"
WITHDRAWAL_CONTEXT = b"MSMT-v1 withdrawal"

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # the envelope's payload limit
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ATTACHMENTS = 64
MAX_PARTICIPANTS = 256
MAX_VERSION = 1_000_000
MAX_TITLE = 200
MAX_TEXT = 2000  # reservation, withdrawal reason
MAX_STATEMENT_BYTES = 32 * 1024
MAX_ENDORSEMENTS = 256
MAX_DIRECTORY_ENTRIES = 65_536
MAX_BUNDLE_BYTES = 128 * 1024 * 1024
MAX_TIME_MS = 2**48

ATTACHMENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MEDIA_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_FINGERPRINT = re.compile(r"^[0-9A-F]{32}$")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# --- errors -----------------------------------------------------------------------------


class ReportError(MsmtError):
    """Base of the report, endorsement, withdrawal and publication errors."""

    code = "report-error"


class MalformedReport(ReportError):
    """The report document is not canonical or breaks a field rule."""

    code = "malformed-report"


class MalformedEndorsement(ReportError):
    code = "malformed-endorsement"


class MalformedWithdrawal(ReportError):
    code = "malformed-withdrawal"


class MalformedBundle(ReportError):
    """The bundle is too large, not canonical JSON, or not of the publication's shape."""

    code = "malformed-bundle"


class ContentMismatch(ReportError):
    """The body or an attachment differs from the size and SHA-256 its manifest lists."""

    code = "content-mismatch"


class RootMismatch(ReportError):
    """The bundle's directory starts from another root than the one pinned."""

    code = "root-mismatch"


class KeyIdMismatch(ReportError):
    """A listed public key's bytes do not give the key id listed with it."""

    code = "key-id-mismatch"


class UnknownEndorsementKey(ReportError):
    """An endorsement names a key the bundle does not carry for that country."""

    code = "unknown-endorsement-key"


class BadEndorsementSignature(ReportError):
    code = "bad-endorsement-signature"


class BadWithdrawalSignature(ReportError):
    code = "bad-withdrawal-signature"


class KeyNotInDirectory(ReportError):
    """The endorsing key was not a usable signing key of that country at the endorsement's time."""

    code = "key-not-in-directory"


class DuplicateEndorsement(ReportError):
    code = "duplicate-endorsement"


class EndorsementForOtherVersion(ReportError):
    """An endorsement names another report, version or content hash than the bundle's report."""

    code = "endorsement-for-other-version"


class NonParticipantEndorsement(ReportError):
    code = "non-participant-endorsement"


class RuleNotMet(ReportError):
    code = "rule-not-met"


# --- field helpers ----------------------------------------------------------------------


def _text(value: Any, what: str, maximum: int, *, newlines: bool, error: type[MsmtError]) -> str:
    """Plain text: 1..maximum code points, no control, C1 or bidi-override characters
    (a line feed is allowed where `newlines`)."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > maximum
        or any(
            (ord(c) < 32 and not (newlines and c == "\n")) or 127 <= ord(c) < 160 or c in _BIDI for c in value
        )
    ):
        raise error(f"{what} must be plain text of 1 to {maximum} characters")
    return value


def _int(value: Any, what: str, minimum: int, maximum: int, error: type[MsmtError]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise error(f"{what} must be an integer from {minimum} to {maximum}")
    return value


def _object(value: Any, what: str, fields: set[str], error: type[MsmtError]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != fields:
        raise error(f"{what} must be an object with exactly {', '.join(sorted(fields))}")
    return value


def _country(value: Any, what: str, error: type[MsmtError]) -> str:
    if not isinstance(value, str) or not COUNTRY_RE.fullmatch(value) or value == "ALL":
        raise error(f"{what} must be a country code (three upper-case letters)")
    return value


def _decode(data: bytes, what: str, limit: int, error: type[MsmtError]) -> Any:
    if len(data) > limit:
        raise error(f"{what} is {len(data)} bytes, more than {limit}")
    try:
        return canonical.decode(data)
    except MsmtError as exc:
        raise error(f"{what} is not canonical JSON: {exc.detail}") from exc


def _b64(value: Any, what: str, error: type[MsmtError]) -> bytes:
    try:
        return canonical.b64decode(value, what)
    except MsmtError as exc:
        raise error(exc.detail) from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def date_of(ms: int) -> str:
    """The UTC calendar date of a Unix-milliseconds time, as YYYY-MM-DD."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def time_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the report document -------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Which endorsements publish a version: every participant, or any `k` of them."""

    kind: str = "all"  # "all" | "quorum"
    k: int = 0

    def needed(self, participants: int) -> int:
        return participants if self.kind == "all" else self.k

    def describe(self, participants: int) -> str:
        if self.kind == "all":
            return f"all {participants} participants"
        return f"{self.k} of {participants} participants"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "all"} if self.kind == "all" else {"type": "quorum", "k": self.k}

    @classmethod
    def from_dict(cls, value: Any, participants: int) -> Rule:
        if isinstance(value, dict) and value.get("type") == "all" and set(value) == {"type"}:
            return cls("all")
        if isinstance(value, dict) and value.get("type") == "quorum" and set(value) == {"type", "k"}:
            return cls("quorum", _int(value["k"], "rule.k", 1, participants, MalformedReport))
        raise MalformedReport('rule must be {"type": "all"} or {"type": "quorum", "k": k}')


@dataclass(frozen=True)
class AttachmentInfo:
    name: str
    media_type: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "media_type": self.media_type, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    report_id: str
    version: int
    previous: str  # content hash of the version this one revises; "" for version 1
    title: str
    participants: tuple[str, ...]
    rule: Rule
    body_size: int
    body_sha256: str
    attachments: tuple[AttachmentInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_id": self.report_id,
            "version": self.version,
            "previous": self.previous,
            "title": self.title,
            "participants": list(self.participants),
            "rule": self.rule.to_dict(),
            "body": {"size": self.body_size, "sha256": self.body_sha256},
            "attachments": [a.to_dict() for a in self.attachments],
        }

    def content_hash(self) -> str:
        """hex SHA-256("MSMT-v1 report-content\\x00" || canonical manifest)."""
        return sha256_hex(CONTENT_HASH_DOMAIN + canonical.encode(self.to_dict()))

    @property
    def needed(self) -> int:
        return self.rule.needed(len(self.participants))


_MANIFEST_FIELDS = {
    "report_id",
    "version",
    "previous",
    "title",
    "participants",
    "rule",
    "body",
    "attachments",
}
_ATTACHMENT_FIELDS = {"name", "media_type", "size", "sha256"}


def _manifest(value: Any) -> Manifest:
    m = _object(value, "manifest", _MANIFEST_FIELDS, MalformedReport)
    if not is_item_id(m["report_id"]):
        raise MalformedReport("manifest.report_id must be a lowercase UUIDv7")
    version = _int(m["version"], "manifest.version", 1, MAX_VERSION, MalformedReport)
    previous = m["previous"]
    if not isinstance(previous, str) or (previous != "" and not _HEX64.fullmatch(previous)):
        raise MalformedReport("manifest.previous must be 64 lowercase hex characters, or empty")
    if (version == 1) != (previous == ""):
        raise MalformedReport("manifest.previous is empty for version 1 and only for version 1")
    title = _text(m["title"], "manifest.title", MAX_TITLE, newlines=False, error=MalformedReport)
    participants = m["participants"]
    if not isinstance(participants, list) or not 1 <= len(participants) <= MAX_PARTICIPANTS:
        raise MalformedReport(f"manifest.participants must list 1 to {MAX_PARTICIPANTS} countries")
    for code in participants:
        _country(code, "each participant", MalformedReport)
    if participants != sorted(set(participants)):
        raise MalformedReport("manifest.participants must be sorted and unique")
    rule = Rule.from_dict(m["rule"], len(participants))
    body = _object(m["body"], "manifest.body", {"size", "sha256"}, MalformedReport)
    body_size = _int(body["size"], "manifest.body.size", 0, MAX_BODY_BYTES, MalformedReport)
    if not isinstance(body["sha256"], str) or not _HEX64.fullmatch(body["sha256"]):
        raise MalformedReport("manifest.body.sha256 must be 64 lowercase hex characters")
    raw_attachments = m["attachments"]
    if not isinstance(raw_attachments, list) or len(raw_attachments) > MAX_ATTACHMENTS:
        raise MalformedReport(f"manifest.attachments must list at most {MAX_ATTACHMENTS} attachments")
    attachments = []
    for raw in raw_attachments:
        a = _object(raw, "each attachment", _ATTACHMENT_FIELDS, MalformedReport)
        if not isinstance(a["name"], str) or not ATTACHMENT_NAME_RE.fullmatch(a["name"]):
            raise MalformedReport(f"attachment name {str(a['name'])[:40]!r} is not allowed")
        if (
            not isinstance(a["media_type"], str)
            or len(a["media_type"]) > 127
            or not MEDIA_TYPE_RE.fullmatch(a["media_type"])
        ):
            raise MalformedReport(f"attachment {a['name']}: media_type is not a lowercase type/subtype")
        size = _int(a["size"], f"attachment {a['name']}: size", 0, MAX_DOCUMENT_BYTES, MalformedReport)
        if not isinstance(a["sha256"], str) or not _HEX64.fullmatch(a["sha256"]):
            raise MalformedReport(f"attachment {a['name']}: sha256 must be 64 lowercase hex characters")
        attachments.append(AttachmentInfo(a["name"], a["media_type"], size, a["sha256"]))
    names = [a.name for a in attachments]
    if names != sorted(set(names)):
        raise MalformedReport("attachments must be sorted by name, each name once")
    return Manifest(
        m["report_id"],
        version,
        previous,
        title,
        tuple(participants),
        rule,
        body_size,
        body["sha256"],
        tuple(attachments),
    )


@dataclass(frozen=True)
class ReportDocument:
    """One version of a report: manifest, Markdown body and attachments (name -> bytes)."""

    manifest: Manifest
    body: str
    attachments: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return self.manifest.content_hash()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "manifest": self.manifest.to_dict(),
            "body": self.body,
            "attachments": {name: canonical.b64encode(data) for name, data in self.attachments.items()},
        }

    def to_bytes(self) -> bytes:
        return canonical.encode(self.to_dict())

    def attachment_info(self, name: str) -> AttachmentInfo:
        return next(a for a in self.manifest.attachments if a.name == name)


def _document(value: Any) -> ReportDocument:
    """Shape only: the hashes are compared by `check_content`."""
    d = _object(value, "a report document", {"format", "manifest", "body", "attachments"}, MalformedReport)
    if d["format"] != REPORT_FORMAT:
        raise MalformedReport(f"report format must be {REPORT_FORMAT}")
    manifest = _manifest(d["manifest"])
    if not isinstance(d["body"], str):
        raise MalformedReport("body must be a string (the Markdown text)")
    names = {a.name for a in manifest.attachments}
    raw = d["attachments"]
    if not isinstance(raw, dict) or set(raw) != names:
        raise MalformedReport("attachments must hold exactly the attachments the manifest lists")
    attachments = {name: _b64(raw[name], f"attachment {name}", MalformedReport) for name in sorted(names)}
    return ReportDocument(manifest, d["body"], attachments)


def check_content(document: ReportDocument) -> None:
    """The body and each attachment have the size and SHA-256 the manifest lists."""
    body = document.body.encode("utf-8")
    m = document.manifest
    if len(body) != m.body_size or sha256_hex(body) != m.body_sha256:
        raise ContentMismatch("the report body differs from the size and SHA-256 in its manifest")
    for info in m.attachments:
        data = document.attachments[info.name]
        if len(data) != info.size or sha256_hex(data) != info.sha256:
            raise ContentMismatch(
                f"attachment {info.name} differs from the size and SHA-256 in the report's manifest"
            )


def parse_document(data: bytes) -> ReportDocument:
    """Strictly decode a report document (an item's payload) and check its content hashes."""
    document = _document(_decode(data, "the report document", MAX_DOCUMENT_BYTES, MalformedReport))
    check_content(document)
    return document


def new_document(
    *,
    title: str,
    body: str,
    participants: Iterable[str],
    rule: Rule,
    attachments: Mapping[str, tuple[str, bytes]] | None = None,
    report_id: str | None = None,
    version: int = 1,
    previous: str = "",
    now_ms: int | None = None,
) -> ReportDocument:
    """Build a version from its parts (attachments: name -> (media type, bytes)) and check it
    exactly as a recipient would."""
    files = dict(attachments or {})
    body_bytes = body.encode("utf-8")
    manifest = Manifest(
        report_id or new_item_id(now_ms),
        version,
        previous,
        title,
        tuple(sorted(set(participants))),
        rule,
        len(body_bytes),
        sha256_hex(body_bytes),
        tuple(
            AttachmentInfo(name, media_type, len(data), sha256_hex(data))
            for name, (media_type, data) in sorted(files.items())
        ),
    )
    document = ReportDocument(manifest, body, {name: data for name, (_, data) in sorted(files.items())})
    try:
        encoded = document.to_bytes()
    except MsmtError as exc:
        raise MalformedReport(f"the report cannot be encoded: {exc.detail}") from exc
    return parse_document(encoded)  # the same checks a recipient makes


def revise(
    previous: ReportDocument,
    *,
    title: str | None = None,
    body: str | None = None,
    attachments: Mapping[str, tuple[str, bytes]] | None = None,
    participants: Iterable[str] | None = None,
    rule: Rule | None = None,
) -> ReportDocument:
    """The next version: what is not given is carried over from `previous`."""
    m = previous.manifest
    kept = {a.name: (a.media_type, previous.attachments[a.name]) for a in m.attachments}
    return new_document(
        title=m.title if title is None else title,
        body=previous.body if body is None else body,
        participants=m.participants if participants is None else participants,
        rule=m.rule if rule is None else rule,
        attachments=kept if attachments is None else attachments,
        report_id=m.report_id,
        version=m.version + 1,
        previous=previous.content_hash,
    )


# --- signed statements ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endorsement:
    """`country` endorses version `version` of report `report_id`, whose content hash is
    `content_hash`, signing at `created_ms` with its signing key `key_id`."""

    report_id: str
    version: int
    content_hash: str
    country: str
    key_id: str
    created_ms: int
    reservation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENDORSEMENT_FORMAT,
            "report_id": self.report_id,
            "version": self.version,
            "content_hash": self.content_hash,
            "country": self.country,
            "key_id": self.key_id,
            "created_ms": self.created_ms,
            "reservation": self.reservation,
        }

    def signed_bytes(self) -> bytes:
        return canonical.encode(self.to_dict())


@dataclass(frozen=True)
class Withdrawal:
    """`country` withdraws its item `item_id` at `created_ms`, for `reason`."""

    item_id: str
    country: str
    key_id: str
    created_ms: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": WITHDRAWAL_FORMAT,
            "item_id": self.item_id,
            "country": self.country,
            "key_id": self.key_id,
            "created_ms": self.created_ms,
            "reason": self.reason,
        }

    def signed_bytes(self) -> bytes:
        return canonical.encode(self.to_dict())


_ENDORSEMENT_FIELDS = {
    "format",
    "report_id",
    "version",
    "content_hash",
    "country",
    "key_id",
    "created_ms",
    "reservation",
}
_WITHDRAWAL_FIELDS = {"format", "item_id", "country", "key_id", "created_ms", "reason"}


def _signed_statement(value: Any, what: str, error: type[MsmtError]) -> tuple[dict[str, Any], bytes]:
    outer = _object(value, what, {"signed", "sig"}, error)
    if not isinstance(outer["signed"], dict):
        raise error(f"{what}: signed must be an object")
    return outer["signed"], _b64(outer["sig"], f"{what}: sig", error)


def _statement_common(s: dict[str, Any], error: type[MsmtError]) -> tuple[str, str, int]:
    country = _country(s["country"], "country", error)
    if not isinstance(s["key_id"], str) or not _HEX32.fullmatch(s["key_id"]):
        raise error("key_id must be 32 lowercase hex characters")
    created = _int(s["created_ms"], "created_ms", 1, MAX_TIME_MS - 1, error)
    return country, s["key_id"], created


def _endorsement(value: Any) -> tuple[Endorsement, bytes]:
    s, sig = _signed_statement(value, "an endorsement", MalformedEndorsement)
    if set(s) != _ENDORSEMENT_FIELDS:
        raise MalformedEndorsement(f"an endorsement has exactly {', '.join(sorted(_ENDORSEMENT_FIELDS))}")
    if s["format"] != ENDORSEMENT_FORMAT:
        raise MalformedEndorsement(f"endorsement format must be {ENDORSEMENT_FORMAT}")
    if not is_item_id(s["report_id"]):
        raise MalformedEndorsement("report_id must be a lowercase UUIDv7")
    version = _int(s["version"], "version", 1, MAX_VERSION, MalformedEndorsement)
    if not isinstance(s["content_hash"], str) or not _HEX64.fullmatch(s["content_hash"]):
        raise MalformedEndorsement("content_hash must be 64 lowercase hex characters")
    country, key_id, created = _statement_common(s, MalformedEndorsement)
    reservation = s["reservation"]
    if reservation != "":
        _text(reservation, "reservation", MAX_TEXT, newlines=True, error=MalformedEndorsement)
    return Endorsement(s["report_id"], version, s["content_hash"], country, key_id, created, reservation), sig


def _withdrawal(value: Any) -> tuple[Withdrawal, bytes]:
    s, sig = _signed_statement(value, "a withdrawal", MalformedWithdrawal)
    if set(s) != _WITHDRAWAL_FIELDS:
        raise MalformedWithdrawal(f"a withdrawal has exactly {', '.join(sorted(_WITHDRAWAL_FIELDS))}")
    if s["format"] != WITHDRAWAL_FORMAT:
        raise MalformedWithdrawal(f"withdrawal format must be {WITHDRAWAL_FORMAT}")
    if not is_item_id(s["item_id"]):
        raise MalformedWithdrawal("item_id must be a lowercase UUIDv7")
    country, key_id, created = _statement_common(s, MalformedWithdrawal)
    reason = _text(s["reason"], "reason", MAX_TEXT, newlines=True, error=MalformedWithdrawal)
    return Withdrawal(s["item_id"], country, key_id, created, reason), sig


def _sign(statement: Endorsement | Withdrawal, key: SigningPrivateKey, context: bytes) -> bytes:
    if statement.key_id != key.key_id:
        raise ValueError(f"the statement names key {statement.key_id}, not the key signing it ({key.key_id})")
    sig = key.sign(statement.signed_bytes(), context)
    return canonical.encode({"signed": statement.to_dict(), "sig": canonical.b64encode(sig)})


def endorse(
    document: ReportDocument,
    country: str,
    key: SigningPrivateKey,
    created_ms: int,
    reservation: str = "",
) -> bytes:
    """The signed endorsement of exactly this version, as canonical bytes (an item's payload)."""
    m = document.manifest
    statement = Endorsement(
        m.report_id, m.version, m.content_hash(), country, key.key_id, created_ms, reservation
    )
    data = _sign(statement, key, ENDORSEMENT_CONTEXT)
    parse_endorsement(data)  # the same checks a verifier makes
    return data


def withdraw(item_id: str, country: str, key: SigningPrivateKey, created_ms: int, reason: str) -> bytes:
    """The signed withdrawal of one of `country`'s items, as canonical bytes."""
    data = _sign(Withdrawal(item_id, country, key.key_id, created_ms, reason), key, WITHDRAWAL_CONTEXT)
    parse_withdrawal(data)
    return data


def parse_endorsement(data: bytes) -> tuple[Endorsement, bytes]:
    """(statement, signature), strictly decoded; the signature is not checked here."""
    return _endorsement(_decode(data, "the endorsement", MAX_STATEMENT_BYTES, MalformedEndorsement))


def parse_withdrawal(data: bytes) -> tuple[Withdrawal, bytes]:
    return _withdrawal(_decode(data, "the withdrawal", MAX_STATEMENT_BYTES, MalformedWithdrawal))


def _check_signature(
    statement: Endorsement | Withdrawal,
    sig: bytes,
    key: SigningPublicKey,
    context: bytes,
    error: type[MsmtError],
) -> None:
    if key.key_id != statement.key_id:
        raise error(f"{statement.country}'s statement names key {statement.key_id}, not {key.key_id}")
    try:
        key.verify(sig, statement.signed_bytes(), context)
    except MsmtError as exc:
        raise error(f"{statement.country}'s signature on the statement does not verify") from exc


def verify_endorsement(data: bytes, key: SigningPublicKey) -> Endorsement:
    endorsement, sig = parse_endorsement(data)
    _check_signature(endorsement, sig, key, ENDORSEMENT_CONTEXT, BadEndorsementSignature)
    return endorsement


def verify_withdrawal(data: bytes, key: SigningPublicKey) -> Withdrawal:
    withdrawal, sig = parse_withdrawal(data)
    _check_signature(withdrawal, sig, key, WITHDRAWAL_CONTEXT, BadWithdrawalSignature)
    return withdrawal


def directory_key(state: gov.DirectoryState, country: str, key_id: str, at_ms: int) -> SigningPublicKey:
    """The signing key `key_id` of `country`, if the verified directory lists it as usable at `at_ms`."""
    key = state.signing_key(country, key_id, at_ms)
    if key is None:
        raise KeyNotInDirectory(
            f"key {key_id} is not a usable signing key of {country} on {time_of(at_ms)} "
            f"in the members' directory (up to entry {state.seq})"
        )
    return key


# --- the members' root fingerprint ------------------------------------------------------------


def root_fingerprint(root: bytes) -> str:
    """The spoken form of a genesis root (docs/protocol.md 13.1): the first 16 bytes of its
    SHA-256 in upper-case hex, in 8 groups of 4 joined by "-". Same as `msmt.trust`."""
    digest = gov.entry_hash(root).upper()
    return "-".join(digest[i : i + 4] for i in range(0, 32, 4))


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as typed (any case, with or without dashes or spaces) in its spoken form."""
    compact = re.sub(r"[\s-]", "", text).upper()
    if not _FINGERPRINT.fullmatch(compact):
        raise ValueError(f"{text!r} is not a root fingerprint (32 hex digits, e.g. F794-9FA2-…)")
    return "-".join(compact[i : i + 4] for i in range(0, 32, 4))


# --- the publication bundle ------------------------------------------------------------------

_BUNDLE_FIELDS = {"format", "report", "endorsements", "keys", "directory"}


@dataclass(frozen=True)
class Verdict:
    """What a verified bundle shows: the report, who endorsed it when, and which root it chains to."""

    report: ReportDocument
    content_hash: str
    endorsements: tuple[Endorsement, ...]  # by time, then country
    needed: int
    root_fingerprint: str
    root_pinned: bool
    directory_seq: int
    directory_head: str
    bundle_sha256: str

    @property
    def endorsers(self) -> tuple[str, ...]:
        return tuple(e.country for e in self.endorsements)

    @property
    def reservations(self) -> tuple[tuple[str, str], ...]:
        return tuple((e.country, e.reservation) for e in self.endorsements if e.reservation)

    @property
    def satisfied_ms(self) -> int:
        """When the rule was first met: the time of the `needed`-th endorsement."""
        return self.endorsements[self.needed - 1].created_ms

    def dates(self) -> str:
        first, last = date_of(self.endorsements[0].created_ms), date_of(self.endorsements[-1].created_ms)
        return f"on {last}" if first == last else f"between {first} and {last}"

    def sentence(self) -> str:
        """'endorsed by KOR, USA, JPN on 2026-11-29; reservations: JPN: ...' (one line)."""
        reservations = "; ".join(f"{c}: {' '.join(text.split())}" for c, text in self.reservations)
        return (
            f"endorsed by {', '.join(self.endorsers)} {self.dates()}; reservations: {reservations or 'none'}"
        )

    def to_dict(self) -> dict[str, Any]:
        m = self.report.manifest
        return {
            "valid": True,
            "sentence": self.sentence(),
            "report_id": m.report_id,
            "version": m.version,
            "title": m.title,
            "content_hash": self.content_hash,
            "participants": list(m.participants),
            "rule": m.rule.to_dict(),
            "needed": self.needed,
            "endorsements": [
                {
                    "country": e.country,
                    "key_id": e.key_id,
                    "created_ms": e.created_ms,
                    "time": time_of(e.created_ms),
                    "reservation": e.reservation,
                }
                for e in self.endorsements
            ],
            "attachments": [a.to_dict() for a in m.attachments],
            "root_fingerprint": self.root_fingerprint,
            "root_pinned": self.root_pinned,
            "directory": {"seq": self.directory_seq, "head": self.directory_head},
            "bundle_sha256": self.bundle_sha256,
        }


def build_bundle(document: bytes, endorsements: Iterable[bytes], directory: Sequence[bytes]) -> bytes:
    """The publication: the report document, each endorsement, the keys they were made with
    (taken from the verified directory) and the directory chain from its root.

    It does not judge the rule; call `verify_bundle` on the result before publishing it."""
    report = parse_document(document)
    state = gov.verify_chain(directory)
    statements = [parse_endorsement(e) for e in endorsements]
    statements.sort(key=lambda pair: (pair[0].country, pair[0].created_ms, pair[1]))
    keys: dict[tuple[str, str], SigningPublicKey] = {}
    for endorsement, _ in statements:
        keys[(endorsement.country, endorsement.key_id)] = directory_key(
            state, endorsement.country, endorsement.key_id, endorsement.created_ms
        )
    return canonical.encode(
        {
            "format": BUNDLE_FORMAT,
            "report": report.to_dict(),
            "endorsements": [
                {"signed": e.to_dict(), "sig": canonical.b64encode(sig)} for e, sig in statements
            ],
            "keys": [
                {"country": c, "key_id": k, "public_key": canonical.b64encode(key.raw)}
                for (c, k), key in sorted(keys.items())
            ],
            "directory": [canonical.b64encode(entry) for entry in directory],
        }
    )


def _bundle_structure(
    data: bytes,
) -> tuple[
    ReportDocument, list[tuple[Endorsement, bytes]], dict[tuple[str, str], SigningPublicKey], list[bytes]
]:
    """Steps 1-6 of docs/reports.md: size, canonical JSON, and the shape of every part."""
    value = _decode(data, "the bundle", MAX_BUNDLE_BYTES, MalformedBundle)
    bundle = _object(value, "a publication bundle", _BUNDLE_FIELDS, MalformedBundle)
    if bundle["format"] != BUNDLE_FORMAT:
        raise MalformedBundle(f"bundle format must be {BUNDLE_FORMAT}")
    report = _document(bundle["report"])
    raw_endorsements = bundle["endorsements"]
    if not isinstance(raw_endorsements, list) or not 1 <= len(raw_endorsements) <= MAX_ENDORSEMENTS:
        raise MalformedBundle(f"endorsements must list 1 to {MAX_ENDORSEMENTS} endorsements")
    endorsements = [_endorsement(e) for e in raw_endorsements]
    order = [(e.country, e.created_ms) for e, _ in endorsements]
    if order != sorted(order):
        raise MalformedBundle("endorsements must be sorted by country, then by created_ms")
    raw_keys = bundle["keys"]
    if not isinstance(raw_keys, list) or not 1 <= len(raw_keys) <= MAX_ENDORSEMENTS:
        raise MalformedBundle(f"keys must list 1 to {MAX_ENDORSEMENTS} keys")
    keys: dict[tuple[str, str], SigningPublicKey] = {}
    listed: list[tuple[str, str]] = []
    for raw in raw_keys:
        k = _object(raw, "each key", {"country", "key_id", "public_key"}, MalformedBundle)
        country = _country(k["country"], "a key's country", MalformedBundle)
        if not isinstance(k["key_id"], str) or not _HEX32.fullmatch(k["key_id"]):
            raise MalformedBundle("a key's key_id must be 32 lowercase hex characters")
        raw_key = _b64(k["public_key"], f"{country}'s public key", MalformedBundle)
        try:
            key = SigningPublicKey.from_bytes(raw_key)
        except MsmtError as exc:
            raise MalformedBundle(f"{country}'s public key {k['key_id']}: {exc.detail}") from exc
        if key.key_id != k["key_id"]:
            raise KeyIdMismatch(
                f"the public key listed for {country} as {k['key_id']} is another key ({key.key_id})"
            )
        listed.append((country, key.key_id))
        keys[(country, key.key_id)] = key
    if listed != sorted(set(listed)):
        raise MalformedBundle("keys must be sorted by country and key id, each once")
    used = {(e.country, e.key_id) for e, _ in endorsements}
    if set(keys) - used:
        unused = ", ".join(f"{c} {k}" for c, k in sorted(set(keys) - used))
        raise MalformedBundle(f"the bundle lists keys no endorsement was made with: {unused}")
    raw_directory = bundle["directory"]
    if not isinstance(raw_directory, list) or not 1 <= len(raw_directory) <= MAX_DIRECTORY_ENTRIES:
        raise MalformedBundle(f"directory must list 1 to {MAX_DIRECTORY_ENTRIES} entries")
    directory = [_b64(e, "a directory entry", MalformedBundle) for e in raw_directory]
    return report, endorsements, keys, directory


def verify_bundle(data: bytes, pinned_root_fingerprint: str | None = None) -> Verdict:
    """Check a publication bundle offline, in the order of docs/reports.md; raise the first
    failure (a `ReportError`, or the directory's `GovernanceError`), else return the verdict.

    Without `pinned_root_fingerprint` the verdict names the root the directory chains to:
    a reader must compare it with the fingerprint the members publish."""
    pinned = None if pinned_root_fingerprint is None else normalize_fingerprint(pinned_root_fingerprint)
    report, endorsements, keys, directory = _bundle_structure(data)  # steps 1-6
    check_content(report)  # step 7
    m = report.manifest
    content_hash = m.content_hash()  # step 8
    fingerprint = root_fingerprint(directory[0])
    if pinned is not None and fingerprint != pinned:  # step 9
        raise RootMismatch(
            f"the bundle's directory starts from root {fingerprint}, not from the pinned root {pinned}"
        )
    state = gov.verify_chain(directory)  # step 10: the members' own rules, entry by entry
    for endorsement, sig in endorsements:  # step 11
        key = keys.get((endorsement.country, endorsement.key_id))
        if key is None:
            raise UnknownEndorsementKey(
                f"{endorsement.country}'s endorsement names key {endorsement.key_id}, "
                "which the bundle does not carry"
            )
        _check_signature(endorsement, sig, key, ENDORSEMENT_CONTEXT, BadEndorsementSignature)
        listed = directory_key(state, endorsement.country, endorsement.key_id, endorsement.created_ms)
        if listed.raw != key.raw:
            raise KeyNotInDirectory(
                f"{endorsement.country}'s key {endorsement.key_id} differs from the directory's"
            )
    countries = [e.country for e, _ in endorsements]
    for country in countries:  # step 12
        if countries.count(country) > 1:
            raise DuplicateEndorsement(f"{country} endorses the report more than once")
    for endorsement, _ in endorsements:  # step 13
        if endorsement.report_id != m.report_id:
            raise EndorsementForOtherVersion(
                f"{endorsement.country}'s endorsement is for report {endorsement.report_id}, not {m.report_id}"
            )
        if endorsement.version != m.version or endorsement.content_hash != content_hash:
            raise EndorsementForOtherVersion(
                f"{endorsement.country}'s endorsement is for version {endorsement.version} "
                f"({endorsement.content_hash[:16]}…), not for version {m.version} ({content_hash[:16]}…)"
            )
    outsiders = [c for c in countries if c not in m.participants]
    if outsiders:  # step 14
        raise NonParticipantEndorsement(
            f"{', '.join(outsiders)} endorsed but {'is' if len(outsiders) == 1 else 'are'} not among the "
            f"report's participants ({', '.join(m.participants)})"
        )
    if len(countries) < m.needed:  # step 15
        lacking = [c for c in m.participants if c not in countries]
        raise RuleNotMet(
            f"the rule needs {m.rule.describe(len(m.participants))}; {len(countries)} endorsed "
            f"({', '.join(countries)}), not yet: {', '.join(lacking)}"
        )
    ordered = tuple(sorted((e for e, _ in endorsements), key=lambda e: (e.created_ms, e.country)))
    return Verdict(
        report,
        content_hash,
        ordered,
        m.needed,
        fingerprint,
        pinned is not None,
        state.seq,
        state.head,
        sha256_hex(data),
    )
