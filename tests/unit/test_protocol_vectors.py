"""The frozen protocol-v1 vectors: every later version must still accept and reject them."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from msmt.core import (
    EncryptionPrivateKey,
    SigningPrivateKey,
    SigningPublicKey,
    errors,
    open_envelope,
    verify,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "envelope-v1"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
KEYS: dict[str, Any] = json.loads((VECTORS / "keys.json").read_text())["countries"]
SIGNING = {c: SigningPrivateKey.from_seed(bytes.fromhex(k["signing_seed"])) for c, k in KEYS.items()}
ENCRYPTION = {c: EncryptionPrivateKey.from_seed(bytes.fromhex(k["encryption_seed"])) for c, k in KEYS.items()}
DIRECTORY = {(c, k.key_id): k.public_key for c, k in SIGNING.items()}


def lookup(country: str, key_id: str) -> SigningPublicKey | None:
    return DIRECTORY.get((country, key_id))


def test_key_ids_are_stable() -> None:
    for country, entry in KEYS.items():
        assert SIGNING[country].key_id == entry["signing_key_id"]
        assert ENCRYPTION[country].key_id == entry["encryption_key_id"]


def test_manifest_is_complete() -> None:
    assert len(MANIFEST["valid"]) >= 3
    assert {t["stage"] for t in MANIFEST["tamper"]} == {"verify", "open"}
    files = {p.relative_to(VECTORS).as_posix() for p in VECTORS.glob("*/*.msmt")}
    assert files == {v["file"] for v in MANIFEST["valid"] + MANIFEST["tamper"]}


@pytest.mark.parametrize("vector", MANIFEST["valid"], ids=lambda v: v["name"])
def test_valid_vector_verifies_and_opens(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == vector["envelope_sha256"]
    header = verify(data, lookup).header
    assert header.item_id == vector["item_id"]
    assert header.originator == vector["originator"]
    assert list(header.recipient_countries) == vector["recipients"]
    for country in vector["recipients"]:
        opened = open_envelope(
            data, recipient=country, private_key=ENCRYPTION[country], originator_key=lookup
        )
        assert opened.payload == base64.b64decode(vector["payload_b64"])
        assert opened.header.content_type == vector["content_type"]


@pytest.mark.parametrize("vector", MANIFEST["tamper"], ids=lambda v: v["name"])
def test_tamper_vector_is_rejected_with_named_error(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    if vector["stage"] == "verify":
        with pytest.raises(errors.EnvelopeError) as info:
            verify(data, lookup)
    else:
        verify(data, lookup)  # only a recipient's private key reveals these
        country = vector["open_as"]
        with pytest.raises(errors.EnvelopeError) as info:
            open_envelope(data, recipient=country, private_key=ENCRYPTION[country], originator_key=lookup)
    assert info.value.code == vector["error"], info.value.detail
