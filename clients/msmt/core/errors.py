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


# --- transparency log ---


class LogError(MsmtError):
    """A Merkle proof, signed note, checkpoint or cosignature was rejected."""

    code = "log-error"


class InvalidInclusionProof(LogError):
    code = "invalid-inclusion-proof"


class InvalidConsistencyProof(LogError):
    code = "invalid-consistency-proof"


class InvalidProofRequest(LogError):
    """A proof or root was asked for a range the tree does not have (e.g. index >= size)."""

    code = "invalid-proof-request"


class MalformedNote(LogError):
    code = "malformed-note"


class MalformedCheckpoint(LogError):
    code = "malformed-checkpoint"


class MalformedVerifierKey(LogError):
    code = "malformed-verifier-key"


class BadNoteSignature(LogError):
    """A signature line whose key name and ID match a known key does not verify."""

    code = "bad-note-signature"


class UnverifiedNote(LogError):
    """No signature line of the note is from a known key (the note's text must be ignored)."""

    code = "unverified-note"


class BadCosignature(LogError):
    code = "bad-cosignature"


# --- member-governed directory ---


class GovernanceError(MsmtError):
    """A directory entry (trust root or statement) was rejected."""

    code = "governance-error"


class MalformedStatement(GovernanceError):
    code = "malformed-statement"


class BrokenChain(GovernanceError):
    """The entry does not follow the chain's head (wrong position or previous hash)."""

    code = "broken-chain"


class InvalidStatement(GovernanceError):
    """Well formed and signed, but not applicable (unknown member, key in use, ...)."""

    code = "invalid-statement"


class BadStatementSignature(GovernanceError):
    code = "bad-statement-signature"


class QuorumNotMet(GovernanceError):
    """The signatures present do not satisfy the rules; `detail` names who is missing."""

    code = "quorum-not-met"


class DirectoryRollback(GovernanceError):
    """The broker served an older directory than one already verified."""

    code = "directory-rollback"


class DirectoryFork(GovernanceError):
    """The broker served a directory whose history differs from the one already verified."""

    code = "directory-fork"


class ForeignOwnKey(GovernanceError):
    """The verified directory lists a key for this agency's own country that it did not make."""

    code = "foreign-own-key"


class NonCanonicalPublicKey(InvalidPublicKey):
    """A public key's bytes are not the one canonical encoding of its point (a value >= p)."""

    code = "non-canonical-public-key"


class SmallOrderPublicKey(InvalidPublicKey):
    """A public key is the identity or another low-order point: it proves or protects nothing."""

    code = "small-order-public-key"


class LogRollback(LogError):
    """The log showed a smaller tree, or another root for the same size, than one already verified."""

    code = "log-rollback"


class LeafMismatch(LogError):
    """The log's leaf for an item does not describe the item we hold."""

    code = "log-leaf-mismatch"


class NotWitnessed(LogError):
    """Fewer member witnesses cosigned the checkpoint than the members' root requires."""

    code = "not-witnessed"


class BadReceipt(MsmtError):
    """A signed delivery receipt is malformed, mis-signed, or does not match its delivery."""

    code = "bad-receipt"
