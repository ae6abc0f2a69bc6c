"""The gateway's local database: what the agency received, verified and decrypted.

SQLite by default (the file is created 0600), PostgreSQL with a `postgresql+psycopg://` URL.
The schema is made by the Alembic revisions shipped in `msmt/gateway/migrations`
(`msmt-gateway migrate`, and on opening a `Store`); a database an earlier gateway made with
`create_all` is taken over as it is (`migrate`).

`follow_once` moves one inbox page into the database: the page's items are stored in one
transaction, and only after it committed are they confirmed (signed receipts) and
acknowledged; the cursor is saved last. A crash anywhere re-delivers the page, and the unique
item id makes storing it again a no-op, so nothing is lost and nothing is duplicated.

A withdrawal (an item whose payload is its originator's signed `msmt-withdrawal-v1` statement,
docs/reports.md section 5) is checked like the CLI checks it: the statement verifies with a
signing key the members' directory gives its country, its country is the withdrawal's sender
and it names the item the withdrawal replies to; the withdrawn item must be that country's
too. Then, in the same transaction as the page: the withdrawn item is marked
(`gateway_withdrawals`), each STIX object whose current version it carried gets a new version
with `"revoked": true` and a later `modified` (STIX 2.1, section 3.6), and when it is TLP:RED
its plaintext is deleted (payload and the objects' content; the revoked versions keep only
what identifies them) unless the gateway is told to keep it. Anything else is recorded as
refused and changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from ..client import Batch, Delivery, Received
from ..core import governance as gov
from ..core import report as rp
from ..core.errors import MsmtError
from ..errors import ClientError
from . import stix

log = logging.getLogger("msmt.gateway")

CURSOR_KEY = "inbox_cursor"
WITHDRAWAL_MEDIA_TYPE = rp.WITHDRAWAL_MEDIA_TYPE


class Base(DeclarativeBase):
    pass


class Item(Base):
    """One received item: its verified header, provenance and decrypted payload."""

    __tablename__ = "gateway_items"

    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    originator: Mapped[str] = mapped_column(String(16), index=True)
    signing_key_id: Mapped[str] = mapped_column(String(128))
    log_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    inbox_seq: Mapped[int] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)  # when the broker accepted it
    stored_ms: Mapped[int] = mapped_column(BigInteger)  # when this gateway stored it
    classification: Mapped[str] = mapped_column(String(32))
    tlp: Mapped[str] = mapped_column(String(16))
    markings: Mapped[str] = mapped_column(Text)  # JSON, as signed
    content_type: Mapped[str] = mapped_column(String(255))
    header: Mapped[str] = mapped_column(Text)  # the verified header, JSON
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    stix_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why its STIX is not served


class StixObject(Base):
    """A STIX object of a received bundle, as TAXII serves it: one collection per originator."""

    __tablename__ = "gateway_stix_objects"
    __table_args__ = (
        UniqueConstraint("collection", "object_id", "version", name="uq_gateway_stix_version"),
        Index("ix_gateway_stix_added", "collection", "added_us"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(String(16))  # the originator's country code
    object_id: Mapped[str] = mapped_column(String(300), index=True)
    object_type: Mapped[str] = mapped_column(String(250))
    spec_version: Mapped[str] = mapped_column(String(8))
    version: Mapped[str] = mapped_column(String(40))  # modified, else created, else date added
    added_us: Mapped[int] = mapped_column(BigInteger)  # date added, microseconds; unique, increasing
    item_id: Mapped[str] = mapped_column(ForeignKey("gateway_items.item_id"))
    data: Mapped[str] = mapped_column(Text)


class RejectedDelivery(Base):
    """A delivery that did not verify or decrypt: kept, never acknowledged."""

    __tablename__ = "gateway_rejected"

    inbox_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(64))
    originator: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    rejected_ms: Mapped[int] = mapped_column(BigInteger)


class Withdrawn(Base):
    """A withdrawal this gateway received (its own item is in `gateway_items` too): which item
    it withdraws, and what was done about it. A new table rather than new columns, so that a
    database made before it gains it from `create_all`."""

    __tablename__ = "gateway_withdrawals"

    withdrawal_item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(64), index=True)  # the item withdrawn
    originator: Mapped[str] = mapped_column(String(16))  # who sent the withdrawal
    reason: Mapped[str] = mapped_column(Text)
    withdrawn_ms: Mapped[int] = mapped_column(BigInteger)  # when its originator signed it
    stored_ms: Mapped[int] = mapped_column(BigInteger)
    # when the withdrawn item was marked here: None while this gateway does not hold it (it is
    # marked as soon as it is stored), or when the withdrawal was refused
    applied_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    refused: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it changed nothing
    revoked: Mapped[int] = mapped_column(Integer, default=0)  # STIX objects given a revoked version
    plaintext_deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Submission(Base):
    """Objects an analyst POSTed to a writable TAXII collection, sealed and sent as one item:
    the TAXII status resource `GET /msmt/status/{status_id}/` answers from it."""

    __tablename__ = "gateway_submissions"

    status_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    profile: Mapped[str] = mapped_column(String(32))  # the send profile (collection) posted to
    requested_by: Mapped[str] = mapped_column(String(128))  # the user or token name
    request_us: Mapped[int] = mapped_column(BigInteger)
    item_id: Mapped[str] = mapped_column(String(64), index=True)  # the sealed item
    outcome: Mapped[str] = mapped_column(String(16))  # sent, pending (in the outbox), refused
    objects: Mapped[str] = mapped_column(Text)  # JSON [[id, version], ...]
    tlp: Mapped[str] = mapped_column(String(16))  # the envelope's
    recipients: Mapped[str] = mapped_column(Text)  # JSON list, once the broker accepted it
    log_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message: Mapped[str] = mapped_column(Text)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class State(Base):
    __tablename__ = "gateway_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def now_ms() -> int:
    return int(time.time() * 1000)


def timestamp(us: int) -> str:
    """A TAXII/STIX timestamp (UTC, microseconds) from microseconds since the epoch."""
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp_us(text: str) -> int:
    """Microseconds since the epoch from an RFC 3339 timestamp (ValueError when it is not one)."""
    value = text.strip()
    if not value.endswith(("Z", "z")):
        raise ValueError(f"{text!r} is not a UTC timestamp ending in Z")
    head, _, fraction = value[:-1].partition(".")
    if fraction and not fraction.isdigit():
        raise ValueError(f"{text!r} is not a timestamp")
    moment = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return int(moment.timestamp()) * 1_000_000 + micros


def normal_version(text: str | None, added_us: int) -> str:
    """Versions compare as strings once they share one format."""
    if text is None:
        return timestamp(added_us)
    try:
        return timestamp(parse_timestamp_us(text))
    except ValueError:
        return text[:40]


def private_sqlite_file(url: str) -> None:
    """Create an SQLite database file 0600 before SQLite does (it would follow the umask);
    its journal and WAL files take the same mode."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    path.chmod(0o600)


@dataclass(frozen=True)
class Saved:
    stored: int  # new items
    duplicates: int  # items stored before (a re-delivery)
    rejected: int
    objects: int  # STIX objects indexed
    withdrawn: int = 0  # items marked withdrawn


@dataclass(frozen=True)
class ObjectPage:
    objects: list[dict[str, Any]]
    added: list[int]  # each object's date added (microseconds)
    versions: list[str]
    more: bool
    next: str | None


def _sqlite_secure_delete(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA secure_delete = ON")
    cursor.close()


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The database's schema revision (None: not made by the migrations, or empty)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head") -> str | None:
    """Bring the database's schema to `revision`; a store made by `create_all` (before the
    gateway had migrations: its tables but no `alembic_version`) is taken over as it is: the
    first revision creates only the tables it lacks, and the revision is recorded. Returns
    the revision it was at before (None: new, or taken over)."""
    private_sqlite_file(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    if before is None and "gateway_items" in tables:
        log.info("taking over a gateway database made before migrations (%d tables)", len(tables))
    if before != head_revision() or revision != "head":
        command.upgrade(alembic_config(url), revision)
    return before


class Store:
    def __init__(self, url: str, *, echo: bool = False, upgrade: bool = True) -> None:
        """Open the gateway's database; `upgrade` brings its schema to the current revision
        first (else a database behind it is refused)."""
        private_sqlite_file(url)
        if upgrade:
            migrate(url)
        elif current_revision(url) != head_revision():
            raise ClientError(
                f"the gateway database is at schema revision {current_revision(url)}, not "
                f"{head_revision()}: run `msmt-gateway migrate`"
            )
        self.url = url
        self.engine: Engine = create_engine(url, echo=echo)
        if self.engine.dialect.name == "sqlite":
            # deleted content (a withdrawn TLP:RED item's plaintext) is overwritten, not left in
            # free pages of the file
            event.listen(self.engine, "connect", _sqlite_secure_delete)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # --- the inbox cursor ------------------------------------------------------------------

    def cursor(self) -> int:
        with self.sessions() as session:
            state = session.get(State, CURSOR_KEY)
            return int(state.value) if state is not None else 0

    def set_cursor(self, cursor: int) -> None:
        with self.sessions.begin() as session:
            state = session.get(State, CURSOR_KEY)
            if state is None:
                session.add(State(key=CURSOR_KEY, value=str(cursor)))
            elif int(state.value) < cursor:
                state.value = str(cursor)

    # --- storing ---------------------------------------------------------------------------

    def save(
        self,
        batch: Batch,
        at_ms: int | None = None,
        *,
        withdrawals: Mapping[str, rp.Withdrawal | MsmtError] | None = None,
        keep_withdrawn: bool = False,
    ) -> Saved:
        """Store a page's received items and rejections in one transaction (committed on return).

        `withdrawals` maps the item id of each withdrawal in the page to its statement as
        `check_withdrawal` verified it, or to why it did not verify (`follow_once` makes it); a
        withdrawal missing from it is refused. `keep_withdrawn` keeps the plaintext of
        withdrawn TLP:RED items."""
        at_ms = now_ms() if at_ms is None else at_ms
        checked = withdrawals or {}
        stored = duplicates = objects = rejected = withdrawn = 0
        with self.sessions.begin() as session:
            last_us = session.scalar(select(func.max(StixObject.added_us))) or 0
            for received in batch.received:
                header = received.opened.header
                if session.get(Item, header.item_id) is not None:
                    duplicates += 1
                    continue
                item = _item(received, at_ms)
                session.add(item)
                session.flush()  # the item row before the objects that refer to it
                added = _objects(session, item, received, max(at_ms * 1000, last_us + 1))
                objects += len(added)
                stored += 1
                pending = list(
                    session.scalars(
                        select(Withdrawn).where(
                            Withdrawn.item_id == item.item_id,
                            Withdrawn.applied_ms.is_(None),
                            Withdrawn.refused.is_(None),
                        )
                    )
                )  # withdrawn before it reached this gateway
                if header.content_type == WITHDRAWAL_MEDIA_TYPE:
                    statement = checked.get(header.item_id) or ClientError(
                        "its signed statement was not checked against the members' directory"
                    )
                    pending.append(_record_withdrawal(session, received, statement, at_ms))
                for withdrawal in pending:
                    if withdrawal.refused is not None:
                        continue
                    first_us = max(at_ms * 1000, last_us + 1, *(row.added_us + 1 for row in added))
                    revoked = _apply_withdrawal(session, withdrawal, at_ms, first_us, keep_withdrawn)
                    added += revoked
                    withdrawn += withdrawal.applied_ms is not None
                if added:
                    last_us = max(last_us, *(row.added_us for row in added))
            for rejection in batch.rejected:
                delivery = rejection.delivery
                if session.get(RejectedDelivery, delivery.seq) is not None:
                    continue
                session.add(
                    RejectedDelivery(
                        inbox_seq=delivery.seq,
                        item_id=delivery.item_id[:64],
                        originator=delivery.originator[:16],
                        code=str(getattr(rejection.error, "code", type(rejection.error).__name__))[:64],
                        detail=str(rejection.error)[:4000],
                        envelope=rejection.envelope,
                        rejected_ms=at_ms,
                    )
                )
                rejected += 1
        return Saved(stored, duplicates, rejected, objects, withdrawn)

    # --- reading ---------------------------------------------------------------------------

    def item(self, item_id: str) -> Item | None:
        with self.sessions() as session:
            return session.get(Item, item_id)

    def withdrawals(self, item_id: str | None = None) -> list[Withdrawn]:
        """The withdrawals received (of `item_id` only, when given), in the order stored."""
        query = select(Withdrawn).order_by(Withdrawn.stored_ms, Withdrawn.withdrawal_item_id)
        if item_id is not None:
            query = query.where(Withdrawn.item_id == item_id)
        with self.sessions() as session:
            return list(session.scalars(query))

    def items(self) -> list[Item]:
        with self.sessions() as session:
            return list(session.scalars(select(Item).order_by(Item.stored_ms, Item.item_id)))

    # --- submissions (TAXII POST) ------------------------------------------------------------

    def add_submission(self, row: Submission) -> None:
        with self.sessions.begin() as session:
            session.add(row)

    def submission(self, status_id: str) -> Submission | None:
        with self.sessions() as session:
            return session.get(Submission, status_id)

    def pending_submissions(self) -> list[Submission]:
        with self.sessions() as session:
            return list(session.scalars(select(Submission).where(Submission.outcome == "pending")))

    def settle_submission(
        self,
        item_id: str,
        outcome: str,
        message: str,
        *,
        recipients: Sequence[str] = (),
        log_index: int | None = None,
    ) -> int:
        """Record what became of a pending item (sent or refused); how many rows changed."""
        with self.sessions.begin() as session:
            rows = list(
                session.scalars(
                    select(Submission).where(Submission.item_id == item_id, Submission.outcome == "pending")
                )
            )
            for row in rows:
                row.outcome = outcome
                row.message = message[:4000]
                row.recipients = json.dumps(sorted(recipients))
                row.log_index = log_index
                row.updated_ms = now_ms()
            return len(rows)

    def collections(self) -> list[str]:
        """Originators whose STIX this gateway holds, plus every originator it received from."""
        with self.sessions() as session:
            return sorted(set(session.scalars(select(Item.originator).distinct())))

    def objects(
        self,
        collection: str,
        *,
        added_after_us: int | None = None,
        limit: int = 100,
        next_token: str | None = None,
        ids: Sequence[str] = (),
        types: Sequence[str] = (),
        versions: Sequence[str] = ("last",),
        spec_versions: Sequence[str] = (),
    ) -> ObjectPage:
        """A page of a collection's objects in date-added order; `next_token` continues one."""
        query = select(StixObject).where(StixObject.collection == collection)
        if added_after_us is not None:
            query = query.where(StixObject.added_us > added_after_us)
        if next_token is not None:
            query = query.where(StixObject.pk > int(next_token))
        if ids:
            query = query.where(StixObject.object_id.in_(list(ids)))
        if types:
            query = query.where(StixObject.object_type.in_(list(types)))
        if spec_versions:
            query = query.where(StixObject.spec_version.in_(list(spec_versions)))
        query = _version_filter(query, collection, versions)
        query = query.order_by(StixObject.added_us, StixObject.pk).limit(limit + 1)
        with self.sessions() as session:
            rows = list(session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return ObjectPage(
            [json.loads(row.data) for row in rows],
            [row.added_us for row in rows],
            [row.version for row in rows],
            more,
            str(rows[-1].pk) if more else None,
        )


def _version_filter(query: Any, collection: str, versions: Sequence[str]) -> Any:
    """TAXII 2.1 match[version]: "last" (the default), "first", "all" or exact versions."""
    wanted = set(versions) or {"last"}
    if "all" in wanted:
        return query
    clauses: list[ColumnElement[bool]] = []
    exact = [normal_version(v, 0) for v in wanted - {"first", "last"}]
    if exact:
        clauses.append(StixObject.version.in_(exact))
    for which, pick in (("last", func.max), ("first", func.min)):
        if which in wanted:
            inner = aliased(StixObject)  # correlated: the same object's other versions
            others = (
                select(pick(inner.version))
                .where(inner.collection == collection, inner.object_id == StixObject.object_id)
                .scalar_subquery()
            )
            clauses.append(StixObject.version == others)
    return query.where(or_(*clauses))


def _item(received: Received, at_ms: int) -> Item:
    header = received.opened.header
    delivery = received.delivery
    header_json = json.dumps(_header_view(header.to_dict()), sort_keys=True)
    return Item(
        item_id=header.item_id,
        originator=header.originator,
        signing_key_id=header.originator_key_id,
        log_index=delivery.log_index,
        inbox_seq=delivery.seq,
        created_ms=header.created_ms,
        received_ms=delivery.received_ms,
        stored_ms=at_ms,
        classification=header.markings.classification,
        tlp=header.markings.tlp,
        markings=json.dumps(header.markings.to_dict(), sort_keys=True),
        content_type=header.content_type,
        header=header_json,
        envelope_sha256=received.envelope_sha256,
        payload=received.payload,
    )


def _header_view(header: dict[str, Any]) -> dict[str, Any]:
    """The header as stored: wrapped content keys reduced to their recipients and key ids."""
    view = dict(header)
    view["recipients"] = [{"country": r["country"], "key_id": r["key_id"]} for r in header["recipients"]]
    return view


def _objects(session: Session, item: Item, received: Received, first_us: int) -> list[StixObject]:
    """Index the item's STIX objects when it carries a bundle whose markings agree with the
    envelope's; otherwise record why its STIX is not served."""
    if item.content_type.split(";", 1)[0].strip().lower() != stix.STIX_MEDIA_TYPE:
        return []
    try:
        bundle = stix.parse_bundle(received.payload)
        stix.check_markings(bundle, received.opened.header.markings)
    except stix.StixError as exc:
        item.stix_error = f"{exc.code}: {exc}"[:4000]
        log.warning("item %s from %s: its STIX is not served: %s", item.item_id, item.originator, exc)
        return []
    rows: list[StixObject] = []
    added_us = first_us
    for obj in bundle.get("objects", []):
        version = normal_version(stix.object_version(obj), added_us)
        exists = session.scalar(
            select(StixObject.pk).where(
                StixObject.collection == item.originator,
                StixObject.object_id == obj["id"],
                StixObject.version == version,
            )
        )
        if exists is not None:
            continue  # the same version of the same object, sent again: served once
        row = StixObject(
            collection=item.originator,
            object_id=obj["id"],
            object_type=obj["type"],
            spec_version=str(obj.get("spec_version", "2.1"))[:8],
            version=version,
            added_us=added_us,
            item_id=item.item_id,
            data=json.dumps(obj, sort_keys=True),
        )
        session.add(row)
        rows.append(row)
        added_us += 1
    session.flush()
    return rows


# --- withdrawals ---------------------------------------------------------------------------


class WithdrawalRefused(ClientError):
    code = "withdrawal-refused"


def check_withdrawal(received: Received, directory: gov.DirectoryState) -> rp.Withdrawal:
    """The statement a withdrawal carries, verified as the CLI verifies it: with a signing key
    the members' directory gives its country at the time it was signed; its country must be
    the withdrawal's sender and its item the one the withdrawal replies to. Raises MsmtError."""
    header = received.opened.header
    statement, _ = rp.parse_withdrawal(received.payload)
    key = rp.directory_key(directory, statement.country, statement.key_id, statement.created_ms)
    statement = rp.verify_withdrawal(received.payload, key)
    if statement.country != header.originator or statement.item_id != header.in_reply_to:
        raise WithdrawalRefused(
            f"it is not {header.originator}'s own statement about the item it replies to "
            f"(the statement is {statement.country}'s, about item {statement.item_id})"
        )
    return statement


def _record_withdrawal(
    session: Session, received: Received, statement: rp.Withdrawal | MsmtError, at_ms: int
) -> Withdrawn:
    header = received.opened.header
    if isinstance(statement, rp.Withdrawal):
        row = Withdrawn(
            withdrawal_item_id=header.item_id,
            item_id=statement.item_id,
            originator=header.originator,
            reason=statement.reason,
            withdrawn_ms=statement.created_ms,
            stored_ms=at_ms,
            revoked=0,
            plaintext_deleted=False,
        )
    else:
        refused = f"{statement.code}: {statement.detail}"[:4000]
        log.warning("withdrawal %s from %s refused: %s", header.item_id, header.originator, refused)
        row = Withdrawn(
            withdrawal_item_id=header.item_id,
            item_id=(header.in_reply_to or "")[:64],
            originator=header.originator,
            reason="",
            withdrawn_ms=header.created_ms,
            stored_ms=at_ms,
            refused=refused,
            revoked=0,
            plaintext_deleted=False,
        )
    session.add(row)
    session.flush()
    return row


def _revocable(obj: dict[str, Any]) -> bool:
    """STIX 2.1 objects that can be revoked: those with `created` (SDOs, SROs, language
    content...), not marking definitions (never versioned) nor cyber-observables (no `revoked`)."""
    return obj.get("type") != "marking-definition" and "created" in obj


_TOMBSTONE_KEYS = ("type", "spec_version", "id", "created", "created_by_ref", "object_marking_refs")


def _apply_withdrawal(
    session: Session, withdrawal: Withdrawn, at_ms: int, first_us: int, keep: bool
) -> list[StixObject]:
    """Mark the withdrawn item, if this gateway holds it and it is the withdrawer's: revoke the
    STIX objects whose current version it carried, and delete a TLP:RED item's plaintext
    unless `keep`. Returns the revoked versions added (dated from `first_us`)."""
    target = session.get(Item, withdrawal.item_id)
    if target is None:
        log.info(
            "%s withdrew item %s, which this gateway does not hold (yet)",
            withdrawal.originator,
            withdrawal.item_id,
        )
        return []
    if target.originator != withdrawal.originator:
        withdrawal.refused = (
            f"withdrawal-refused: item {target.item_id} was sent by {target.originator}, not "
            f"{withdrawal.originator}: only its originator may withdraw it"
        )
        log.warning("withdrawal %s refused: %s", withdrawal.withdrawal_item_id, withdrawal.refused)
        return []
    delete = target.tlp == "RED" and not keep
    rows = list(
        session.scalars(
            select(StixObject)
            .where(StixObject.item_id == target.item_id, StixObject.collection == target.originator)
            .order_by(StixObject.pk)
        )
    )
    revoked: list[StixObject] = []
    added_us = first_us
    for object_id in dict.fromkeys(row.object_id for row in rows):
        latest = session.scalars(
            select(StixObject)
            .where(StixObject.collection == target.originator, StixObject.object_id == object_id)
            .order_by(StixObject.version.desc(), StixObject.pk.desc())
            .limit(1)
        ).one()
        current = json.loads(latest.data)
        if latest.item_id != target.item_id or not _revocable(current) or current.get("revoked") is True:
            continue  # a later version came in another item, or it cannot be revoked
        try:
            previous_us = parse_timestamp_us(latest.version)
        except ValueError:
            previous_us = 0
        modified = timestamp(max(at_ms * 1000, previous_us + 1))
        # for a TLP:RED item whose plaintext goes: only what identifies the object, and its markings
        keys = _TOMBSTONE_KEYS if delete else tuple(current)
        data = {key: current[key] for key in keys if key in current}
        data.update(modified=modified, revoked=True)
        row = StixObject(
            collection=target.originator,
            object_id=object_id,
            object_type=latest.object_type,
            spec_version=latest.spec_version,
            version=modified,
            added_us=added_us,
            item_id=withdrawal.withdrawal_item_id,
            data=json.dumps(data, sort_keys=True),
        )
        session.add(row)
        revoked.append(row)
        added_us += 1
    if delete:
        for row in rows:
            if row.object_id not in stix.TLP_BY_ID:  # the public TLP definitions are no secret
                session.delete(row)
        target.payload = b""
    withdrawal.applied_ms = at_ms
    withdrawal.revoked = len(revoked)
    withdrawal.plaintext_deleted = delete
    session.flush()
    log.warning(
        "%s withdrew item %s (%s): %d STIX object(s) revoked%s",
        withdrawal.originator,
        target.item_id,
        withdrawal.reason[:200],
        len(revoked),
        "; its TLP:RED plaintext was deleted" if delete else "",
    )
    return revoked


# --- following the inbox ----------------------------------------------------------------


class _VerifiedDirectory(Protocol):
    @property
    def state(self) -> gov.DirectoryState: ...


class InboxClient(Protocol):
    """What `follow` needs of `msmt.client.Client`."""

    def receive(
        self, after: int = 0, *, limit: int = 100, wait: float = 0, read_ahead: bool = False
    ) -> Batch: ...

    def confirm(self, received: Iterable[Received], *, unavailable: Iterable[Delivery] = ()) -> list[int]: ...

    def directory(self, *, refresh: bool = False) -> _VerifiedDirectory: ...


@dataclass(frozen=True)
class Followed:
    saved: Saved
    acknowledged: int
    unavailable: int
    cursor: int

    @property
    def handled(self) -> int:
        return self.saved.stored + self.saved.duplicates + self.saved.rejected + self.unavailable


def check_withdrawals(client: InboxClient, batch: Batch) -> dict[str, rp.Withdrawal | MsmtError]:
    """Each withdrawal of the page: its verified statement, or why it does not verify."""
    checked: dict[str, rp.Withdrawal | MsmtError] = {}
    state: gov.DirectoryState | None = None
    for received in batch.received:
        header = received.opened.header
        if header.content_type != WITHDRAWAL_MEDIA_TYPE:
            continue
        if state is None:
            state = client.directory().state  # verified from the pinned root
        try:
            checked[header.item_id] = check_withdrawal(received, state)
        except MsmtError as exc:
            checked[header.item_id] = exc
    return checked


def follow_once(
    client: InboxClient,
    store: Store,
    *,
    wait: float = 0,
    limit: int = 100,
    keep_withdrawn: bool = False,
    read_ahead: bool = False,
) -> Followed:
    """One inbox page: receive (verify, decrypt) -> store in one transaction -> confirm and
    acknowledge only after that commit -> move the cursor. Rejected deliveries are stored as
    such and never acknowledged; the cursor moves past them (one bad item blocks nothing).
    Withdrawals are verified and applied in the page's transaction (`Store.save`).

    `read_ahead`: the next page is fetched while this one is stored (`Client.receive`); the
    next call takes it only if the cursor did move to this page's end."""
    batch = client.receive(store.cursor(), limit=limit, wait=wait, read_ahead=read_ahead)
    saved = store.save(batch, withdrawals=check_withdrawals(client, batch), keep_withdrawn=keep_withdrawn)
    acknowledged = client.confirm(batch.received, unavailable=batch.unavailable)
    store.set_cursor(batch.cursor)
    if saved.stored or saved.rejected:
        log.info(
            "stored %d item(s) (%d STIX objects, %d withdrawn), %d rejected, %d re-delivered; cursor %d",
            saved.stored,
            saved.objects,
            saved.withdrawn,
            saved.rejected,
            saved.duplicates,
            batch.cursor,
        )
    return Followed(saved, len(acknowledged), len(batch.unavailable), batch.cursor)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: first, 2*first, ... up to `cap` seconds."""

    first: float = 1.0
    cap: float = 60.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay: float = min(self.first * 2.0**self.attempt, self.cap)
        self.attempt += 1
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self.attempt = 0


def follow(
    client: InboxClient,
    store: Store,
    stop: threading.Event,
    *,
    wait: float = 30,
    limit: int = 100,
    backoff: Backoff | None = None,
    sleep: Callable[[float], object] | None = None,
    keep_withdrawn: bool = False,
) -> None:
    """Follow the inbox until `stop` is set, reconnecting forever: any error (the broker
    unreachable or answering 5xx, the database down) waits a capped exponential backoff and
    tries again from the saved cursor."""
    backoff = backoff or Backoff()
    pause = sleep or stop.wait
    while not stop.is_set():
        try:
            followed = follow_once(
                client, store, wait=wait, limit=limit, keep_withdrawn=keep_withdrawn, read_ahead=True
            )
        except Exception as exc:
            delay = backoff.next_delay()
            log.warning(
                "following the inbox failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay
            )
            pause(delay)
            continue
        backoff.reset()
        if followed.handled == 0 and wait == 0:
            pause(1.0)  # a broker without long polling: do not spin
