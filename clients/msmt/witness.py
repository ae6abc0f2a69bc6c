"""A witness that cosigns the broker's transparency-log checkpoints (c2sp.org/tlog-witness).

A member country runs one to make sure the broker cannot show it one history and other
members another. For each log (an origin and the log's verifier keys) the witness keeps the
latest checkpoint it cosigned, and cosigns a new checkpoint only if a Merkle consistency
proof shows it extends that one. A request that contradicts the recorded state (a proof that
does not verify, or a checkpoint of the recorded size with another root) is refused and kept
in an `evidence` table: signed by the log, it proves the log forked.

Only the standard library and `cryptography` are used (sqlite3, http.server), so an agency
can run a witness from the `msmt-client` package alone. `submit_checkpoint` is the broker's
side of the protocol and uses httpx.

HTTP interface (the submission and monitoring prefixes are the same, `prefix` below):

- `POST <prefix>/add-checkpoint`: the body is `old <size>\\n`, at most 63 base64 consistency
  proof lines, a blank line and the signed checkpoint. Answers: 200 with one cosignature line
  per witness key; 400 malformed request or old size > checkpoint size; 403 the checkpoint
  lacks a valid signature from every key configured for its log; 404 unknown origin; 409 the
  old size is not the size last cosigned (body `<size>\\n`, type `text/x.tlog.size`); 413
  body larger than the limit; 422 the proof does not verify, a proof was given for old size 0,
  same size but another root, or a size-0 checkpoint whose root is not the empty tree's.
- `GET <prefix>/<lowercase hex SHA-256 of the origin>/checkpoint`: the latest checkpoint
  cosigned for that log, with the log's signatures and this witness's cosignatures; 404 if
  none yet.

Any other path answers 404; an internal error answers 500 with no detail.

Configuration file (TOML; relative paths are relative to the file's folder)::

    name = "witness.kor.example"            # the witness's key name (cosignature lines)
    ed25519_key = "witness-ed25519.key"     # cosignature/v1 key (type 0x04)
    mldsa44_key = "witness-mldsa44.key"     # optional: also an ML-DSA-44 cosignature (0x06)
    state = "witness-state.sqlite"          # SQLite state (created with mode 0600)
    host = "127.0.0.1"                      # optional, default 127.0.0.1
    port = 7380                             # optional, default 7380
    prefix = ""                             # optional: "" or "/path" before /add-checkpoint
    max_body_bytes = 65536                  # optional, default 65536

    [[logs]]
    origin = "broker.example/log"
    vkeys = ["broker.example/log+1234abcd+AT...", "broker.example/log+5678ef01+/2...="]

At least one of `ed25519_key` and `mldsa44_key` is required. Every vkey of a log must have
signed a checkpoint for the witness to accept it (the broker signs with Ed25519 and ML-DSA-65).

Key file: one line of text, `msmt-witness-key <algorithm> <base64 of the 32-byte seed>`,
with algorithm `ed25519` (the RFC 8032 private key) or `mldsa44` (the FIPS 204 key
generation seed). `generate_witness_key` writes it with mode 0600 and never overwrites a
file; loading refuses a file that group or others may read.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import signal
import sqlite3
import stat
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from .core.errors import (
    BadNoteSignature,
    InvalidConsistencyProof,
    KeyFileExists,
    LogError,
    MalformedCheckpoint,
    MalformedNote,
    MalformedVerifierKey,
    UnverifiedNote,
)
from .core.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from .core.note import (
    MAX_TREE_SIZE,
    Checkpoint,
    Ed25519Cosigner,
    MLDSA44Cosigner,
    NoteSignature,
    NoteVerifier,
    format_note,
    is_valid_key_name,
    open_checkpoint,
    parse_note,
    verifier_from_vkey,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CONTENT_TYPE_SIZE",
    "DEFAULT_MAX_BODY",
    "MAX_PROOF_LINES",
    "Cosigner",
    "Evidence",
    "StateTransaction",
    "StoredCheckpoint",
    "Witness",
    "WitnessConfig",
    "WitnessConfigError",
    "WitnessResponse",
    "WitnessState",
    "add_checkpoint_body",
    "add_witness_parser",
    "generate_witness_key",
    "load_config",
    "load_cosigner",
    "make_server",
    "open_witness",
    "serve",
    "submit_checkpoint",
]

logger = logging.getLogger("msmt.witness")

Cosigner = Ed25519Cosigner | MLDSA44Cosigner
Algorithm = Literal["ed25519", "mldsa44"]

CONTENT_TYPE_SIZE = "text/x.tlog.size"
CONTENT_TYPE_TEXT = "text/plain; charset=utf-8"
MAX_PROOF_LINES = 63
DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7380

EXIT_OK = 0
EXIT_ERROR = 1

_KEY_FILE_MAGIC = "msmt-witness-key"
_SEED_SIZE = 32
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_ORIGIN_HASH_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")


class WitnessConfigError(Exception):
    """The configuration or a key file cannot be used; the message is one sentence."""


# --- responses -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessResponse:
    """An HTTP answer: status, Content-Type and body."""

    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: int, message: str) -> WitnessResponse:
        return cls(status, CONTENT_TYPE_TEXT, (message + "\n").encode("utf-8"))


def _conflict(size: int) -> WitnessResponse:
    return WitnessResponse(409, CONTENT_TYPE_SIZE, f"{size}\n".encode("ascii"))


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCheckpoint:
    """The latest checkpoint cosigned for a log, with the log's and the witness's signatures."""

    origin: str
    size: int
    root_hash: bytes = field(repr=False)
    note: bytes = field(repr=False)
    updated_s: int


@dataclass(frozen=True)
class Evidence:
    """A refused request whose signed checkpoint contradicts what the witness had cosigned."""

    id: int
    received_s: int
    origin: str
    reason: str
    body: bytes = field(repr=False)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root_hash BLOB NOT NULL CHECK (length(root_hash) = 32),
    note BLOB NOT NULL,
    updated_s INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_s INTEGER NOT NULL,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    checkpoint_sha256 BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_origin ON evidence (origin, id);
"""


class StateTransaction:
    """Reads and writes inside one `BEGIN IMMEDIATE` transaction of `WitnessState`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def latest(self, origin: str) -> StoredCheckpoint | None:
        row = self._conn.execute(
            "SELECT origin, size, root_hash, note, updated_s FROM checkpoints WHERE origin = ?", (origin,)
        ).fetchone()
        return None if row is None else StoredCheckpoint(*row)

    def store(self, checkpoint: Checkpoint, note: bytes, now_s: int) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints (origin, size, root_hash, note, updated_s) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root_hash = excluded.root_hash, "
            "note = excluded.note, updated_s = excluded.updated_s",
            (checkpoint.origin, checkpoint.size, checkpoint.root_hash, note, now_s),
        )

    def record_evidence(self, checkpoint: Checkpoint, reason: str, body: bytes, now_s: int) -> bool:
        """Keep a refused request; False if one with the same checkpoint text is already kept.

        Only the log can make new signed checkpoints, so one row per checkpoint bounds the
        table however often a request is replayed.
        """
        digest = hashlib.sha256(checkpoint.to_text().encode("utf-8")).digest()
        cursor = self._conn.execute(
            "INSERT INTO evidence (received_s, origin, reason, checkpoint_sha256, body) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (checkpoint_sha256) DO NOTHING",
            (now_s, checkpoint.origin, reason, digest, body),
        )
        return cursor.rowcount == 1


class WitnessState:
    """The witness's durable state in SQLite: latest cosigned checkpoint per log, and evidence.

    The file is created with mode 0600 and used in WAL mode with `synchronous=FULL`, so a
    committed transaction survives a crash. `transaction()` runs `BEGIN IMMEDIATE`: the
    check of the old size and the write of the new state happen under one write lock, also
    against other processes using the same file. One connection is shared by the threads
    of a process, behind a lock.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> WitnessState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[StateTransaction]:
        """One atomic, durable step: committed when the block ends, rolled back on an exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield StateTransaction(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def latest(self, origin: str) -> StoredCheckpoint | None:
        with self._lock:
            return StateTransaction(self._conn).latest(origin)

    def evidence(self, origin: str | None = None) -> list[Evidence]:
        query = "SELECT id, received_s, origin, reason, body FROM evidence"
        params: tuple[str, ...] = ()
        if origin is not None:
            query += " WHERE origin = ?"
            params = (origin,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [Evidence(*row) for row in rows]


# --- the witness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    old_size: int
    proof: list[bytes]
    note: bytes


def _parse_request(body: bytes) -> _Request | WitnessResponse:
    head, separator, note = body.partition(b"\n\n")
    if not separator:
        return WitnessResponse.text(400, "the request has no blank line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        return WitnessResponse.text(400, "the old size and proof lines are not ASCII")
    size_text = lines[0].removeprefix("old ")
    if size_text == lines[0] or not _DECIMAL.fullmatch(size_text) or len(size_text) > 19:
        return WitnessResponse.text(400, "the first line is not 'old <size>' with a decimal size")
    old_size = int(size_text)
    if old_size > MAX_TREE_SIZE:
        return WitnessResponse.text(400, f"the old size is larger than {MAX_TREE_SIZE}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        return WitnessResponse.text(400, f"the request has more than {MAX_PROOF_LINES} proof lines")
    proof = []
    for number, line in enumerate(lines[1:], 1):
        try:
            raw = base64.b64decode(line, validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
            return WitnessResponse.text(400, f"proof line {number} is not a base64 {HASH_SIZE}-byte hash")
        proof.append(raw)
    return _Request(old_size, proof, note)


class Witness:
    """Checks and cosigns checkpoints of the configured logs (c2sp.org/tlog-witness).

    `logs` maps each origin to the log's note verifiers; a checkpoint must carry a valid
    signature from every one of them. Every cosigner must be named `name`; the answer has
    one cosignature line per cosigner (an ML-DSA-44 cosigner skips checkpoints with
    extension lines, which its format does not cover).
    """

    def __init__(
        self,
        name: str,
        cosigners: Cosigner | Sequence[Cosigner],
        logs: Mapping[str, Sequence[NoteVerifier]],
        state: WitnessState,
    ) -> None:
        signers: list[Cosigner] = (
            [cosigners] if isinstance(cosigners, Ed25519Cosigner | MLDSA44Cosigner) else list(cosigners)
        )
        if not signers:
            raise ValueError("a witness needs at least one cosigner")
        for signer in signers:
            if signer.name != name:
                raise ValueError(f"the cosigner {signer.name!r} is not named {name!r}")
        if len({s.verifier.key_id for s in signers}) != len(signers):
            raise ValueError("two cosigners have the same key ID")
        if not logs:
            raise ValueError("a witness needs at least one log")
        for origin, verifiers in logs.items():
            if not verifiers:
                raise ValueError(f"the log {origin!r} has no verifier key")
            refs = {(v.name, v.key_id) for v in verifiers}
            if len(refs) != len(verifiers):
                raise ValueError(f"the log {origin!r} lists a key name and ID twice")
        self.name = name
        self.cosigners: tuple[Cosigner, ...] = tuple(signers)
        self.logs: dict[str, tuple[NoteVerifier, ...]] = {o: tuple(v) for o, v in logs.items()}
        self.state = state
        self._by_hash = {hashlib.sha256(o.encode("utf-8")).hexdigest(): o for o in self.logs}

    @property
    def vkeys(self) -> list[str]:
        """The verifier keys of the witness's cosignatures, to give to those who check them."""
        return [signer.verifier.vkey for signer in self.cosigners]

    def add_checkpoint(self, body: bytes, now_s: int) -> WitnessResponse:
        """Answer an add-checkpoint request body; `now_s` (POSIX seconds) timestamps the cosignatures."""
        if now_s <= 0:
            raise ValueError("a cosignature timestamp must be positive")
        request = _parse_request(body)
        if isinstance(request, WitnessResponse):
            return request
        try:
            text, _ = parse_note(request.note)
        except MalformedNote as exc:
            return WitnessResponse.text(400, f"the checkpoint is not a signed note: {exc.detail}")
        origin = text.split("\n", 1)[0]
        verifiers = self.logs.get(origin)
        if verifiers is None:
            return WitnessResponse.text(404, "this witness does not know the log of this origin")
        try:
            checkpoint, signatures = open_checkpoint(request.note, verifiers, origin=origin)
        except (BadNoteSignature, UnverifiedNote) as exc:
            return WitnessResponse.text(403, f"no valid signature from every key of the log: {exc.detail}")
        except LogError as exc:
            return WitnessResponse.text(400, f"the checkpoint is malformed: {exc.detail}")
        if request.old_size > checkpoint.size:
            return WitnessResponse.text(400, "the old size is larger than the checkpoint's size")
        signers = [
            s for s in self.cosigners if not (checkpoint.extensions and isinstance(s, MLDSA44Cosigner))
        ]
        if not signers:
            return WitnessResponse.text(
                422, "this witness's keys cannot cosign a checkpoint with extension lines"
            )
        log_keys = {(v.name, v.key_id) for v in verifiers}
        log_lines: list[NoteSignature] = []
        for signature in signatures:
            ref = (signature.name, signature.key_id)
            if ref in log_keys:
                log_lines.append(signature)
                log_keys.discard(ref)

        with self.state.transaction() as tx:
            latest = tx.latest(origin)
            last_size = 0 if latest is None else latest.size
            if request.old_size != last_size:
                if (
                    latest is not None
                    and checkpoint.size == latest.size
                    and checkpoint.root_hash != latest.root_hash
                ):
                    tx.record_evidence(checkpoint, f"a second root for size {checkpoint.size}", body, now_s)
                return _conflict(last_size)
            refusal = self._check_consistency(request, checkpoint, latest)
            if refusal is not None:
                reason, evidence = refusal
                if evidence:
                    tx.record_evidence(checkpoint, reason, body, now_s)
                return WitnessResponse.text(422, reason)
            cosignatures = [signer.cosign(checkpoint, now_s) for signer in signers]
            tx.store(checkpoint, format_note(text, [*log_lines, *cosignatures]), now_s)
        # Committed (durably) when the transaction block ended: only now may we answer 200.
        lines = "".join(signature.to_line() for signature in cosignatures)
        return WitnessResponse(200, CONTENT_TYPE_TEXT, lines.encode("utf-8"))

    @staticmethod
    def _check_consistency(
        request: _Request, checkpoint: Checkpoint, latest: StoredCheckpoint | None
    ) -> tuple[str, bool] | None:
        """None if `checkpoint` extends `latest`; else (reason, whether it is evidence)."""
        if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
            return "a checkpoint of size 0 must have the root hash of the empty tree", True
        if request.old_size == 0:
            if request.proof:
                return "a consistency proof from old size 0 must be empty", False
            return None
        assert latest is not None  # old size == the stored size > 0
        if checkpoint.size == latest.size:
            if checkpoint.root_hash != latest.root_hash:
                return f"a second root for size {checkpoint.size}", True
            if request.proof:
                return "a consistency proof between equal sizes must be empty", False
            return None
        try:
            verify_consistency(
                latest.size, checkpoint.size, request.proof, latest.root_hash, checkpoint.root_hash
            )
        except InvalidConsistencyProof as exc:
            return f"the consistency proof does not verify: {exc.detail}", True
        return None

    def cosigned_checkpoint(self, origin_hash: str) -> bytes | None:
        """The latest cosigned checkpoint of the log whose origin has this SHA-256 (lowercase hex)."""
        origin = self._by_hash.get(origin_hash)
        if origin is None:
            return None
        latest = self.state.latest(origin)
        return None if latest is None else latest.note


# --- keys ------------------------------------------------------------------------------------


def _make_cosigner(name: str, algorithm: str, seed: bytes) -> Cosigner:
    if not is_valid_key_name(name):
        raise MalformedVerifierKey(f"{name!r} is not a valid key name (no spaces, no '+')")
    if algorithm == "ed25519":
        return Ed25519Cosigner.from_seed(name, seed)
    if algorithm == "mldsa44":
        if not 1 <= len(name.encode("utf-8")) <= 255:
            raise MalformedVerifierKey("an ML-DSA-44 cosigner's name is 1 to 255 bytes")
        return MLDSA44Cosigner.from_seed(name, seed)
    raise ValueError(f"unknown witness key algorithm {algorithm!r} (ed25519 or mldsa44)")


def generate_witness_key(name: str, path: str | Path, algorithm: Algorithm = "ed25519") -> str:
    """Write a new witness key file (mode 0600, never overwriting); return its vkey text.

    The vkey is of type 0x04 (Ed25519 cosignature/v1) or, with algorithm "mldsa44", 0x06.
    Raises KeyFileExists if `path` exists and MalformedVerifierKey if `name` is not a key name.
    """
    seed = secrets.token_bytes(_SEED_SIZE)
    vkey = _make_cosigner(name, algorithm, seed).verifier.vkey  # checks the name before writing
    text = f"{_KEY_FILE_MAGIC} {algorithm} {base64.b64encode(seed).decode('ascii')}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileExists(f"{path} exists; refusing to overwrite a witness key") from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return vkey


def load_cosigner(name: str, path: str | Path, algorithm: Algorithm) -> Cosigner:
    """Read a witness key file; raises WitnessConfigError with a sentence on any problem."""
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise WitnessConfigError(f"the witness key {path} is readable by others; run chmod 600 {path}")
        with open(path, "rb") as handle:
            data = handle.read(1024)
    except OSError as exc:
        raise WitnessConfigError(f"cannot read the witness key {path}: {exc.strerror}") from exc
    try:
        magic, kind, b64 = data.decode("ascii").rstrip("\n").split(" ")
        seed = base64.b64decode(b64, validate=True)
    except (UnicodeDecodeError, ValueError):
        raise WitnessConfigError(f"{path} is not a witness key file") from None
    if magic != _KEY_FILE_MAGIC or len(seed) != _SEED_SIZE:
        raise WitnessConfigError(f"{path} is not a witness key file")
    if kind != algorithm:
        raise WitnessConfigError(f"{path} holds an {kind} key, not an {algorithm} key")
    try:
        return _make_cosigner(name, kind, seed)
    except (LogError, ValueError) as exc:
        raise WitnessConfigError(f"the witness key {path} cannot be used with the name {name!r}") from exc


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessConfig:
    """A parsed configuration file; paths are absolute."""

    name: str
    state: Path
    logs: dict[str, tuple[str, ...]]
    ed25519_key: Path | None = None
    mldsa44_key: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    prefix: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY


_CONFIG_KEYS = {
    "name",
    "ed25519_key",
    "mldsa44_key",
    "state",
    "host",
    "port",
    "prefix",
    "max_body_bytes",
    "logs",
}


def _string(doc: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str) or not value:
        raise WitnessConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def load_config(path: str | Path) -> WitnessConfig:
    """Read and check a witness configuration file; raises WitnessConfigError (one sentence)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            doc = tomllib.load(handle)
    except OSError as exc:
        raise WitnessConfigError(f"cannot read the witness configuration {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WitnessConfigError(f"{path} is not valid TOML: {exc}") from exc
    unknown = set(doc) - _CONFIG_KEYS
    if unknown:
        raise WitnessConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    base = path.resolve().parent
    name = _string(doc, "name", str(path))
    try:
        _make_cosigner(name, "ed25519", bytes(_SEED_SIZE))
    except LogError:
        raise WitnessConfigError(f"{path}: {name!r} is not a valid key name (no spaces, no '+')") from None
    keys = {k: base / _string(doc, k, str(path)) for k in ("ed25519_key", "mldsa44_key") if k in doc}
    if not keys:
        raise WitnessConfigError(f"{path}: set ed25519_key or mldsa44_key to a witness key file")
    port = doc.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise WitnessConfigError(f"{path}: 'port' must be an integer from 0 to 65535")
    prefix = doc.get("prefix", "")
    if not isinstance(prefix, str) or (prefix and (not prefix.startswith("/") or prefix.endswith("/"))):
        raise WitnessConfigError(f"{path}: 'prefix' must be empty or start, but not end, with '/'")
    max_body = doc.get("max_body_bytes", DEFAULT_MAX_BODY)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or not 1024 <= max_body <= 2**24:
        raise WitnessConfigError(f"{path}: 'max_body_bytes' must be an integer from 1024 to 16777216")
    tables = doc.get("logs", [])
    if not isinstance(tables, list) or not tables:
        raise WitnessConfigError(f"{path}: no log is configured; add a [[logs]] table with origin and vkeys")
    logs: dict[str, tuple[str, ...]] = {}
    for number, table in enumerate(tables, 1):
        where = f"{path}: log {number}"
        if not isinstance(table, dict) or set(table) != {"origin", "vkeys"}:
            raise WitnessConfigError(f"{where} must have exactly 'origin' and 'vkeys'")
        origin = _string(table, "origin", where)
        vkeys = table["vkeys"]
        if not isinstance(vkeys, list) or not vkeys or not all(isinstance(v, str) for v in vkeys):
            raise WitnessConfigError(f"{where}: 'vkeys' must be a non-empty list of verifier key strings")
        if origin in logs:
            raise WitnessConfigError(f"{where}: the origin {origin!r} is configured twice")
        for vkey in vkeys:
            try:
                verifier_from_vkey(vkey)
            except LogError as exc:
                raise WitnessConfigError(f"{where}: the vkey {vkey[:60]!r} is invalid: {exc.detail}") from exc
        try:
            Checkpoint(origin, 0, EMPTY_ROOT)
        except MalformedCheckpoint:
            raise WitnessConfigError(f"{where}: the origin holds a control character") from None
        logs[origin] = tuple(vkeys)
    return WitnessConfig(
        name=name,
        state=base / _string(doc, "state", str(path)),
        logs=logs,
        ed25519_key=keys.get("ed25519_key"),
        mldsa44_key=keys.get("mldsa44_key"),
        host=_string(doc, "host", str(path), DEFAULT_HOST),
        port=port,
        prefix=prefix,
        max_body_bytes=max_body,
    )


def open_witness(config: WitnessConfig) -> Witness:
    """Load the keys, open the state database and build the witness a configuration describes."""
    cosigners: list[Cosigner] = []
    if config.ed25519_key is not None:
        cosigners.append(load_cosigner(config.name, config.ed25519_key, "ed25519"))
    if config.mldsa44_key is not None:
        cosigners.append(load_cosigner(config.name, config.mldsa44_key, "mldsa44"))
    logs = {origin: [verifier_from_vkey(v) for v in vkeys] for origin, vkeys in config.logs.items()}
    try:
        state = WitnessState(config.state)
    except (OSError, sqlite3.Error) as exc:
        raise WitnessConfigError(f"cannot open the witness state {config.state}: {exc}") from exc
    try:
        return Witness(config.name, cosigners, logs, state)
    except ValueError as exc:
        state.close()
        raise WitnessConfigError(f"the witness configuration cannot be used: {exc}") from exc


# --- HTTP server -----------------------------------------------------------------------------

_DRAIN_LIMIT = 1024 * 1024  # an oversized body up to this size is read and dropped, then 413


def _handler_class(
    witness: Witness, prefix: str, max_body: int, clock: Callable[[], float]
) -> type[BaseHTTPRequestHandler]:
    add_path = f"{prefix}/add-checkpoint"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as tlog-witness recommends
        server_version = "msmt-witness"
        sys_version = ""
        timeout = 30  # seconds a client may take to send its request

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

        def _reply(self, response: WitnessResponse, *, close: bool = False, allow: str | None = None) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            if allow:
                self.send_header("Allow", allow)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        def _guard(self, action: Callable[[], None]) -> None:
            try:
                action()
            except OSError as exc:  # the client went away or was too slow: nobody to answer
                logger.info("connection from %s dropped: %s", self.address_string(), exc)
                self.close_connection = True
            except Exception:
                logger.exception("error while answering %s %s", self.command, self.path)
                try:
                    self._reply(WitnessResponse.text(500, "internal error"), close=True)
                except OSError:
                    self.close_connection = True

        def _read_body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding"):
                self._reply(WitnessResponse.text(411, "send the body with a Content-Length"), close=True)
                return None
            header = self.headers.get("Content-Length")
            if header is None:
                self._reply(WitnessResponse.text(411, "a Content-Length is required"), close=True)
                return None
            if not header.isascii() or not header.isdigit():
                self._reply(WitnessResponse.text(400, "the Content-Length is not a number"), close=True)
                return None
            length = int(header)
            if length > max_body:
                if length <= _DRAIN_LIMIT:  # so that the client reads the answer, not a reset
                    self.rfile.read(length)
                message = f"the request body is larger than {max_body} bytes"
                self._reply(WitnessResponse.text(413, message), close=True)
                return None
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True
                return None
            return body

        def _post(self) -> None:
            if urlsplit(self.path).path != add_path:
                self._reply(WitnessResponse.text(404, "not found"), close=True)
                return
            body = self._read_body()
            if body is not None:
                self._reply(witness.add_checkpoint(body, int(clock())))

        def _get(self) -> None:
            path = urlsplit(self.path).path
            if path == add_path:
                self._reply(WitnessResponse.text(405, "use POST"), allow="POST")
                return
            match = _ORIGIN_HASH_PATH.fullmatch(path[len(prefix) :]) if path.startswith(prefix) else None
            note = None if match is None else witness.cosigned_checkpoint(match.group(1))
            if note is None:
                self._reply(WitnessResponse.text(404, "not found"))
                return
            self._reply(WitnessResponse(200, CONTENT_TYPE_TEXT, note))

        def do_POST(self) -> None:
            self._guard(self._post)

        def do_GET(self) -> None:
            self._guard(self._get)

        def do_HEAD(self) -> None:
            self._guard(self._get)

        def _not_allowed(self) -> None:
            self._reply(WitnessResponse.text(405, "method not allowed"), close=True, allow="GET, POST")

        def do_PUT(self) -> None:
            self._guard(self._not_allowed)

        def do_DELETE(self) -> None:
            self._guard(self._not_allowed)

        def do_PATCH(self) -> None:
            self._guard(self._not_allowed)

    return Handler


def make_server(
    witness: Witness,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    prefix: str = "",
    max_body: int = DEFAULT_MAX_BODY,
    clock: Callable[[], float] = time.time,
) -> ThreadingHTTPServer:
    """A bound, not yet serving, HTTP server for `witness` (port 0 picks a free port)."""
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError("the prefix is empty or starts, but does not end, with '/'")
    server = ThreadingHTTPServer((host, port), _handler_class(witness, prefix, max_body, clock))
    server.daemon_threads = True
    return server


def serve(
    witness: Witness,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    prefix: str = "",
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Serve the witness until interrupted (KeyboardInterrupt propagates after the socket closes)."""
    with make_server(witness, host, port, prefix=prefix, max_body=max_body) as server:
        logger.info(
            "witness %s listening on http://%s:%s%s/add-checkpoint",
            witness.name,
            host,
            server.server_port,
            prefix,
        )
        server.serve_forever()


# --- client (the broker's side) --------------------------------------------------------------


def add_checkpoint_body(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The body of an add-checkpoint request: old size line, proof lines, blank line, checkpoint."""
    if isinstance(old_size, bool) or not 0 <= old_size <= MAX_TREE_SIZE:
        raise ValueError("the old size is an integer from 0 to 2^63 - 1")
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"a consistency proof has at most {MAX_PROOF_LINES} hashes")
    lines = [f"old {old_size}\n", *(base64.b64encode(h).decode("ascii") + "\n" for h in proof), "\n"]
    return "".join(lines).encode("ascii") + note


def submit_checkpoint(
    url: str,
    old_size: int,
    proof: Sequence[bytes],
    note_bytes: bytes,
    http: httpx.Client | None = None,
    *,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """POST a checkpoint to the witness whose submission prefix is `url`; return (status, body).

    `url` is the prefix: "/add-checkpoint" is appended. A 200 body is the cosignature lines
    (parse them with `note.parse_signature_lines`); a 409 body is the witness's size and a
    newline. Network failures raise httpx.HTTPError.
    """
    import httpx

    body = add_checkpoint_body(old_size, proof, note_bytes)
    target = url.rstrip("/") + "/add-checkpoint"
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if http is None:
        with httpx.Client(timeout=timeout) as client:
            response = client.post(target, content=body, headers=headers)
    else:
        response = http.post(target, content=body, headers=headers)
    return response.status_code, response.content


# --- command line ----------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _config_skeleton(
    name: str, ed25519_key: str, mldsa44_key: str | None, origin: str | None, vkeys: Sequence[str]
) -> str:
    lines = [
        "# msmt witness: cosigns the broker's transparency-log checkpoints (c2sp.org/tlog-witness).",
        "# Relative paths are relative to this file's folder. Serve with: msmt witness serve --config FILE",
        f"name = {_toml_string(name)}",
        f"ed25519_key = {_toml_string(ed25519_key)}",
        f"mldsa44_key = {_toml_string(mldsa44_key)}"
        if mldsa44_key
        else '# mldsa44_key = "witness-mldsa44.key"',
        'state = "witness-state.sqlite"',
        f'host = "{DEFAULT_HOST}"',
        f"port = {DEFAULT_PORT}",
        'prefix = ""',
        f"max_body_bytes = {DEFAULT_MAX_BODY}",
        "",
        "# One [[logs]] table per log to witness: its origin and every verifier key it signs with.",
    ]
    if origin:
        lines += ["[[logs]]", f"origin = {_toml_string(origin)}", "vkeys = ["]
        lines += [f"    {_toml_string(v)}," for v in vkeys]
        lines += ["]"]
    else:
        lines += [
            "# [[logs]]",
            '# origin = "broker.example/log"',
            '# vkeys = ["broker.example/log+1234abcd+A..."]',
        ]
    return "\n".join(lines) + "\n"


def cmd_witness_init(args: argparse.Namespace) -> int:
    config = Path(args.config)
    folder = config.parent
    ed_name, pq_name = "witness-ed25519.key", "witness-mldsa44.key"
    if args.log_vkey and not args.origin:
        print("error: --log-vkey needs --origin, the log's origin line.", file=sys.stderr)
        return EXIT_ERROR
    for vkey in args.log_vkey or []:
        try:
            verifier_from_vkey(vkey)
        except LogError as exc:
            print(f"error: the log vkey {vkey[:60]!r} is invalid: {exc.detail}", file=sys.stderr)
            return EXIT_ERROR
    existing = [p for p in (config, folder / ed_name, folder / pq_name) if p.exists()]
    if existing:
        print(f"error: {existing[0]} already exists; choose another --config folder.", file=sys.stderr)
        return EXIT_ERROR
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        vkeys = [generate_witness_key(args.name, folder / ed_name, "ed25519")]
        written.append(folder / ed_name)
        if args.mldsa44:
            vkeys.append(generate_witness_key(args.name, folder / pq_name, "mldsa44"))
            written.append(folder / pq_name)
        skeleton = _config_skeleton(
            args.name, ed_name, pq_name if args.mldsa44 else None, args.origin, args.log_vkey or []
        )
        with open(config, "x", encoding="utf-8") as handle:
            handle.write(skeleton)
    except (LogError, KeyFileExists) as exc:
        for path in written:
            path.unlink(missing_ok=True)
        print(f"error: {exc.detail}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        print(f"error: cannot write the witness files: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_ERROR
    for vkey in vkeys:
        print(vkey)
    note = "" if args.origin else "; add the broker's log to it before serving"
    print(
        f"wrote the witness key(s) (mode 0600) and {config}{note}. "
        "Give the verifier key(s) above to the members.",
        file=sys.stderr,
    )
    return EXIT_OK


def _stop_on_signals(server: ThreadingHTTPServer) -> None:
    """SIGINT and SIGTERM end `serve_forever` between requests, instead of raising
    KeyboardInterrupt wherever the main thread happens to be (e.g. inside the state file's
    commit): the server stops accepting, then the state is closed."""

    def stop(_signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever to return: it cannot run in the serving thread
        threading.Thread(target=server.shutdown, name="witness-stop", daemon=True).start()

    if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)


def cmd_witness_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        witness = open_witness(config)
    except WitnessConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    host = args.host or config.host
    port = config.port if args.port is None else args.port
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        with make_server(witness, host, port, prefix=config.prefix, max_body=config.max_body_bytes) as server:
            _stop_on_signals(server)
            print(
                f"witness {config.name} listening on http://{host}:{server.server_port}{config.prefix}/add-checkpoint",
                file=sys.stderr,
                flush=True,
            )
            server.serve_forever()
    except KeyboardInterrupt:  # a second interrupt while stopping
        return EXIT_OK
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        witness.state.close()
    return EXIT_OK


def add_witness_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `witness init` and `witness serve`; each sets `func` (returns an exit code)."""
    parser = subparsers.add_parser(
        "witness",
        help="run a witness that cosigns the broker's transparency-log checkpoints",
        description="Run a witness (c2sp.org/tlog-witness) that cosigns the broker's log checkpoints "
        "only when they extend what it cosigned before.",
    )
    sub = parser.add_subparsers(dest="witness_command", required=True, metavar="ACTION")
    p = sub.add_parser(
        "init",
        help="create a witness key (mode 0600) and a configuration file, and print the verifier key",
        description="Create a witness key and a configuration skeleton next to it, and print the "
        "verifier key(s) to give to the members.",
    )
    p.add_argument("name", help="the witness's key name, e.g. witness.kor.example (no spaces, no '+')")
    p.add_argument(
        "--config", default="witness.toml", help="configuration file to create (default %(default)s)"
    )
    p.add_argument("--mldsa44", action="store_true", help="also create an ML-DSA-44 cosigning key")
    p.add_argument("--origin", help="origin line of the broker's log to witness")
    p.add_argument(
        "--log-vkey",
        action="append",
        metavar="VKEY",
        help="a verifier key of that log (repeatable: give every key the log signs with)",
    )
    p.set_defaults(func=cmd_witness_init)
    p = sub.add_parser(
        "serve",
        help="serve POST /add-checkpoint from a configuration file",
        description="Load the configuration, open the state database and answer add-checkpoint requests.",
    )
    p.add_argument("--config", default="witness.toml", help="configuration file (default %(default)s)")
    p.add_argument("--host", help="listen on this address instead of the configuration's host")
    p.add_argument("--port", type=int, help="listen on this port instead of the configuration's port")
    p.set_defaults(func=cmd_witness_serve)
    return parser
