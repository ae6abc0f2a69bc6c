"""An in-process copy of the registry (countries, groups, keys, agreements, admins).

Every request needs the registry, and it changes only through admin actions, each of which
increments a version row. A request reads that version (one primary-key lookup) and reloads
the copy only when it moved, so a revoked key or a suspended country is refused from the
next request on, in every broker process. The submit transaction holds a share lock on the
version row, so an admin change cannot commit between its checks and its writes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from msmt.core import SigningPublicKey
from msmt.core.policy import PolicySnapshot

from .. import policydoc
from ..store.models import Admin, Country, Key, RegistryState
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


@dataclass(frozen=True)
class Registry:
    version: int
    keys: Mapping[str, KeyRecord]
    policy: PolicySnapshot
    countries: Mapping[str, Country]
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
        candidates = [
            k for k in self.keys.values() if k.owner == owner and k.kind == kind and k.usable(now_ms)
        ]
        return max(candidates, key=lambda k: (k.valid_from_ms, k.created_ms), default=None)

    def keys_of(self, owner: str, kind: str) -> list[KeyRecord]:
        found = [k for k in self.keys.values() if k.owner == owner and k.kind == kind]
        return sorted(found, key=lambda k: (k.valid_from_ms, k.created_ms))


def read_version(session: Session, *, share_lock: bool = False) -> int:
    query = select(RegistryState.version).where(RegistryState.id == 1)
    if share_lock:
        query = query.with_for_update(read=True)
    return int(session.execute(query).scalar_one())


def load(session: Session, version: int) -> Registry:
    # The policy part comes from the same export that `msmt-broker policy export` writes, so
    # what is enforced is exactly what admins review.
    policy = policydoc.to_snapshot(policy_service.export_document(session))
    countries = {c.code: c for c in session.scalars(select(Country))}
    for country in countries.values():
        session.expunge(country)
    keys = {
        k.key_id: KeyRecord(
            k.key_id,
            k.owner,
            k.kind,
            k.public_key,
            k.valid_from_ms,
            k.valid_until_ms,
            k.revoked_ms,
            k.created_ms,
        )
        for k in session.scalars(select(Key))
    }
    admins = frozenset(a.name for a in session.scalars(select(Admin)) if a.status == "active")
    return Registry(version, keys, policy, countries, admins)


class RegistryCache:
    def __init__(self) -> None:
        self._current: Registry | None = None
        self._lock = threading.Lock()

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
            registry = load(session, version)
            if current is None or version > current.version:
                self._current = registry
            return registry
