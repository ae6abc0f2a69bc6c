"""msmt: the agency command line for the MSMT Broker.

Send signed, end-to-end encrypted reports to partner countries, receive and open what partners
send you, and see what happened to what you sent.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import secrets
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import __version__, ui
from .agency import AgencyKeys
from .client import (
    Client,
    Delivery,
    InboxPage,
    Received,
    check_broker_url,
    rejects_delivery,
    unavailable_reason,
)
from .core import KeyKind, Markings, errors, is_item_id, short_fingerprint, verify
from .core import report as rp
from .core.markings import COUNTRY_RE, TLP_LEVELS, TOPICS
from .core.note import Checkpoint
from .core.policy import DEFAULT_LADDER
from .directory import Directory
from .errors import BrokerError, BrokerUnavailable, ClientError, PolicyRefused
from .trust import TrustStore
from .witness import add_witness_parser

EXIT_OK = 0
EXIT_ERROR = 1  # the broker refused the request, or the input is invalid
EXIT_USAGE = 2  # bad command line
EXIT_REFUSED = 3  # sharing policy does not allow a recipient
EXIT_UNAVAILABLE = 4  # the broker cannot be reached
EXIT_INVALID_ITEM = 5  # an envelope failed verification or decryption
EXIT_KEYS = 6  # keys missing, wrong passphrase, damaged key file
EXIT_ALARM = 7  # the members' directory lists a key of this agency's that it did not make
EXIT_AUDIT = 8  # msmt audit found a missing inbox entry, delivery or receipt
EXIT_SOFTWARE = ui.EXIT_SOFTWARE  # a bug: one sentence, and MSMT_DEBUG=1 shows the traceback
EXIT_INTERRUPTED = ui.EXIT_INTERRUPTED  # Ctrl-C

EPILOG = f"""\
environment:
  MSMT_BROKER_URL   broker base URL (--broker)
  MSMT_KEYS         key folder (--keys), default ./msmt-keys
  MSMT_TRUST        pinned root and verified directory (--trust), default KEYS/trust
  MSMT_AUDIENCE     the broker's identity in tokens (--audience), default the broker URL
  MSMT_PASSPHRASE   passphrase of the key folder; asked for when unset
  MSMT_DEBUG        1: show the traceback behind an error
  COLUMNS           width that tables wrap to (default: the terminal's)

output: wrapped tables, local ISO 8601 times and spoken key fingerprints for people;
  --json (before or after the command) for programs.

exit codes:
  {EXIT_OK} success   {EXIT_ERROR} refused by the broker or invalid input   {EXIT_USAGE} usage error
  {EXIT_REFUSED} policy refused a recipient   {EXIT_UNAVAILABLE} broker unreachable
  {EXIT_INVALID_ITEM} an item failed verification or decryption   {EXIT_KEYS} key problem
  7 ALARM: the members' directory lists a key of yours that you did not make
  8 msmt audit found a missing inbox entry, delivery or receipt
  70 internal error (a bug; MSMT_DEBUG=1 shows where)   130 interrupted (Ctrl-C)
"""

CURSOR_FILE = ".msmt-cursor"
EXTENSIONS = {
    "application/stix+json": ".stix.json",
    "application/json": ".json",
    "text/markdown": ".md",
    "text/plain": ".txt",
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
}


class Usage(ui.UserError):
    """A command-line mistake found after parsing (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


# --- output ------------------------------------------------------------------------------


def emit(args: argparse.Namespace, value: Any, table: list[dict[str, Any]] | None = None) -> None:
    """JSON for programs with --json; otherwise a wrapped table (or key/value lines) for people."""
    ui.emit(value, as_json=args.json, rows=table)


Progress = ui.Progress
_ms = ui.local_time
format_ms = ui.local_time


def _version() -> str:
    """The installed distribution's version (what pip installed), else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("msmt-client")
    except PackageNotFoundError:
        return __version__


# --- keys and client -----------------------------------------------------------------------


def _passphrase(confirm: bool = False) -> str:
    value = os.environ.get("MSMT_PASSPHRASE")
    if value:
        return value
    if not sys.stdin.isatty():
        raise Usage("set MSMT_PASSPHRASE: there is no terminal to ask for the key passphrase")
    first = getpass.getpass("key passphrase: ")
    if confirm and first != getpass.getpass("key passphrase (again): "):
        raise Usage("the passphrases differ")
    return first


def _keys(args: argparse.Namespace) -> AgencyKeys:
    folder = Path(args.keys)
    if not (folder / "signing.key").exists():
        raise errors.CorruptKeyFile(f"no keys in {folder}: run 'msmt keys generate COUNTRY --out {folder}'")
    return AgencyKeys.load(folder, _passphrase())


def trust_folder(args: argparse.Namespace) -> Path:
    """Where the pinned root and the verified chain live: --trust, or KEYS/trust."""
    return Path(args.trust) if args.trust else Path(args.keys) / "trust"


def broker_url(args: argparse.Namespace) -> str:
    """--broker, checked to be an http(s) URL before anything else is done."""
    if not args.broker:
        raise Usage("give the broker URL with --broker or MSMT_BROKER_URL")
    try:
        return check_broker_url(args.broker)
    except ClientError as exc:
        raise Usage(exc.detail) from exc


def _say_retrying(message: str) -> None:
    print(f"msmt: {message}", file=sys.stderr, flush=True)


def client_for(
    args: argparse.Namespace,
    store: TrustStore | None = None,
    *,
    keys: AgencyKeys | None = None,
    check_own: bool = True,
) -> Client:
    url = broker_url(args)
    store = store or TrustStore.load(trust_folder(args))
    return Client(
        url,
        keys or _keys(args),
        trust=store,
        audience=args.audience,
        check_own_keys=check_own,
        on_retry=_say_retrying,
    )


def _client(args: argparse.Namespace) -> Client:
    return client_for(args)


load_keys = _keys
passphrase = _passphrase


def _known_directory(args: argparse.Namespace) -> Directory | None:
    """The verified directory this agency already holds (no broker asked), if it has one."""
    try:
        return Directory(TrustStore.load(trust_folder(args)).state)
    except (ClientError, errors.MsmtError, OSError, ValueError):
        return None


def check_markings(
    classification: str,
    releasable_to: list[str],
    topics: list[str],
    directory: Directory | None,
) -> None:
    """A typo in a marking is an input error with a suggestion, not "policy allows none of
    the partners": levels from the members' ladder, countries and groups from the verified
    directory (when there is one), topics from the known list."""
    ladder = directory.ladder if directory is not None else DEFAULT_LADDER
    ui.check_choice("classification", classification, list(ladder))
    for topic in topics:
        ui.check_choice("topic", topic, list(TOPICS))
    if directory is None:
        return
    groups = sorted({g for m in directory.members.values() for g in m.groups})
    known = ["ALL", *sorted(directory.members), *groups]
    for who in releasable_to:
        if who not in known:
            raise Usage(
                f"releasable-to {who!r} is neither a member country, a group nor ALL"
                f"{ui.did_you_mean(who, known)}; members: {', '.join(sorted(directory.members))}; "
                f"groups: {', '.join(groups) or 'none'}"
            )


def _markings(args: argparse.Namespace) -> Markings:
    def split(values: list[str]) -> list[str]:
        return [v.strip() for value in values for v in value.split(",") if v.strip()]

    classification = args.classification.strip().upper()
    releasable_to = [v.upper() for v in split(args.releasable_to)]
    topics = [v.lower() for v in split(args.topic)]
    check_markings(classification, releasable_to, topics, _known_directory(args))
    try:
        return Markings.create(
            classification,
            args.tlp.upper(),
            releasable_to,
            caveats=[v.upper() for v in split(args.caveat)],
            topics=topics,
        )
    except errors.EnvelopeError as exc:
        raise Usage(f"markings: {exc.detail}") from exc


# --- commands ----------------------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace) -> int:
    folder = Path(args.out or args.keys)
    if not COUNTRY_RE.fullmatch(args.country.upper()) or args.country.upper() == "ALL":
        raise Usage(f"{args.country!r} is not an ISO 3166-1 alpha-3 country code such as KOR")
    if (folder / "signing.key").exists():
        raise Usage(f"{folder} already holds keys; choose another --out")
    keys = AgencyKeys.generate(args.country.upper())
    keys.save(folder, _passphrase(confirm=True))
    print(f"wrote the keys of {keys.country} to {folder} (private files mode 0600)", file=sys.stderr)
    return _print_fingerprints(args, keys)


def _print_fingerprints(args: argparse.Namespace, keys: AgencyKeys) -> int:
    rows = [
        {"kind": kind, "key_id": key.key_id, "fingerprint": short_fingerprint(key.key_id)}
        for kind, key in (("signing", keys.signing), ("encryption", keys.encryption), ("api", keys.api))
    ]
    if not args.json:
        print(f"keys of {keys.country}:")
    emit(args, {"country": keys.country, "keys": rows}, rows)
    return EXIT_OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    return _print_fingerprints(args, _keys(args))


def cmd_keys_export(args: argparse.Namespace) -> int:
    keys = _keys(args)
    documents = keys.public_documents()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for kind, document in documents.items():
            (out / f"{keys.country}.{kind}.pub").write_bytes(document)
        print(
            f"wrote 3 public key documents to {out}; send them to the broker admin and read the",
            file=sys.stderr,
        )
        print("fingerprints below to them over a second channel:", file=sys.stderr)
        return _print_fingerprints(args, keys)
    if args.json:
        print(json.dumps([json.loads(d) for d in documents.values()], indent=2))
        return EXIT_OK
    _print_fingerprints(args, keys)
    print(
        "msmt: give --out FOLDER to write the public key documents (or --json to print them)",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    if args.expires_in is not None and args.expires_in <= 0:
        raise Usage(
            f"--expires-in must be a positive number of seconds, not {args.expires_in}; leave it out for no expiry"
        )
    markings = _markings(args)
    broker_url(args)
    payload = sys.stdin.buffer.read() if args.file == "-" else ui.read_bytes(args.file, "report")
    content_type = args.content_type or _guess_type(args.file)
    from .gateway.stix import check_outgoing  # needs no extra: stix2 only deepens the check

    check_outgoing(payload, content_type, markings)  # a STIX bundle no stricter than its markings
    options: dict[str, Any] = {}
    if args.supersedes:
        options["supersedes"] = args.supersedes
    if args.in_reply_to:
        options["in_reply_to"] = args.in_reply_to
    if args.expires_in is not None:
        options["expires_ms"] = int(time.time() * 1000) + args.expires_in * 1000
    with _client(args) as client, _UploadBar() as bar:
        receipt = client.send(
            payload,
            content_type=content_type,
            markings=markings,
            recipients=[c.upper() for c in args.to] if args.to else None,
            progress=bar,
            **options,
        )
    result = {
        "item_id": receipt.item_id,
        "log_index": receipt.log_index,
        "recipients": list(receipt.recipients),
    }
    emit(args, result, [result])
    return EXIT_OK


class _UploadBar:
    """`msmt submit`'s upload progress: a bar on a terminal for envelopes of 1 MiB or more."""

    SHOWN_FROM = 1024 * 1024

    def __init__(self) -> None:
        self.bar: ui.Progress | None = None

    def __call__(self, sent: int, total: int) -> None:
        if self.bar is None and total >= self.SHOWN_FROM:
            self.bar = ui.Progress(total, "uploading", unit="bytes")
        if self.bar is not None:
            self.bar.update(sent)

    def __enter__(self) -> _UploadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _guess_type(name: str) -> str:
    lowered = name.lower()
    for content_type, extension in EXTENSIONS.items():
        if lowered.endswith(extension):
            return content_type
    if lowered.endswith(".jpeg"):
        return "image/jpeg"
    return "application/octet-stream"


def cmd_preflight(args: argparse.Namespace) -> int:
    markings = _markings(args)
    with _client(args) as client:
        result = client.preflight(markings)
    rows = [{"partner": c, "decision": "allowed", "reasons": ""} for c in result.allowed]
    rows += [
        {"partner": c, "decision": "denied", "reasons": "; ".join(d["reason"] for d in denials)}
        for c, denials in sorted(result.denied.items())
    ]
    emit(args, {"allowed": list(result.allowed), "denied": result.denied}, rows)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    markings = _markings(args)
    recipient = args.recipient.upper()
    directory = _known_directory(args)
    if directory is not None and recipient not in directory.members:
        raise Usage(
            f"{recipient} is not a member country{ui.did_you_mean(recipient, directory.members)}; "
            f"members: {', '.join(sorted(directory.members))}"
        )
    with _client(args) as client:
        result = client.explain(recipient, markings)
    if args.json:
        emit(args, result)
    else:
        verdict = "ALLOWED" if result["allowed"] else "DENIED"
        print(f"{result['originator']} -> {result['recipient']}: {verdict}")
        for denial in result["denials"]:
            for n, line in enumerate(
                textwrap.wrap(f"[{denial['rule']}] {denial['reason']}", ui.terminal_width() - 4)
            ):
                print(("  " if n == 0 else "    ") + line)
    return EXIT_OK if result["allowed"] else EXIT_REFUSED


WITHDRAWAL_MEDIA_TYPE = "application/vnd.msmt.withdrawal+json"


def _delivery_note(d: Delivery, withdrawn: frozenset[str] = frozenset()) -> str:
    """What a person should know before opening a delivery: gone (expired, purged), a
    withdrawal, or withdrawn by its originator (as far as the report threads know)."""
    if d.unavailable is not None:
        return f"{d.unavailable.upper()}: cannot be opened"
    if d.content_type == WITHDRAWAL_MEDIA_TYPE:
        return "WITHDRAWAL of an earlier item"
    if d.item_id in withdrawn:
        return "WITHDRAWN by its originator"
    return ""


def _withdrawn_items(args: argparse.Namespace, client: Client) -> frozenset[str]:
    """Items the report threads of this key folder know to be withdrawn (checked signatures)."""
    from . import reports

    store = reports.ThreadStore(Path(args.keys) / "reports")
    items = store.items()
    if not items:
        return frozenset()
    status = reports.thread_status(items, client.directory().state)
    return frozenset(i for thread in status.reports.values() for i in thread.withdrawn)


def _delivery_row(d: Delivery, withdrawn: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        "seq": d.seq,
        "item_id": d.item_id,
        "from": d.originator,
        "classification": d.classification,
        "tlp": d.tlp,
        "content_type": d.content_type,
        "size": d.size,
        "received": _ms(d.received_ms),
        "state": d.state,
        "note": _delivery_note(d, withdrawn) or "-",
    }


def cmd_inbox(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.inbox(args.after, limit=args.limit, wait=args.wait)
        withdrawn = _withdrawn_items(args, client)
    rows = [_delivery_row(d, withdrawn) for d in page.deliveries]
    listed = [
        {**vars(d), "withdrawn": d.item_id in withdrawn} if d.item_id in withdrawn else vars(d)
        for d in page.deliveries
    ]
    emit(args, {"deliveries": listed, "cursor": page.cursor}, rows)
    return EXIT_OK


QUARANTINE_FOLDER = "quarantine"
PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700


def _printable(text: str, limit: int = 500) -> str:
    """Text from the broker, safe to print on a terminal (no control sequences)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _is_seq(value: object) -> bool:
    return type(value) is int and value >= 0


def _delivery_stem(delivery: Delivery) -> str:
    """The start of the names written for a delivery, made only from validated values: the
    sequence number and the item id when both have their format, else a hash of them."""
    if _is_seq(delivery.seq) and is_item_id(delivery.item_id):
        return f"{delivery.seq:08d}-{delivery.item_id}"
    digest = hashlib.sha256(json.dumps([repr(delivery.seq), repr(delivery.item_id)]).encode()).hexdigest()
    return f"invalid-id-{digest[:32]}"


def _private_folder(folder: Path) -> None:
    """Create the folder (and missing parents) owner-only; an existing folder is left as it is."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
        os.chmod(folder, PRIVATE_FOLDER_MODE)


def _write_private(folder: Path, name: str, data: bytes) -> Path:
    """Write FOLDER/NAME, mode 0600, atomically; NAME must be a plain file name in FOLDER.

    The file is made new and renamed over NAME, so a link planted at NAME is replaced, not
    followed, and a reader never sees half a file."""
    if name in ("", ".", "..") or Path(name).name != name or any(c in name for c in "/\\\0"):
        raise ValueError(f"refusing to write {name!r}: not a plain file name")
    target = folder / name
    temporary = folder / f".{name}.{secrets.token_hex(6)}.part"
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_FILE_MODE
    )
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def _cannot_open(exc: Exception) -> bool:
    """Whether an error is about this one delivery (quarantine it and go on) rather than about
    the broker, the network or the directory (stop; the delivery is tried again next time)."""
    return rejects_delivery(exc)


def _quarantine(
    client: Client,
    folder: Path,
    stem: str,
    delivery: Delivery,
    code: str,
    detail: str,
    fetch: bool,
    data: bytes | None = None,
) -> Path:
    """Keep what could not be opened: the envelope bytes (those the inbox page carried, else
    fetched when the broker gives them) and a JSON reason, 0600, in FOLDER/quarantine/. It is
    reported, and not acknowledged."""
    quarantine = folder / QUARANTINE_FOLDER
    _private_folder(quarantine)
    envelope: str | None = None
    if fetch:
        if data is None:
            try:
                data = client.fetch(delivery.item_id)
            except ClientError:
                data = None
        if data is not None:
            envelope = _write_private(quarantine, f"{stem}.envelope", data).name
    item_id = delivery.item_id if isinstance(delivery.item_id, str) else repr(delivery.item_id)
    reason = {
        "item_id": item_id[:200],
        "seq": delivery.seq if _is_seq(delivery.seq) else None,
        "originator": delivery.originator if isinstance(delivery.originator, str) else None,
        "error": code,
        "detail": detail,
        "envelope": envelope,
        "quarantined_ms": int(time.time() * 1000),
        "acknowledged": False,
    }
    path = _write_private(quarantine, f"{stem}.reason.json", json.dumps(reason, indent=2).encode())
    after = f" (`msmt ack {delivery.seq}` once it is dealt with)" if _is_seq(delivery.seq) else ""
    print(
        f"item {_printable(item_id, 200)} REJECTED: {_printable(detail)} ({code}); quarantined in {path}, "
        f"not acknowledged{after}",
        file=sys.stderr,
    )
    return path


def _pull_one(
    client: Client, folder: Path, page: InboxPage, index: int, at: Checkpoint | None
) -> Received | None:
    """Save one delivery of the page (payload and header), or quarantine it: the item when saved.

    The envelope is the one the page carries (fetched only when it carries none), verified
    exactly like fetched bytes; its log entry from the page's proof against `at` (a checkpoint
    already verified), else asked of the log."""
    delivery = page.deliveries[index]
    stem = _delivery_stem(delivery)
    if delivery.unavailable is not None and _is_seq(delivery.seq) and is_item_id(delivery.item_id):
        return None  # the caller reports and acknowledges it: it can never be fetched (410)
    if not (_is_seq(delivery.seq) and is_item_id(delivery.item_id)):
        detail = "the broker listed a delivery whose item id or sequence number is not in their format"
        _quarantine(client, folder, stem, delivery, "invalid-delivery", detail, fetch=False)
        return None
    data: bytes | None = None
    try:
        data = page.envelope(index)
        received = client.open(delivery, data=data, proof=page.proof(index), at=at)
    except Exception as exc:
        if not _cannot_open(exc):
            raise
        code = getattr(exc, "code", "client-error")
        detail = getattr(exc, "detail", str(exc))
        _quarantine(client, folder, stem, delivery, str(code), detail, fetch=True, data=data)
        return None
    header = received.opened.header
    _write_private(folder, stem + EXTENSIONS.get(header.content_type, ".bin"), received.payload)
    _write_private(
        folder, f"{stem}.header.json", json.dumps(header_view(header.to_dict()), indent=2).encode()
    )
    return received


def _apply_withdrawal(client: Client, folder: Path, received: Received, keep: bool) -> None:
    """A verified withdrawal marks the withdrawn item in FOLDER (`STEM.withdrawn.json`) and, when
    that item is TLP:RED, deletes its decrypted payload unless `keep` (its signed header stays).

    Nothing is trusted that the statement's own signature and the members' directory do not
    show: the statement must verify with a signing key of its country, be the sender's, and
    withdraw an item of that same country; otherwise it is reported and nothing is changed."""
    header = received.opened.header
    try:
        statement, _ = rp.parse_withdrawal(received.payload)
        key = rp.directory_key(
            client.directory().state, statement.country, statement.key_id, statement.created_ms
        )
        statement = rp.verify_withdrawal(received.payload, key)
    except errors.MsmtError as exc:
        print(f"withdrawal {header.item_id} ignored: {_printable(exc.detail)} ({exc.code})", file=sys.stderr)
        return
    if statement.country != header.originator or statement.item_id != header.in_reply_to:
        print(
            f"withdrawal {header.item_id} ignored: it is not {header.originator}'s own statement about the item it replies to",
            file=sys.stderr,
        )
        return
    saved = sorted(folder.glob(f"*-{statement.item_id}.header.json"))
    if not saved:
        print(
            f"{header.originator} withdrew item {statement.item_id}, which this folder does not hold",
            file=sys.stderr,
        )
        return
    stem = saved[0].name.removesuffix(".header.json")
    withdrawn = json.loads(saved[0].read_text())
    if (withdrawn.get("originator") or {}).get("country") != statement.country:
        print(
            f"withdrawal {header.item_id} ignored: item {statement.item_id} is not {statement.country}'s",
            file=sys.stderr,
        )
        return
    deleted: list[str] = []
    if withdrawn.get("markings", {}).get("tlp") == "RED" and not keep:
        for payload in folder.glob(f"{stem}.*"):
            if not payload.name.endswith((".header.json", ".withdrawn.json")):
                payload.unlink()
                deleted.append(payload.name)
    marker = {
        "item_id": statement.item_id,
        "withdrawn_by": statement.country,
        "reason": statement.reason,
        "withdrawn_ms": statement.created_ms,
        "withdrawal_item": header.item_id,
        "plaintext_deleted": deleted,
    }
    _write_private(folder, f"{stem}.withdrawn.json", json.dumps(marker, indent=2).encode())
    what = f"; its TLP:RED plaintext was deleted ({', '.join(deleted)})" if deleted else ""
    print(
        f"{statement.country} WITHDREW item {statement.item_id}: {_printable(statement.reason)}{what}",
        file=sys.stderr,
    )


def _cursor(folder: Path) -> int:
    cursor_path = folder / CURSOR_FILE
    return int(cursor_path.read_text()) if cursor_path.exists() else 0


def _is_unavailable(delivery: Delivery) -> bool:
    return delivery.unavailable is not None and _is_seq(delivery.seq) and is_item_id(delivery.item_id)


def _pull_once(
    client: Client, folder: Path, args: argparse.Namespace, wait: float
) -> tuple[int, int, int, list[int]]:
    """Pull one page after the saved cursor; return (saved, rejected, unavailable, missing).

    `missing` are the inbox entry numbers the page skips (from the cursor on): each inbox is
    gap-free, so a skipped one was withheld or deleted by the broker; each is reported on
    standard error as an AUDIT line (the cheap part of `msmt audit`, on every poll).

    A delivery the broker lists as expired or purged is not fetched (it never will be): it is
    reported on standard error and acknowledged.

    A delivery that cannot be opened (sealed to a key not in this key folder, a signature or
    digest that fails, an id that is not an item id) is quarantined and not acknowledged; the
    cursor moves past it all the same, so no single delivery can block the inbox. Only saved
    items are acknowledged. An error that is not about one delivery (the broker unreachable,
    the directory) stops the pull: what was handled is acknowledged and the cursor kept after it.
    """
    client.directory(refresh=True)  # every poll: the chain still extends ours, and no foreign key of ours
    _private_folder(folder)  # made once the broker answered, not by a pull that cannot start
    cursor = _cursor(folder)
    # one request for the page, its envelopes (capped in bytes by the broker) and each one's
    # log proof against one verified checkpoint: no request per delivery
    at = client.page_checkpoint() if client.trust.log is not None else None
    page = client.inbox(cursor, limit=args.limit, wait=wait, envelopes=True, proofs=at.size if at else None)
    missing = _skipped(cursor, [d.seq for d in page.deliveries])
    for seq in missing:
        print(f"AUDIT: inbox entry {seq} is missing: withheld or deleted by the broker", file=sys.stderr)
    progress = Progress(len(page.deliveries), "pulling")
    saved = failed = handled = 0
    reached = cursor
    to_acknowledge: list[Received] = []
    gone: list[Delivery] = []
    try:
        for index, delivery in enumerate(page.deliveries):
            if _is_unavailable(delivery):
                gone.append(delivery)
                print(f"{_printable(unavailable_reason(delivery))}: not fetched", file=sys.stderr)
                received = None
            else:
                received = _pull_one(client, folder, page, index, at)
            if received is not None:
                saved += 1
                to_acknowledge.append(received)
                if received.opened.header.content_type == WITHDRAWAL_MEDIA_TYPE:
                    _apply_withdrawal(client, folder, received, keep=getattr(args, "keep_withdrawn", False))
            elif not _is_unavailable(delivery):
                failed += 1
            handled += 1
            if _is_seq(delivery.seq):
                reached = max(reached, delivery.seq)
            progress.step()
    finally:
        progress.close()
        if (to_acknowledge or gone) and not args.no_ack:
            # signed "received and verified" receipts, then acks (the unavailable: acks only)
            client.confirm(to_acknowledge, unavailable=gone)
        if handled == len(page.deliveries):
            reached = page.cursor
        if reached != cursor:
            _write_private(folder, CURSOR_FILE, str(reached).encode())
    return saved, failed, len(gone), missing


def _skipped(cursor: int, seqs: list[Any]) -> list[int]:
    """Entry numbers after `cursor` that a page in ascending order jumps over."""
    missing: list[int] = []
    expected = cursor + 1
    for seq in seqs:
        if not _is_seq(seq):
            continue
        missing.extend(range(expected, min(seq, expected + 1000 - len(missing))))
        expected = max(expected, seq + 1)
    return missing  # a broker claiming a huge jump is named by its first thousand entries


def _log_still_consistent(client: Client) -> str | None:
    """When the members' root pins a log: its newest checkpoint, checked consistent with the
    one this agency holds (what `msmt audit` does first). The problem sentence, or None."""
    if client.trust.log is None:
        return None
    try:
        client.log_checkpoint()
    except BrokerError as exc:
        if exc.code != "no-checkpoint":
            raise
    except errors.LogError as exc:
        return f"{exc.detail} ({exc.code})"
    return None


def header_view(header: dict[str, Any]) -> dict[str, Any]:
    """The header for people: wrapped keys reduced to their recipients."""
    view = dict(header)
    view["recipients"] = [{"country": r["country"], "key_id": r["key_id"]} for r in header["recipients"]]
    return view


def cmd_pull(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    total_saved = total_failed = total_gone = total_missing = 0
    with _client(args) as client:  # URL, keys and trust checked before the folder is made
        while True:
            before = _cursor(folder)
            saved, failed, gone, missing = _pull_once(client, folder, args, wait=0)
            total_saved, total_failed = total_saved + saved, total_failed + failed
            total_gone, total_missing = total_gone + gone, total_missing + len(missing)
            # until a page is empty (a short page is not the end: pages are capped in bytes)
            # or brings the cursor no further
            if saved + failed + gone == 0 or _cursor(folder) == before:
                break
    result: dict[str, Any] = {"saved": total_saved, "rejected": total_failed, "folder": str(folder)}
    if total_gone:
        result["unavailable"] = total_gone  # expired or purged: acknowledged, never fetched
    if total_missing:
        result["missing"] = total_missing  # skipped entry numbers: withheld or deleted (AUDIT lines)
    emit(args, result)
    if total_missing:
        return EXIT_AUDIT
    return EXIT_INVALID_ITEM if total_failed else EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    failed_any = audit_any = False
    with _client(args) as client:  # URL, keys and trust checked before the folder is made
        print(f"watching the inbox; new items go to {folder} (Ctrl-C to stop)", file=sys.stderr)
        try:
            while True:
                # every poll, the cheap parts of `msmt audit`: the log still extends what this
                # agency verified (else stop: a forked or rolled-back log), and no entry skipped
                fork = _log_still_consistent(client)
                if fork is not None:
                    print(f"AUDIT: {fork}", file=sys.stderr)
                    return EXIT_AUDIT
                saved, failed, gone, missing = _pull_once(client, folder, args, wait=30)
                failed_any = failed_any or bool(failed)
                audit_any = audit_any or bool(missing)
                if saved or failed or gone:
                    print(
                        f"{_ms(int(time.time() * 1000))}: {saved} saved, {failed} rejected"
                        + (f", {gone} expired or purged" if gone else ""),
                        file=sys.stderr,
                    )
                if args.once and (saved or failed or gone):
                    break
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    if audit_any:
        return EXIT_AUDIT
    return EXIT_INVALID_ITEM if failed_any else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    broker_url(args)
    data_file = ui.read_bytes(args.item, "envelope file") if args.file else None
    if args.allow_expired and not args.open:
        raise Usage("--allow-expired goes with --open")
    with _client(args) as client:
        try:
            data = data_file if data_file is not None else client.fetch(args.item)
        except BrokerError as exc:
            if exc.status == 410:
                raise ui.UserError(
                    f"item {_printable(args.item, 100)} is no longer served ({exc.code}): "
                    f"{_printable(str(exc.problem.get('detail', '')))}"
                ) from exc
            raise
        now = int(time.time() * 1000)
        header = verify(data, client.directory().signing_lookup(now)).header
        if data_file is None and not header.item_id.startswith(args.item.strip().lower()):
            raise ui.UserError(  # the broker resolved a prefix: it must be an item with that prefix
                f"the broker answered {args.item!r} with item {header.item_id}, which does not start with it"
            )
        view = header_view(header.to_dict())
        view["signature"] = "verified (ML-DSA-65 + Ed25519) against the members' signed directory"
        if args.open:
            opened = client.open_bytes(data, accepted_ms=now, allow_expired=args.allow_expired)
            view["payload_bytes"] = len(opened.payload)
            if args.output:
                Path(args.output).write_bytes(opened.payload)
                view["payload_written_to"] = args.output
    emit(args, view)
    return EXIT_OK


def cmd_withdraw(args: argparse.Namespace) -> int:
    """Withdraw an item this agency sent: a signed statement to every one of its recipients
    (the broker refuses it for anyone else's item, or for fewer recipients)."""
    from . import reports

    broker_url(args)
    with _client(args) as client:
        status = client.status(args.item_id)  # only its originator sees this: ours, or a 404
        recipients = sorted({d["recipient"] for d in status["deliveries"]})
        if not recipients:
            raise ui.UserError(f"item {status['item_id']} has no recipient to tell")
        markings = Markings.create("UNCLASSIFIED", "AMBER", recipients)
        sent = reports.send_withdrawal(client, status["item_id"], args.reason, recipients, markings)
    emit(args, {"withdrawn": status["item_id"], "withdrawal": sent.item_id, "recipients": recipients})
    return EXIT_OK


def cmd_ack(args: argparse.Namespace) -> int:
    with _client(args) as client:
        acknowledged = client.acknowledge(args.seq)
    emit(args, {"acknowledged": acknowledged})
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    broker_url(args)
    with _client(args) as client:
        result = client.status(args.item_id)  # a unique prefix of the id is enough
        proofs = client.delivery_proofs(result["item_id"])
    rows = [
        {
            "recipient": d["recipient"],
            "state": d["state"],
            "inbox_entry": d.get("seq") or "-",
            "delivered": _ms(d["created_ms"]),
            "acknowledged": _ms(d["acked_ms"]),
            "receipt": proofs.get(d["recipient"], "missing"),
        }
        for d in result["deliveries"]
    ]
    rows += [
        {
            "recipient": r,
            "state": p,
            "inbox_entry": "-",
            "delivered": "-",
            "acknowledged": "-",
            "receipt": "missing",
        }
        for r, p in sorted(proofs.items())
        if p == "no delivery"
    ]
    emit(args, {**result, "proofs": proofs}, rows)
    return EXIT_ERROR if "no delivery" in proofs.values() else EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """What this agency can check alone: gaps in its inbox and at its end, receipts for what
    it sent and the inbox sizes the log commits its recipients to."""
    overdue_ms = args.overdue_hours * 3600 * 1000
    now = int(time.time() * 1000)
    problems: list[str] = []
    witnesses = _witness_urls(args.witness)
    compared: list[dict[str, Any]] = []
    with _client(args) as client:
        if client.trust.log is not None:
            client.log_checkpoint()  # the log is consistent with every checkpoint seen before
        if witnesses:
            from .gossip import compare_with_witnesses

            for c in compare_with_witnesses(client, witnesses):
                compared.append(
                    {"witness": c.witness, "verdict": c.verdict, "size": c.size, "detail": c.detail}
                )
                if c.is_finding:
                    problems.append(f"{c.verdict}: {c.detail}")
                elif c.verdict != "agrees":
                    print(f"audit: witness {c.witness}: {c.verdict}: {c.detail}", file=sys.stderr)
        entries = client.inbox_entries()  # listed after the checkpoint above was accepted
        for seq in client.inbox_gaps(entries):
            problems.append(f"inbox entry {seq} is missing: withheld or deleted by the broker")
        # the end of the inbox: what the log's last inboxes leaf commits to (14.8)
        problems.extend(client.inbox_tail(entries))
        sent = client.trust.sent_items
        statuses = []
        for item_id in sent:
            status = client.status(item_id)
            statuses.append(status)
            for recipient, proof in sorted(client.delivery_proofs(item_id).items()):
                if proof == "no delivery":
                    problems.append(f"{item_id}: the broker shows no delivery to {recipient}")
                elif proof == "missing" and now - int(status["received_ms"]) > overdue_ms:
                    problems.append(
                        f"{item_id}: no signed receipt from {recipient} after {args.overdue_hours} h"
                    )
        # each recipient's inbox, right after the batch of what we sent, holds it (14.8)
        problems.extend(client.sent_inboxes(statuses))
    for problem in problems:
        print(f"AUDIT: {problem}", file=sys.stderr)
    evidence = [str(path) for path in client.trust.evidence()]
    if problems and evidence:
        print(f"audit: evidence kept in {Path(evidence[-1]).parent}", file=sys.stderr)
    emit(
        args, {"problems": problems, "items_checked": len(sent), "witnesses": compared, "evidence": evidence}
    )
    return EXIT_AUDIT if problems else EXIT_OK


def _witness_urls(given: list[str] | None) -> dict[str, str]:
    """`--witness NAME=URL` (or a bare URL, named by its host) for checkpoint gossip."""
    out: dict[str, str] = {}
    for value in given or []:
        name, sep, url = value.partition("=")
        if not sep:
            name, url = urlsplit(value).netloc or value, value
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ClientError(
                f"--witness {value!r}: give NAME=URL with an http(s) URL (the witness's prefix)"
            )
        out[name] = url
    return out


def cmd_directory(args: argparse.Namespace) -> int:
    with _client(args) as client:
        directory = client.directory()
    now = int(time.time() * 1000)

    def fingerprint(member: Any, kind: KeyKind) -> str:
        entry = member.current(kind, now)
        return short_fingerprint(entry.key_id) if entry else "-"

    rows = [
        {
            "country": m.code,
            "name": m.name,
            "status": m.status,
            "accreditation": m.accreditation,
            "groups": list(m.groups),
            "signing_key": fingerprint(m, KeyKind.SIGNING),
            "encryption_key": fingerprint(m, KeyKind.ENCRYPTION),
        }
        for m in directory.members.values()
    ]
    emit(args, rows, [{**r, "groups": ", ".join(r["groups"]) or "-"} for r in rows])
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------------


def _add_markings(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("markings (signed with the item; the broker enforces policy on them)")
    g.add_argument(
        "--classification", "-c", required=True, help="e.g. UNCLASSIFIED, RESTRICTED, CONFIDENTIAL, SECRET"
    )
    g.add_argument("--tlp", required=True, type=str.upper, choices=TLP_LEVELS, help="TLP 2.0 level")
    g.add_argument(
        "--releasable-to",
        "-r",
        action="append",
        required=True,
        metavar="WHO",
        help="country codes, group names (G7, EU) or ALL; repeat or separate with commas",
    )
    g.add_argument(
        "--caveat",
        action="append",
        default=[],
        metavar="CAVEAT",
        help="e.g. ORCON (no onward sharing without the originator)",
    )
    g.add_argument(
        "--topic",
        "-t",
        action="append",
        default=[],
        metavar="TOPIC",
        help=f"one of {', '.join(TOPICS)}; repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msmt",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1].strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"msmt {_version()}")
    parser.add_argument("--broker", default=os.environ.get("MSMT_BROKER_URL"), help="broker base URL")
    parser.add_argument(
        "--keys", default=os.environ.get("MSMT_KEYS", "msmt-keys"), help="key folder (default %(default)s)"
    )
    parser.add_argument(
        "--audience",
        default=os.environ.get("MSMT_AUDIENCE"),
        help="the broker's identity in API tokens (default: the broker URL, as the broker expects "
        "unless its operator set MSMT_AUDIENCE otherwise)",
    )
    parser.add_argument(
        "--trust",
        default=os.environ.get("MSMT_TRUST"),
        help="folder of the pinned root and verified directory (default: KEYS/trust)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int], **kw: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, **kw)
        p.set_defaults(func=func)
        return p

    keys = sub.add_parser(
        "keys",
        help="generate, show and export your country's keys",
        description="Generate, show and export your country's keys.",
    )
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = ksub.add_parser(
        "generate",
        help="create signing, encryption and API keys (passphrase-encrypted, mode 0600)",
        description="Create a new key folder: signing (ML-DSA-65 + Ed25519), encryption (X-Wing) "
        "and API (Ed25519) keys, each encrypted with your passphrase.",
    )
    p.add_argument("country", help="your ISO 3166-1 alpha-3 code, e.g. KOR")
    p.add_argument("--out", help="folder to create (default: --keys)")
    p.set_defaults(func=cmd_keys_generate)
    p = ksub.add_parser(
        "show",
        help="print key ids and read-aloud fingerprints",
        description="Print your key ids and the short fingerprints to read aloud at enrolment.",
    )
    p.set_defaults(func=cmd_keys_show)
    p = ksub.add_parser(
        "export",
        help="write the public key documents to send to the broker admin",
        description="Write your three public key documents (for enrolment) to --out, or print them as JSON.",
    )
    p.add_argument("--out", help="folder for COUNTRY.KIND.pub files")
    p.set_defaults(func=cmd_keys_export)

    p = command("submit", "seal a file (or stdin) for the partners policy allows, and submit it", cmd_submit)
    p.add_argument("file", help="the report to send, or - for stdin")
    _add_markings(p)
    p.add_argument(
        "--to",
        action="append",
        metavar="COUNTRY",
        help="recipients (repeatable); default: every partner policy allows",
    )
    p.add_argument("--content-type", help="media type (default: from the file extension)")
    p.add_argument("--supersedes", metavar="ITEM_ID", help="this item corrects ITEM_ID")
    p.add_argument("--in-reply-to", metavar="ITEM_ID", help="this item answers ITEM_ID")
    p.add_argument(
        "--expires-in",
        type=int,
        metavar="SECONDS",
        help="the item may not be accepted after this many seconds (> 0; default: no expiry)",
    )

    p = command(
        "preflight",
        "show which partners may receive an item with these markings, and why not the others",
        cmd_preflight,
    )
    _add_markings(p)
    p = command("explain", "explain the policy decision for one recipient (exit 3 when denied)", cmd_explain)
    p.add_argument("recipient", help="the partner's country code")
    _add_markings(p)

    p = command("inbox", "list deliveries in your inbox", cmd_inbox)
    p.add_argument("--after", type=int, default=0, help="cursor: list deliveries with seq greater than this")
    p.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    p.add_argument("--wait", type=float, default=0, help="long-poll up to this many seconds (max 30)")

    p = command(
        "pull", "fetch, verify and decrypt new deliveries into a folder, then acknowledge them", cmd_pull
    )
    p.add_argument("folder", help="where payloads and headers are written; the cursor is kept in it")
    p.add_argument("--limit", type=int, default=100, help="deliveries per request")
    p.add_argument("--no-ack", action="store_true", help="do not acknowledge what was pulled")
    p.add_argument(
        "--keep-withdrawn",
        action="store_true",
        help="keep the plaintext of TLP:RED items their originator withdraws",
    )

    p = command("watch", "like pull, forever: long-polls and saves items as they arrive", cmd_watch)
    p.add_argument("folder", help="where payloads and headers are written; the cursor is kept in it")
    p.add_argument("--limit", type=int, default=100, help="deliveries per request")
    p.add_argument("--no-ack", action="store_true", help="do not acknowledge what was pulled")
    p.add_argument(
        "--keep-withdrawn",
        action="store_true",
        help="keep the plaintext of TLP:RED items their originator withdraws",
    )
    p.add_argument("--once", action="store_true", help="stop after the first batch")

    p = command("show", "verify an item and show its signed header (optionally decrypt it)", cmd_show)
    p.add_argument("item", help="an item id, or with --file an envelope file")
    p.add_argument("--file", action="store_true", help="ITEM is a local envelope file")
    p.add_argument("--open", action="store_true", help="also decrypt (you must be a recipient)")
    p.add_argument("--output", "-o", help="with --open: write the payload here")
    p.add_argument(
        "--allow-expired",
        action="store_true",
        help="with --open: open an item past its originator's expiry (refused otherwise)",
    )

    p = command("withdraw", "withdraw an item you sent: a signed statement to every recipient", cmd_withdraw)
    p.add_argument("item_id", help="the item's id, or a unique prefix of it")
    p.add_argument("--reason", required=True, help="why, in one sentence (shown to every recipient)")

    p = command("ack", "acknowledge deliveries by sequence number", cmd_ack)
    p.add_argument("seq", type=int, nargs="+", help="sequence numbers from your inbox")

    p = command("status", "delivery state and signed receipt per recipient of an item you sent", cmd_status)
    p.add_argument(
        "item_id", help="the id of an item you sent, or a unique prefix of it (8 hex digits at least)"
    )
    p = command(
        "audit",
        f"check your inbox for gaps and your sent items for receipts (exit {8} on a finding)",
        cmd_audit,
    )
    p.add_argument(
        "--overdue-hours", type=float, default=24.0, help="a receipt missing after this is a finding"
    )
    p.add_argument(
        "--witness",
        action="append",
        metavar="NAME=URL",
        help="a member witness to compare checkpoints with (its URL prefix, as in the broker's "
        "MSMT_WITNESS_URLS); repeat for each: a split view or fork is a finding, kept as evidence",
    )

    command("directory", "list members and key fingerprints from the verified directory", cmd_directory)
    cli_governance.register(sub, ksub)
    cli_reports.register(sub)
    cli_outbox.register(sub)
    add_witness_parser(sub)
    return ui.json_anywhere(parser)


from . import cli_governance, cli_outbox, cli_reports  # noqa: E402 - register their commands on the parser below


def classify(exc: BaseException) -> tuple[str, int] | None:
    """The agency's error families as (sentence, exit code); the rest is ui.classify_common."""
    if isinstance(exc, PolicyRefused):
        lines = [f"refused by policy: {exc.problem.get('detail', '')}"]
        lines += [
            f"  {country}: {reason['reason']}"
            for country, reasons in exc.refusals.items()
            for reason in reasons
        ]
        return "\n".join(lines), EXIT_REFUSED
    if isinstance(exc, errors.ForeignOwnKey):
        return f"ALARM: {exc.detail}", EXIT_ALARM
    if isinstance(exc, errors.GovernanceError):
        return f"{exc.detail} ({exc.code})", EXIT_ERROR
    if isinstance(exc, BrokerUnavailable):
        return exc.detail, EXIT_UNAVAILABLE
    if isinstance(exc, BrokerError):
        return f"the broker said {exc.status} {exc.code}: {exc.problem.get('detail', '')}", EXIT_ERROR
    if isinstance(exc, errors.KeyMaterialError):
        return exc.detail, EXIT_KEYS
    if isinstance(exc, errors.EnvelopeError):
        return f"{exc.detail} ({exc.code})", EXIT_INVALID_ITEM
    if isinstance(exc, ClientError):
        return exc.detail, EXIT_ERROR
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def work() -> int:
        code: int = args.func(args)
        return code

    return ui.boundary("msmt", work, classify)


if __name__ == "__main__":
    raise SystemExit(main())
