"""Key files: passphrase-encrypted private keys and public key documents.

Private key file (JSON, mode 0600): the raw private seed encrypted with AES-256-GCM under a
key derived from the passphrase by Argon2id (RFC 9106). Every other field of the file is the
AEAD's associated data, so a file whose kind, country or KDF parameters were edited does not
decrypt. Public key document (JSON): kind, country, algorithm, key id and the raw public key
in base64url; loading recomputes the key id and refuses a mismatch.

The functions here turn bytes into keys and back; only `write_private_key` and the
`load_*_file` helpers touch the file system.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from . import canonical
from .errors import (
    CorruptKeyFile,
    ForeignKeyFile,
    InvalidPublicKey,
    KeyFileExists,
    MsmtError,
    WrongPassphrase,
)
from .keys import (
    ALGORITHMS,
    PRIVATE_KEY_TYPES,
    PUBLIC_KEY_TYPES,
    KeyKind,
    PrivateKey,
    PublicKey,
    compute_key_id,
    kind_of,
)

PRIVATE_FORMAT = "msmt-private-key-v1"
PUBLIC_FORMAT = "msmt-public-key-v1"

# OWASP's minimum for Argon2id is 19 MiB / t=2; the default is RFC 9106's second
# recommended option scaled to 64 MiB. Files asking for less than the floor are refused, so
# a tampered file cannot downgrade the KDF.
DEFAULT_KDF = {"memory_kib": 65536, "iterations": 3, "lanes": 1}
_KDF_BOUNDS = {"memory_kib": (19456, 4 * 1024 * 1024), "iterations": (2, 16), "lanes": (1, 16)}
_MAX_FILE = 16 * 1024
_PUBLIC_FIELDS = {"format", "kind", "algorithm", "country", "key_id", "public_key"}
_OWNER_RE = re.compile(r"[A-Z]{3}|broker|admin:[a-z][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class PublicKeyDocument:
    country: str
    kind: KeyKind
    key: PublicKey

    @property
    def key_id(self) -> str:
        return self.key.key_id


def _derive(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=params["iterations"],
        lanes=params["lanes"],
        memory_cost=params["memory_kib"],
    )
    # NFC so the same passphrase typed on another platform derives the same key.
    return kdf.derive(unicodedata.normalize("NFC", passphrase).encode("utf-8"))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise CorruptKeyFile("key file repeats a field")
    return dict(pairs)


def _owner(value: Any) -> str:
    """A key's owner: a country code, "broker", or "admin:<name>"."""
    if not isinstance(value, str) or not _OWNER_RE.fullmatch(value):
        raise CorruptKeyFile(
            f"key file owner {str(value)[:40]!r} is not a country code, broker or admin:<name>"
        )
    return value


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > _MAX_FILE:
        raise CorruptKeyFile(f"{what} is {len(data)} bytes, larger than any key file")
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except CorruptKeyFile:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise ForeignKeyFile(f"{what} is not an MSMT key file (not JSON)") from exc
    if not isinstance(value, dict):
        raise ForeignKeyFile(f"{what} is not an MSMT key file")
    return value


def encrypt_private_key(
    key: PrivateKey, country: str, passphrase: str, kdf: dict[str, int] | None = None
) -> bytes:
    """Serialise `key` as an encrypted private key file."""
    if not passphrase:
        raise WrongPassphrase("a private key file needs a non-empty passphrase")
    params = dict(DEFAULT_KDF if kdf is None else kdf)
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    kind = kind_of(key)
    meta: dict[str, Any] = {
        "format": PRIVATE_FORMAT,
        "kind": kind.value,
        "algorithm": ALGORITHMS[kind],
        "country": country,
        "key_id": key.key_id,
        "kdf": {"name": "argon2id", "salt": canonical.b64encode(salt), **params},
        "cipher": "A256GCM",
        "nonce": canonical.b64encode(nonce),
    }
    ciphertext = AESGCM(_derive(passphrase, salt, params)).encrypt(nonce, key.seed, canonical.encode(meta))
    doc = {**meta, "ciphertext": canonical.b64encode(ciphertext)}
    return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def decrypt_private_key(data: bytes, passphrase: str) -> tuple[str, PrivateKey]:
    """Return (country, key) from an encrypted private key file."""
    doc = _parse_json(data, "private key file")
    if doc.get("format") != PRIVATE_FORMAT:
        raise ForeignKeyFile(f"not an MSMT private key file (format {doc.get('format')!r})")
    try:
        kind = KeyKind(doc["kind"])
        kdf = doc["kdf"]
        if kdf.get("name") != "argon2id" or doc.get("cipher") != "A256GCM":
            raise CorruptKeyFile("private key file names an unsupported KDF or cipher")
        params = {name: kdf[name] for name in _KDF_BOUNDS}
        for name, (low, high) in _KDF_BOUNDS.items():
            if not isinstance(params[name], int) or not low <= params[name] <= high:
                raise CorruptKeyFile(f"private key file has an unsafe Argon2id {name}: {params[name]!r}")
        salt = canonical.b64decode(kdf["salt"], "salt")
        nonce = canonical.b64decode(doc["nonce"], "nonce")
        ciphertext = canonical.b64decode(doc["ciphertext"], "ciphertext")
        country = _owner(doc["country"])
        if doc.get("algorithm") != ALGORITHMS[kind]:
            raise CorruptKeyFile(f"a {kind.value} key must use {ALGORITHMS[kind]}")
        meta = {k: v for k, v in doc.items() if k != "ciphertext"}
        aad = canonical.encode(meta)
    except CorruptKeyFile:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, MsmtError) as exc:
        raise CorruptKeyFile(f"private key file is incomplete or damaged: {exc}") from exc
    if len(salt) < 16 or len(nonce) != 12:
        raise CorruptKeyFile("private key file has a short salt or a bad nonce")
    try:
        seed = AESGCM(_derive(passphrase, salt, params)).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise WrongPassphrase(
            "cannot decrypt the private key: wrong passphrase, or the file was altered"
        ) from exc
    key = PRIVATE_KEY_TYPES[kind].from_seed(seed)
    if key.key_id != doc.get("key_id"):
        raise CorruptKeyFile("private key file's key_id does not match the key it holds")
    return country, key


def write_private_key(
    path: Path,
    key: PrivateKey,
    country: str,
    passphrase: str,
    *,
    overwrite: bool = False,
    kdf: dict[str, int] | None = None,
) -> None:
    """Write an encrypted private key file with mode 0600, never readable by others."""
    data = encrypt_private_key(key, country, passphrase, kdf)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileExists(f"{path} exists; refusing to overwrite a private key") from exc
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def load_private_key_file(path: Path, passphrase: str) -> tuple[str, PrivateKey]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CorruptKeyFile(f"cannot read {path}: {exc.strerror}") from exc
    return decrypt_private_key(data, passphrase)


def public_key_document(country: str, key: PublicKey) -> bytes:
    kind = kind_of(key)
    doc = {
        "format": PUBLIC_FORMAT,
        "kind": kind.value,
        "algorithm": ALGORITHMS[kind],
        "country": country,
        "key_id": key.key_id,
        "public_key": canonical.b64encode(key.raw),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def parse_public_key_document(data: bytes) -> PublicKeyDocument:
    doc = _parse_json(data, "public key document")
    if doc.get("format") != PUBLIC_FORMAT:
        raise ForeignKeyFile(f"not an MSMT public key document (format {doc.get('format')!r})")
    if set(doc) != _PUBLIC_FIELDS:
        raise CorruptKeyFile(f"public key document must have exactly the fields {sorted(_PUBLIC_FIELDS)}")
    try:
        kind = KeyKind(doc["kind"])
        country = _owner(doc["country"])
        raw = canonical.b64decode(doc["public_key"], "public_key")
    except CorruptKeyFile:
        raise
    except (KeyError, TypeError, ValueError, MsmtError) as exc:
        raise CorruptKeyFile(f"public key document is incomplete or damaged: {exc}") from exc
    if doc.get("algorithm") != ALGORITHMS[kind]:
        raise InvalidPublicKey(f"a {kind.value} key must use {ALGORITHMS[kind]}")
    key = PUBLIC_KEY_TYPES[kind].from_bytes(raw)
    if compute_key_id(kind, raw) != doc.get("key_id"):
        raise InvalidPublicKey("public key document's key_id does not match its key")
    return PublicKeyDocument(country, kind, key)
