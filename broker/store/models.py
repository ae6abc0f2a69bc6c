"""The broker's tables. The schema itself is created only by the Alembic migrations in
`migrations/`; these classes describe it for queries, and a test checks the two agree.

Times are integer Unix milliseconds so SQLite and PostgreSQL behave identically.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Country(Base):
    __tablename__ = "countries"

    code: Mapped[str] = mapped_column(String(3), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # active | suspended
    accreditation: Mapped[str] = mapped_column(String(32))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_name: Mapped[str] = mapped_column(String(32), primary_key=True)
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"), primary_key=True)


class Admin(Base):
    __tablename__ = "admins"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Key(Base):
    """Public keys of countries (signing, encryption, api) and of admins (admin)."""

    __tablename__ = "keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(80), index=True)  # country code or "admin:<name>"
    kind: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    valid_from_ms: Mapped[int] = mapped_column(BigInteger)
    valid_until_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Agreement(Base):
    """originator -> recipient sharing rule; ("*", "*") is the default agreement."""

    __tablename__ = "agreements"

    originator: Mapped[str] = mapped_column(String(3), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(3), primary_key=True)
    ceiling: Mapped[str] = mapped_column(String(32))
    topics: Mapped[str] = mapped_column(Text)  # JSON list, or "*" for every topic
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class DenyRule(Base):
    """An admin's explicit refusal; NULL / empty conditions match anything."""

    __tablename__ = "deny_rules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    originator: Mapped[str | None] = mapped_column(String(32), nullable=True)
    recipient: Mapped[str | None] = mapped_column(String(32), nullable=True)
    classification_at_least: Mapped[str | None] = mapped_column(String(32), nullable=True)
    topics: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list
    tlp: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list


class PolicyVersion(Base):
    """The whole policy as it stood after a change, so every past decision can be replayed."""

    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    applied_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(80))
    change: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)  # TOML, as `msmt-broker policy export` writes it
    sha256: Mapped[str] = mapped_column(String(64))


class Item(Base):
    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    originator: Mapped[str] = mapped_column(String(3), index=True)
    originator_key_id: Mapped[str] = mapped_column(String(32))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    classification: Mapped[str] = mapped_column(String(32))
    tlp: Mapped[str] = mapped_column(String(16))
    content_type: Mapped[str] = mapped_column(String(127))
    supersedes: Mapped[str | None] = mapped_column(String(36), nullable=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(36), nullable=True)
    expires_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    # exactly as received; None once purged by retention (the row, digest and log entry stay)
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    purged_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    log_index: Mapped[int | None] = mapped_column(
        BigInteger, unique=True, nullable=True
    )  # set by the integrator
    submitted_with_key: Mapped[str] = mapped_column(String(32))
    # the recipient countries as the envelope's header lists them (sorted, comma-joined): its
    # deliveries are written by the integrator, with their inbox numbers, from this
    recipients: Mapped[str] = mapped_column(Text)
    policy_version: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True
    )  # the policy that allowed it


class MemberUsage(Base):
    """Bytes of envelopes each member originated that the broker still stores (not purged):
    what its `stored_bytes` quota is checked against. Changed in the transaction that stores
    items (services/submit.py) or purges them (services/maintenance.py); `msmt-broker check`
    compares it with the items themselves."""

    __tablename__ = "member_usage"

    country: Mapped[str] = mapped_column(String(3), primary_key=True)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)


class InboxCounter(Base):
    """Per-recipient sequence, advanced only by the integrator in log order."""

    __tablename__ = "inbox_counters"

    recipient: Mapped[str] = mapped_column(ForeignKey("countries.code"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("recipient", "seq", name="uq_deliveries_recipient_seq"),
        UniqueConstraint("item_id", "recipient", name="uq_deliveries_item_recipient"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.item_id"))
    recipient: Mapped[str] = mapped_column(String(3))
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # set by the integrator
    state: Mapped[str] = mapped_column(String(16))  # pending | acknowledged
    created_ms: Mapped[int] = mapped_column(BigInteger)
    acked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class LogState(Base):
    """Single row: the size of the log, written only by the integrator (services/log.py)."""

    __tablename__ = "log_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class RegistryState(Base):
    """Single row: incremented by every admin action, so brokers know when to reload the registry."""

    __tablename__ = "registry_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class LogEntry(Base):
    __tablename__ = "log_entries"
    __table_args__ = (
        # the chain of inboxes leaves (one per batch), read without scanning the other leaves
        Index(
            "ix_log_entries_inboxes",
            "log_index",
            sqlite_where=text("kind = 'inboxes'"),
            postgresql_where=text("kind = 'inboxes'"),
        ),
    )

    log_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))  # item | directory | policy | receipt | inboxes
    ref: Mapped[str] = mapped_column(String(64))
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    leaf: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # the leaf's canonical bytes


class InboxCommitment(Base):
    """The opening of one commitment of an inboxes leaf: a country's inbox size after the
    batch that leaf closed, and the salt. Shown only to that country, and, for the batch of an
    item, to the item's originator (docs/protocol.md 14.9)."""

    __tablename__ = "inbox_commitments"

    country: Mapped[str] = mapped_column(String(3), primary_key=True)
    log_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    salt: Mapped[bytes] = mapped_column(LargeBinary)


class LogPending(Base):
    """Accepted, durably committed, not yet in the log: the integrator's queue."""

    __tablename__ = "log_pending"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # item | directory | policy
    ref: Mapped[str] = mapped_column(String(64))  # item id, directory seq, policy version
    created_ms: Mapped[int] = mapped_column(BigInteger)


class LogNode(Base):
    """The hash of every perfect subtree: level 0 is the leaves. Proofs read O(log n) rows."""

    __tablename__ = "log_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class DeliveryReceiptRow(Base):
    """A recipient's signed "received and verified item X as my inbox entry n"."""

    __tablename__ = "delivery_receipts"

    item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(3), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # exactly as signed
    created_ms: Mapped[int] = mapped_column(BigInteger)


class CheckpointCosignature(Base):
    """A member witness's cosignature line (c2sp.org/tlog-cosignature) on a checkpoint."""

    __tablename__ = "checkpoint_cosignatures"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    witness: Mapped[str] = mapped_column(String(200), primary_key=True)
    line: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class CheckpointRow(Base):
    """Every checkpoint the log signed (C2SP signed note), one per integration batch."""

    __tablename__ = "checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class UsedToken(Base):
    __tablename__ = "used_tokens"

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class AdminAction(Base):
    __tablename__ = "admin_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON


class DirectoryEntry(Base):
    """The member-signed directory chain, exactly as signed: entry 0 is the genesis root.

    The tables `countries`, `group_members` and the country rows of `keys` are derived from
    it (for SQL joins and listings); the registry itself replays the verified chain.
    """

    __tablename__ = "directory_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(3), nullable=True)
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    applied_ms: Mapped[int] = mapped_column(BigInteger)


class GovernanceProposal(Base):
    """A directory statement collecting signatures; `id` is the hash of its signed part."""

    __tablename__ = "governance_proposals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(3), nullable=True)
    signed: Mapped[bytes] = mapped_column(LargeBinary)  # canonical bytes of the signed part
    signatures: Mapped[str] = mapped_column(Text)  # canonical JSON list of signature objects
    proposer: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16))  # pending | applied | stale
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class BrokerSetting(Base):
    __tablename__ = "broker_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
