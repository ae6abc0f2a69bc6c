"""The key directory as the broker publishes it: members and their public keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .core import EncryptionPublicKey, SigningPublicKey, canonical
from .core.envelope import KeyLookup
from .core.errors import MsmtError
from .errors import ClientError


@dataclass(frozen=True)
class SigningKeyInfo:
    key: SigningPublicKey
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None

    def usable_at(self, when_ms: int) -> bool:
        if self.revoked_ms is not None and self.revoked_ms <= when_ms:
            return False
        return self.valid_from_ms <= when_ms and (
            self.valid_until_ms is None or when_ms < self.valid_until_ms
        )


@dataclass(frozen=True)
class Member:
    code: str
    name: str
    status: str
    accreditation: str
    groups: tuple[str, ...]
    signing_keys: Mapping[str, SigningKeyInfo]
    encryption_key: EncryptionPublicKey | None

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Directory:
    members: Mapping[str, Member]
    generated_ms: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Directory:
        try:
            members = {}
            for entry in data["countries"]:
                signing = {}
                for k in entry["signing_keys"]:
                    key = SigningPublicKey.from_bytes(canonical.b64decode(k["public_key"]))
                    if key.key_id != k["key_id"]:
                        raise ClientError(f"directory lists {entry['code']}'s key under the wrong id")
                    signing[key.key_id] = SigningKeyInfo(
                        key, k["valid_from_ms"], k["valid_until_ms"], k["revoked_ms"]
                    )
                enc = entry["encryption_key"]
                encryption = None
                if enc is not None:
                    encryption = EncryptionPublicKey.from_bytes(canonical.b64decode(enc["public_key"]))
                    if encryption.key_id != enc["key_id"]:
                        raise ClientError(
                            f"directory lists {entry['code']}'s encryption key under the wrong id"
                        )
                members[entry["code"]] = Member(
                    entry["code"],
                    entry["name"],
                    entry["status"],
                    entry["accreditation"],
                    tuple(entry["groups"]),
                    signing,
                    encryption,
                )
            return cls(members, int(data["generated_ms"]))
        except (KeyError, TypeError, ValueError, MsmtError) as exc:
            if isinstance(exc, ClientError):
                raise
            raise ClientError(f"the broker's directory is malformed: {exc}") from exc

    def encryption_key(self, country: str) -> EncryptionPublicKey:
        member = self.members.get(country)
        if member is None or not member.active:
            raise ClientError(f"{country} is not an active member")
        if member.encryption_key is None:
            raise ClientError(f"{country} has no encryption key in the directory")
        return member.encryption_key

    def signing_lookup(self, accepted_ms: int) -> KeyLookup:
        """Signing keys as they stood when the broker accepted an item (its `received_ms`)."""

        def lookup(country: str, key_id: str) -> SigningPublicKey | None:
            member = self.members.get(country)
            info = member.signing_keys.get(key_id) if member else None
            return info.key if info is not None and info.usable_at(accepted_ms) else None

        return lookup
