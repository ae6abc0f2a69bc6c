"""The transparency log: staging, batched integration, proofs and checkpoints.

Accepting an item does not wait on any other submitter: its transaction inserts the item
(with its recipients) and a row in `log_pending`, and commits. One
integrator at a time (a PostgreSQL transaction-level advisory lock; SQLite's single writer)
then takes every pending row in one transaction: it assigns log indexes and each
recipient's inbox sequence numbers in log order, appends the leaves to the Merkle tree
(storing each completed perfect subtree, so proofs read O(log n) rows), signs a checkpoint
and commits. Deliveries become visible in inboxes only then, all at once and numbered in
commit order, so a consumer reading after its cursor never skips one.

Every batch that integrates a leaf ends with an `inboxes` leaf: a salted commitment to every
member's inbox size after the batch (0 for an empty one), chained to the previous one, so that the last leaf of
every checkpoint is one and a recipient can check its inbox is complete at its end (the
openings are kept in `inbox_commitments`).

Whoever waits for its item to be in the log integrates, so a burst of submissions is
integrated in a few batches, not one by one; a background sweeper picks up anything a
crashed process left pending.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from msmt.core import canonical, logleaf, merkle
from msmt.core.note import Checkpoint, format_note
from msmt.core.receipt import parse_receipt, receipt_leaf
from msmt.witness import submit_checkpoint

from ..problems import conflict, invalid, not_found
from ..store import queries
from ..store.bulk import execute_many, insert_unnest_sql
from ..store.db import IDLE_IN_TRANSACTION_TIMEOUT_S, transaction
from ..store.models import (
    CheckpointCosignature,
    CheckpointRow,
    Delivery,
    DeliveryReceiptRow,
    DirectoryEntry,
    InboxCommitment,
    InboxCounter,
    Item,
    LogEntry,
    LogNode,
    LogPending,
    LogState,
    PolicyVersion,
)

log = logging.getLogger("msmt.broker.log")
ITEMS: Table = Item.__table__  # type: ignore[assignment]
DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
COUNTERS: Table = InboxCounter.__table__  # type: ignore[assignment]
COMMITMENTS: Table = InboxCommitment.__table__  # type: ignore[assignment]
LOG_ENTRIES: Table = LogEntry.__table__  # type: ignore[assignment]
LOG_NODES: Table = LogNode.__table__  # type: ignore[assignment]
PENDING: Table = LogPending.__table__  # type: ignore[assignment]
LOG_STATE: Table = LogState.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = CheckpointRow.__table__  # type: ignore[assignment]
INBOXES = "inboxes"  # the kind of the leaf that ends every batch

# The integrator's statements, built once on the tables (Core, not the ORM). An integration runs
# about 15 of them whatever its batch's size (on PostgreSQL 6: its writes go as one, `_write`),
# and per execution a statement built afresh cost
# SQLAlchemy more than the query (its construction, its cache key, the ORM's compile state):
# bench/store.py with batches of one, ~10 ms of CPU per batch, most of it there.
_PENDING_BATCH = (
    select(PENDING.c.id, PENDING.c.kind, PENDING.c.ref).order_by(PENDING.c.id).limit(bindparam("n"))
)
_LOG_SIZE_FOR_UPDATE = select(LOG_STATE.c.size).where(LOG_STATE.c.id == 1).with_for_update()
# what the leaves commit to (never the envelopes themselves), and what the inbox shows of each
# delivery: the new deliveries go to this process's waiting streams from memory (Integrated)
_ITEMS_TO_LOG = select(
    ITEMS.c.item_id,
    ITEMS.c.envelope_sha256,
    ITEMS.c.originator,
    ITEMS.c.recipients,
    *(  # received_ms among them: the deliveries' created_ms
        ITEMS.c[c.key]
        for c in queries.INBOX_COLUMNS
        if c.class_ is Item and c.key not in ("item_id", "originator")
    ),
).where(ITEMS.c.item_id.in_(bindparam("ids", expanding=True)))
_COUNTERS = select(COUNTERS.c.recipient, COUNTERS.c.last_seq)
_SET_COUNTER = (
    update(COUNTERS)
    .where(COUNTERS.c.recipient == bindparam("b_recipient"))
    .values(last_seq=bindparam("b_last"))
)
_KIND_AT = select(LOG_ENTRIES.c.kind).where(LOG_ENTRIES.c.log_index == bindparam("index"))
_DONE_PENDING = delete(PENDING).where(PENDING.c.id.in_(bindparam("ids", expanding=True)))
_SET_LOG_SIZE = update(LOG_STATE).where(LOG_STATE.c.id == 1).values(size=bindparam("size"))
# One integrator at a time across broker processes: a transaction-level advisory lock with two
# keys, "msmt" and the schema's name hashed, so that brokers in other schemas of the same
# database do not wait for ours (pg_locks shows it as classid = ADVISORY_LOCK, objsubid = 2).
ADVISORY_LOCK = 0x6D736D74
_LOCK_KEYS = ":k, hashtext(current_schema())"
# The session (other than ours) that holds our schema's integration lock: its pid, how long its
# transaction has been open, its state and what it waits for.
LOCK_HOLDER_SQL = (
    "SELECT a.pid, EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start) AS held_s, a.state,"
    " a.wait_event, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :k AND l.objsubid = 2"
    " AND l.objid = hashtext(current_schema())::oid AND l.database = ("
    "SELECT oid FROM pg_database WHERE datname = current_database()) AND a.pid <> pg_backend_pid()"
)
BATCH = 2000


def stage(session: Session, kind: str, ref: str, now_ms: int) -> None:
    """Queue a leaf for integration, in the caller's transaction."""
    session.add(LogPending(kind=kind, ref=ref, created_ms=now_ms))


@dataclass(frozen=True)
class Tip:
    """The log's right frontier and the index of its last inboxes leaf, as one integration
    left them: what the next integration needs of the stored tree. Valid only while the log
    still has `frontier.size` leaves (only integrations append, under the integration lock)."""

    frontier: merkle.CompactRange
    last_inboxes: int  # -1: none yet


@dataclass(frozen=True)
class Integrated:
    size: int
    root: bytes
    leaves: int
    # item id -> (log index, each recipient's inbox number), for the items this batch logged
    items: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    # recipient -> its new deliveries in seq order, each (seq, the item as an inbox page shows it
    # without the seq, the item's expires_ms; the view is shared by the item's recipients): for
    # the waiting streams and long-polls of this process (services/notify.py)
    deliveries: dict[str, list[tuple[int, dict[str, Any], int | None]]] = field(default_factory=dict)
    tip: Tip | None = None  # the tree as this batch left it, for the next batch once committed

    @property
    def recipients(self) -> set[str]:
        """Whose inboxes grew."""
        return {r for _, seqs in self.items.values() for r in seqs}


def _take_lock(session: Session) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True  # SQLite: the write transaction (BEGIN IMMEDIATE) is already exclusive
    return bool(
        session.execute(
            text(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEYS})"), {"k": ADVISORY_LOCK}
        ).scalar_one()
    )


class NodeCache:
    """Stored subtree hashes the proof routes have read, per database, least recently used
    dropped first. A stored node is the hash of a perfect subtree of an append-only tree, so it
    never changes once committed; only nodes high enough to be shared by many proofs (levels
    >= MIN_LEVEL, subtrees of 256 leaves or more: 3,906 of them at 10^6 leaves, about 1 MiB;
    at most MAX_ENTRIES, about 15 MiB) are kept, and only nodes read by the proof routes, which read what other transactions committed (never the integrator, whose own
    uncommitted nodes could still roll back). With the upper levels in memory, a proof in a tree
    of 10^6 leaves reads about as many rows as one in a tree of 10^3 (bench/log.py)."""

    MIN_LEVEL = 8
    MAX_ENTRIES = 1 << 16  # 2 MiB or so: every upper node of a log of 16 M leaves

    def __init__(self) -> None:
        self._nodes: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.loaded = False

    def load(self, session: Session) -> None:
        """Fill the cache once with the highest stored nodes (at most MAX_ENTRIES, one range
        scan of the primary key), so that the first proofs after a start are as cheap as later
        ones; nodes stored afterwards are added as proofs read them."""
        rows = session.execute(
            select(LogNode.level, LogNode.idx, LogNode.hash)
            .where(LogNode.level >= self.MIN_LEVEL)
            .order_by(LogNode.level.desc(), LogNode.idx.desc())
            .limit(self.MAX_ENTRIES)
        )
        self.keep({(int(level), int(idx)): bytes(h) for level, idx, h in rows})
        self.loaded = True

    def split(
        self, addresses: Sequence[tuple[int, int]]
    ) -> tuple[dict[tuple[int, int], bytes], list[tuple[int, int]]]:
        found, missing = {}, []
        with self._lock:
            for address in addresses:
                value = self._nodes.get(address)
                if value is None:
                    missing.append(address)
                else:
                    self._nodes.move_to_end(address)
                    found[address] = value
        return found, missing

    def keep(self, nodes: Mapping[tuple[int, int], bytes]) -> None:
        with self._lock:
            for address, value in nodes.items():
                if address[0] >= self.MIN_LEVEL:
                    self._nodes[address] = value
            while len(self._nodes) > self.MAX_ENTRIES:
                self._nodes.popitem(last=False)


_caches: weakref.WeakKeyDictionary[Any, NodeCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_of(session: Session) -> NodeCache:
    engine = session.get_bind()
    with _caches_lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = NodeCache()
        return cache


def _read_nodes(session: Session, addresses: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    if not addresses:
        return {}
    by_level: dict[int, list[int]] = defaultdict(list)
    for level, index in addresses:
        by_level[level].append(index)
    # one primary-key lookup list per level: both engines use the index for each arm of the OR
    # (a row-value IN made SQLite scan the table: 31 ms per proof at 10^5 leaves). Plain SQL:
    # building and compiling the expression cost 3-4x the query itself.
    arms, params = [], {}
    for n, (level, indexes) in enumerate(sorted(by_level.items())):
        params[f"l{n}"] = level
        names = []
        for m, index in enumerate(indexes):
            params[f"i{n}_{m}"] = index
            names.append(f":i{n}_{m}")
        arms.append(f"(level = :l{n} AND idx IN ({', '.join(names)}))")
    where = " OR ".join(arms)  # only placeholder names built from counters: every value is bound
    rows = session.execute(text(f"SELECT level, idx, hash FROM log_nodes WHERE {where}"), params)  # noqa: S608
    return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}


def _nodes(
    session: Session, addresses: Sequence[tuple[int, int]], *, cached: bool = False
) -> dict[tuple[int, int], bytes]:
    if not cached:
        return _read_nodes(session, addresses)
    cache = _cache_of(session)
    if not cache.loaded:
        cache.load(session)
    found, missing = cache.split(addresses)
    read = _read_nodes(session, missing)
    cache.keep(read)
    return {**found, **read}


def _get(nodes: dict[tuple[int, int], bytes]) -> merkle.GetNode:
    def get(level: int, index: int) -> bytes:
        try:
            return nodes[(level, index)]
        except KeyError:
            raise not_found("log-node-missing", f"the log has no stored subtree ({level}, {index})") from None

    return get


def integrate(
    session: Session,
    signer: logleaf.LogSigner | None,
    now_ms: int,
    busy: Callable[[Session], None] | None = None,
    tip: Tip | None = None,
    staged: dict[str, dict[str, Any]] | None = None,
) -> Integrated | None:
    """Integrate up to BATCH pending leaves in the caller's transaction; None if nothing to do
    or another process is integrating (then `busy` is called). `tip`: the tree as this
    process's last committed integration left it, used instead of reading the frontier and
    the last inboxes leaf back when the log's size (read under the lock) is still its size.

    `staged`: items accepted in this transaction and not inserted yet (services/submit.py
    `accept_batch`), item id -> row. Those integrated here are inserted with their log index
    and taken out of it; the caller inserts what is left. An item row written once, not
    inserted then updated: on SQLite an update rewrites the whole row with its ~23 KB envelope
    (its overflow pages), on PostgreSQL it is a new row version with new entries in every
    index of the table (the log index is one of them)."""
    if not _take_lock(session):
        if busy is not None:
            busy(session)
        return None
    session.flush()  # what the caller staged through the ORM (stage()), before reading on the connection
    connection = session.connection()
    pending = connection.execute(_PENDING_BATCH, {"n": BATCH}).all()
    if not pending:
        return None
    size = int(connection.execute(_LOG_SIZE_FOR_UPDATE).scalar_one())
    if tip is not None and tip.frontier.size == size:
        frontier, last_inboxes = tip.frontier, tip.last_inboxes
    else:  # another process integrated since (or this one has not yet): read the tree
        nodes = _nodes(session, merkle.nodes_needed_for_root(size))
        frontier, last_inboxes = (
            merkle.CompactRange.from_store(size, _get(nodes)),
            _previous_inboxes(session, size),
        )

    staged = staged if staged is not None else {}
    item_ids = [p.ref for p in pending if p.kind == "item"]
    stored_ids = [i for i in item_ids if i not in staged]
    items: dict[str, Any] = (
        {i.item_id: i for i in connection.execute(_ITEMS_TO_LOG, {"ids": stored_ids})} if stored_ids else {}
    )
    items.update((i, _Staged(staged[i])) for i in item_ids if i in staged)
    recipients = {item_id: item.recipients.split(",") for item_id, item in items.items()}
    next_seq, sizes, counters = _reserve_seqs(session, [r for i in item_ids for r in recipients[i]])

    entries: list[dict[str, object]] = []
    logged: dict[str, tuple[int, dict[str, int]]] = {}
    deliveries: dict[str, list[tuple[int, dict[str, Any], int | None]]] = defaultdict(list)
    item_updates: list[dict[str, object]] = []
    new_items: list[dict[str, Any]] = []
    new_deliveries: list[dict[str, object]] = []
    leaf_hashes: list[bytes] = []
    index = size
    for row in pending:
        seqs: dict[str, int] = {}
        leaf = _leaf(session, row, items, recipients, next_seq, seqs)
        if leaf is None:
            continue
        digest = logleaf.hash_of(leaf)
        entries.append(
            {
                "log_index": index,
                "kind": row.kind,
                "ref": row.ref,
                "leaf_hash": digest,
                "created_ms": now_ms,
                "leaf": leaf,
            }
        )
        if row.kind == "item":
            if row.ref in staged:
                new_items.append({**staged.pop(row.ref), "log_index": index})
            else:
                item_updates.append({"b_item": row.ref, "b_index": index})
            logged[row.ref] = (index, seqs)
            item = items[row.ref]
            shown = queries.delivery_view({**item._mapping, "seq": 0, "state": "pending", "log_index": index})
            del shown["seq"]
            for r, seq in seqs.items():
                deliveries[r].append((seq, shown, item.expires_ms))
            new_deliveries.extend(
                {
                    "item_id": row.ref,
                    "recipient": r,
                    "seq": seq,
                    "state": "pending",
                    "created_ms": item.received_ms,
                }
                for r, seq in seqs.items()
            )
        leaf_hashes.append(digest)
        index += 1
    if entries:
        # the batch ends with the inboxes leaf: every non-empty inbox's size after it, salted
        leaf, salts = logleaf.new_inboxes_leaf(last_inboxes, sizes)
        last_inboxes = index
        digest = logleaf.hash_of(leaf)
        entries.append(
            {
                "log_index": index,
                "kind": INBOXES,
                "ref": "-",
                "leaf_hash": digest,
                "created_ms": now_ms,
                "leaf": leaf,
            }
        )
        leaf_hashes.append(digest)
        commitments = [
            {"country": c, "log_index": index, "size": sizes[c], "salt": salt} for c, salt in salts.items()
        ]
    else:
        commitments = []
    frontier, new_nodes = frontier.append_many(leaf_hashes)
    root = frontier.root()
    checkpoints: list[dict[str, object]] = []
    if signer is not None and frontier.size > size:
        checkpoint = Checkpoint(signer.origin, frontier.size, root)
        note = format_note(checkpoint.to_text(), list(signer.sign(checkpoint.to_text())))
        checkpoints.append({"size": frontier.size, "root": root, "note": note.decode(), "created_ms": now_ms})
    _write(
        session,
        _Writes(
            counters=counters,
            commitments=commitments,
            entries=entries,
            nodes=[{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in new_nodes] if entries else [],
            items=new_items,
            item_updates=item_updates,
            deliveries=new_deliveries,
            done=[p.id for p in pending],
            size=frontier.size,
            checkpoints=checkpoints,
        ),
    )
    return Integrated(
        frontier.size, root, len(entries), logged, dict(deliveries), Tip(frontier, last_inboxes)
    )


@dataclass(frozen=True)
class _Writes:
    """Everything one integration writes, written together at its end (`_write`)."""

    counters: list[dict[str, object]]  # b_recipient, b_last: each recipient's last inbox number
    commitments: list[dict[str, object]]  # the openings of the batch's inboxes leaf
    entries: list[dict[str, object]]  # the new leaves
    nodes: list[dict[str, object]]  # the new perfect subtrees
    items: list[dict[str, Any]]  # items accepted in this transaction, with their log index
    item_updates: list[dict[str, object]]  # b_item, b_index: each earlier item's log index
    deliveries: list[dict[str, object]]  # with their inbox numbers
    done: list[int]  # the log_pending rows integrated
    size: int  # the log's size after
    checkpoints: list[dict[str, object]]  # the new signed checkpoint (none without a signer)


def _write(session: Session, w: _Writes) -> None:
    """Write an integration. Deliveries with their inbox numbers are written once, here
    (acceptance stored only the item's recipients).

    PostgreSQL: ONE statement (`_pg_write_sql`), every write a data-modifying WITH query over
    arrays the server unnests, text constant whatever the batch (psycopg prepares it once).
    Apart, these were 9 round trips per integration, and under load a round trip costs far more
    than the query: the writer thread waits for the GIL again after each (bench/README.md,
    thirteenth session). On SQLite, where a statement is a function call, one statement each
    (bulk.execute_many)."""
    connection = session.connection()
    if w.items:  # before their deliveries, whose item_id is a foreign key
        queries.insert_items(session, w.items)
    if connection.dialect.name == "postgresql":
        sql, order = _pg_write_sql(connection)
        params: dict[str, object] = {"size": w.size, "p_id": w.done}
        for prefix, part, keys in order:
            rows: list[dict[str, object]] = getattr(w, part)
            for key in keys:
                params[f"{prefix}{key}"] = [row[key] for row in rows]
        connection.exec_driver_sql(sql, params)
        return
    if w.counters:
        connection.execute(_SET_COUNTER, w.counters)
    execute_many(session, "log.commitments", insert(COMMITMENTS), w.commitments)
    execute_many(session, "log.entries", insert(LOG_ENTRIES), w.entries)
    execute_many(session, "log.nodes", insert(LOG_NODES), w.nodes)
    execute_many(
        session,
        "log.item-indexes",
        update(ITEMS).where(ITEMS.c.item_id == bindparam("b_item")).values(log_index=bindparam("b_index")),
        w.item_updates,
    )
    execute_many(session, "log.deliveries", insert(DELIVERIES), w.deliveries)
    connection.execute(_DONE_PENDING, {"ids": w.done})
    connection.execute(_SET_LOG_SIZE, {"size": w.size})
    execute_many(session, "log.checkpoints", insert(CHECKPOINTS), w.checkpoints)


# (prefix, _Writes field, columns) of each array-bound part of _pg_write_sql
_PG_PARTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("c_", "counters", ("b_recipient", "b_last")),
    ("m_", "commitments", ("country", "log_index", "size", "salt")),
    ("e_", "entries", ("log_index", "kind", "ref", "leaf_hash", "created_ms", "leaf")),
    ("n_", "nodes", ("level", "idx", "hash")),
    ("i_", "item_updates", ("b_item", "b_index")),
    ("d_", "deliveries", ("item_id", "recipient", "seq", "state", "created_ms")),
    ("k_", "checkpoints", ("size", "root", "note", "created_ms")),
)
_pg_write: tuple[str, tuple[tuple[str, str, tuple[str, ...]], ...]] | None = None


def _pg_write_sql(connection: Connection) -> tuple[str, tuple[tuple[str, str, tuple[str, ...]], ...]]:
    """The integration's writes as one PostgreSQL statement (`_write`). The WITH queries run
    on one snapshot and touch different tables (each row once), so their order does not
    matter; the foreign keys are checked at the statement's end, on all of them."""
    global _pg_write
    if _pg_write is None:
        counters = (
            f"CAST(%(c_b_recipient)s AS {COUNTERS.c.recipient.type.compile(dialect=connection.dialect)}[])"
        )
        item_ids = f"CAST(%(i_b_item)s AS {ITEMS.c.item_id.type.compile(dialect=connection.dialect)}[])"
        # identifiers and types: constants and our tables' own; values: bound
        parts = [
            "UPDATE inbox_counters SET last_seq = v.last_seq"  # noqa: S608
            f" FROM unnest({counters}, CAST(%(c_b_last)s AS BIGINT[])) AS v(recipient, last_seq)"
            " WHERE inbox_counters.recipient = v.recipient",
            insert_unnest_sql(connection, COMMITMENTS, _PG_PARTS[1][2], "m_"),
            insert_unnest_sql(connection, LOG_ENTRIES, _PG_PARTS[2][2], "e_"),
            insert_unnest_sql(connection, LOG_NODES, _PG_PARTS[3][2], "n_"),
            "UPDATE items SET log_index = v.log_index"  # noqa: S608
            f" FROM unnest({item_ids}, CAST(%(i_b_index)s AS BIGINT[])) AS v(item_id, log_index)"
            " WHERE items.item_id = v.item_id",
            insert_unnest_sql(connection, DELIVERIES, _PG_PARTS[5][2], "d_"),
            "DELETE FROM log_pending WHERE id = ANY(CAST(%(p_id)s AS BIGINT[]))",
            "UPDATE log_state SET size = %(size)s WHERE id = 1",
            insert_unnest_sql(connection, CHECKPOINTS, _PG_PARTS[6][2], "k_"),
        ]
        sql = "WITH " + ", ".join(f"w{n} AS ({part})" for n, part in enumerate(parts)) + " SELECT 1"
        _pg_write = (sql, _PG_PARTS)
    return _pg_write


class _Staged:
    """An item row not inserted yet (`integrate`'s `staged`), read as a row of _ITEMS_TO_LOG."""

    __slots__ = ("_mapping",)

    def __init__(self, row: Mapping[str, Any]) -> None:
        self._mapping = row

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


def _reserve_seqs(
    session: Session, recipients: list[str]
) -> tuple[dict[str, int], dict[str, int], list[dict[str, object]]]:
    """The next inbox number of each recipient, reserving as many as this batch needs; every
    member's inbox size after the batch (0 included) (for its inboxes leaf), from the same read
    of the counters (one row per member); and the counters to write (`_write`).

    Only the integrator writes the counters, under its lock, so numbers follow commit order
    (and reading them, then writing them back, in two statements is safe)."""
    need: dict[str, int] = defaultdict(int)
    for r in recipients:
        need[r] += 1
    connection = session.connection()
    last = {r: int(n) for r, n in connection.execute(_COUNTERS).all()}
    missing = set(need) - set(last)
    if missing:  # cannot happen: every member has a counter from enrolment on
        raise RuntimeError(f"no inbox counter for {sorted(missing)}")
    counters: list[dict[str, object]] = [
        {"b_recipient": r, "b_last": last[r] + n} for r, n in sorted(need.items())
    ]
    # every member, an empty inbox (size 0) included: a leaf then holds exactly one commitment
    # per member, with no free slot in which a second, smaller size for one inbox could hide
    sizes = {r: n + need.get(r, 0) for r, n in last.items()}
    return {r: last[r] + 1 for r in need}, sizes, counters


def _previous_inboxes(session: Session, size: int) -> int:
    """The index of the last inboxes leaf: the tree's last leaf, since every batch ends with
    one (-1 for an empty log, or one from before there were inboxes leaves)."""
    if size == 0:
        return -1
    kind = session.connection().execute(_KIND_AT, {"index": size - 1}).scalar_one_or_none()
    return size - 1 if kind == INBOXES else -1


def _leaf(
    session: Session,
    row: Any,  # a log_pending row: id, kind, ref
    items: dict[str, Any],
    recipients: dict[str, list[str]],
    next_seq: dict[str, int],
    seqs: dict[str, int],
) -> bytes | None:
    if row.kind == "item":
        item = items.get(row.ref)
        if item is None:  # cannot happen: staged in the item's own transaction
            log.error("log_pending names item %s, which does not exist; skipped", row.ref)
            return None
        for recipient in sorted(recipients[row.ref]):
            seqs[recipient] = next_seq[recipient]
            next_seq[recipient] += 1
        return logleaf.item_leaf(item.item_id, item.envelope_sha256, item.originator, seqs)
    if row.kind == "directory":
        entry = session.get(DirectoryEntry, int(row.ref))
        return None if entry is None else logleaf.directory_leaf(entry.seq, entry.entry_hash)
    if row.kind == "receipt":
        item_id, recipient = row.ref.split(":", 1)
        stored = session.get(DeliveryReceiptRow, (item_id, recipient))
        return None if stored is None else receipt_leaf(parse_receipt(stored.data)[0], stored.data)
    version = session.get(PolicyVersion, int(row.ref))
    return None if version is None else logleaf.policy_leaf(version.version, version.sha256)


# --- running the integrator --------------------------------------------------------------


class Integrator:
    """Integrates pending leaves (for the sequencer, services/sequencer.py, and for tests),
    tells whoever listens whose inboxes grew, and asks the member witnesses to cosign."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        signer: logleaf.LogSigner | None,
        clock: Callable[[], int],
        *,
        identity: Callable[[], logleaf.LogIdentity | None] = lambda: None,
        witness_urls: Mapping[str, str] | None = None,
        witness_timeout_s: float = 5.0,
        hung_after_s: float = IDLE_IN_TRANSACTION_TIMEOUT_S,
    ) -> None:
        self.factory = factory
        self.signer = signer
        self.clock = clock
        self.identity = identity
        self.witness_urls = dict(witness_urls or {})
        self.witness_timeout_s = witness_timeout_s
        self._witness_sizes: dict[str, int] = {}  # what each witness last cosigned, as far as we know
        self.hung_after_s = hung_after_s
        self._busy_since: float | None = None  # since when another session holds the lock
        self.ended_hung = 0  # hung integrations this process ended (tests, metrics)
        # Who hears of integrations: inside the integrating transaction (a PostgreSQL NOTIFY
        # reaches other broker processes only if it commits), and after the commit (this
        # process's waiting long-polls).
        self.in_transaction: list[Callable[[Session, set[str]], None]] = []
        self.after_commit: list[Callable[[Integrated], None]] = []
        # the tree as this process's last committed integration left it (`integrate`'s `tip`):
        # set only after a commit, checked against the log's size before every use
        self.tip: Tip | None = None

    def integrate_in(
        self, session: Session, staged: dict[str, dict[str, Any]] | None = None
    ) -> Integrated | None:
        """Integrate in the caller's transaction (`staged`: as `integrate`'s); the caller must
        call `committed` after."""
        busy = False

        def held_elsewhere(session: Session) -> None:
            nonlocal busy
            busy = True
            self._lock_held_elsewhere(session)

        result = integrate(session, self.signer, self.clock(), held_elsewhere, self.tip, staged)
        if not busy:
            self._busy_since = None
        if result is not None and result.items:
            for hook in self.in_transaction:
                hook(session, result.recipients)
        return result

    def _lock_held_elsewhere(self, session: Session) -> None:
        """Another session holds the integration lock. A broker process that hangs inside its
        integrating transaction keeps it, and PostgreSQL does not always end that session: its
        idle-in-transaction limit does not apply to a session still sending a result to a
        process that stopped reading it (state active, waiting on ClientWrite), which waits
        forever. So a transaction that has held the lock longer than `hung_after_s` (an
        integration takes milliseconds) is ended here, with pg_terminate_backend (allowed
        between sessions of one role); its callers were never answered, and what it wrote
        rolls back."""
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since < self.hung_after_s:
            return
        holder = session.execute(text(LOCK_HOLDER_SQL), {"k": ADVISORY_LOCK}).first()
        if holder is None or float(holder.held_s) < self.hung_after_s:
            return
        self._busy_since = None
        try:
            with session.begin_nested():  # a refusal (another role's session) aborts nothing else
                ended = bool(
                    session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": holder.pid}).scalar()
                )
        except SQLAlchemyError as exc:
            ended, why = False, str(getattr(exc, "orig", exc)).splitlines()[0]
        else:
            why = "" if ended else "it had ended already"
        if ended:
            self.ended_hung += 1
        log.error(
            "%s a hung integration: session %s (%s) held the log's integration lock for %.0f s (%s, waiting on %s)%s",
            "ended" if ended else "could not end",
            holder.pid,
            holder.application_name or "no application name",
            float(holder.held_s),
            holder.state,
            holder.wait_event,
            f": {why}" if why else "",
        )

    def committed(self, result: Integrated | None) -> None:
        if result is None:
            return
        self.tip = result.tip
        for hook in self.after_commit:
            try:
                hook(result)
            except Exception:  # a listener's failure must not undo or repeat an integration
                log.exception("a log listener failed")

    def run_once(self) -> Integrated | None:
        with transaction(self.factory) as session:
            result = self.integrate_in(session)
        self.committed(result)
        return result

    def pending(self) -> int:
        with self.factory() as session:
            return int(session.execute(select(func.count()).select_from(LogPending)).scalar_one())

    def witness(self) -> int:
        """Ask every witness the members' root names (and we can reach) to cosign the newest
        checkpoint; store the cosignatures. Returns how many cosigned. No database lock is
        held during the network calls."""
        identity = self.identity()
        if identity is None or not identity.witnesses or not self.witness_urls:
            return 0
        with self.factory() as session:
            row = latest_checkpoint(session)
            if row is None:
                return 0
            done = set(
                session.scalars(
                    select(CheckpointCosignature.witness).where(CheckpointCosignature.size == row.size)
                )
            )
        cosigned = 0
        for name in identity.witness_names():
            url = self.witness_urls.get(name)
            if url is None or name in done:
                continue
            line = self._ask(name, url, row)
            if line is not None:
                with transaction(self.factory) as session:
                    if session.get(CheckpointCosignature, (row.size, name)) is None:
                        session.add(
                            CheckpointCosignature(
                                size=row.size, witness=name, line=line, created_ms=self.clock()
                            )
                        )
                cosigned += 1
        return cosigned

    def _ask(self, name: str, url: str, row: CheckpointRow) -> str | None:
        old = self._witness_sizes.get(name, 0)
        for _ in range(2):  # a 409 tells us the size the witness holds: ask once more from it
            if old > row.size:
                log.error("witness %s has cosigned %d entries, more than this log's %d", name, old, row.size)
                return None
            with self.factory() as session:
                proof = consistency(session, old, row.size) if 0 < old < row.size else []
            try:
                status, body = submit_checkpoint(
                    url, old, proof, row.note.encode(), timeout=self.witness_timeout_s
                )
            except Exception as exc:  # an unreachable witness is reported, never fatal
                log.warning("witness %s at %s unreachable: %s", name, url, exc)
                return None
            if status == 200:
                self._witness_sizes[name] = row.size
                # every line: a witness with an Ed25519 and an ML-DSA-44 key answers with both
                lines = [line for line in body.decode().splitlines() if line.startswith("\u2014 ")]
                return "\n".join(lines) if lines else None
            if status == 409 and body.strip().isdigit():
                old = int(body.strip())
                continue
            log.error(
                "witness %s refused the checkpoint of %d entries: %d %s", name, row.size, status, body[:200]
            )
            return None
        return None


# --- reading: checkpoints and proofs -------------------------------------------------------


def latest_checkpoint(session: Session) -> CheckpointRow | None:
    return (
        session.execute(select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)).scalars().first()
    )


def witnessed_note(
    session: Session, min_cosignatures: int = 0, size: int | None = None
) -> tuple[CheckpointRow, str] | None:
    """The newest checkpoint (or the one of `size`) with at least `min_cosignatures`, and its
    note with the cosignature lines appended (c2sp.org/tlog-cosignature)."""
    query = select(CheckpointRow).order_by(CheckpointRow.size.desc())
    if size is not None:
        query = query.where(CheckpointRow.size == size)
    if min_cosignatures:
        counted = (
            select(CheckpointCosignature.size)
            .group_by(CheckpointCosignature.size)
            .having(func.count() >= min_cosignatures)
        )
        query = query.where(CheckpointRow.size.in_(counted))
    row = session.execute(query.limit(1)).scalars().first()
    if row is None:
        return None
    lines = session.scalars(
        select(CheckpointCosignature.line)
        .where(CheckpointCosignature.size == row.size)
        .order_by(CheckpointCosignature.witness)
    ).all()
    return row, row.note + "".join(f"{line}\n" for line in lines)


def checkpoint_at(session: Session, size: int) -> CheckpointRow | None:
    return session.get(CheckpointRow, size)


def current_size(session: Session) -> int:
    return int(session.execute(select(LogState.size).where(LogState.id == 1)).scalar_one())


def inclusion(session: Session, index: int, size: int) -> list[bytes]:
    if not 0 <= index < size or size > current_size(session):
        raise invalid(
            "invalid-proof-request",
            f"no leaf {index} in a tree of size {size} (the log has {current_size(session)})",
        )
    return merkle.inclusion_proof(
        index, size, _get(_nodes(session, merkle.nodes_needed_for_inclusion(index, size), cached=True))
    )


def consistency(session: Session, first: int, second: int) -> list[bytes]:
    if not 0 <= first <= second or second > current_size(session):
        raise invalid("invalid-proof-request", f"no consistency proof from {first} to {second}")
    if first == 0:
        return []
    return merkle.consistency_proof(
        first, second, _get(_nodes(session, merkle.nodes_needed_for_consistency(first, second), cached=True))
    )


def inclusions(session: Session, indexes: Sequence[int], size: int) -> dict[int, tuple[bytes, list[bytes]]]:
    """For each index below `size`: its leaf bytes and its inclusion proof in the tree of
    `size` leaves, from two queries however many indexes (an inbox page's worth)."""
    if not 0 < size <= current_size(session):
        raise invalid(
            "invalid-proof-request", f"no tree of size {size} (the log has {current_size(session)})"
        )
    wanted = sorted({i for i in indexes if 0 <= i < size})
    if not wanted:
        return {}
    leaves = dict(
        session.execute(select(LogEntry.log_index, LogEntry.leaf).where(LogEntry.log_index.in_(wanted))).all()
    )
    needed = {a for i in wanted for a in merkle.nodes_needed_for_inclusion(i, size)}
    get = _get(_nodes(session, sorted(needed), cached=True))
    return {
        i: (bytes(leaf), merkle.inclusion_proof(i, size, get))
        for i in wanted
        if (leaf := leaves.get(i)) is not None
    }


def leaf_of(session: Session, index: int) -> LogEntry | None:
    return session.get(LogEntry, index)


# --- inboxes leaves: the chain, and each country's own openings ---------------------------

INBOXES_PAGE = 1000  # leaves per page at most (about 64 bytes a member each, plus a proof)


def inboxes_chain(
    session: Session, country: str | None, size: int, after: int, before: int | None, limit: int
) -> dict[str, Any]:
    """The inboxes leaves with `after` < index < min(`before`, `size`), newest first, at most
    `limit`: each with its bytes, its inclusion proof in the tree of `size` leaves, and the
    opening of `country`'s own commitment in it (None for an admin, or where it has none).
    `next` (when the page is full) is the `before` of the next page. Four queries a page."""
    if not 0 < size <= current_size(session):
        raise invalid(
            "invalid-proof-request", f"no tree of size {size} (the log has {current_size(session)})"
        )
    upper = size if before is None else min(before, size)
    indexes = [
        int(i)
        for (i,) in session.execute(
            # the literal kind lets both engines use the partial index ix_log_entries_inboxes
            text(
                "SELECT log_index FROM log_entries WHERE kind = 'inboxes' "
                "AND log_index > :a AND log_index < :b ORDER BY log_index DESC LIMIT :l"
            ),
            {"a": after, "b": upper, "l": limit},
        )
    ]
    proven = inclusions(session, indexes, size) if indexes else {}
    own: dict[int, tuple[int, bytes]] = {}
    if country is not None and indexes:
        own = {
            int(i): (int(n), bytes(salt))
            for i, n, salt in session.execute(
                select(COMMITMENTS.c.log_index, COMMITMENTS.c.size, COMMITMENTS.c.salt).where(
                    COMMITMENTS.c.country == country, COMMITMENTS.c.log_index.in_(indexes)
                )
            )
        }
    leaves = []
    for i in indexes:
        leaf, proof = proven[i]
        opening = own.get(i)
        leaves.append(
            {
                "log_index": i,
                "leaf": canonical.b64encode(leaf),
                "inclusion": [canonical.b64encode(h) for h in proof],
                "own": None
                if opening is None
                else {"size": opening[0], "salt": canonical.b64encode(opening[1])},
            }
        )
    return {"size": size, "leaves": leaves, "next": indexes[-1] if len(indexes) == limit else None}


def item_inboxes(session: Session, caller: str, item_id: str) -> dict[str, Any]:
    """For the originator of an item: the inboxes leaf that closed the item's batch (the first
    after its log index) and the opening of each of its recipients' commitments in it: their
    inbox sizes after that batch, which the inbox numbers of its receipt already bound."""
    item = session.get(Item, item_id)
    if item is None or item.originator != caller:
        raise not_found("unknown-item", f"no item {item_id} originated by {caller}")
    entry = None if item.log_index is None else session.get(LogEntry, item.log_index)
    closing = (
        None
        if entry is None
        else session.execute(
            text("SELECT min(log_index) FROM log_entries WHERE kind = 'inboxes' AND log_index > :i"),
            {"i": item.log_index},
        ).scalar_one_or_none()
    )
    if entry is None or entry.leaf is None or closing is None:
        raise conflict(
            "not-integrated", f"item {item_id} is not in the log yet (or not under an inboxes leaf)"
        )
    inboxes = session.get(LogEntry, int(closing))
    assert inboxes is not None and inboxes.leaf is not None
    recipients = sorted(logleaf.parse_item_leaf(bytes(entry.leaf))[3])
    rows = session.execute(
        select(COMMITMENTS.c.country, COMMITMENTS.c.size, COMMITMENTS.c.salt).where(
            COMMITMENTS.c.log_index == int(closing), COMMITMENTS.c.country.in_(recipients)
        )
    )
    return {
        "item_id": item_id,
        "log_index": item.log_index,
        "inboxes_index": int(closing),
        "leaf": canonical.b64encode(bytes(inboxes.leaf)),
        "recipients": [
            {"recipient": c, "size": int(n), "salt": canonical.b64encode(bytes(salt))}
            for c, n, salt in sorted(rows, key=lambda r: str(r[0]))
        ],
    }
