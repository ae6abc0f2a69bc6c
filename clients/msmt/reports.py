"""Joint reports over the broker: drafts, revisions, comments, endorsements, withdrawals, the
thread's state, and the publication bundle (docs/reports.md).

Every step is an ordinary item sent with `Client.send` to the report's participants:

| step       | content type                              | header reference            |
|------------|-------------------------------------------|-----------------------------|
| draft      | `application/vnd.msmt.report+json`         | -                           |
| revision   | `application/vnd.msmt.report+json`         | `supersedes` the version    |
| comment    | `text/markdown`                           | `in_reply_to` an item       |
| endorsement| `application/vnd.msmt.endorsement+json`    | `in_reply_to` the version   |
| withdrawal | `application/vnd.msmt.withdrawal+json`     | `in_reply_to` the item      |

The broker never delivers an item to its own originator, so each function returns the
`ThreadItem` it sent: keep it with what you receive, and `thread_status` rebuilds the state of
every report from both. `thread_status` trusts nothing it cannot check: each version's hashes,
each endorsement's signature against the verified directory, and who may withdraw what.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .client import Batch, Receipt, Received
from .core import Markings, canonical, new_item_id
from .core import governance as gov
from .core import report as rp
from .core.envelope import Header
from .core.errors import MsmtError
from .errors import ClientError

COMMENT_MEDIA_TYPE = "text/markdown"


class Sender(Protocol):
    """What the flows need of `msmt.client.Client`."""

    @property
    def country(self) -> str: ...

    def send(
        self,
        payload: bytes,
        *,
        content_type: str,
        markings: Markings,
        recipients: Iterable[str] | None = None,
        **options: Any,
    ) -> Receipt: ...


class Signer(Sender, Protocol):
    keys: Any  # AgencyKeys: `signing` is the country's current signing key


@dataclass(frozen=True)
class ThreadItem:
    """One item of a report thread, as sent or as received and opened (verified, decrypted)."""

    item_id: str
    originator: str
    created_ms: int
    content_type: str
    payload: bytes
    supersedes: str | None = None
    in_reply_to: str | None = None

    @classmethod
    def from_header(cls, header: Header, payload: bytes) -> ThreadItem:
        return cls(
            header.item_id,
            header.originator,
            header.created_ms,
            header.content_type,
            payload,
            header.supersedes,
            header.in_reply_to,
        )

    @classmethod
    def from_received(cls, received: Received) -> ThreadItem:
        return cls.from_header(received.opened.header, received.payload)

    def to_dict(self) -> dict[str, Any]:
        """For keeping the thread on disk (canonical JSON)."""
        data: dict[str, Any] = {
            "item_id": self.item_id,
            "originator": self.originator,
            "created_ms": self.created_ms,
            "content_type": self.content_type,
            "payload": canonical.b64encode(self.payload),
        }
        for name in ("supersedes", "in_reply_to"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThreadItem:
        return cls(
            str(data["item_id"]),
            str(data["originator"]),
            int(data["created_ms"]),
            str(data["content_type"]),
            canonical.b64decode(data["payload"], "payload"),
            data.get("supersedes"),
            data.get("in_reply_to"),
        )


class Receiver(Protocol):
    def receive(self, after: int = 0, *, limit: int = 100, wait: float = 0) -> Batch: ...


REPORT_TYPES = frozenset({rp.REPORT_MEDIA_TYPE, rp.ENDORSEMENT_MEDIA_TYPE, rp.WITHDRAWAL_MEDIA_TYPE})
CURSOR_FILE = "cursor"


class ThreadStore:
    """The report items this agency sent and received, one canonical JSON file per item in
    `folder/items/`, and how far `sync` has read the inbox (`folder/cursor`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, item: ThreadItem) -> bool:
        """Keep `item` (once); False when it was already kept."""
        path = self.folder / "items" / f"{item.item_id}.json"
        if path.exists():
            return False
        self._write(path, canonical.encode(item.to_dict()))
        return True

    def items(self) -> list[ThreadItem]:
        folder = self.folder / "items"
        if not folder.exists():
            return []
        return [ThreadItem.from_dict(canonical.decode(p.read_bytes())) for p in sorted(folder.glob("*.json"))]

    @property
    def cursor(self) -> int:
        path = self.folder / CURSOR_FILE
        return int(path.read_text()) if path.exists() else 0

    @cursor.setter
    def cursor(self, value: int) -> None:
        self._write(self.folder / CURSOR_FILE, str(value).encode())

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def sync(client: Receiver, store: ThreadStore, *, limit: int = 100) -> int:
    """Read the inbox from the store's own cursor and keep the report items (versions,
    endorsements, withdrawals, and Markdown replies to items of a thread). Nothing is
    acknowledged: `msmt pull` still receives every item. Returns how many items were kept."""
    known = {i.item_id for i in store.items()}
    kept = 0
    after = store.cursor
    while True:
        batch = client.receive(after, limit=limit)
        for received in batch.received:
            item = ThreadItem.from_received(received)
            if item.content_type in REPORT_TYPES or (
                item.content_type == COMMENT_MEDIA_TYPE and item.in_reply_to in known
            ):
                known.add(item.item_id)
                kept += store.add(item)
        if not batch.page.deliveries or batch.cursor <= after:
            break
        after = batch.cursor
    store.cursor = after
    return kept


# --- sending ------------------------------------------------------------------------------------


def _send(
    client: Sender,
    payload: bytes,
    content_type: str,
    markings: Markings,
    recipients: Iterable[str],
    *,
    now_ms: int | None = None,
    **refs: str | None,
) -> ThreadItem:
    targets = sorted(set(recipients) - {client.country})
    if not targets:
        raise ClientError("the report has no participant other than this country to send to")
    created_ms = int(time.time() * 1000) if now_ms is None else now_ms
    item_id = new_item_id(created_ms)
    options = {k: v for k, v in refs.items() if v is not None}
    receipt = client.send(
        payload,
        content_type=content_type,
        markings=markings,
        recipients=targets,
        item_id=item_id,
        created_ms=created_ms,
        **options,
    )
    return ThreadItem(
        receipt.item_id,
        client.country,
        created_ms,
        content_type,
        payload,
        options.get("supersedes"),
        options.get("in_reply_to"),
    )


def send_draft(
    client: Sender, document: rp.ReportDocument, markings: Markings, *, now_ms: int | None = None
) -> ThreadItem:
    """Send version 1 of a report to its participants."""
    if document.manifest.version != 1:
        raise ClientError("a new draft is version 1; send later versions with send_revision")
    _check_participant(client.country, document)
    return _send(
        client,
        document.to_bytes(),
        rp.REPORT_MEDIA_TYPE,
        markings,
        document.manifest.participants,
        now_ms=now_ms,
    )


def send_revision(
    client: Sender,
    previous: Version,
    document: rp.ReportDocument,
    markings: Markings,
    *,
    now_ms: int | None = None,
) -> ThreadItem:
    """Send a new version that supersedes `previous` (to the new version's participants and
    to any participant it removes, so they learn of it)."""
    m = document.manifest
    if m.report_id != previous.document.manifest.report_id or m.previous != previous.content_hash:
        raise ClientError("the revision does not follow that version (report id or previous hash differ)")
    _check_participant(client.country, document)
    recipients = set(m.participants) | set(previous.document.manifest.participants)
    return _send(
        client,
        document.to_bytes(),
        rp.REPORT_MEDIA_TYPE,
        markings,
        recipients,
        now_ms=now_ms,
        supersedes=previous.item_id,
    )


def send_comment(
    client: Sender,
    on: str,
    text: str,
    participants: Iterable[str],
    markings: Markings,
    *,
    now_ms: int | None = None,
) -> ThreadItem:
    """A comment (Markdown) in reply to a version or to another comment."""
    return _send(
        client,
        text.encode("utf-8"),
        COMMENT_MEDIA_TYPE,
        markings,
        participants,
        now_ms=now_ms,
        in_reply_to=on,
    )


def send_endorsement(
    client: Signer,
    version: Version,
    markings: Markings,
    *,
    reservation: str = "",
    now_ms: int | None = None,
) -> ThreadItem:
    """Sign and send this country's endorsement of exactly `version`."""
    created_ms = int(time.time() * 1000) if now_ms is None else now_ms
    _check_participant(client.country, version.document)
    statement = rp.endorse(version.document, client.country, client.keys.signing, created_ms, reservation)
    return _send(
        client,
        statement,
        rp.ENDORSEMENT_MEDIA_TYPE,
        markings,
        version.document.manifest.participants,
        now_ms=created_ms,
        in_reply_to=version.item_id,
    )


def send_withdrawal(
    client: Signer,
    item_id: str,
    reason: str,
    recipients: Iterable[str],
    markings: Markings,
    *,
    now_ms: int | None = None,
) -> ThreadItem:
    """Withdraw one of this country's own items (a version, a comment, an endorsement)."""
    created_ms = int(time.time() * 1000) if now_ms is None else now_ms
    statement = rp.withdraw(item_id, client.country, client.keys.signing, created_ms, reason)
    return _send(
        client,
        statement,
        rp.WITHDRAWAL_MEDIA_TYPE,
        markings,
        recipients,
        now_ms=created_ms,
        in_reply_to=item_id,
    )


def _check_participant(country: str, document: rp.ReportDocument) -> None:
    if country not in document.manifest.participants:
        raise ClientError(f"{country} is not a participant of report {document.manifest.report_id}")


# --- the thread's state -------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    item_id: str
    originator: str
    created_ms: int
    document: rp.ReportDocument

    @property
    def number(self) -> int:
        return self.document.manifest.version

    @property
    def content_hash(self) -> str:
        return self.document.content_hash


@dataclass(frozen=True)
class EndorsementItem:
    item_id: str
    endorsement: rp.Endorsement
    statement: bytes  # the signed bytes, as they go into a bundle


@dataclass(frozen=True)
class Comment:
    item_id: str
    originator: str
    created_ms: int
    in_reply_to: str
    text: str


@dataclass
class ReportThread:
    """Everything known about one report: versions, endorsements, comments and withdrawals."""

    report_id: str
    versions: list[Version] = field(default_factory=list)
    endorsements: list[EndorsementItem] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    withdrawn: dict[str, rp.Withdrawal] = field(default_factory=dict)  # item id -> withdrawal

    def current_versions(self) -> list[Version]:
        """Versions not withdrawn, by version number then time."""
        return sorted(
            (v for v in self.versions if v.item_id not in self.withdrawn),
            key=lambda v: (v.number, v.created_ms),
        )

    @property
    def latest(self) -> Version:
        versions = self.current_versions()
        if not versions:
            raise ClientError(f"report {self.report_id} has no version that is not withdrawn")
        return versions[-1]

    def version(self, number: int | None = None) -> Version:
        if number is None:
            return self.latest
        matches = [v for v in self.current_versions() if v.number == number]
        if len(matches) != 1:
            raise ClientError(
                f"report {self.report_id} has {len(matches) or 'no'} current version{'s' if matches else ''} {number}"
            )
        return matches[0]

    def endorsements_of(self, version: Version) -> list[EndorsementItem]:
        """The endorsements that count for `version`: not withdrawn, for its exact content hash,
        by participants, the latest per country."""
        m = version.document.manifest
        latest: dict[str, EndorsementItem] = {}
        for item in sorted(self.endorsements, key=lambda i: i.endorsement.created_ms):
            e = item.endorsement
            if (
                item.item_id not in self.withdrawn
                and e.report_id == m.report_id
                and e.version == m.version
                and e.content_hash == version.content_hash
                and e.country in m.participants
            ):
                latest[e.country] = item
        return sorted(latest.values(), key=lambda i: (i.endorsement.created_ms, i.endorsement.country))

    def missing(self, version: Version) -> list[str]:
        endorsed = {i.endorsement.country for i in self.endorsements_of(version)}
        return [c for c in version.document.manifest.participants if c not in endorsed]

    def satisfied(self, version: Version) -> bool:
        return len(self.endorsements_of(version)) >= version.document.manifest.needed


@dataclass
class ThreadStatus:
    reports: dict[str, ReportThread] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # items refused, each with why

    def report(self, report_id: str) -> ReportThread:
        matches = [r for r in self.reports if r.startswith(report_id)] if len(report_id) >= 8 else []
        if report_id in self.reports:
            return self.reports[report_id]
        if len(matches) == 1:
            return self.reports[matches[0]]
        raise ClientError(f"no report {report_id} (or the prefix is not unique)")


def thread_status(items: Iterable[ThreadItem], directory: gov.DirectoryState) -> ThreadStatus:
    """Rebuild every report's state from its items (sent and received, any order). Items that
    fail a check are left out and named in `problems`; nothing unchecked is counted."""
    status = ThreadStatus()
    ordered = sorted(items, key=lambda i: (i.created_ms, i.item_id))
    originators = {i.item_id: i.originator for i in ordered}
    version_of: dict[str, str] = {}  # version item id -> report id
    comment_of: dict[str, str] = {}  # comment item id -> report id
    by_hash: dict[tuple[str, str], Version] = {}
    withdrawals: dict[str, rp.Withdrawal] = {}
    for item in ordered:
        if item.content_type != rp.REPORT_MEDIA_TYPE:
            continue
        try:
            document = rp.parse_document(item.payload)
        except MsmtError as exc:
            status.problems.append(f"item {item.item_id} from {item.originator}: {exc.detail} ({exc.code})")
            continue
        m = document.manifest
        problem = _version_problem(item, document, by_hash)
        if problem:
            status.problems.append(f"item {item.item_id} from {item.originator}: {problem}")
            continue
        version = Version(item.item_id, item.originator, item.created_ms, document)
        thread = status.reports.setdefault(m.report_id, ReportThread(m.report_id))
        thread.versions.append(version)
        by_hash[(m.report_id, version.content_hash)] = version
        version_of[item.item_id] = m.report_id
    for item in ordered:
        try:
            if item.content_type == rp.ENDORSEMENT_MEDIA_TYPE:
                _add_endorsement(status, item, directory)
            elif item.content_type == rp.WITHDRAWAL_MEDIA_TYPE:
                _add_withdrawal(withdrawals, item, directory, originators)
            elif item.content_type == COMMENT_MEDIA_TYPE and item.in_reply_to is not None:
                report_id = version_of.get(item.in_reply_to) or comment_of.get(item.in_reply_to)
                if report_id is not None:
                    comment_of[item.item_id] = report_id
                    text = item.payload.decode("utf-8", errors="replace")
                    status.reports[report_id].comments.append(
                        Comment(item.item_id, item.originator, item.created_ms, item.in_reply_to, text)
                    )
        except (MsmtError, ClientError) as exc:
            status.problems.append(f"item {item.item_id} from {item.originator}: {exc.detail}")
    for thread in status.reports.values():
        ids = {v.item_id for v in thread.versions} | {e.item_id for e in thread.endorsements}
        ids |= {c.item_id for c in thread.comments}
        thread.withdrawn = {i: w for i, w in withdrawals.items() if i in ids}
    return status


def _version_problem(
    item: ThreadItem, document: rp.ReportDocument, by_hash: Mapping[tuple[str, str], Version]
) -> str | None:
    m = document.manifest
    if item.originator not in m.participants:
        return f"{item.originator} made a version of report {m.report_id} without being a participant"
    if m.version == 1:
        return None if item.supersedes is None else "version 1 supersedes nothing"
    previous = by_hash.get((m.report_id, m.previous))
    if previous is None:
        return f"version {m.version} of report {m.report_id} follows a version not in the thread"
    if previous.number != m.version - 1 or item.supersedes != previous.item_id:
        return f"version {m.version} does not supersede the item of version {m.version - 1} it names"
    return None


def _add_endorsement(status: ThreadStatus, item: ThreadItem, directory: gov.DirectoryState) -> None:
    endorsement, _ = rp.parse_endorsement(item.payload)
    if endorsement.country != item.originator:
        raise ClientError(f"{item.originator} sent an endorsement in the name of {endorsement.country}")
    key = rp.directory_key(directory, endorsement.country, endorsement.key_id, endorsement.created_ms)
    rp.verify_endorsement(item.payload, key)
    thread = status.reports.get(endorsement.report_id)
    if thread is None:
        raise ClientError(f"endorsement of report {endorsement.report_id}, which is not in the thread")
    thread.endorsements.append(EndorsementItem(item.item_id, endorsement, item.payload))


def _add_withdrawal(
    withdrawals: dict[str, rp.Withdrawal],
    item: ThreadItem,
    directory: gov.DirectoryState,
    originators: Mapping[str, str],
) -> None:
    withdrawal, _ = rp.parse_withdrawal(item.payload)
    if withdrawal.country != item.originator or originators.get(withdrawal.item_id) != withdrawal.country:
        raise ClientError(f"{item.originator} may withdraw only its own items")
    key = rp.directory_key(directory, withdrawal.country, withdrawal.key_id, withdrawal.created_ms)
    rp.verify_withdrawal(item.payload, key)
    withdrawals[withdrawal.item_id] = withdrawal


# --- log, diff, publish --------------------------------------------------------------------------


def log(thread: ReportThread) -> list[dict[str, Any]]:
    """Version by version: who made it, when, its hash, who endorsed it, what was withdrawn."""
    rows = []
    for v in sorted(thread.versions, key=lambda v: (v.number, v.created_ms)):
        endorsed = thread.endorsements_of(v)
        rows.append(
            {
                "version": v.number,
                "item_id": v.item_id,
                "by": v.originator,
                "time": rp.time_of(v.created_ms),
                "title": v.document.manifest.title,
                "content_hash": v.content_hash,
                "endorsed_by": [
                    i.endorsement.country + (" (with reservation)" if i.endorsement.reservation else "")
                    for i in endorsed
                ],
                "missing": thread.missing(v),
                "rule": v.document.manifest.rule.describe(len(v.document.manifest.participants)),
                "satisfied": thread.satisfied(v),
                "withdrawn": v.item_id in thread.withdrawn,
                "comments": sum(1 for c in thread.comments if c.in_reply_to == v.item_id),
            }
        )
    return rows


def diff(old: rp.ReportDocument, new: rp.ReportDocument) -> str:
    """What changed between two versions: manifest fields, attachments, and the body (unified)."""
    a, b = old.manifest, new.manifest
    lines = [f"version {a.version} -> {b.version}"]
    if a.title != b.title:
        lines.append(f"title: {a.title!r} -> {b.title!r}")
    if a.participants != b.participants:
        lines.append(f"participants: {', '.join(a.participants)} -> {', '.join(b.participants)}")
    if a.rule != b.rule:
        lines.append(
            f"rule: {a.rule.describe(len(a.participants))} -> {b.rule.describe(len(b.participants))}"
        )
    old_files = {x.name: x for x in a.attachments}
    new_files = {x.name: x for x in b.attachments}
    for name in sorted(old_files.keys() | new_files.keys()):
        before, after = old_files.get(name), new_files.get(name)
        if before is None and after is not None:
            lines.append(f"attachment added: {name} ({after.media_type}, {after.size} bytes)")
        elif after is None or before is None:
            lines.append(f"attachment removed: {name}")
        elif before != after:
            lines.append(f"attachment changed: {name} ({before.size} -> {after.size} bytes)")
    lines += difflib.unified_diff(
        old.body.splitlines(),
        new.body.splitlines(),
        f"version {a.version}",
        f"version {b.version}",
        lineterm="",
    )
    return "\n".join(lines)


def publish(thread: ReportThread, version: Version, directory: Sequence[bytes]) -> tuple[bytes, rp.Verdict]:
    """The publication bundle for `version` with the endorsements that count for it, checked
    exactly as `msmt-verify` will check it (so a bundle that does not meet the rule is refused)."""
    statements = [i.statement for i in thread.endorsements_of(version)]
    if len(statements) < version.document.manifest.needed:
        raise rp.RuleNotMet(
            f"version {version.number} needs {version.document.manifest.rule.describe(len(version.document.manifest.participants))}; "
            f"not yet endorsed by {', '.join(thread.missing(version))}"
        )
    bundle = rp.build_bundle(version.document.to_bytes(), statements, directory)
    return bundle, rp.verify_bundle(bundle, rp.root_fingerprint(directory[0]))
