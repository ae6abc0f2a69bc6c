"""Request and response bodies (also what the OpenAPI document shows)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# Examples for the OpenAPI document (what /docs and /redoc show, docs/api.md); a test checks
# that every model has one and that each one validates against its model.
_ITEM = "01942f6c-3a5b-7d8e-9f01-23456789abcd"  # a UUIDv7 item id
_KEY = "5d41402abc4b2a76b9719d911017c592"  # a key id (fingerprint)
_T = 1767261600000  # 2026-01-01T10:00:00Z in ms
_HASH = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"  # a SHA-256 in base64url without padding
_HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # a SHA-256 in hex
_MARKINGS = {
    "classification": "RESTRICTED",
    "tlp": "AMBER",
    "releasable_to": ["ALL"],
    "caveats": [],
    "topics": ["maritime"],
}
_DENIAL = {"rule": "above-accreditation", "reason": "CONFIDENTIAL is above NZL's accreditation (RESTRICTED)"}


def _example(*examples: dict[str, Any]) -> ConfigDict:
    """A model's examples in its JSON schema (OpenAPI 3.1 `examples`)."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemBody(BaseModel):
    model_config = _example(
        {
            "type": "urn:msmt:problem:replayed-token",
            "title": "Authentication failed",
            "status": 401,
            "detail": "this token was already used; mint a new one per request",
        }
    )

    type: str
    title: str
    status: int
    detail: str


class ReceiptDelivery(BaseModel):
    model_config = _example({"recipient": "USA", "seq": 42})

    recipient: str
    seq: int | None  # the recipient's inbox number, once the log integrated the item


class Receipt(BaseModel):
    model_config = _example(
        {
            "item_id": _ITEM,
            "log_index": 1234,
            "received_ms": _T,
            "recipients": ["JPN", "USA"],
            "deliveries": [{"recipient": "JPN", "seq": 17}, {"recipient": "USA", "seq": 42}],
        }
    )

    item_id: str
    log_index: int | None  # None (with status 202) when the log had not integrated it in time
    received_ms: int
    recipients: list[str]
    deliveries: list[ReceiptDelivery]


class Delivery(BaseModel):
    model_config = _example(
        {
            "seq": 42,
            "item_id": _ITEM,
            "originator": "KOR",
            "created_ms": _T - 2000,
            "received_ms": _T,
            "classification": "RESTRICTED",
            "tlp": "AMBER",
            "content_type": "application/stix+json",
            "size": 18432,
            "log_index": 1234,
            "state": "pending",
        }
    )

    seq: int
    item_id: str
    originator: str
    created_ms: int
    received_ms: int
    classification: str
    tlp: str
    content_type: str
    size: int
    log_index: int
    state: str
    envelope: str | None = Field(
        default=None,
        description="with `include=envelope` only: the envelope bytes exactly as submitted, base64url "
        "without padding; untrusted until the recipient verified them like fetched bytes",
    )
    unavailable: str | None = Field(
        default=None,
        description="`purged` (retention removed the envelope after every recipient acknowledged "
        "it) or `expired` (past the originator's `expires_ms`): listed, no envelope, fetching gives 410",
    )
    leaf: str | None = Field(
        default=None, description="with `proofs=N`, if log_index < N: the log leaf (base64url)"
    )
    inclusion: list[str] | None = Field(
        default=None, description="with `proofs=N`, if log_index < N: its inclusion proof in the tree of N"
    )


class InboxPage(BaseModel):
    model_config = _example(
        {
            "deliveries": [
                {
                    "seq": 42,
                    "item_id": _ITEM,
                    "originator": "KOR",
                    "created_ms": _T - 2000,
                    "received_ms": _T,
                    "classification": "RESTRICTED",
                    "tlp": "AMBER",
                    "content_type": "application/stix+json",
                    "size": 18432,
                    "log_index": 1234,
                    "state": "pending",
                }
            ],
            "cursor": 42,
        }
    )

    deliveries: list[Delivery]
    cursor: int = Field(
        description="the seq of the last delivery in this page (else `after`): the next `after`"
    )


Seq = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
PlainText = Field(
    min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
)  # no NUL or control characters


MAX_ACK_SEQS = 1000


class AckRequest(Strict):
    model_config = _example({"seqs": [41, 42]})

    seqs: list[Seq] = Field(min_length=1, max_length=MAX_ACK_SEQS)  # more: 422, nothing acknowledged


class AckResult(BaseModel):
    model_config = _example({"acknowledged": [41, 42]})

    acknowledged: list[int]


class DeliveryStatus(BaseModel):
    model_config = _example(
        {
            "recipient": "USA",
            "seq": 42,
            "state": "acknowledged",
            "created_ms": _T,
            "acked_ms": _T + 95_000,
            "receipt": "eyJpdGVtX2lkIjoiMDE5NDJmNmMtM2E1Yi03ZDhlLTlmMDEtMjM0NTY3ODlhYmNkIn0",
        }
    )

    recipient: str
    seq: int | None
    state: str
    created_ms: int
    acked_ms: int | None
    receipt: str | None = None  # the recipient's signed delivery receipt (base64url), if it sent one


class ReceiptsIn(Strict):
    model_config = _example(
        {"receipts": ["eyJpdGVtX2lkIjoiMDE5NDJmNmMtM2E1Yi03ZDhlLTlmMDEtMjM0NTY3ODlhYmNkIn0"]}
    )

    receipts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,20000}$")]] = Field(
        min_length=1, max_length=1000
    )


class ReceiptsResult(BaseModel):
    model_config = _example({"accepted": 1})

    accepted: int


class ItemStatus(BaseModel):
    model_config = _example(
        {
            "item_id": _ITEM,
            "log_index": 1234,
            "received_ms": _T,
            "deliveries": [
                {"recipient": "JPN", "seq": 17, "state": "pending", "created_ms": _T, "acked_ms": None},
                {
                    "recipient": "USA",
                    "seq": 42,
                    "state": "acknowledged",
                    "created_ms": _T,
                    "acked_ms": _T + 95_000,
                },
            ],
        }
    )

    item_id: str
    log_index: int | None
    received_ms: int
    deliveries: list[DeliveryStatus]


class CountryIn(Strict):
    model_config = _example(
        {"code": "NZL", "name": "New Zealand", "accreditation": "RESTRICTED", "groups": []}
    )

    code: str = Field(pattern=r"^[A-Z]{3}$")
    name: str = PlainText
    accreditation: str = Field(max_length=32)
    groups: list[str] = Field(default_factory=list, max_length=64)


class CountryPatch(Strict):
    model_config = _example({"status": "suspended"})

    status: str | None = None
    accreditation: str | None = Field(default=None, max_length=32)
    groups: list[str] | None = Field(default=None, max_length=64)


class CountryOut(BaseModel):
    model_config = _example(
        {"code": "JPN", "name": "Japan", "status": "active", "accreditation": "SECRET", "groups": ["G7"]}
    )

    code: str
    name: str
    status: str
    accreditation: str
    groups: list[str]


class KeyDocumentIn(Strict):
    """A public key document as `msmt keys export` writes it."""

    model_config = _example(
        {
            "format": "msmt-public-key-v1",
            "kind": "api",
            "algorithm": "Ed25519",
            "country": "KOR",
            "key_id": _KEY,
            "public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        }
    )

    format: str
    kind: str
    algorithm: str
    country: str
    key_id: str
    public_key: str = Field(max_length=4096)


class KeyOut(BaseModel):
    model_config = _example(
        {
            "key_id": _KEY,
            "owner": "admin:alice",
            "kind": "admin",
            "public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "valid_from_ms": _T,
            "valid_until_ms": None,
            "revoked_ms": None,
        }
    )

    key_id: str
    owner: str
    kind: str
    public_key: str
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None


class AgreementIn(Strict):
    model_config = _example({"ceiling": "CONFIDENTIAL", "topics": ["arms", "maritime"]})

    ceiling: str = Field(max_length=32)
    topics: list[str] | None = Field(default=None, max_length=32)


class AgreementOut(BaseModel):
    model_config = _example(
        {"originator": "KOR", "recipient": "JPN", "ceiling": "CONFIDENTIAL", "topics": ["arms", "maritime"]}
    )

    originator: str
    recipient: str
    ceiling: str
    topics: list[str] | None


class DirectoryKey(BaseModel):
    model_config = _example(
        {
            "key_id": _KEY,
            "public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "valid_from_ms": _T,
            "valid_until_ms": None,
            "revoked_ms": None,
        }
    )

    key_id: str
    public_key: str
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None


class DirectoryEntry(BaseModel):
    model_config = _example(
        {
            "code": "JPN",
            "name": "Japan",
            "status": "active",
            "accreditation": "SECRET",
            "groups": ["G7"],
            "signing_keys": [
                {
                    "key_id": _KEY,
                    "public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                    "valid_from_ms": _T,
                    "valid_until_ms": None,
                    "revoked_ms": None,
                }
            ],
            "encryption_key": {
                "key_id": "7d793037a0760186574b0282f2f435e7",
                "public_key": "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08",
                "valid_from_ms": _T,
                "valid_until_ms": None,
                "revoked_ms": None,
            },
        }
    )

    code: str
    name: str
    status: str
    accreditation: str
    groups: list[str]
    signing_keys: list[DirectoryKey]  # every signing key ever registered: old items stay verifiable
    encryption_key: DirectoryKey | None


class Directory(BaseModel):
    model_config = _example(
        {
            "countries": [
                {
                    "code": "JPN",
                    "name": "Japan",
                    "status": "active",
                    "accreditation": "SECRET",
                    "groups": ["G7"],
                    "signing_keys": [],
                    "encryption_key": None,
                }
            ],
            "generated_ms": _T,
        }
    )

    countries: list[DirectoryEntry]
    generated_ms: int


class CheckpointOut(BaseModel):
    model_config = _example(
        {
            "size": 1235,
            "root": _HASH,
            "note": "msmt-broker/log\n1235\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n"
            "\u2014 msmt-broker/log Az3grkH4uk4ZmXbs3b2fEoLpE7VQ6qRkUx5G6pYpA1w=\n",
        }
    )

    size: int
    root: str
    note: str  # the signed note exactly as signed: checkpoint text, blank line, signature lines


class ProofOut(BaseModel):
    model_config = _example({"proof": [_HASH, "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"]})

    proof: list[str]


class LeafOut(BaseModel):
    model_config = _example({"index": 1234, "kind": "item", "leaf": "AAEBlC9sOlt9jp8BI0VniavN"})

    index: int
    kind: str
    leaf: str


class InboxOpening(BaseModel):
    model_config = _example({"size": 42, "salt": "q83vEjRWeJq83vEjRWeJqw"})

    size: int
    salt: str


class InboxesLeafOut(BaseModel):
    model_config = _example(
        {"log_index": 1240, "leaf": "eyJjb21taXRtZW50cyI6W119", "inclusion": [_HASH], "own": None}
    )

    log_index: int
    leaf: str
    inclusion: list[str]
    own: InboxOpening | None


class InboxesChainOut(BaseModel):
    model_config = _example(
        {
            "size": 1241,
            "leaves": [
                {
                    "log_index": 1240,
                    "leaf": "eyJjb21taXRtZW50cyI6W119",
                    "inclusion": [_HASH],
                    "own": {"size": 42, "salt": "q83vEjRWeJq83vEjRWeJqw"},
                }
            ],
            "next": None,
        }
    )

    size: int
    leaves: list[InboxesLeafOut]
    next: int | None


class RecipientInbox(BaseModel):
    model_config = _example({"recipient": "USA", "size": 42, "salt": "q83vEjRWeJq83vEjRWeJqw"})

    recipient: str
    size: int
    salt: str


class ItemInboxesOut(BaseModel):
    model_config = _example(
        {
            "item_id": _ITEM,
            "log_index": 1234,
            "inboxes_index": 1240,
            "leaf": "eyJjb21taXRtZW50cyI6W119",
            "recipients": [{"recipient": "USA", "size": 42, "salt": "q83vEjRWeJq83vEjRWeJqw"}],
        }
    )

    item_id: str
    log_index: int
    inboxes_index: int
    leaf: str
    recipients: list[RecipientInbox]


class ChainHead(BaseModel):
    model_config = _example({"seq": 12, "hash": _HEX})

    seq: int
    hash: str


class ChainEntry(BaseModel):
    model_config = _example({"seq": 12, "entry": "eyJzaWduZWQiOnsidHlwZSI6InVwZGF0ZS1tZW1iZXIifX0"})

    seq: int
    entry: str  # base64url of the entry's canonical bytes, exactly as signed


class DirectoryChain(BaseModel):
    model_config = _example(
        {
            "head": {"seq": 12, "hash": _HEX},
            "entries": [{"seq": 12, "entry": "eyJzaWduZWQiOnsidHlwZSI6InVwZGF0ZS1tZW1iZXIifX0"}],
        }
    )

    head: ChainHead | None
    entries: list[ChainEntry]


class ProposalIn(Strict):
    model_config = _example({"entry": "eyJzaWduZWQiOnsidHlwZSI6InVwZGF0ZS1tZW1iZXIifX0"})

    entry: str = Field(max_length=1_000_000)  # base64url of an entry (signed part + signatures)


class SignatureIn(Strict):
    model_config = _example(
        {"signer": "JPN", "key_id": _KEY, "sig": "MEUCIQDx3yq9Xq0mH4lq8sJg3wQ5m1n2b3v4c5x6z7a8s9d0fg"}
    )

    signer: str = Field(pattern=r"^[A-Z]{3}$")
    key_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    sig: str = Field(max_length=8000)


class ProposalOut(BaseModel):
    model_config = _example(
        {
            "id": _HEX,
            "seq": 13,
            "type": "update-member",
            "country": "NZL",
            "state": "pending",
            "proposer": "admin:alice",
            "signed": "eyJ0eXBlIjoidXBkYXRlLW1lbWJlciIsImNvdW50cnkiOiJOWkwifQ",
            "signers": ["AUS", "CAN", "FRA"],
            "missing": [
                "8 of the 11 active members must sign, 3 did (AUS, CAN, FRA); "
                "not yet: DEU, GBR, ITA, JPN, KOR, NLD, NZL, USA"
            ],
            "created_ms": _T,
        }
    )

    id: str
    seq: int
    type: str
    country: str | None
    state: str
    proposer: str
    signed: str
    signers: list[str]
    missing: list[str]
    created_ms: int
    hash: str | None = None


class AdminActionOut(BaseModel):
    model_config = _example(
        {
            "id": 7,
            "at_ms": _T,
            "actor": "admin:alice",
            "action": "set-agreement",
            "target": "KOR->JPN",
            "details": {"ceiling": "CONFIDENTIAL", "topics": ["arms", "maritime"]},
        }
    )

    id: int
    at_ms: int
    actor: str
    action: str
    target: str
    details: dict[str, object]


class PreflightIn(Strict):
    model_config = _example({"markings": _MARKINGS})

    markings: dict[str, Any]


class Denial(BaseModel):
    model_config = _example(_DENIAL)

    rule: str
    reason: str


class PreflightOut(BaseModel):
    model_config = _example(
        {
            "allowed": ["AUS", "CAN", "DEU", "FRA", "GBR", "ITA", "JPN", "NLD", "USA"],
            "denied": {"NZL": [_DENIAL]},
        }
    )

    allowed: list[str]
    denied: dict[str, list[Denial]]


class ExplainIn(Strict):
    model_config = _example({"recipient": "NZL", "markings": {**_MARKINGS, "classification": "CONFIDENTIAL"}})

    recipient: str = Field(pattern=r"^[A-Z]{3}$")
    markings: dict[str, Any]


class ExplainOut(BaseModel):
    model_config = _example({"originator": "KOR", "recipient": "NZL", "allowed": False, "denials": [_DENIAL]})

    originator: str
    recipient: str
    allowed: bool
    denials: list[Denial]


class PolicyPlan(BaseModel):
    model_config = _example(
        {
            "changes": [
                "agreement KOR->JPN: up to CONFIDENTIAL, arms, maritime -> up to SECRET, arms, maritime"
            ],
            "access": ["KOR -> JPN gains SECRET (arms, maritime)"],
            "errors": [],
            "version": 5,
        }
    )

    changes: list[str]
    access: list[str]
    errors: list[str]
    version: int | None


class PolicyVersionOut(BaseModel):
    model_config = _example(
        {"version": 5, "applied_ms": _T, "actor": "admin:alice", "change": "set-agreement", "sha256": _HEX}
    )

    version: int
    applied_ms: int
    actor: str
    change: str
    sha256: str


class RecipientDecision(BaseModel):
    model_config = _example({"recipient": "NZL", "allowed": False, "denials": [_DENIAL]})

    recipient: str
    allowed: bool
    denials: list[Denial]


class ItemExplanation(BaseModel):
    model_config = _example(
        {
            "item_id": _ITEM,
            "originator": "KOR",
            "markings": {**_MARKINGS, "classification": "CONFIDENTIAL"},
            "registry_version": 12,
            "policy_version": 5,
            "decisions": [
                {"recipient": "USA", "allowed": True, "denials": []},
                {"recipient": "NZL", "allowed": False, "denials": [_DENIAL]},
            ],
        }
    )

    item_id: str
    originator: str
    markings: dict[str, Any]
    registry_version: int
    policy_version: int
    decisions: list[RecipientDecision]


class BatchResult(BaseModel):
    """One envelope of a batch: its own status, and its receipt or its problem (RFC 9457)."""

    model_config = _example(
        {
            "status": 201,
            "receipt": {
                "item_id": _ITEM,
                "log_index": 1234,
                "received_ms": _T,
                "recipients": ["USA"],
                "deliveries": [{"recipient": "USA", "seq": 42}],
            },
        },
        {
            "status": 422,
            "problem": {
                "type": "urn:msmt:problem:bad-signature",
                "title": "Invalid request",
                "status": 422,
                "detail": "the originator's signature does not verify",
            },
        },
    )

    status: int
    receipt: Receipt | None = None
    problem: dict[str, Any] | None = None


class BatchResults(BaseModel):
    model_config = _example(
        {
            "results": [
                {
                    "status": 201,
                    "receipt": {
                        "item_id": _ITEM,
                        "log_index": 1234,
                        "received_ms": _T,
                        "recipients": ["USA"],
                        "deliveries": [{"recipient": "USA", "seq": 42}],
                    },
                },
                {
                    "status": 200,
                    "receipt": {
                        "item_id": "01942f6c-3a5c-7a10-8b22-3344556677ff",
                        "log_index": 1190,
                        "received_ms": _T - 60_000,
                        "recipients": ["JPN"],
                        "deliveries": [{"recipient": "JPN", "seq": 16}],
                    },
                },
            ]
        }
    )

    results: list[BatchResult]


class Liveness(BaseModel):
    model_config = _example({"status": "ok"})

    status: Literal["ok"]


class ReadinessReport(BaseModel):
    model_config = _example(
        {"status": "ready", "checks": {"database": "ok", "schema": "ok", "log_key": "ok"}},
        {
            "status": "not ready",
            "checks": {"database": "unreachable: connection refused", "schema": "unknown", "log_key": "ok"},
        },
    )

    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="each check and its state: `ok`, or why not")
