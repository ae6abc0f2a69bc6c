"""The gateway's local database: what the agency received, verified and decrypted.

SQLite by default (the file is created 0600), PostgreSQL with a `postgresql+psycopg://` URL.
The schema is made with `metadata.create_all` for now (no Alembic migrations yet).

`follow_once` moves one inbox page into the database: the page's items are stored in one
transaction, and only after it committed are they confirmed (signed receipts) and
acknowledged; the cursor is saved last. A crash anywhere re-delivers the page, and the unique
item id makes storing it again a no-op, so nothing is lost and nothing is duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    or_,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from ..client import Batch, Delivery, Received
from . import stix

log = logging.getLogger("msmt.gateway")

CURSOR_KEY = "inbox_cursor"


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


@dataclass(frozen=True)
class ObjectPage:
    objects: list[dict[str, Any]]
    added: list[int]  # each object's date added (microseconds)
    versions: list[str]
    more: bool
    next: str | None


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        private_sqlite_file(url)
        self.url = url
        self.engine: Engine = create_engine(url, echo=echo)
        Base.metadata.create_all(self.engine)
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

    def save(self, batch: Batch, at_ms: int | None = None) -> Saved:
        """Store a page's received items and rejections in one transaction (committed on return)."""
        at_ms = now_ms() if at_ms is None else at_ms
        stored = duplicates = objects = rejected = 0
        with self.sessions.begin() as session:
            last_us = session.scalar(select(func.max(StixObject.added_us))) or 0
            for received in batch.received:
                if session.get(Item, received.opened.header.item_id) is not None:
                    duplicates += 1
                    continue
                item = _item(received, at_ms)
                session.add(item)
                session.flush()  # the item row before the objects that refer to it
                added = _objects(session, item, received, max(at_ms * 1000, last_us + 1))
                if added:
                    last_us = added[-1].added_us
                objects += len(added)
                stored += 1
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
        return Saved(stored, duplicates, rejected, objects)

    # --- reading ---------------------------------------------------------------------------

    def item(self, item_id: str) -> Item | None:
        with self.sessions() as session:
            return session.get(Item, item_id)

    def items(self) -> list[Item]:
        with self.sessions() as session:
            return list(session.scalars(select(Item).order_by(Item.stored_ms, Item.item_id)))

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


# --- following the inbox ----------------------------------------------------------------


class InboxClient(Protocol):
    """What `follow` needs of `msmt.client.Client`."""

    def receive(self, after: int = 0, *, limit: int = 100, wait: float = 0) -> Batch: ...

    def confirm(self, received: Iterable[Received], *, unavailable: Iterable[Delivery] = ()) -> list[int]: ...


@dataclass(frozen=True)
class Followed:
    saved: Saved
    acknowledged: int
    unavailable: int
    cursor: int

    @property
    def handled(self) -> int:
        return self.saved.stored + self.saved.duplicates + self.saved.rejected + self.unavailable


def follow_once(client: InboxClient, store: Store, *, wait: float = 0, limit: int = 100) -> Followed:
    """One inbox page: receive (verify, decrypt) -> store in one transaction -> confirm and
    acknowledge only after that commit -> move the cursor. Rejected deliveries are stored as
    such and never acknowledged; the cursor moves past them (one bad item blocks nothing)."""
    batch = client.receive(store.cursor(), limit=limit, wait=wait)
    saved = store.save(batch)
    acknowledged = client.confirm(batch.received, unavailable=batch.unavailable)
    store.set_cursor(batch.cursor)
    if saved.stored or saved.rejected:
        log.info(
            "stored %d item(s) (%d STIX objects), %d rejected, %d re-delivered; cursor %d",
            saved.stored,
            saved.objects,
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
) -> None:
    """Follow the inbox until `stop` is set, reconnecting forever: any error (the broker
    unreachable or answering 5xx, the database down) waits a capped exponential backoff and
    tries again from the saved cursor."""
    backoff = backoff or Backoff()
    pause = sleep or stop.wait
    while not stop.is_set():
        try:
            followed = follow_once(client, store, wait=wait, limit=limit)
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
