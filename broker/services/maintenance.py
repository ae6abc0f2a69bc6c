"""The operator's offline tools: a consistency check of the database, and retention.

`check` reads; it never repairs. Each finding names the rule broken and where, so that an
operator can tell a restore that lost rows (sequence gaps, a log shorter than its checkpoints)
from one that is merely behind (schema). `purge` removes the envelopes of items every recipient
acknowledged long enough ago, keeping each item's row, digest and log entry: the log still
proves what was delivered, and nothing that a recipient has not confirmed is ever removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, func, literal, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from msmt.core import merkle

from ..store.models import (
    AdminAction,
    CheckpointRow,
    Delivery,
    InboxCounter,
    Item,
    LogEntry,
    LogState,
    MemberUsage,
)

# Rows read per round trip while streaming the log and the envelopes.
CHUNK = 10_000


@dataclass(frozen=True)
class Finding:
    check: str  # which rule: schema, deliveries, inbox-sequences, log-indexes, log-roots, ...
    detail: str


@dataclass(frozen=True)
class Report:
    checks: tuple[str, ...]  # every rule that ran, in order
    findings: tuple[Finding, ...]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.findings


def check(session: Session, head: str | None, *, deep: bool = False) -> Report:
    """Every consistency rule on the database behind `session` (a read-only snapshot)."""
    findings: list[Finding] = []
    ran: list[str] = []
    rules: list[tuple[str, Callable[[], Iterator[str]]]] = [
        ("schema", lambda: _schema(session, head)),
        ("deliveries", lambda: _deliveries(session)),
        ("inbox-sequences", lambda: _inbox_sequences(session)),
        ("log-indexes", lambda: _log_indexes(session)),
        ("log-roots", lambda: _log_roots(session, deep)),
        ("stored-bytes", lambda: _stored_bytes(session)),
    ]
    if deep:
        rules.append(("envelope-digests", lambda: _envelope_digests(session)))
    for name, rule in rules:
        ran.append(name)
        findings.extend(Finding(name, detail) for detail in rule())
        if name == "schema" and findings:
            break  # the other rules read tables this schema may not have
    counts: dict[str, int] = {}
    if not any(f.check == "schema" for f in findings):
        for name, query in (
            ("items", select(func.count()).select_from(Item)),
            ("deliveries", select(func.count()).select_from(Delivery)),
            ("log_entries", select(func.count()).select_from(LogEntry)),
            ("purged", select(func.count()).select_from(Item).where(Item.envelope.is_(None))),
        ):
            counts[name] = session.scalar(query) or 0
    return Report(tuple(ran), tuple(findings), counts)


def _schema(session: Session, head: str | None) -> Iterator[str]:
    try:
        version = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        session.rollback()
        yield f"the database has no schema (expected {head}): run `msmt-broker migrate`"
        return
    if version != head:
        yield f"the schema is at {version}, this broker expects {head}: run `msmt-broker migrate`"


def _deliveries(session: Session) -> Iterator[str]:
    orphans = session.execute(
        select(Delivery.recipient, Delivery.item_id)
        .outerjoin(Item, Item.item_id == Delivery.item_id)
        .where(Item.item_id.is_(None))
        .limit(20)
    ).all()
    for recipient, item_id in orphans:
        yield f"{recipient}'s delivery of item {item_id} has no item"
    unnumbered = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .join(Item, Item.item_id == Delivery.item_id)
        .where(Delivery.seq.is_(None), Item.log_index.is_not(None))
    )
    if unnumbered:
        yield f"{unnumbered} deliveries of logged items have no inbox number"
    # the integrator writes an item's deliveries, one per recipient its header lists, when it
    # logs the item: none before, exactly those after
    early = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .join(Item, Item.item_id == Delivery.item_id)
        .where(Item.log_index.is_(None))
    )
    if early:
        yield f"{early} deliveries are of items not yet in the log"
    stray = session.execute(
        select(Delivery.recipient, Delivery.item_id)
        .join(Item, Item.item_id == Delivery.item_id)
        .where(~(literal(",") + Item.recipients + literal(",")).contains("," + Delivery.recipient + ","))
        .limit(20)
    ).all()
    for recipient, item_id in stray:
        yield f"item {item_id} has a delivery to {recipient}, which is not one of its recipients"
    delivered = select(func.count()).where(Delivery.item_id == Item.item_id).correlate(Item).scalar_subquery()
    listed = func.length(Item.recipients) - func.length(func.replace(Item.recipients, ",", "")) + 1
    short = session.execute(
        select(Item.item_id, delivered, listed)
        .where(Item.log_index.is_not(None), delivered != listed)
        .limit(20)
    ).all()
    for item_id, count, recipients in short:
        yield f"item {item_id} is in the log with {count} deliveries for {recipients} recipients"


def _inbox_sequences(session: Session) -> Iterator[str]:
    counters = {c.recipient: c.last_seq for c in session.scalars(select(InboxCounter))}
    rows = session.execute(
        select(
            Delivery.recipient,
            func.count(Delivery.seq),
            func.count(func.distinct(Delivery.seq)),
            func.min(Delivery.seq),
            func.max(Delivery.seq),
        )
        .where(Delivery.seq.is_not(None))
        .group_by(Delivery.recipient)
        .order_by(Delivery.recipient)
    ).all()
    seen = set()
    for recipient, count, distinct, low, high in rows:
        seen.add(recipient)
        if distinct != count:
            yield f"{recipient}'s inbox numbers {count - distinct} deliveries twice"
        if low != 1 or high != distinct:
            yield f"{recipient}'s inbox has gaps: {distinct} numbers between {low} and {high}"
        if counters.get(recipient, 0) != high:
            yield f"{recipient}'s inbox counter says {counters.get(recipient, 0)}, its last delivery is {high}"
    for recipient, last in counters.items():
        if recipient not in seen and last:
            yield f"{recipient}'s inbox counter says {last}, but it holds no numbered delivery"


def _stored_bytes(session: Session) -> Iterator[str]:
    """Each member's stored-bytes counter (its quota is checked against it) equals the sizes
    of the envelopes it originated that are not purged."""
    usage = select(MemberUsage.country, MemberUsage.stored_bytes)
    counted = {code: size for code, size in session.execute(usage)}
    sums = (
        select(Item.originator, func.sum(Item.size)).where(Item.purged_ms.is_(None)).group_by(Item.originator)
    )
    actual = {code: size for code, size in session.execute(sums)}
    for code in sorted(set(counted) | set(actual)):
        says, holds = int(counted.get(code) or 0), int(actual.get(code) or 0)
        if says != holds:
            yield f"{code}'s stored-bytes counter says {says}, its stored envelopes hold {holds} bytes"


def _log_indexes(session: Session) -> Iterator[str]:
    size = session.scalar(select(LogState.size).where(LogState.id == 1)) or 0
    count, low, high = session.execute(
        select(func.count(), func.min(LogEntry.log_index), func.max(LogEntry.log_index))
    ).one()
    if count != size or (count and (low != 0 or high != size - 1)):
        yield f"the log's size is {size}, but it holds {count} entries numbered {low}..{high}"
    unlogged = session.scalar(
        select(func.count())
        .select_from(Item)
        .where(
            Item.log_index.is_not(None),
            ~exists().where(
                and_(
                    LogEntry.log_index == Item.log_index,
                    LogEntry.kind == "item",
                    LogEntry.ref == Item.item_id,
                )
            ),
        )
    )
    if unlogged:
        yield f"{unlogged} items name a log index whose entry is not theirs"


def _log_roots(session: Session, deep: bool) -> Iterator[str]:
    """Recompute the tree from the stored leaf hashes and compare it with every signed checkpoint
    (in one pass, keeping only the tree's right frontier)."""
    checkpoints = list(
        session.execute(select(CheckpointRow.size, CheckpointRow.root).order_by(CheckpointRow.size))
    )
    frontier = merkle.CompactRange()
    expected = 0
    pending = iter(checkpoints)
    next_checkpoint = next(pending, None)
    while next_checkpoint is not None and next_checkpoint[0] == 0:
        next_checkpoint = next(pending, None)
    for chunk in _log_chunks(session):
        for index, leaf_hash, leaf in chunk:
            if index != expected:
                return  # _log_indexes reports the gap; roots past it mean nothing
            if deep and leaf is not None and merkle.leaf_hash(bytes(leaf)) != bytes(leaf_hash):
                yield f"log entry {index}'s stored leaf does not hash to its leaf hash"
            frontier, _ = frontier.append_many([bytes(leaf_hash)])
            expected += 1
            while next_checkpoint is not None and next_checkpoint[0] == frontier.size:
                if frontier.root() != bytes(next_checkpoint[1]):
                    yield f"the checkpoint of size {frontier.size} does not match the stored leaves"
                next_checkpoint = next(pending, None)
    if next_checkpoint is not None:
        yield f"a checkpoint of size {next_checkpoint[0]} is larger than the log ({expected} entries)"


def _log_chunks(session: Session) -> Iterator[list[tuple[int, bytes, bytes | None]]]:
    after = -1
    while True:
        rows = session.execute(
            select(LogEntry.log_index, LogEntry.leaf_hash, LogEntry.leaf)
            .where(LogEntry.log_index > after)
            .order_by(LogEntry.log_index)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        yield [(int(i), bytes(h), None if leaf is None else bytes(leaf)) for i, h, leaf in rows]
        after = int(rows[-1][0])


def _envelope_digests(session: Session) -> Iterator[str]:
    after = ""
    while True:
        rows = session.execute(
            select(Item.item_id, Item.envelope_sha256, Item.envelope)
            .where(Item.item_id > after, Item.envelope.is_not(None))
            .order_by(Item.item_id)
            .limit(500)
        ).all()
        if not rows:
            return
        for item_id, digest, envelope in rows:
            if hashlib.sha256(envelope or b"").hexdigest() != digest:
                yield f"item {item_id}'s envelope does not match its digest"
        after = rows[-1][0]


def purgeable(older_than_ms: int, now_ms: int) -> ColumnElement[bool]:
    """Items whose envelope may go: logged, received before the cutoff, every delivery acknowledged."""
    return and_(
        Item.envelope.is_not(None),
        Item.log_index.is_not(None),
        Item.received_ms < now_ms - older_than_ms,
        ~exists().where(and_(Delivery.item_id == Item.item_id, Delivery.state != "acknowledged")),
    )


def purge(session: Session, older_than_ms: int, now_ms: int, actor: str, *, dry_run: bool = False) -> int:
    """Purge the envelopes retention allows; record it as an admin action. Returns how many."""
    if older_than_ms <= 0:
        raise ValueError("the retention age must be positive")
    condition = purgeable(older_than_ms, now_ms)
    if dry_run:
        return session.scalar(select(func.count()).select_from(Item).where(condition)) or 0
    freed: dict[str, int] = {}
    purged = 0
    for originator, size in session.execute(
        update(Item)
        .where(condition)
        .values(envelope=None, purged_ms=now_ms)
        .returning(Item.originator, Item.size),
        execution_options={"synchronize_session": False},
    ):
        freed[originator] = freed.get(originator, 0) + size
        purged += 1
    for code, size in sorted(freed.items()):  # the stored-bytes quota counts them no more
        session.execute(
            update(MemberUsage)
            .where(MemberUsage.country == code)
            .values(stored_bytes=MemberUsage.stored_bytes - size)
        )
    if purged:
        session.add(
            AdminAction(
                at_ms=now_ms,
                actor=actor,
                action="retention-purge",
                target=f"{purged} items",
                details=json.dumps({"older_than_ms": older_than_ms, "purged": purged}, sort_keys=True),
            )
        )
    return purged
