from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    SigningPrivateKey,
    compute_key_id,
    decrypt_private_key,
    encrypt_private_key,
    errors,
    load_private_key_file,
    parse_public_key_document,
    public_key_document,
    short_fingerprint,
    write_private_key,
)
from msmt.core.keys import EncryptionPublicKey, SigningPublicKey

FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}
GENERATORS = [SigningPrivateKey.generate, EncryptionPrivateKey.generate, ApiPrivateKey.generate]


@pytest.mark.parametrize("generate", GENERATORS, ids=["signing", "encryption", "api"])
def test_private_key_file_round_trip(tmp_path: Path, generate: object) -> None:
    key = generate()  # type: ignore[operator]
    path = tmp_path / "k.key"
    write_private_key(path, key, "KOR", "correct horse", kdf=FAST_KDF)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    country, loaded = load_private_key_file(path, "correct horse")
    assert country == "KOR"
    assert loaded.seed == key.seed
    assert loaded.key_id == key.key_id


def test_default_kdf_is_memory_hard() -> None:
    data = encrypt_private_key(ApiPrivateKey.generate(), "KOR", "pw")
    assert b'"memory_kib": 65536' in data and b"argon2id" in data


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, ApiPrivateKey.generate(), "KOR", "pw", kdf=FAST_KDF)
    with pytest.raises(errors.KeyFileExists):
        write_private_key(path, ApiPrivateKey.generate(), "KOR", "pw", kdf=FAST_KDF)


def test_wrong_passphrase() -> None:
    data = encrypt_private_key(ApiPrivateKey.generate(), "KOR", "right", kdf=FAST_KDF)
    with pytest.raises(errors.WrongPassphrase):
        decrypt_private_key(data, "wrong")


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda d: d[: len(d) // 2], errors.ForeignKeyFile),  # truncated: no longer JSON
        (lambda d: b"-----BEGIN PRIVATE KEY-----\n", errors.ForeignKeyFile),
        (lambda d: b'{"format": "something-else"}', errors.ForeignKeyFile),
        (lambda d: d.replace(b'"country": "KOR"', b'"country": "USA"'), errors.WrongPassphrase),  # AAD
        (lambda d: d.replace(b'"memory_kib": 19456', b'"memory_kib": 8'), errors.CorruptKeyFile),
        (lambda d: d.replace(b'"kind": "api"', b'"kind": "rocket"'), errors.CorruptKeyFile),
        (lambda d: d.replace(b'"nonce"', b'"nonse"'), errors.CorruptKeyFile),
        (lambda d: b"\xff\xfe" * 10, errors.ForeignKeyFile),
        (lambda d: b"x" * 100_000, errors.CorruptKeyFile),
        (lambda d: d.replace(b'"cipher"', b'"country": "USA", "cipher"'), errors.CorruptKeyFile),
        (lambda d: d.replace(b'"country": "KOR"', b'"country": 7'), errors.CorruptKeyFile),
        (lambda d: d.replace(b'"algorithm": "Ed25519"', b'"algorithm": "RSA"'), errors.CorruptKeyFile),
    ],
    ids=[
        "truncated",
        "pem",
        "other-format",
        "country-edited",
        "weak-kdf",
        "bad-kind",
        "missing-field",
        "binary",
        "huge",
        "repeated-field",
        "country-not-a-string",
        "algorithm-mismatch",
    ],
)
def test_damaged_private_key_files(edit: object, error: type[Exception]) -> None:
    data = encrypt_private_key(ApiPrivateKey.generate(), "KOR", "pw", kdf=FAST_KDF)
    with pytest.raises(error):
        decrypt_private_key(edit(data), "pw")  # type: ignore[operator]


@pytest.mark.parametrize("generate", GENERATORS, ids=["signing", "encryption", "api"])
def test_public_key_document_round_trip(generate: object) -> None:
    key = generate().public_key  # type: ignore[operator]
    doc = parse_public_key_document(public_key_document("JPN", key))
    assert doc.country == "JPN"
    assert doc.key.raw == key.raw
    assert doc.key_id == key.key_id


def test_public_key_document_key_id_mismatch() -> None:
    data = public_key_document("JPN", ApiPrivateKey.generate().public_key)
    other = ApiPrivateKey.generate().public_key.key_id
    import json

    doc = json.loads(data)
    doc["key_id"] = other
    with pytest.raises(errors.InvalidPublicKey):
        parse_public_key_document(json.dumps(doc).encode())


def test_key_ids_are_fingerprints_of_kind_and_key() -> None:
    key = ApiPrivateKey.generate().public_key
    assert key.key_id == compute_key_id(KeyKind.API, key.raw)
    assert compute_key_id(KeyKind.SIGNING, key.raw) != key.key_id  # kind is bound in
    assert len(key.key_id) == 32
    fp = short_fingerprint(key.key_id)
    assert len(fp) == 19 and fp.count("-") == 3 and fp.replace("-", "").isalnum()


def test_malformed_public_keys_get_clear_errors() -> None:
    with pytest.raises(errors.InvalidPublicKey, match="1216 bytes"):
        EncryptionPublicKey.from_bytes(b"\x00" * 100)
    with pytest.raises(errors.InvalidPublicKey, match="X-Wing"):
        EncryptionPublicKey.from_bytes(b"\xff" * 1216)
    with pytest.raises(errors.InvalidPublicKey):
        SigningPublicKey.from_bytes(b"\x00" * 10)


def test_private_key_seed_sizes() -> None:
    with pytest.raises(errors.InvalidPrivateKey):
        SigningPrivateKey.from_seed(b"\x00" * 32)
    with pytest.raises(errors.InvalidPrivateKey):
        EncryptionPrivateKey.from_seed(b"\x00" * 31)
    with pytest.raises(errors.InvalidPrivateKey):
        ApiPrivateKey.from_seed(b"\x00")


def test_passphrase_is_unicode_normalised() -> None:
    composed, decomposed = "caf\u00e9 \uc11c\uc6b8", "cafe\u0301 \u1109\u1165\u110b\u116e\u11af"
    data = encrypt_private_key(ApiPrivateKey.generate(), "KOR", composed, kdf=FAST_KDF)
    assert decrypt_private_key(data, decomposed)[0] == "KOR"


def test_public_key_document_rejects_unknown_fields() -> None:
    import json

    doc = json.loads(public_key_document("JPN", ApiPrivateKey.generate().public_key))
    doc["note"] = "trust me"
    with pytest.raises(errors.CorruptKeyFile):
        parse_public_key_document(json.dumps(doc).encode())
