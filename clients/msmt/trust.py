"""The agency's own copy of the member-signed directory: a pinned root and the chain since.

`msmt trust init ROOT` pins the founders' root once, after its fingerprint was compared out
of band. From then on every directory the broker serves is checked against what this store
already verified: it must extend the same history (no fork), not be shorter (no rollback),
and every new entry must carry the signatures the rules require. Only then is it saved.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from .core import governance as gov
from .core.errors import DirectoryFork, DirectoryRollback, GovernanceError
from .core.logleaf import LogIdentity, accept_checkpoint
from .core.note import Checkpoint
from .errors import ClientError

CHAIN_FILE = "directory-chain.txt"
CHECKPOINT_FILE = "log-checkpoint.txt"
SENT_FILE = "sent-items.txt"
# the inboxes leaf (docs/protocol.md 14.8) this agency last verified its inbox against: its log
# index and the size it committed to, as "<index> <size>\n"
INBOX_TAIL_FILE = "inbox-tail.txt"
EVIDENCE_DIR = "evidence"  # log-signed checkpoints that contradict each other (docs/protocol.md 14.8)
FUTURE_SKEW_MS = 60 * 60 * 1000  # clients' clocks drift more than servers'


def root_fingerprint(root: bytes) -> str:
    """What founders read aloud to each other: SHA-256 of the root entry, in groups of four."""
    digest = gov.entry_hash(root).upper()
    return "-".join(digest[i : i + 4] for i in range(0, 32, 4))


class TrustStore:
    """Verified directory chain, kept in `folder` (or only in memory when `folder` is None)."""

    def __init__(self, entries: list[bytes], folder: Path | None = None) -> None:
        self._entries = list(entries)
        self._state = gov.verify_chain(self._entries)
        self._log: tuple[gov.DirectoryState, LogIdentity | None] | None = None  # (for this state, its log)
        self.folder = folder
        self.checkpoint_note: bytes | None = None
        self._inbox_tail: tuple[int, int] | None = None
        self.sent_items: list[str] = []
        if folder is not None and (folder / SENT_FILE).exists():
            self.sent_items = (folder / SENT_FILE).read_text().split()
        if folder is not None and (folder / CHECKPOINT_FILE).exists():
            self.checkpoint_note = (folder / CHECKPOINT_FILE).read_bytes()

    @property
    def log(self) -> LogIdentity | None:
        """The transparency log the members' root pins, if it pins one (read once per verified
        directory state: a consumer asks for it at every delivery it opens)."""
        state = self._state
        if self._log is None or self._log[0] is not state:
            self._log = (state, LogIdentity.from_root_extra(state.extra))
        return self._log[1]

    def checkpoint(self) -> Checkpoint | None:
        """The last checkpoint this agency verified (re-checked against the pinned log key)."""
        identity = self.log
        if identity is None or self.checkpoint_note is None:
            return None
        return accept_checkpoint(identity, self.checkpoint_note, None, None)

    def record_sent(self, item_id: str) -> None:
        """Remember an item this agency sent, so `msmt audit` can ask for its receipts."""
        self.sent_items.append(item_id)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with (self.folder / SENT_FILE).open("a") as out:
                out.write(item_id + "\n")

    def inbox_tail(self) -> tuple[int, int] | None:
        """(log index, inbox size) of the inboxes leaf this agency last verified its inbox
        against, or None before its first check."""
        if self.folder is None:
            return self._inbox_tail
        path = self.folder / INBOX_TAIL_FILE
        if not path.exists():
            return None
        try:
            index, size = (int(v) for v in path.read_text(encoding="ascii").split())
        except ValueError as exc:
            raise ClientError(
                f"{path} is not '<log index> <inbox size>': remove it to check from the start"
            ) from exc
        return index, size

    def save_inbox_tail(self, index: int, size: int) -> None:
        self._inbox_tail = (index, size)
        if self.folder is not None:
            self._write(INBOX_TAIL_FILE, f"{index} {size}\n")

    def save_checkpoint(self, note: bytes) -> None:
        self.checkpoint_note = note
        if self.folder is not None:
            self._write(CHECKPOINT_FILE, note.decode())

    def save_evidence(self, kind: str, detail: str, notes: Iterable[tuple[str, bytes]]) -> Path | None:
        """Keep checkpoints the log signed that contradict each other, with where each came
        from: two log-signed trees of one size prove a fork to anyone holding the log's public
        keys, with no need to trust this agency's word. One file per finding, never replaced."""
        if self.folder is None:
            return None
        folder = self.folder / EVIDENCE_DIR
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        body = [f"msmt log evidence: {kind}", f"found: {stamp}", f"detail: {detail}", ""]
        for source, note in notes:
            body += [f"--- {source}", note.decode("utf-8", "replace").rstrip("\n"), ""]
        text = "\n".join(body)
        for n in range(1000):
            path = folder / f"{stamp}-{kind}-{n}.txt"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            return path
        return None

    def evidence(self) -> list[Path]:
        """The evidence files kept so far, oldest first."""
        if self.folder is None or not (self.folder / EVIDENCE_DIR).is_dir():
            return []
        return sorted((self.folder / EVIDENCE_DIR).glob("*.txt"))

    @classmethod
    def pin(cls, root: bytes, folder: Path | None = None) -> TrustStore:
        """Pin a genesis root (every founder must have signed it) and save it."""
        store = cls([root], folder)
        store._save()
        return store

    @classmethod
    def load(cls, folder: Path) -> TrustStore:
        path = folder / CHAIN_FILE
        if not path.exists():
            raise ClientError(f"no pinned trust root in {folder}: run `msmt trust init ROOT` first")
        lines = path.read_text(encoding="ascii").split()
        return cls([base64.b64decode(line, validate=True) for line in lines], folder)

    @property
    def state(self) -> gov.DirectoryState:
        return self._state

    @property
    def entries(self) -> tuple[bytes, ...]:
        return tuple(self._entries)

    @property
    def root(self) -> bytes:
        return self._entries[0]

    def update(
        self, head_seq: int, head_hash: str, served: Iterable[tuple[int, bytes]], now_ms: int | None = None
    ) -> gov.DirectoryState:
        """Accept the broker's chain from our own head on, or raise naming what is wrong.

        `served` must start at our current head (so we can see it is the same history) and
        run up to the broker's head.
        """
        state = self._state
        if head_seq < state.seq:
            raise DirectoryRollback(
                f"the broker's directory ends at entry {head_seq}, but this agency has already verified "
                f"entry {state.seq}: the directory was rolled back"
            )
        new: list[bytes] = []
        for seq, data in served:
            if seq < state.seq:
                continue
            if seq == state.seq:
                if gov.entry_hash(data) != state.head:
                    raise DirectoryFork(
                        f"the broker's directory entry {seq} differs from the one this agency verified "
                        f"({gov.entry_hash(data)[:16]}… instead of {state.head[:16]}…): its history was forked"
                    )
                continue
            try:
                state = gov.apply(state, data)
                gov.check_date(gov.parse_entry(data), now_ms or int(time.time() * 1000), FUTURE_SKEW_MS)
            except GovernanceError as exc:
                raise type(exc)(f"refused the broker's directory: {exc.detail}") from exc
            new.append(data)
        if state.seq != head_seq or state.head != head_hash:
            raise DirectoryFork(
                f"the broker says its directory ends at entry {head_seq} ({head_hash[:16]}…) but served "
                f"a chain ending at {state.seq} ({state.head[:16]}…)"
            )
        if new:
            self._entries.extend(new)
            self._state = state
            self._save()
        return state

    def _save(self) -> None:
        if self.folder is None:
            return
        self._write(CHAIN_FILE, "".join(base64.b64encode(e).decode("ascii") + "\n" for e in self._entries))

    def _write(self, name: str, text: str) -> None:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # write-then-rename: a crash leaves the old verified state, never half of a new one
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
