"""An in-process copy of the registry (members, keys, agreements, admins).

Members, their groups, accreditation and keys come from replaying the member-signed
directory chain (`services/governance.py`), never from the derived tables, so a row written
straight into `keys` or `countries` authenticates nobody and verifies nothing. Agreements
and deny rules come from the policy document, and admins' keys from `keys`.

Every request needs the registry, and it changes only through admin actions and directory
entries, each of which increments a version row. A request reads that version (one primary-key lookup) and reloads
the copy only when it moved, so a revoked key or a suspended country is refused from the
next request on, in every broker process. The submit transaction holds a share lock on the
version row, so an admin change cannot commit between its checks and its writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from sqlalchemy import Table, select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.orm import Session, sessionmaker

from msmt.core import ApiPublicKey, SigningPublicKey
from msmt.core import governance as gov
from msmt.core.markings import Markings
from msmt.core.policy import Decision, Member, PolicySnapshot, evaluate

from .. import policydoc
from ..store.db import SINGLE_READ_OPTION, writable
from ..store.models import Admin, Key, RegistryState
from . import governance as governance_service
from . import policy as policy_service

ADMIN_PREFIX = "admin:"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    owner: str
    kind: str
    raw: bytes
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None
    created_ms: int

    def usable(self, now_ms: int) -> bool:
        """Inside its validity period and not revoked."""
        if self.revoked_ms is not None and self.revoked_ms <= now_ms:
            return False
        return self.valid_from_ms <= now_ms and (self.valid_until_ms is None or now_ms < self.valid_until_ms)


@lru_cache(maxsize=4096)
def signing_public_key(raw: bytes) -> SigningPublicKey:
    return SigningPublicKey.from_bytes(raw)


@lru_cache(maxsize=4096)
def api_public_key(raw: bytes) -> ApiPublicKey:
    """Parsed (and checked: canonical, not of small order) once per key, not per request."""
    return ApiPublicKey.from_bytes(raw)


DECISIONS_KEPT = 4096


@dataclass(frozen=True)
class Registry:
    version: int
    keys: Mapping[str, KeyRecord]
    policy: PolicySnapshot
    directory: gov.DirectoryState | None
    active_admins: frozenset[str]

    def owner_active(self, owner: str) -> bool:
        if owner.startswith(ADMIN_PREFIX):
            return owner.removeprefix(ADMIN_PREFIX) in self.active_admins
        member = self.policy.members.get(owner)
        return member is not None and member.active

    def usable_key(self, key_id: str, now_ms: int, kind: str, owner: str | None = None) -> KeyRecord | None:
        key = self.keys.get(key_id)
        if key is None or key.kind != kind or not key.usable(now_ms):
            return None
        if owner is not None and key.owner != owner:
            return None
        return key

    def current_key(self, owner: str, kind: str, now_ms: int) -> KeyRecord | None:
        """The owner's newest usable key of `kind`: the one senders must use."""
        for key in reversed(self._by_owner.get((owner, kind), ())):
            if key.usable(now_ms):
                return key
        return None

    def decide(self, originator: str, recipient: str, markings: Markings) -> Decision:
        """The policy's decision, computed once per (originator, recipient, markings) for this
        registry version: a batch of 50 items to 11 recipients asks 550 times, mostly the same
        few questions. The registry never changes (a new version is a new object), so neither
        does the answer; at most DECISIONS_KEPT are kept."""
        memo = self._decisions
        question = (originator, recipient, markings)
        decision = memo.get(question)
        if decision is None:
            if len(memo) >= DECISIONS_KEPT:
                memo.clear()
            decision = memo[question] = evaluate(self.policy, originator, recipient, markings)
        return decision

    @cached_property
    def _decisions(self) -> dict[tuple[str, str, Markings], Decision]:
        return {}

    def keys_of(self, owner: str, kind: str) -> list[KeyRecord]:
        """Oldest first (by validity start, then creation)."""
        return list(self._by_owner.get((owner, kind), ()))

    @cached_property
    def _by_owner(self) -> dict[tuple[str, str], list[KeyRecord]]:
        index: dict[tuple[str, str], list[KeyRecord]] = {}
        for key in self.keys.values():
            index.setdefault((key.owner, key.kind), []).append(key)
        for found in index.values():
            found.sort(key=lambda k: (k.valid_from_ms, k.created_ms))
        return index


_REGISTRY: Table = RegistryState.__table__  # type: ignore[assignment]
# Read by every authenticated request and every submission batch: built once, on the table
# (a statement built per call cost SQLAlchemy more than the query, py-spy --gil).
_VERSION = select(_REGISTRY.c.version).where(_REGISTRY.c.id == 1)
_VERSION_SHARED = _VERSION.with_for_update(read=True)
_VERSION_SQL = str(_VERSION.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))


def read_version(session: Session, *, share_lock: bool = False) -> int:
    session.flush()  # a registry change staged through the ORM in this session counts
    return int(session.connection().execute(_VERSION_SHARED if share_lock else _VERSION).scalar_one())


def load(session: Session, version: int, previous: gov.DirectoryState | None = None) -> Registry:
    directory = governance_service.replay(session, previous)
    # The policy part comes from the same export that `msmt-broker policy export` writes, so
    # what is enforced is exactly what admins review; who is a member comes from the chain.
    exported = policydoc.to_snapshot(policy_service.export_document(session))
    members = {} if directory is None else _members(directory)
    policy = PolicySnapshot(
        members, exported.agreements, exported.default_agreement, exported.ladder, exported.deny_rules
    )
    keys = {} if directory is None else _member_keys(directory)
    for k in session.scalars(select(Key).where(Key.owner.startswith(ADMIN_PREFIX))):
        keys[k.key_id] = KeyRecord(
            k.key_id,
            k.owner,
            k.kind,
            k.public_key,
            k.valid_from_ms,
            k.valid_until_ms,
            k.revoked_ms,
            k.created_ms,
        )
    admins = frozenset(a.name for a in session.scalars(select(Admin)) if a.status == "active")
    return Registry(version, keys, policy, directory, admins)


def _members(directory: gov.DirectoryState) -> dict[str, Member]:
    return {
        code: Member(code, m.active, m.accreditation, frozenset(m.groups))
        for code, m in directory.members.items()
    }


def _member_keys(directory: gov.DirectoryState) -> dict[str, KeyRecord]:
    return {
        k.key_id: KeyRecord(
            k.key_id,
            code,
            k.kind.value,
            k.key.raw,
            k.valid_from_ms,
            k.valid_until_ms,
            k.revoked_ms,
            k.valid_from_ms,
        )
        for code, member in directory.members.items()
        for k in member.keys
    }


class RegistryCache:
    def __init__(self) -> None:
        self._current: Registry | None = None
        self._lock = threading.Lock()
        # `quick`'s own SQLite connection, the thread that uses it and the file it has open;
        # `_quick_none`: this store has none (not a SQLite file), or the broker is stopping
        self._quick: sqlite3.Connection | None = None
        self._quick_thread = 0
        self._quick_file: tuple[int, int] = (0, 0)
        self._quick_none = False

    def quick(self, factory: sessionmaker[Session]) -> Registry | None:
        """For the event loop's thread: the registry as of now, where knowing that costs one
        read of its version on a SQLite file, on a connection of this cache's own (never the
        pool's, whose checkout may wait) that takes no lock and never waits for one, and the
        version is the one this process holds. None otherwise (PostgreSQL, where the read is a
        round trip; a registry that moved; a database busy, failing, unwritable or replaced;
        another thread than the one that opened the connection): then `fresh`, on a worker
        thread. The version is read on every call: a revocation applies from the next
        request, as with `fresh`."""
        current = self._current
        if current is None or self._quick_none:
            return None
        connection = self._quick or self._open_quick(factory)
        if connection is None or self._quick_thread != threading.get_ident():
            return None
        path = factory.kw["bind"].url.database
        try:
            stat = os.stat(path)
            if (stat.st_dev, stat.st_ino) != self._quick_file:  # replaced: the pool's turn
                self.close()
                return None
            row = connection.execute(_VERSION_SQL).fetchone()
        except (OSError, sqlite3.Error):
            self.close()  # opened again on a later call; this request goes the long way
            return None
        if row is None or int(row[0]) != current.version:
            return None
        return current

    def _open_quick(self, factory: sessionmaker[Session]) -> sqlite3.Connection | None:
        url = factory.kw["bind"].url
        database = url.database or ""
        if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
            self._quick_none = True
            return None
        path = Path(database)
        if not writable(path):  # opened read-only, it would leave the process a read-only -shm
            return None
        connection: sqlite3.Connection | None = None
        try:
            stat = os.stat(path)
            # timeout=0: a read that would wait fails at once (and goes to a worker thread)
            connection = sqlite3.connect(  # mode=rw: never create a file that is not there
                f"{path.resolve().as_uri()}?mode=rw",
                uri=True,
                timeout=0,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute("PRAGMA query_only = ON")
        except (OSError, sqlite3.Error):
            if connection is not None:
                connection.close()
            return None
        self._quick, self._quick_thread = connection, threading.get_ident()
        self._quick_file = (stat.st_dev, stat.st_ino)
        return connection

    def close(self, *, for_good: bool = False) -> None:
        """Close `quick`'s connection: after it failed (opened again on a later call), or
        `for_good` (the broker stopping)."""
        if for_good:
            self._quick_none = True
        connection, self._quick = self._quick, None
        if connection is not None:
            connection.close()

    def latest(self) -> Registry | None:
        """The newest registry this process has read, without reading the database (for
        checks that are made again, under a share lock, before anything is stored)."""
        return self._current

    def fresh(self, factory: sessionmaker[Session]) -> Registry:
        """The registry as of now, for a request that only reads it (authentication): the
        version is read on a plain connection (a session per request cost more than the
        query); a session is opened only when the registry changed."""
        engine = factory.kw["bind"]
        with engine.connect().execution_options(**{SINGLE_READ_OPTION: True}) as conn:
            version = int(conn.execute(_VERSION).scalar_one())
        current = self._current
        if current is not None and current.version == version:
            return current
        with factory() as session:
            return self.get(session)

    def get(self, session: Session, *, share_lock: bool = False) -> Registry:
        """The registry as of `session`'s view; `share_lock` blocks admin changes until commit."""
        version = read_version(session, share_lock=share_lock)
        current = self._current
        if current is not None and current.version == version:
            return current
        with self._lock:
            current = self._current
            if current is not None and current.version == version:
                return current
            registry = load(session, version, None if current is None else current.directory)
            if current is None or version > current.version:
                self._current = registry
            return registry
