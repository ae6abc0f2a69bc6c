"""The directory as this agency verified it: members and keys from members' signatures only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .core import EncryptionPublicKey, KeyKind, Markings, SigningPublicKey
from .core import governance as gov
from .core.envelope import KeyLookup
from .core.policy import DEFAULT_LADDER, Agreement, Member, PolicySnapshot, allowed_recipients
from .errors import ClientError


@dataclass(frozen=True)
class Directory:
    """A verified `DirectoryState`, with the lookups sealing and opening need."""

    state: gov.DirectoryState

    @property
    def members(self) -> Mapping[str, gov.MemberState]:
        return self.state.members

    @property
    def ladder(self) -> tuple[str, ...]:
        """The classification ladder: the root's own when it sets one (`extra.ladder`)."""
        ladder = self.state.extra.get("ladder")
        if isinstance(ladder, list) and ladder and all(isinstance(x, str) for x in ladder):
            return tuple(ladder)
        return DEFAULT_LADDER

    def encryption_key(self, country: str, at_ms: int) -> EncryptionPublicKey:
        member = self.members.get(country)
        if member is None or not member.active:
            raise ClientError(f"{country} is not an active member in the verified directory")
        entry = member.current(KeyKind.ENCRYPTION, at_ms)
        if entry is None:
            raise ClientError(f"{country} has no usable encryption key in the verified directory")
        assert isinstance(entry.key, EncryptionPublicKey)
        return entry.key

    def signing_lookup(self, accepted_ms: int) -> KeyLookup:
        """Signing keys as they stood when the broker accepted an item (its `received_ms`)."""

        def lookup(country: str, key_id: str) -> SigningPublicKey | None:
            return self.state.signing_key(country, key_id, accepted_ms)

        return lookup

    def membership_allows(self, originator: str, markings: Markings) -> set[str]:
        """Partners the markings may reach judged only on verified membership: active status,
        accreditation, groups and releasable-to. Agreements (the operator's) can only narrow it."""
        ladder = self.ladder
        if markings.classification not in ladder:
            raise ClientError(
                f"classification {markings.classification} is not on the members' ladder ({' < '.join(ladder)})"
            )
        members = {
            code: Member(code, m.active, m.accreditation, frozenset(m.groups))
            for code, m in self.members.items()
        }
        open_door = Agreement(ladder[-1], None)
        policy = PolicySnapshot(members, {}, open_door, ladder)
        allowed, _ = allowed_recipients(policy, originator, markings)
        return set(allowed)
