"""An agency's own keys: generate, save (encrypted, 0600), load.

Layout of a key folder:

    signing.key     encryption.key     api.key          (private, passphrase-encrypted)
    signing.pub     encryption.pub     api.pub          (public key documents, for enrolment)
    encryption-<key id>.key                             (earlier encryption keys, to read old items)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    SigningPrivateKey,
    load_private_key_file,
    public_key_document,
    write_private_key,
)
from .core.errors import CorruptKeyFile
from .core.markings import COUNTRY_RE

RETIRED_FILE = "retired-keys.txt"


@dataclass
class AgencyKeys:
    country: str
    signing: SigningPrivateKey
    encryption: EncryptionPrivateKey
    api: ApiPrivateKey
    previous_encryption: dict[str, EncryptionPrivateKey] = field(default_factory=dict)
    retired: set[str] = field(default_factory=set)  # ids of signing/api keys rotated away

    @classmethod
    def generate(cls, country: str) -> AgencyKeys:
        if not COUNTRY_RE.fullmatch(country):
            raise ValueError(f"{country!r} is not an ISO 3166-1 alpha-3 code")
        return cls(
            country, SigningPrivateKey.generate(), EncryptionPrivateKey.generate(), ApiPrivateKey.generate()
        )

    def encryption_key(self, key_id: str) -> EncryptionPrivateKey | None:
        """The current or an earlier encryption key with this id."""
        if key_id == self.encryption.key_id:
            return self.encryption
        return self.previous_encryption.get(key_id)

    def known_key_ids(self) -> set[str]:
        """Every key id this agency made: current keys, earlier encryption keys, and the ids of
        retired keys recorded in the folder when they were rotated away."""
        return {
            self.signing.key_id,
            self.encryption.key_id,
            self.api.key_id,
            *self.previous_encryption,
            *self.retired,
        }

    def public_documents(self) -> dict[str, bytes]:
        return {
            "signing": public_key_document(self.country, self.signing.public_key),
            "encryption": public_key_document(self.country, self.encryption.public_key),
            "api": public_key_document(self.country, self.api.public_key),
        }

    def save(self, folder: Path, passphrase: str, *, kdf: dict[str, int] | None = None) -> None:
        """Write the private keys (mode 0600, never overwriting) and the public documents."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, key in (("signing", self.signing), ("encryption", self.encryption), ("api", self.api)):
            write_private_key(folder / f"{name}.key", key, self.country, passphrase, kdf=kdf)
        for old_id, old in self.previous_encryption.items():
            write_private_key(folder / f"encryption-{old_id}.key", old, self.country, passphrase, kdf=kdf)
        for name, document in self.public_documents().items():
            (folder / f"{name}.pub").write_bytes(document)
        if self.retired:
            (folder / RETIRED_FILE).write_text("".join(f"{k}\n" for k in sorted(self.retired)))

    @classmethod
    def load(cls, folder: Path, passphrase: str) -> AgencyKeys:
        """Load and cross-check the key folder: every key must belong to the same country."""
        loaded = {}
        for name in ("signing", "encryption", "api"):
            loaded[name] = load_private_key_file(folder / f"{name}.key", passphrase)
        countries = {country for country, _ in loaded.values()}
        if len(countries) != 1:
            raise CorruptKeyFile(f"{folder} holds keys of several owners: {sorted(countries)}")
        (country,) = countries
        signing, encryption, api = (loaded[n][1] for n in ("signing", "encryption", "api"))
        if not (
            isinstance(signing, SigningPrivateKey)
            and isinstance(encryption, EncryptionPrivateKey)
            and isinstance(api, ApiPrivateKey)
        ):
            raise CorruptKeyFile(f"{folder}: a key file holds the wrong kind of key")
        previous = {}
        for path in sorted(folder.glob("encryption-*.key")):
            owner, old = load_private_key_file(path, passphrase)
            if owner != country or not isinstance(old, EncryptionPrivateKey):
                raise CorruptKeyFile(f"{path} is not an earlier encryption key of {country}")
            previous[old.key_id] = old
        retired_file = folder / RETIRED_FILE
        retired = set(retired_file.read_text().split()) if retired_file.exists() else set()
        return cls(country, signing, encryption, api, previous, retired)
