"""The agency's durable outbox: every sealed envelope is kept until the broker acknowledged it.

`Client.send()` seals an item once, writes its envelope here (fsynced) before the first byte
goes to the broker, and removes it only once the broker's receipt for it has been checked.
Whatever happens in between (the broker restarting, the network failing, this process being
killed) the item is re-sent later with the same bytes, by `Client.resend_pending()` or
`msmt outbox send`, and the broker answers a re-submission of identical bytes with the
receipt it already gave: one report is never stored as two items.

A refusal that re-sending cannot change (a policy refusal, a stale or malformed envelope) moves
the envelope to `refused/` with the broker's problem beside it, so that nothing sealed is lost
silently and nothing refused is retried forever.

Layout, under the agency's trust folder (`KEYS/trust` for the command line):

    outbox/<item id>.msmt            pending envelope bytes
    outbox/refused/<item id>.msmt    refused envelope bytes
    outbox/refused/<item id>.json    {"status": 422, "code": "...", "detail": "...", "refused_ms": ...}

File names are item ids of envelopes this agency sealed itself (checked to be UUIDv7s), never
anything the broker supplied.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .core import Envelope, parse
from .core.ids import is_item_id
from .errors import ClientError

SUFFIX = ".msmt"
REFUSED = "refused"


@dataclass(frozen=True)
class OutboxEntry:
    """One envelope in the outbox, with what its header says (read back from the bytes)."""

    item_id: str
    envelope: bytes
    refusal: dict[str, object] | None = None

    @property
    def parsed(self) -> Envelope:
        return parse(self.envelope)

    @property
    def size(self) -> int:
        return len(self.envelope)


class Outbox:
    """Pending and refused envelopes, in `folder` (or only in memory when `folder` is None)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[str, bytes] = {}
        self._refused: dict[str, tuple[bytes, dict[str, object]]] = {}
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------

    def put(self, item_id: str, envelope: bytes) -> None:
        """Keep `envelope` durably before it is submitted (a crash after this keeps it)."""
        _check_id(item_id)
        if self.folder is None:
            with self._lock:
                self._memory[item_id] = envelope
            return
        _write_atomic(self.folder, item_id + SUFFIX, envelope)

    def done(self, item_id: str) -> None:
        """The broker acknowledged the item: forget it."""
        _check_id(item_id)
        if self.folder is None:
            with self._lock:
                self._memory.pop(item_id, None)
            return
        path = self.folder / (item_id + SUFFIX)
        path.unlink(missing_ok=True)
        _fsync_dir(self.folder)

    def refuse(self, item_id: str, status: int, code: str, detail: str) -> None:
        """The broker refused the item for good: move it aside with the reason."""
        _check_id(item_id)
        reason: dict[str, object] = {
            "status": status,
            "code": code,
            "detail": detail,
            "refused_ms": int(time.time() * 1000),
        }
        if self.folder is None:
            with self._lock:
                envelope = self._memory.pop(item_id, None)
                if envelope is not None:
                    self._refused[item_id] = (envelope, reason)
            return
        source = self.folder / (item_id + SUFFIX)
        if not source.exists():
            return
        aside = self.folder / REFUSED
        _write_atomic(aside, item_id + ".json", json.dumps(reason, sort_keys=True).encode())
        os.replace(source, aside / (item_id + SUFFIX))
        _fsync_dir(aside)
        _fsync_dir(self.folder)

    def discard(self, item_id: str) -> bool:
        """Delete a refused item's envelope and reason (pending items cannot be discarded:
        the broker may already hold them). True when there was one."""
        _check_id(item_id)
        if self.folder is None:
            with self._lock:
                return self._refused.pop(item_id, None) is not None
        aside = self.folder / REFUSED
        found = (aside / (item_id + SUFFIX)).exists()
        (aside / (item_id + SUFFIX)).unlink(missing_ok=True)
        (aside / (item_id + ".json")).unlink(missing_ok=True)
        return found

    # -- reading -------------------------------------------------------------------------

    def pending(self) -> list[OutboxEntry]:
        """Envelopes not yet acknowledged by the broker, oldest first (ids are UUIDv7s)."""
        if self.folder is None:
            with self._lock:
                items = sorted(self._memory.items())
            return [OutboxEntry(item_id, data) for item_id, data in items]
        return [OutboxEntry(item_id, path.read_bytes()) for item_id, path in _listing(self.folder)]

    def refused(self) -> list[OutboxEntry]:
        """Envelopes the broker refused for good, with its reasons."""
        if self.folder is None:
            with self._lock:
                items = sorted(self._refused.items())
            return [OutboxEntry(item_id, data, reason) for item_id, (data, reason) in items]
        entries = []
        for item_id, path in _listing(self.folder / REFUSED):
            reason_path = path.with_suffix(".json")
            reason = json.loads(reason_path.read_text()) if reason_path.exists() else {}
            entries.append(OutboxEntry(item_id, path.read_bytes(), reason))
        return entries

    def get(self, item_id: str) -> OutboxEntry | None:
        _check_id(item_id)
        for entry in self.pending():
            if entry.item_id == item_id:
                return entry
        return None


def _check_id(item_id: str) -> None:
    if not is_item_id(item_id):
        raise ClientError(f"not an item id: {item_id!r}")


def _listing(folder: Path) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else ""
        if path.is_file() and is_item_id(stem):
            found.append((stem, path))
    return sorted(found)


def _write_atomic(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
