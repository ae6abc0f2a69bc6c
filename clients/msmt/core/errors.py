"""One exception tree for the pure core.

Every subclass names the check that failed and carries a sentence a person can act on.
`code` is stable: the broker turns it into an RFC 9457 problem `type`, and the negative
test vectors in `tests/vectors/` name the error they expect by it.
"""

from __future__ import annotations


class MsmtError(Exception):
    """Base of every error raised by `msmt.core`."""

    code = "msmt-error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- envelope: structure -------------------------------------------------------------


class EnvelopeError(MsmtError):
    """The envelope was rejected."""

    code = "envelope-error"


class MalformedEnvelope(EnvelopeError):
    code = "malformed-envelope"


class UnsupportedVersion(EnvelopeError):
    code = "unsupported-version"


class UnsupportedSuite(EnvelopeError):
    code = "unsupported-suite"


class NonCanonicalEncoding(EnvelopeError):
    code = "non-canonical-encoding"


class DuplicateKey(EnvelopeError):
    code = "duplicate-key"


class OversizedField(EnvelopeError):
    code = "oversized-field"


class InvalidHeader(EnvelopeError):
    code = "invalid-header"


# --- envelope: authenticity and integrity --------------------------------------------


class UnknownSigningKey(EnvelopeError):
    code = "unknown-signing-key"


class BadSignature(EnvelopeError):
    code = "bad-signature"


class PayloadMismatch(EnvelopeError):
    code = "payload-mismatch"


class StaleEnvelope(EnvelopeError):
    code = "stale-envelope"


# --- envelope: opening ---------------------------------------------------------------


class NotARecipient(EnvelopeError):
    code = "not-a-recipient"


class RecipientKeyMismatch(EnvelopeError):
    code = "recipient-key-mismatch"


class KeyUnwrapFailed(EnvelopeError):
    code = "key-unwrap-failed"


class KeyCommitmentMismatch(EnvelopeError):
    code = "key-commitment-mismatch"


class PayloadDecryptionFailed(EnvelopeError):
    code = "payload-decryption-failed"


# --- keys ------------------------------------------------------------------------------


class KeyMaterialError(MsmtError):
    """A key or key file could not be used."""

    code = "key-error"


class InvalidPublicKey(KeyMaterialError):
    code = "invalid-public-key"


class InvalidPrivateKey(KeyMaterialError):
    code = "invalid-private-key"


class WrongPassphrase(KeyMaterialError):
    code = "wrong-passphrase"


class CorruptKeyFile(KeyMaterialError):
    code = "corrupt-key-file"


class ForeignKeyFile(KeyMaterialError):
    code = "foreign-key-file"


class KeyFileExists(KeyMaterialError):
    code = "key-file-exists"
