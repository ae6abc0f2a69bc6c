"""Submit: verify an envelope, check every recipient, and store it (in batches)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from msmt.core import Markings, check_freshness, errors, parse
from msmt.core.envelope import Envelope, Header
from msmt.core.report import WITHDRAWAL_MEDIA_TYPE

from ..problems import Problem, conflict, forbidden, invalid
from ..settings import Settings
from ..store import queries
from ..store.bulk import execute_many
from ..store.db import transaction
from ..store.models import Item, LogPending, MemberUsage
from . import policy as policy_service
from . import signatures
from .auth import Caller
from .quota import QuotaBook, Quotas, storage_quota_exceeded
from .registry import Registry, RegistryCache

ITEMS: Table = Item.__table__  # type: ignore[assignment]
PENDING: Table = LogPending.__table__  # type: ignore[assignment]
USAGE: Table = MemberUsage.__table__  # type: ignore[assignment]

# Statements of every submission batch, built once on the tables (see services/log.py).
_STORED_DIGESTS = select(ITEMS.c.item_id, ITEMS.c.envelope_sha256).where(
    ITEMS.c.item_id.in_(bindparam("ids", expanding=True))
)
_ORIGINATORS_OF = select(ITEMS.c.item_id, ITEMS.c.originator).where(
    ITEMS.c.item_id.in_(bindparam("ids", expanding=True))
)
_LOCK_USAGE = (
    select(USAGE.c.country, USAGE.c.stored_bytes)
    .where(USAGE.c.country.in_(bindparam("codes", expanding=True)))
    .order_by(USAGE.c.country)
    .with_for_update()
)


@dataclass(frozen=True)
class Receipt:
    item_id: str
    log_index: int | None  # None until the log integrated it
    received_ms: int
    recipients: tuple[str, ...]
    created: bool  # False when this answers an identical re-submission
    seqs: dict[str, int | None] = field(default_factory=dict)  # each recipient's inbox number

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "log_index": self.log_index,
            "received_ms": self.received_ms,
            "recipients": list(self.recipients),
            "deliveries": [{"recipient": r, "seq": self.seqs.get(r)} for r in self.recipients],
        }


@dataclass(frozen=True)
class Prepared:
    """An envelope that passed every check that needs no write."""

    envelope: Envelope
    data: bytes
    digest: str  # SHA-256 of `data`, hex
    now_ms: int
    key_id: str  # the API key the caller authenticated with


def envelope_problem(exc: errors.EnvelopeError) -> Problem:
    status = 413 if isinstance(exc, errors.OversizedField) else 422
    return Problem(status, exc.code, "Envelope rejected", exc.detail)


def receipt_for(session: Session, item_id: str, *, created: bool) -> Receipt:
    """The receipt as the store holds it now (log index and inbox numbers once integrated)."""
    item = session.get(Item, item_id)
    assert item is not None
    return Receipt(
        item_id,
        item.log_index,
        item.received_ms,
        tuple(item.recipients.split(",")),  # its deliveries, once integrated, have the same
        created,
        {d.recipient: d.seq for d in queries.deliveries_of_item(session, item_id)},
    )


def _recipient_refusals(
    registry: Registry, envelope: Envelope, now_ms: int
) -> dict[str, list[dict[str, str]]]:
    header = envelope.header
    refusals: dict[str, list[dict[str, str]]] = {}
    for entry in header.recipients:
        decision = registry.decide(header.originator, entry.country, header.markings)
        reasons = [{"rule": d.rule, "reason": d.reason} for d in decision.denials]
        current = registry.current_key(entry.country, "encryption", now_ms)
        if current is None:
            reasons.append(
                {"rule": "no-encryption-key", "reason": f"{entry.country} has no current encryption key"}
            )
        elif current.key_id != entry.key_id:
            reasons.append(
                {
                    "rule": "stale-encryption-key",
                    "reason": f"sealed to key {entry.key_id}; {entry.country}'s current key is {current.key_id}",
                }
            )
        if reasons:
            refusals[entry.country] = reasons
    return refusals


FRAME_HEADER = 4  # each envelope of a batch: its length as 4 bytes big-endian, then the bytes


def split_batch(data: bytes, max_items: int) -> list[bytes]:
    """The envelopes of a batch body (docs/protocol.md §4.5); the whole batch is refused,
    nothing stored, unless its frames cover the body exactly."""
    envelopes: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(envelopes) == max_items:
            raise invalid("batch-too-large", f"a batch holds at most {max_items} envelopes")
        if offset + FRAME_HEADER > len(data):
            raise invalid("bad-batch", f"the batch ends inside a frame header at byte {offset}")
        size = int.from_bytes(data[offset : offset + FRAME_HEADER], "big")
        start = offset + FRAME_HEADER
        if size == 0 or start + size > len(data):
            raise invalid(
                "bad-batch", f"frame {len(envelopes)} declares {size} bytes; {len(data) - start} remain"
            )
        envelopes.append(data[start : start + size])
        offset = start + size
    if not envelopes:
        raise invalid("bad-batch", "the batch holds no envelope")
    return envelopes


def join_batch(envelopes: Sequence[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(FRAME_HEADER, "big") + e for e in envelopes)


@dataclass(frozen=True)
class Unsigned:
    """An envelope that passed every check that needs no write but its signature's."""

    envelope: Envelope
    data: bytes
    signing_key: bytes  # the originator's current signing public key, as the registry names it


def prepare_unsigned(
    factory: sessionmaker[Session],
    registry_cache: RegistryCache,
    settings: Settings,
    caller: Caller,
    data: bytes,
    now_ms: int,
) -> Unsigned:
    """Parse, originator, freshness, and the signing key the envelope names (against the
    registry as it stands now; checked again when the batch commits). Raises a Problem."""
    try:
        envelope = parse(data)
    except errors.EnvelopeError as exc:
        raise envelope_problem(exc) from exc
    header = envelope.header
    if header.originator != caller.owner:
        raise forbidden(
            "originator-mismatch",
            f"{caller.owner} may not submit an item whose originator is {header.originator}",
        )
    try:
        check_freshness(
            header,
            now_ms,
            max_age_ms=settings.max_envelope_age_s * 1000,
            max_skew_ms=settings.max_clock_skew_s * 1000,
        )
    except errors.StaleEnvelope as exc:
        raise invalid(exc.code, exc.detail) from exc
    registry = registry_cache.latest()  # as read moments ago to authenticate the caller
    if registry is None:
        with factory() as session:
            registry = registry_cache.get(session)
    key = registry.usable_key(header.originator_key_id, now_ms, "signing", owner=header.originator)
    if key is None:
        raise forbidden(
            "unknown-signing-key",
            f"{header.originator_key_id} is not a current signing key of {header.originator}",
        )
    return Unsigned(envelope, data, key.raw)


def check_signatures(
    unsigned: Sequence[Unsigned],
    now_ms: int,
    key_id: str,
    check: Callable[[Sequence[signatures.Job]], list[signatures.Checked]] = signatures.check_here,
) -> list[Prepared | Problem]:
    """Each envelope's signature against its originator's key, then its payload against its
    header, all in one `check` (signatures.py: in this process, or spread over the signature
    workers; in `msmt.core.verify`'s order: key, signature, payload)."""
    checked = check([_job(u) for u in unsigned])
    return [  # strict: never assume what was not checked
        _checked(u, error, digest, now_ms, key_id)
        for u, (error, digest) in zip(unsigned, checked, strict=True)
    ]


def _job(unsigned: Unsigned) -> signatures.Job:
    header = unsigned.envelope.header
    return (
        unsigned.data,
        unsigned.signing_key,
        header.originator,
        header.originator_key_id,
        header.payload_size,
        header.payload_sha256,
    )


def _checked(
    unsigned: Unsigned, error: errors.EnvelopeError | None, digest: str, now_ms: int, key_id: str
) -> Prepared | Problem:
    """The envelope as stored, or what refused it (its signature or its payload)."""
    if error is not None:
        return envelope_problem(error)
    return Prepared(unsigned.envelope, unsigned.data, digest, now_ms, key_id)


def prepare(
    factory: sessionmaker[Session],
    registry_cache: RegistryCache,
    settings: Settings,
    caller: Caller,
    data: bytes,
    now_ms: int,
) -> Prepared:
    """Every check that needs no write, for one envelope, in this process. Raises a Problem."""
    unsigned = prepare_unsigned(factory, registry_cache, settings, caller, data, now_ms)
    (answer,) = check_signatures([unsigned], now_ms, caller.key_id)
    if isinstance(answer, Problem):
        raise answer
    return answer


def accept_batch(
    session: Session,
    registry_cache: RegistryCache,
    batch: Sequence[Prepared],
    quotas: QuotaBook | None = None,
    staged: dict[str, dict[str, Any]] | None = None,
) -> list[Receipt | Problem]:
    """Store every acceptable item of `batch` in the caller's transaction (items with their
    recipients, and their log staging rows; the integrator writes the deliveries
    with their inbox numbers): one answer per entry, in
    order. An identical re-submission (earlier, or earlier in the same batch) is answered with
    the stored receipt; different bytes under a known id are a conflict.

    No global lock is taken: the log index and inbox numbers are assigned when the integrator
    takes these items into the log (services/log.py). The registry is read under a share
    lock, so no directory or policy change can commit between these checks and the commit.
    Each originator's stored-bytes row is locked (in code order: no deadlock) until the
    commit, so that its quota holds across broker processes; only batches of the same
    originator wait for each other on it.

    With `staged`, the new items' rows are put there (item id -> row) instead of inserted, for
    an integration in the same transaction to insert them with their log index
    (`log.integrate`'s `staged`); the caller inserts whatever it left (`queries.insert_items`)."""
    registry = registry_cache.get(session, share_lock=True)
    book = quotas if quotas is not None else QuotaBook()
    usage = _Usage.lock(session, {p.envelope.header.originator for p in batch})
    limits = book.at(registry.version, lambda: policy_service.quotas(session))
    ids = list({p.envelope.header.item_id for p in batch})
    stored = dict(session.connection().execute(_STORED_DIGESTS, {"ids": ids}).all())
    references = _References.load(session, batch)
    answers: list[Receipt | Problem | None] = [None] * len(batch)
    decided: dict[_Question, dict[str, list[dict[str, str]]]] = {}
    existing: dict[str, list[int]] = defaultdict(list)  # stored before this batch: receipts read below
    fresh: dict[str, int] = {}  # item id -> position of the entry that stores it in this batch
    items: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for position, prepared in enumerate(batch):
        header = prepared.envelope.header
        item_id = header.item_id
        known = stored.get(item_id)
        if known is None and item_id in fresh:
            known = batch[fresh[item_id]].digest
        if known is not None:
            if known != prepared.digest:
                answers[position] = conflict(
                    "item-id-conflict", f"item {item_id} was already submitted with different bytes"
                )
            elif item_id in fresh:
                first = batch[fresh[item_id]]
                answers[position] = Receipt(
                    item_id, None, first.now_ms, header.recipient_countries, created=False
                )
            else:
                existing[item_id].append(position)
            continue
        try:
            _check_again(registry, prepared, decided)
            references.check(header)
            usage.admit(header.originator, limits, len(prepared.data))
        except Problem as problem:
            answers[position] = problem
            continue
        fresh[item_id] = position
        references.add(header)
        items.append(_item_row(prepared, registry.version))
        pending.append({"kind": "item", "ref": item_id, "created_ms": prepared.now_ms})
        answers[position] = Receipt(item_id, None, prepared.now_ms, header.recipient_countries, created=True)
    if items:
        if staged is None:
            queries.insert_items(session, items)
        else:
            staged.update((row["item_id"], row) for row in items)
        execute_many(session, "submit.pending", insert(PENDING), pending)
        usage.write(session)
    for item_id, positions in existing.items():
        receipt = receipt_for(session, item_id, created=False)
        for position in positions:
            answers[position] = receipt
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


@dataclass
class _Usage:
    """The stored bytes of a batch's originators, their rows locked until the commit."""

    stored: dict[str, int]
    added: dict[str, int] = field(default_factory=dict)

    @classmethod
    def lock(cls, session: Session, originators: set[str]) -> _Usage:
        codes = sorted(originators)
        stored = dict(session.connection().execute(_LOCK_USAGE, {"codes": codes}).all())
        missing = [code for code in codes if code not in stored]
        if missing:  # its first item: another process inserting it too makes one of us retry
            session.execute(insert(USAGE), [{"country": code, "stored_bytes": 0} for code in missing])
            stored.update(dict.fromkeys(missing, 0))
        return cls(stored)

    def admit(self, member: str, quotas: Quotas, size: int) -> None:
        """Count `size` more bytes for `member`, or raise the Problem if they do not fit."""
        used = self.stored[member] + self.added.get(member, 0)
        quota = quotas.of(member)
        if used + size > quota.stored_bytes:
            raise storage_quota_exceeded(member, quota, used, size)
        self.added[member] = self.added.get(member, 0) + size

    def write(self, session: Session) -> None:
        execute_many(
            session,
            "submit.usage",
            update(USAGE)
            .where(USAGE.c.country == bindparam("b_country"))
            .values(stored_bytes=USAGE.c.stored_bytes + bindparam("b_added")),
            [{"b_country": code, "b_added": size} for code, size in sorted(self.added.items())],
        )


@dataclass
class _References:
    """What the items a batch refers to (`supersedes`, `in_reply_to`) are, as far as the rules
    need: their originators, who received them. Read in two statements per batch.

    - Only an item's originator may supersede it.
    - A withdrawal (content type `application/vnd.msmt.withdrawal+json`) replies to the
      withdrawn item, which must be the originator's own, and goes to all its recipients.
    - A reply replies to an item in the sender's view (it sent or received it).
    A reference to an item that does not exist is refused with the same words as one to an item
    outside the sender's view: the answer tells nobody whether another member's item exists.
    """

    originators: dict[str, str]
    recipients: dict[str, set[str]]

    @classmethod
    def load(cls, session: Session, batch: Sequence[Prepared]) -> _References:
        ids = {
            ref
            for p in batch
            for ref in (p.envelope.header.supersedes, p.envelope.header.in_reply_to)
            if ref is not None
        }
        if not ids:
            return cls({}, {})
        connection = session.connection()
        originators = dict(connection.execute(_ORIGINATORS_OF, {"ids": list(ids)}).all())
        recipients = {
            item_id: set(countries.split(","))
            for item_id, countries in connection.execute(queries.RECIPIENTS_OF, {"ids": list(originators)})
        }
        return cls(originators, recipients)

    def add(self, header: Header) -> None:
        """An item stored earlier in the same batch: later ones may refer to it."""
        self.originators.setdefault(header.item_id, header.originator)
        self.recipients.setdefault(header.item_id, set(header.recipient_countries))

    def check(self, header: Header) -> None:
        """Raise the Problem for the first rule `header` breaks."""
        sender = header.originator
        if header.supersedes is not None and self.originators.get(header.supersedes) != sender:
            raise forbidden(
                "not-originator",
                f"only an item's originator may supersede it: {header.supersedes} is not an item {sender} originated",
            )
        withdrawal = header.content_type == WITHDRAWAL_MEDIA_TYPE
        target = header.in_reply_to
        if withdrawal:
            if target is None or self.originators.get(target) != sender:
                raise forbidden(
                    "not-originator",
                    f"only an item's originator may withdraw it: {target} is not an item {sender} originated",
                )
            missing = sorted(self.recipients.get(target, set()) - set(header.recipient_countries))
            if missing:
                raise invalid(
                    "withdrawal-incomplete",
                    f"a withdrawal goes to every recipient of the withdrawn item; missing: {', '.join(missing)}",
                )
        elif (
            target is not None
            and sender != self.originators.get(target)
            and sender not in self.recipients.get(target, set())
        ):
            raise forbidden(
                "unknown-reference", f"in_reply_to names {target}, which is not an item in {sender}'s view"
            )


# what `_recipient_refusals` answers depends on these alone (and the registry, one per batch)
_Question = tuple[str, Markings, tuple[tuple[str, str], ...], int]


def _check_again(
    registry: Registry,
    prepared: Prepared,
    decided: dict[_Question, dict[str, list[dict[str, str]]]],
) -> None:
    """The originator's key and each recipient's policy decision and key, against the registry
    read under the share lock. `decided`: the refusals already computed for this registry, by
    question (a batch's envelopes mostly ask the same one: one originator, one set of
    markings, the same recipients and their keys, one arrival time)."""
    header = prepared.envelope.header
    if (
        registry.usable_key(header.originator_key_id, prepared.now_ms, "signing", owner=header.originator)
        is None
    ):
        raise forbidden("unknown-signing-key", "the originator's signing key was revoked")
    question = (
        header.originator,
        header.markings,
        tuple((entry.country, entry.key_id) for entry in header.recipients),
        prepared.now_ms,
    )
    refusals = decided.get(question)
    if refusals is None:
        refusals = decided[question] = _recipient_refusals(registry, prepared.envelope, prepared.now_ms)
    if refusals:
        raise forbidden(
            "recipients-refused",
            f"{len(refusals)} of {len(header.recipients)} recipients may not receive this item; nothing was stored",
            recipients={country: list(reasons) for country, reasons in refusals.items()},
        )


def submit(
    factory: sessionmaker[Session],
    registry_cache: RegistryCache,
    settings: Settings,
    caller: Caller,
    data: bytes,
    now_ms: int,
) -> Receipt:
    """Accept one envelope in its own transaction, or raise a Problem; nothing is written
    unless every check passes. (The broker batches submissions: services/sequencer.py.)"""
    prepared = prepare(factory, registry_cache, settings, caller, data, now_ms)
    for _ in range(3):
        try:
            with transaction(factory) as session:
                (answer,) = accept_batch(session, registry_cache, [prepared])
        except IntegrityError:
            continue  # a concurrent submission of the same item (or member) won the race: look again
        if isinstance(answer, Problem):
            raise answer
        return answer
    raise conflict("item-id-conflict", "the item was being stored concurrently; submit it again")


def _item_row(prepared: Prepared, policy_version: int) -> dict[str, Any]:
    header = prepared.envelope.header
    return {
        "item_id": header.item_id,
        "originator": header.originator,
        "originator_key_id": header.originator_key_id,
        "created_ms": header.created_ms,
        "received_ms": prepared.now_ms,
        "classification": header.markings.classification,
        "tlp": header.markings.tlp,
        "content_type": header.content_type,
        "supersedes": header.supersedes,
        "in_reply_to": header.in_reply_to,
        "expires_ms": header.expires_ms,
        "size": len(prepared.data),
        "envelope_sha256": prepared.digest,
        "envelope": prepared.data,
        "log_index": None,
        "submitted_with_key": prepared.key_id,
        "recipients": ",".join(header.recipient_countries),
        "policy_version": policy_version,
    }
