"""Deterministic members and a founded directory, shared by the governance tests."""

from __future__ import annotations

import hashlib
from functools import cache

from msmt.agency import AgencyKeys
from msmt.core import ApiPrivateKey, EncryptionPrivateKey, KeyKind, SigningPrivateKey
from msmt.core import governance as gov

FOUNDERS = ("KOR", "USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NLD", "CAN", "AUS", "NZL")
T0 = 1_790_000_000_000


def _seed(text: str, size: int) -> bytes:
    return hashlib.shake_256(f"msmt governance test {text}".encode()).digest(size)


@cache
def keys_of(code: str, generation: int = 0) -> AgencyKeys:
    tag = f"{code} {generation}"
    return AgencyKeys(
        code,
        SigningPrivateKey.from_seed(_seed(f"{tag} signing", 64)),
        EncryptionPrivateKey.from_seed(_seed(f"{tag} encryption", 32)),
        ApiPrivateKey.from_seed(_seed(f"{tag} api", 32)),
    )


def public_keys(keys: AgencyKeys) -> dict[KeyKind, object]:
    return {
        KeyKind.SIGNING: keys.signing.public_key,
        KeyKind.ENCRYPTION: keys.encryption.public_key,
        KeyKind.API: keys.api.public_key,
    }


def member(
    code: str, generation: int = 0, *, groups: tuple[str, ...] = (), accreditation: str = "SECRET"
) -> dict:
    return gov.member_body(code, accreditation, groups, public_keys(keys_of(code, generation)))  # type: ignore[arg-type]


@cache
def root(codes: tuple[str, ...] = FOUNDERS, created_ms: int = T0) -> bytes:
    signed = gov.root_statement({c: member(c) for c in codes}, created_ms)
    return gov.signed_entry(signed, [(c, keys_of(c).signing) for c in codes])


def by(signed: dict, codes: list[str] | tuple[str, ...], generation: int = 0) -> bytes:
    return gov.signed_entry(signed, [(c, keys_of(c, generation).signing) for c in codes])
