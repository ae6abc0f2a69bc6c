"""The pure core shared by broker and client: keys, envelope, markings, errors.

Nothing here performs network or database I/O; only `keyfiles.write_private_key` and
`keyfiles.load_private_key_file` touch the file system.
"""

from . import canonical, errors
from .envelope import (
    MAX_PAYLOAD_BYTES,
    MAX_RECIPIENTS,
    SUITE,
    VERSION,
    Envelope,
    Header,
    Opened,
    RecipientEntry,
    check_freshness,
    open_envelope,
    parse,
    seal,
    verify,
)
from .ids import is_item_id, new_item_id
from .keyfiles import (
    PublicKeyDocument,
    decrypt_private_key,
    encrypt_private_key,
    load_private_key_file,
    parse_public_key_document,
    public_key_document,
    write_private_key,
)
from .keys import (
    ApiPrivateKey,
    ApiPublicKey,
    EncryptionPrivateKey,
    EncryptionPublicKey,
    KeyKind,
    SigningPrivateKey,
    SigningPublicKey,
    compute_key_id,
    short_fingerprint,
)
from .markings import TLP_LEVELS, TOPICS, Markings

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_RECIPIENTS",
    "SUITE",
    "TLP_LEVELS",
    "TOPICS",
    "VERSION",
    "ApiPrivateKey",
    "ApiPublicKey",
    "EncryptionPrivateKey",
    "EncryptionPublicKey",
    "Envelope",
    "Header",
    "KeyKind",
    "Markings",
    "Opened",
    "PublicKeyDocument",
    "RecipientEntry",
    "SigningPrivateKey",
    "SigningPublicKey",
    "canonical",
    "check_freshness",
    "compute_key_id",
    "decrypt_private_key",
    "encrypt_private_key",
    "errors",
    "is_item_id",
    "load_private_key_file",
    "new_item_id",
    "open_envelope",
    "parse",
    "parse_public_key_document",
    "public_key_document",
    "seal",
    "short_fingerprint",
    "verify",
    "write_private_key",
]
