from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from msmt.core import EncryptionPrivateKey, SigningPrivateKey

MEMBERS = ("KOR", "USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NLD", "CAN", "AUS", "NZL")


@dataclass(frozen=True)
class CountryKeys:
    country: str
    signing: SigningPrivateKey
    encryption: EncryptionPrivateKey


def _seed(country: str, kind: str, size: int) -> bytes:
    return hashlib.shake_256(f"msmt unit test {country} {kind}".encode()).digest(size)


def make_country(country: str) -> CountryKeys:
    return CountryKeys(
        country,
        SigningPrivateKey.from_seed(_seed(country, "signing", 64)),
        EncryptionPrivateKey.from_seed(_seed(country, "encryption", 32)),
    )


def synthetic_codes(n: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [f"X{letters[i // 26]}{letters[i % 26]}" for i in range(n)]


@pytest.fixture(scope="session")
def countries() -> dict[str, CountryKeys]:
    codes = list(MEMBERS) + synthetic_codes(50)
    return {code: make_country(code) for code in codes}
