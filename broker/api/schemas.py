"""Request and response bodies (also what the OpenAPI document shows)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemBody(BaseModel):
    type: str
    title: str
    status: int
    detail: str


class ReceiptDelivery(BaseModel):
    recipient: str
    seq: int | None  # the recipient's inbox number, once the log integrated the item


class Receipt(BaseModel):
    item_id: str
    log_index: int | None  # None (with status 202) when the log had not integrated it in time
    received_ms: int
    recipients: list[str]
    deliveries: list[ReceiptDelivery]


class Delivery(BaseModel):
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
    leaf: str | None = Field(
        default=None, description="with `proofs=N`, if log_index < N: the log leaf (base64url)"
    )
    inclusion: list[str] | None = Field(
        default=None, description="with `proofs=N`, if log_index < N: its inclusion proof in the tree of N"
    )


class InboxPage(BaseModel):
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
    seqs: list[Seq] = Field(min_length=1, max_length=MAX_ACK_SEQS)  # more: 422, nothing acknowledged


class AckResult(BaseModel):
    acknowledged: list[int]


class DeliveryStatus(BaseModel):
    recipient: str
    seq: int | None
    state: str
    created_ms: int
    acked_ms: int | None
    receipt: str | None = None  # the recipient's signed delivery receipt (base64url), if it sent one


class ReceiptsIn(Strict):
    receipts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,20000}$")]] = Field(
        min_length=1, max_length=1000
    )


class ReceiptsResult(BaseModel):
    accepted: int


class ItemStatus(BaseModel):
    item_id: str
    log_index: int | None
    received_ms: int
    deliveries: list[DeliveryStatus]


class CountryIn(Strict):
    code: str = Field(pattern=r"^[A-Z]{3}$")
    name: str = PlainText
    accreditation: str = Field(max_length=32)
    groups: list[str] = Field(default_factory=list, max_length=64)


class CountryPatch(Strict):
    status: str | None = None
    accreditation: str | None = Field(default=None, max_length=32)
    groups: list[str] | None = Field(default=None, max_length=64)


class CountryOut(BaseModel):
    code: str
    name: str
    status: str
    accreditation: str
    groups: list[str]


class KeyDocumentIn(Strict):
    """A public key document as `msmt keys export` writes it."""

    format: str
    kind: str
    algorithm: str
    country: str
    key_id: str
    public_key: str = Field(max_length=4096)


class KeyOut(BaseModel):
    key_id: str
    owner: str
    kind: str
    public_key: str
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None


class AgreementIn(Strict):
    ceiling: str = Field(max_length=32)
    topics: list[str] | None = Field(default=None, max_length=32)


class AgreementOut(BaseModel):
    originator: str
    recipient: str
    ceiling: str
    topics: list[str] | None


class DirectoryKey(BaseModel):
    key_id: str
    public_key: str
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None


class DirectoryEntry(BaseModel):
    code: str
    name: str
    status: str
    accreditation: str
    groups: list[str]
    signing_keys: list[DirectoryKey]  # every signing key ever registered: old items stay verifiable
    encryption_key: DirectoryKey | None


class Directory(BaseModel):
    countries: list[DirectoryEntry]
    generated_ms: int


class CheckpointOut(BaseModel):
    size: int
    root: str
    note: str  # the signed note exactly as signed: checkpoint text, blank line, signature lines


class ProofOut(BaseModel):
    proof: list[str]


class LeafOut(BaseModel):
    index: int
    kind: str
    leaf: str


class ChainHead(BaseModel):
    seq: int
    hash: str


class ChainEntry(BaseModel):
    seq: int
    entry: str  # base64url of the entry's canonical bytes, exactly as signed


class DirectoryChain(BaseModel):
    head: ChainHead | None
    entries: list[ChainEntry]


class ProposalIn(Strict):
    entry: str = Field(max_length=1_000_000)  # base64url of an entry (signed part + signatures)


class SignatureIn(Strict):
    signer: str = Field(pattern=r"^[A-Z]{3}$")
    key_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    sig: str = Field(max_length=8000)


class ProposalOut(BaseModel):
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
    id: int
    at_ms: int
    actor: str
    action: str
    target: str
    details: dict[str, object]


class PreflightIn(Strict):
    markings: dict[str, Any]


class Denial(BaseModel):
    rule: str
    reason: str


class PreflightOut(BaseModel):
    allowed: list[str]
    denied: dict[str, list[Denial]]


class ExplainIn(Strict):
    recipient: str = Field(pattern=r"^[A-Z]{3}$")
    markings: dict[str, Any]


class ExplainOut(BaseModel):
    originator: str
    recipient: str
    allowed: bool
    denials: list[Denial]


class PolicyPlan(BaseModel):
    changes: list[str]
    access: list[str]
    errors: list[str]
    version: int | None


class PolicyVersionOut(BaseModel):
    version: int
    applied_ms: int
    actor: str
    change: str
    sha256: str


class RecipientDecision(BaseModel):
    recipient: str
    allowed: bool
    denials: list[Denial]


class ItemExplanation(BaseModel):
    item_id: str
    originator: str
    markings: dict[str, Any]
    registry_version: int
    policy_version: int
    decisions: list[RecipientDecision]


class BatchResult(BaseModel):
    """One envelope of a batch: its own status, and its receipt or its problem (RFC 9457)."""

    status: int
    receipt: Receipt | None = None
    problem: dict[str, Any] | None = None


class BatchResults(BaseModel):
    results: list[BatchResult]
