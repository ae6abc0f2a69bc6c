"""Clients for one agency, sync (`Client`) and async (`AsyncClient`), on httpx.

Both share `_ClientCore`, which holds everything that is not I/O: tokens, sealing, opening,
response parsing, retry policy. Every request carries a fresh single-use token. Transport
errors and 5xx answers are retried with exponential backoff; a submission is safe to retry
because it re-sends the same envelope bytes and the broker de-duplicates by item id.
Pass `transport=` (e.g. `httpx.ASGITransport(app)` or `httpx.MockTransport`) to test
without sockets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from .agency import AgencyKeys
from .auth import audience_of, mint_token
from .core import Envelope, Markings, Opened, canonical, logleaf, open_envelope, parse, seal, verify
from .core.errors import (
    BadReceipt,
    EnvelopeError,
    ForeignOwnKey,
    InvalidConsistencyProof,
    KeyMaterialError,
    LeafMismatch,
    LogRollback,
    MsmtError,
    NotWitnessed,
)
from .core.ids import is_item_id
from .core.note import Checkpoint, open_checkpoint
from .core.receipt import DeliveryReceipt, parse_receipt, sign_receipt, verify_receipt
from .directory import Directory
from .errors import (
    BrokerError,
    BrokerUnavailable,
    ClientError,
    OriginatorControlled,
    PolicyRefused,
    SubmitPending,
)
from .outbox import Outbox
from .trust import TrustStore

log = logging.getLogger("msmt.client")
ENVELOPE_MEDIA_TYPE = "application/vnd.msmt.envelope"
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# Answers about the envelope itself, which re-sending the same bytes cannot change (a 401 or a
# 5xx is about the moment, not the item: the envelope stays pending).
REFUSES_ENVELOPE = {400, 403, 404, 409, 410, 413, 415, 422}
MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is reported, not slept through
ITEM_ID_PREFIX_RE = re.compile(r"^[0-9a-f]{8}[0-9a-f-]{0,28}$")  # a unique prefix: 8 hex digits at least
WITNESS_WAITS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0, 3.0)  # ~10 s for the witnesses
ORCON = "ORCON"
MAX_ACK_SEQS = 1000  # the broker's cap on one acknowledgement (and one receipts request)
# receipts are ~6.4 KB each in base64url: keep a receipts request under the broker's default
# 1 MiB JSON body limit (a page of 100 is one request)
RECEIPTS_REQUEST_CHARS = 900_000
INBOXES_PAGE = 100  # inboxes leaves per request: ~70 bytes per member each, plus a proof


@dataclass(frozen=True)
class Receipt:
    item_id: str
    log_index: int | None  # None when the broker stored the item but had not logged it yet (202)
    received_ms: int
    recipients: tuple[str, ...]
    seqs: dict[str, int | None] = field(default_factory=dict)  # each recipient's inbox number


@dataclass(frozen=True)
class Delivery:
    seq: int
    item_id: str
    originator: str
    created_ms: int
    received_ms: int
    classification: str
    tlp: str
    content_type: str
    size: int
    log_index: int
    state: str
    # "expired" (past its originator's `expires_ms`) or "purged" (by the operator's retention):
    # listed without envelope, and it can never be fetched (410); None for an ordinary delivery
    unavailable: str | None = None


@dataclass(frozen=True)
class InboxPage:
    deliveries: tuple[Delivery, ...]
    cursor: int
    # with `inbox(envelopes=True)`: each delivery's envelope as the broker sent it (base64url),
    # None where it sent none; untrusted until `open` verified it
    envelopes: tuple[str | None, ...] = ()
    # with `inbox(proofs=N)`: (leaf, inclusion proof in the tree of N) for deliveries in it
    proofs: tuple[tuple[str, tuple[str, ...]] | None, ...] = ()

    def proof(self, index: int) -> tuple[str, tuple[str, ...]] | None:
        return self.proofs[index] if index < len(self.proofs) else None

    def envelope(self, index: int) -> bytes | None:
        """The envelope bytes the page carries for delivery `index` (unverified), or None."""
        text = self.envelopes[index] if index < len(self.envelopes) else None
        return None if text is None else canonical.b64decode(text, "the envelope in the inbox page")


@dataclass(frozen=True)
class Received:
    """A delivery whose envelope was fetched, verified and decrypted."""

    delivery: Delivery
    opened: Opened
    envelope_sha256: str = ""

    @property
    def payload(self) -> bytes:
        return self.opened.payload


@dataclass(frozen=True)
class Rejected:
    """A delivery that could not be opened: the error, and the bytes the broker served."""

    delivery: Delivery
    error: Exception
    envelope: bytes | None


@dataclass(frozen=True)
class Batch:
    """One inbox page, opened: what verified and decrypted, and what was refused."""

    page: InboxPage
    received: tuple[Received, ...]
    rejected: tuple[Rejected, ...]
    # listed as expired or purged: not fetched, never to be opened; acknowledge them with
    # `confirm(batch.received, unavailable=batch.unavailable)` so they leave the inbox
    unavailable: tuple[Delivery, ...] = ()

    @property
    def cursor(self) -> int:
        return self.page.cursor


class ItemExpired(ClientError):
    """The item's signed header says it expired (`expires_ms`): it is not opened unless the
    caller asks for it (`allow_expired=True`)."""

    code = "item-expired"


class ItemUnavailable(ClientError):
    """The broker lists the delivery as expired or purged: there is nothing to fetch."""

    code = "item-unavailable"


UNAVAILABLE_RULE = {"expired": "by its originator's expiry", "purged": "by the operator's retention"}


def unavailable_reason(delivery: Delivery) -> str:
    """One sentence on why a delivery listed as unavailable cannot be opened."""
    why = delivery.unavailable or "unavailable"
    rule = UNAVAILABLE_RULE.get(why, "")
    return f"item {delivery.item_id} from {delivery.originator} was {why} {rule}".strip()


def check_expiry(opened: Opened, now_ms: int, allow_expired: bool) -> None:
    expires_ms = opened.header.expires_ms
    if expires_ms is not None and expires_ms <= now_ms and not allow_expired:
        raise ItemExpired(
            f"item {opened.header.item_id} expired {(now_ms - expires_ms) // 1000} s ago by its "
            "originator's rule; it is opened only when asked (allow_expired)"
        )


def rejects_delivery(exc: BaseException) -> bool:
    """Whether an error is about one delivery (refuse it and go on) rather than about the
    broker, the network, the directory or the log (stop; try the delivery again later)."""
    if isinstance(exc, EnvelopeError | KeyMaterialError):
        return True
    if isinstance(exc, BrokerUnavailable):
        return False
    if isinstance(exc, BrokerError):
        return 400 <= exc.status < 500 and exc.status not in (401, 408, 429)
    return isinstance(exc, ClientError)


def _receipt_requests(receipts: list[str]) -> list[list[str]]:
    """Receipts in as few requests as fit the broker's body and count limits."""
    requests: list[list[str]] = [[]]
    size = 0
    for receipt in receipts:
        if requests[-1] and (
            size + len(receipt) + 3 > RECEIPTS_REQUEST_CHARS or len(requests[-1]) >= MAX_ACK_SEQS
        ):
            requests.append([])
            size = 0
        requests[-1].append(receipt)
        size += len(receipt) + 3
    return requests if requests[0] else []


def _cause(exc: Exception | None) -> str:
    """Why a request failed, as words (some httpx errors have an empty message)."""
    if exc is None:
        return "unknown cause"
    text = str(exc).strip()
    return text or type(exc).__name__


@dataclass(frozen=True)
class Preflight:
    allowed: tuple[str, ...]
    denied: dict[str, list[dict[str, str]]]


def check_broker_url(url: str) -> str:
    """The broker's base URL when it is an http(s) URL with a host; else a ClientError saying
    what to write (a URL without a scheme is not "unreachable": it is not a URL)."""
    text = url.strip()
    if not re.match(r"^https?://", text, re.IGNORECASE):
        example = text.split("://", 1)[-1] or "broker.example:8443"
        raise ClientError(
            f"the broker URL {url!r} must start with https:// or http:// (e.g. https://{example})"
        )
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ClientError(f"the broker URL {url!r} is not a valid URL: {exc}") from exc
    if not parsed.host:
        raise ClientError(f"the broker URL {url!r} names no host")
    return text


Progress = Callable[[int, int], None]  # (bytes sent, bytes in all)
UPLOAD_CHUNK = 256 * 1024


def _upload(body: bytes, progress: Progress) -> Iterator[bytes]:
    view = memoryview(body)
    progress(0, len(body))
    for start in range(0, len(body), UPLOAD_CHUNK):
        yield bytes(view[start : start + UPLOAD_CHUNK])
        progress(min(start + UPLOAD_CHUNK, len(body)), len(body))


async def _upload_async(body: bytes, progress: Progress) -> AsyncIterator[bytes]:
    for chunk in _upload(body, progress):
        yield chunk


def _retry_after(response: httpx.Response | None) -> float:
    """The broker's Retry-After in seconds (delay-seconds form only), capped; 0 when absent."""
    if response is None:
        return 0.0
    value = response.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return 0.0
    return min(float(value), MAX_RETRY_AFTER_S)


class _StreamReader:
    """An inbox event stream read line by line (sync and async clients alike): `feed` returns
    the page an event completes, if any; `ended` is the `end` event's reason once it came."""

    def __init__(self, page: Callable[[Any], InboxPage], after: int) -> None:
        self._page = page
        self.after = after
        self.ended: str | None = None
        self._event: dict[str, str] = {}

    def feed(self, line: str) -> InboxPage | None:
        if line != "":
            if not line.startswith(":"):  # a comment (keep-alive) otherwise
                name, _, value = line.partition(":")
                self._event[name] = value.removeprefix(" ")
            return None
        kind, data = self._event.get("event"), self._event.get("data", "")
        self._event = {}
        if kind == "end":
            self.ended = str(json.loads(data).get("reason", "")) if data else ""
        if kind != "deliveries":
            return None
        page = self._page(json.loads(data))
        if any(d.seq <= self.after for d in page.deliveries) or page.cursor < self.after:
            raise ClientError(f"the broker's inbox stream went back past entry {self.after}")
        self.after = page.cursor
        return page


_P = TypeVar("_P")


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One available delivery of a page, opened from the page alone (no request): the envelope
    bytes the page carried, and the delivery verified, decrypted and proven in the log from
    the page's own proof, or None (then the caller takes it through `open`, one by one: a key
    perhaps newer, a proof missing, or an error it raises in order)."""

    data: bytes | None
    received: Received | None
    undecodable: Exception | None = None  # the page's envelope text itself was refused


@dataclass(frozen=True, slots=True)
class _Ahead(Generic[_P]):
    """The page after `after` (`limit` deliveries at most), being fetched ahead, with proofs
    against `at`, a checkpoint already verified."""

    after: int
    limit: int
    at: Checkpoint | None
    page: _P


class _ClientCore:
    def __init__(
        self,
        base_url: str,
        keys: AgencyKeys,
        *,
        trust: TrustStore,
        audience: str | None = None,
        retries: int = 4,
        backoff_s: float = 0.25,
        directory_ttl_s: float = 60.0,
        check_own_keys: bool = True,
        on_retry: Callable[[str], None] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        """`on_retry`, when given, is called once per request that is being retried, with a
        sentence saying why (a command line prints it, so a slow failure is not silent).

        `outbox` keeps every sealed envelope until the broker acknowledged it; by default it is
        `<agency folder>/outbox` when the trust store has a folder, else kept in memory."""
        base_url = check_broker_url(base_url)
        self.base_url = base_url
        self.on_retry = on_retry
        self.keys = keys
        self.trust = trust
        self.check_own_keys = check_own_keys
        # the broker's identity in tokens: by default its URL as we reach it (msmt.auth.audience_of)
        self.audience = audience or audience_of(base_url)
        self.retries = retries
        self.last_stream_end = ""  # why the broker ended the last inbox stream (`stream()`)
        self.backoff_s = backoff_s
        self.directory_ttl_s = directory_ttl_s
        self._directory: Directory | None = None
        self._directory_at = 0.0
        if outbox is None:
            folder = trust.folder if trust is not None else None
            outbox = Outbox(folder / "outbox" if folder is not None else None)
        self.outbox = outbox

    @property
    def country(self) -> str:
        return self.keys.country

    def _authorize(self, request: httpx.Request, body: bytes) -> httpx.Request:
        """Sign a token bound to exactly this request: method, path and query as sent, body."""
        token = mint_token(
            self.keys.api,
            self.keys.country,
            self.audience,
            method=request.method,
            target=request.url.raw_path.decode("ascii"),
            body=body,
        )
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def _build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        method: str,
        path: str,
        headers: dict[str, str] | None,
        kwargs: dict[str, Any],
        progress: Progress | None,
    ) -> httpx.Request:
        """The signed request. With `progress`, a bytes body is streamed in chunks and
        `progress(sent, total)` is called after each (from 0 again on a retry); the token is
        bound to the whole body all the same."""
        body = kwargs.get("content")
        if progress is None or not isinstance(body, bytes):
            request = http.build_request(method, path, headers=headers, **kwargs)
            return self._authorize(request, request.read())
        chunks = (
            _upload_async(body, progress) if isinstance(http, httpx.AsyncClient) else _upload(body, progress)
        )
        request = http.build_request(
            method,
            path,
            headers={**(headers or {}), "Content-Length": str(len(body))},
            **{**kwargs, "content": chunks},
        )
        return self._authorize(request, body)

    def _delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Exponential backoff with jitter, or the broker's Retry-After when it asks for longer
        (up to MAX_RETRY_AFTER_S)."""
        delay: float = min(self.backoff_s * 2**attempt, 8.0)
        delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not a secret
        return max(delay, _retry_after(response))

    @staticmethod
    def _retryable(response: httpx.Response | None) -> bool:
        return response is None or response.status_code in RETRYABLE_STATUS

    def _retrying(self, attempt: int, response: httpx.Response | None, exc: Exception | None) -> None:
        """Say once per request, through `on_retry`, that it is being retried and why."""
        if attempt != 0 or self.on_retry is None:
            return
        why = (
            f"the broker answered {response.status_code}"
            if response is not None
            else f"cannot reach the broker at {self.base_url} ({_cause(exc)})"
        )
        self.on_retry(f"{why}; retrying up to {self.retries} times")

    def _unreachable(self, exc: Exception) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"cannot reach the broker at {self.base_url}: {_cause(exc)} (tried {self.retries + 1} times)"
        )

    @staticmethod
    def _status_path(item_id: str) -> str:
        """The status route for an item id or a unique prefix of one (8 hex digits at least)."""
        text = item_id.strip().lower()
        if not ITEM_ID_PREFIX_RE.fullmatch(text):
            raise ClientError(
                f"{item_id!r} is not an item id or a prefix of one (at least 8 hex digits, e.g. 01a2260c)"
            )
        return f"/v1/items/{text}/status"

    @staticmethod
    def _resolved(asked: str, status: dict[str, Any]) -> dict[str, Any]:
        """The broker's status answer for `asked` (an id or a unique prefix of one): it must be
        of an item whose id starts with it, or the broker resolved the prefix to another item."""
        item_id = status.get("item_id") if isinstance(status, dict) else None
        if (
            not isinstance(item_id, str)
            or not is_item_id(item_id)
            or not item_id.startswith(asked.strip().lower())
        ):
            raise ClientError(
                f"the broker answered {asked!r} with item {str(item_id)[:64]!r}, which does not start with it"
            )
        return status

    @staticmethod
    def _raise_for_problem(response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:300]}
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)[:300]}
        if problem.get("type") == "urn:msmt:problem:recipients-refused":
            raise PolicyRefused(response.status_code, problem)
        raise BrokerError(response.status_code, problem)

    def _keep(self, envelope: bytes) -> str | None:
        """Put an envelope in the outbox before it is submitted; its item id (None for bytes
        that are not an envelope at all: the broker's refusal of those is all that is wanted)."""
        try:
            item_id = parse(envelope).header.item_id
        except EnvelopeError:
            return None
        self.outbox.put(item_id, envelope)
        return item_id

    def _not_acknowledged(self, item_id: str | None, exc: ClientError) -> ClientError:
        """What a failed submission raises: a refusal that re-sending cannot change moves the
        envelope aside (and is raised as it is); anything else leaves it pending."""
        if item_id is None:
            return exc
        if isinstance(exc, BrokerError) and exc.status in REFUSES_ENVELOPE:
            self.outbox.refuse(item_id, exc.status, exc.code, str(exc.problem.get("detail", "")))
            return exc
        return SubmitPending(item_id, str(exc))

    def _accepted(self, response: httpx.Response) -> Receipt:
        receipt = self._receipt(response.json())
        if receipt.item_id not in self.trust.sent_items:  # a re-sent item was maybe recorded
            self.trust.record_sent(receipt.item_id)
        return receipt

    def _cached_directory(self) -> Directory | None:
        if self._directory is not None and time.monotonic() - self._directory_at < self.directory_ttl_s:
            return self._directory
        return None

    def _chain_after(self) -> int:
        """Ask from our own head on, so the first entry served proves it is the same history."""
        return self.trust.state.seq - 1

    def _chain_page(self, data: Any, served: list[tuple[int, bytes]]) -> tuple[int, str, bool]:
        """Collect one page of `/v1/directory/entries`; returns (head seq, head hash, complete)."""
        before = len(served)
        try:
            head = data["head"]
            for item in data["entries"]:
                served.append((int(item["seq"]), canonical.b64decode(item["entry"], "directory entry")))
            if head is None:
                raise ClientError("the broker holds no directory at all")
            seq, digest = int(head["seq"]), str(head["hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"the broker's directory answer is malformed: {exc}") from exc
        # a page that adds nothing ends the walk: a broker announcing more than it serves is
        # caught by the head check in TrustStore.update, not allowed to keep us looping
        return seq, digest, len(served) == before or served[-1][0] >= seq

    def _store_directory(self, head_seq: int, head_hash: str, served: list[tuple[int, bytes]]) -> Directory:
        """Verify what the broker served against the pinned chain; only then use it."""
        directory = Directory(self.trust.update(head_seq, head_hash, served))
        if self.check_own_keys:
            self._check_own_keys(directory)  # before caching: the alarm cannot be skipped
        self._directory, self._directory_at = directory, time.monotonic()
        return directory

    def _check_own_keys(self, directory: Directory) -> None:
        foreign = self.foreign_own_keys(directory)
        if foreign:
            raise ForeignOwnKey(
                f"the members' directory lists {len(foreign)} key(s) for {self.country} that are not in this "
                f"key folder: {', '.join(foreign)}; if this agency did not make them, its signing key may be "
                "compromised or a quorum replaced its keys. Run `msmt keys check`."
            )

    def foreign_own_keys(self, directory: Directory) -> list[str]:
        """Ids of usable keys the directory gives this country that this agency never made."""
        member = directory.members.get(self.country)
        if member is None:
            return []
        known = self.keys.known_key_ids()
        now_ms = int(time.time() * 1000)
        # a revoked or expired key cannot be used against us (a recovered member's lost keys)
        return sorted(k.key_id for k in member.keys if k.key_id not in known and k.usable_at(now_ms))

    # --- the transparency log: what we send and receive must be in it ------------------------

    def _accept_checkpoint(self, data: Any, consistency: list[str] | None) -> Checkpoint:
        identity = self.trust.log
        assert identity is not None
        note = str(data["note"]).encode()
        proof = None if consistency is None else [canonical.b64decode(p, "proof") for p in consistency]
        previous = self.trust.checkpoint()
        try:
            checkpoint = logleaf.accept_checkpoint(identity, note, previous, proof)
        except (LogRollback, InvalidConsistencyProof) as exc:
            self._keep_evidence(note, previous, proof, exc, "the broker")
            raise
        self.trust.save_checkpoint(note)
        return checkpoint

    def _keep_evidence(
        self,
        note: bytes,
        previous: Checkpoint | None,
        proof: list[bytes] | None,
        exc: Exception,
        source: str,
    ) -> None:
        """Keep two log-signed checkpoints that cannot both be true (14.8): another root for a
        size already verified (a split view), or a larger tree no consistency proof links to
        the one held (a fork). An older checkpoint alone proves nothing: it is not kept."""
        identity = self.trust.log
        if identity is None or previous is None or self.trust.checkpoint_note is None:
            return
        try:
            new, _ = open_checkpoint(note, identity.verifiers(), origin=identity.origin)
        except MsmtError:
            return  # not signed by the log: anyone could have made it, so it proves nothing
        if new.size == previous.size and new.root_hash != previous.root_hash:
            kind = "split-view"
        elif new.size > previous.size and proof is not None:
            kind = "inconsistent"
        else:
            return
        held = ("the checkpoint this agency had verified", self.trust.checkpoint_note)
        shown = (f"the checkpoint {source} showed", note)
        extra = [] if proof is None else [("the consistency proof it served, base64", _b64_lines(proof))]
        path = self.trust.save_evidence(kind, str(exc), [held, shown, *extra])
        if path is not None:
            log.warning("kept evidence of a %s of the transparency log in %s", kind, path)

    def _checkpoint_params(self) -> dict[str, int]:
        identity = self.trust.log
        return {"min_cosignatures": identity.threshold if identity else 0}

    @staticmethod
    def _not_yet_witnessed(index: int, checkpoint: Checkpoint, delay: float | None) -> float:
        if delay is None:
            raise NotWitnessed(
                f"entry {index} is not yet under a checkpoint the members' witnesses cosigned "
                f"(the newest covers {checkpoint.size} entries); try again later"
            )
        return delay

    def _needs_consistency(self, data: Any) -> tuple[int, int] | None:
        """(old size, new size) when the served checkpoint is larger than the one we hold."""
        previous = self.trust.checkpoint()
        size = int(data["size"])
        return None if previous is None or size <= previous.size else (previous.size, size)

    def _sent_leaf(self, receipt: Receipt, envelope: bytes) -> bytes:
        """The leaf the log must hold for what we sent: every recipient we sealed for, each
        with its inbox number (a receipt naming fewer recipients is refused)."""
        header = parse(envelope).header
        seqs = {r: receipt.seqs.get(r) for r in header.recipient_countries}
        if receipt.item_id != header.item_id or any(n is None for n in seqs.values()):
            raise LeafMismatch(
                f"the broker's receipt for {header.item_id} does not give an inbox entry for every recipient "
                f"({', '.join(header.recipient_countries)})"
            )
        numbered = {r: n for r, n in seqs.items() if n is not None}
        return logleaf.item_leaf(header.item_id, logleaf.envelope_digest(envelope), self.country, numbered)

    def _checked_received_leaf(self, received: Received, leaf: Any) -> bytes:
        """The log's leaf against the delivery as opened: the bytes checked are the bytes that
        were verified and decrypted (`_open` hashed them once, for the leaf and the receipt)."""
        raw = canonical.b64decode(leaf["leaf"], "log leaf")
        header = received.opened.header
        logleaf.check_item_leaf(
            raw,
            item_id=header.item_id,
            envelope_sha256=received.envelope_sha256,
            originator=header.originator,
            recipients=header.recipient_countries,
            own=(self.country, received.delivery.seq),
        )
        return raw

    def _recipients(
        self, directory: Directory, markings: Markings, check: Preflight, recipients: Iterable[str] | None
    ) -> set[str]:
        """Who to seal for: our verified directory and policy copy decide; preflight only narrows."""
        ours = directory.membership_allows(self.country, markings)
        if recipients is None:
            return ours & set(check.allowed)
        targets = set(recipients)
        refused = {c: check.denied[c] for c in targets if c in check.denied}
        for country in sorted(targets - ours - set(refused)):
            member = directory.members.get(country)
            reason = (
                "is not a member in the members' signed directory"
                if member is None
                else "is not allowed by the markings and its membership in the members' signed directory"
            )
            refused[country] = [{"rule": "verified-directory", "reason": f"{country} {reason}"}]
        if refused:
            raise PolicyRefused(
                403,
                {
                    "type": "urn:msmt:problem:recipients-refused",
                    "detail": "policy does not allow every recipient",
                    "recipients": refused,
                },
            )
        return targets

    def _seal(
        self,
        directory: Directory,
        payload: bytes,
        content_type: str,
        markings: Markings,
        recipients: Iterable[str],
        options: dict[str, Any],
    ) -> bytes:
        targets = sorted(set(recipients))
        if not targets:
            raise ClientError("no recipient: policy allows none of the partners for these markings")
        now_ms = int(time.time() * 1000)
        return seal(
            payload,
            content_type=content_type,
            markings=markings,
            recipients=[(country, directory.encryption_key(country, now_ms)) for country in targets],
            originator=self.keys.country,
            signing_key=self.keys.signing,
            **options,
        )

    def _attempts(
        self, directory: Directory | None, page: InboxPage, at: Checkpoint | None
    ) -> list[_Attempt | None]:
        """Each delivery of `page` opened from the page alone; None for one listed unavailable.
        Nothing here raises or makes a request (the async client runs it off its event loop):
        `receive` then takes whatever did not open here through `open`, in order."""

        def attempt(index: int) -> _Attempt | None:
            delivery = page.deliveries[index]
            if delivery.unavailable is not None:
                return None
            try:
                data = page.envelope(index)
            except Exception as exc:  # raised again by `receive`, in order
                return _Attempt(None, None, exc)
            if data is None or directory is None:
                return _Attempt(data, None)
            try:
                received = self._open(directory, delivery, data)
                if self.trust.log is None or self._proven_here(received, page.proof(index), at):
                    return _Attempt(data, received)
            except Exception:  # noqa: S110 - `open` tries it again (newer keys) and raises what is wrong
                pass
            return _Attempt(data, None)

        return [attempt(i) for i in range(len(page.deliveries))]

    @staticmethod
    def _needs_directory(page: InboxPage) -> bool:
        return any(d.unavailable is None for d in page.deliveries)

    @staticmethod
    def _to_reopen(attempts: Sequence[_Attempt | None]) -> list[int]:
        """The deliveries the page alone did not open: `receive` takes them through `open`."""
        return [i for i, a in enumerate(attempts) if a is not None and a.received is None]

    @staticmethod
    def _batch(
        page: InboxPage, attempts: Sequence[_Attempt | None], reopened: dict[int, Received | Exception]
    ) -> Batch:
        received: list[Received] = []
        rejected: list[Rejected] = []
        unavailable: list[Delivery] = []
        for index, (delivery, attempt) in enumerate(zip(page.deliveries, attempts, strict=True)):
            if attempt is None:  # listed without envelope: fetching would be 410
                unavailable.append(delivery)
                continue
            result = attempt.received or reopened[index]
            if isinstance(result, Exception):
                rejected.append(Rejected(delivery, result, attempt.data))
            else:
                received.append(result)
        return Batch(page, tuple(received), tuple(rejected), tuple(unavailable))

    def _open(
        self, directory: Directory, delivery: Delivery, data: bytes, allow_expired: bool = False
    ) -> Received:
        envelope = parse(data)
        if envelope.header.item_id != delivery.item_id:
            raise ClientError(f"the broker returned another item for {delivery.item_id}")
        opened = self._open_with(directory, envelope, delivery.received_ms, allow_expired=allow_expired)
        return Received(delivery, opened, logleaf.envelope_digest(data))

    def _receipts(self, received: Iterable[Received]) -> list[str]:
        """Signed "received and verified" receipts, one per item (not a statement that anyone read it)."""
        now_ms = int(time.time() * 1000)
        return [
            canonical.b64encode(
                sign_receipt(
                    DeliveryReceipt(
                        r.opened.header.item_id,
                        r.envelope_sha256,
                        self.country,
                        r.delivery.seq,
                        r.delivery.log_index,
                        now_ms,
                    ),
                    self.keys.signing,
                )
            )
            for r in received
        ]

    def _open_with(
        self,
        directory: Directory,
        data: bytes | Envelope,
        accepted_ms: int,
        *,
        allow_expired: bool = True,
        now_ms: int | None = None,
    ) -> Opened:
        envelope = data if isinstance(data, Envelope) else parse(data)  # parsed once, then verified
        header = envelope.header
        entry = header.recipient(self.keys.country)
        key = self.keys.encryption_key(entry.key_id) if entry else self.keys.encryption
        if key is None:
            raise ClientError(f"item {header.item_id} was sealed to a key that is not in this key folder")
        opened = open_envelope(
            envelope,
            recipient=self.keys.country,
            private_key=key,
            originator_key=directory.signing_lookup(accepted_ms),
        )
        check_expiry(opened, int(time.time() * 1000) if now_ms is None else now_ms, allow_expired)
        return opened

    def _check_forward(self, received: Received) -> tuple[bytes, str, Markings]:
        """What may be passed on, and how: ORCON items only by their originator."""
        header = received.opened.header
        if ORCON in header.markings.caveats and header.originator != self.keys.country:
            raise OriginatorControlled(
                f"item {header.item_id} is ORCON: {self.keys.country} may not pass it on without {header.originator}"
            )
        return received.payload, header.content_type, header.markings

    @staticmethod
    def _receipt(data: dict[str, Any]) -> Receipt:
        seqs = {d["recipient"]: d["seq"] for d in data.get("deliveries", [])}
        return Receipt(
            data["item_id"], data["log_index"], data["received_ms"], tuple(data["recipients"]), seqs
        )

    def _delivery_proofs(
        self, directory: Directory, status: dict[str, Any], envelope: bytes
    ) -> dict[str, str]:
        """Each recipient we sealed for: "signed" (a receipt that verifies under its key in the
        members' directory and names this item and its inbox entry), "missing", or "no
        delivery" when the broker shows none at all (withheld or deleted)."""
        header = verify(envelope, self.keys.signing.public_key).header  # our own item, unaltered
        if header.item_id != status["item_id"]:
            raise ClientError(
                f"the broker answered item {status['item_id']} with item {header.item_id}'s envelope"
            )
        if header.originator != self.country:
            raise ClientError(f"item {header.item_id} was not sent by {self.country}")
        shown = {d["recipient"] for d in status["deliveries"]}
        proofs: dict[str, str] = {r: "no delivery" for r in header.recipient_countries if r not in shown}
        for d in status["deliveries"]:
            recipient, encoded = d["recipient"], d.get("receipt")
            if encoded is None:
                proofs[recipient] = "missing"
                continue
            data = canonical.b64decode(encoded, "receipt")
            receipt, key_id, _ = parse_receipt(data)
            key = directory.state.signing_key(recipient, key_id, receipt.created_ms)
            if key is None or receipt.recipient != recipient or receipt.item_id != status["item_id"]:
                raise BadReceipt(f"{recipient}'s receipt for {status['item_id']} is not one it signed for it")
            verify_receipt(data, key)
            if receipt.seq != d["seq"] or receipt.log_index != status["log_index"]:
                raise BadReceipt(
                    f"{recipient}'s receipt names inbox entry {receipt.seq}, the broker says {d['seq']}"
                )
            proofs[recipient] = "signed"
        return proofs

    @staticmethod
    def _gaps(seqs: Iterable[int]) -> list[int]:
        """Inbox numbers missing below the highest one seen: entries withheld or deleted."""
        seen = set(seqs)
        return [n for n in range(1, max(seen) + 1) if n not in seen] if seen else []

    @staticmethod
    def _page(data: dict[str, Any]) -> InboxPage:
        deliveries: list[Delivery] = []
        envelopes: list[str | None] = []
        proofs: list[tuple[str, tuple[str, ...]] | None] = []
        for d in data["deliveries"]:
            fields = dict(d)
            envelope = fields.pop("envelope", None)
            leaf, inclusion = fields.pop("leaf", None), fields.pop("inclusion", None)
            deliveries.append(Delivery(**fields))
            envelopes.append(envelope if isinstance(envelope, str) else None)  # else: fetch it
            well_formed = isinstance(leaf, str) and isinstance(inclusion, list)
            proofs.append((str(leaf), tuple(map(str, inclusion))) if well_formed else None)
        return InboxPage(tuple(deliveries), int(data["cursor"]), tuple(envelopes), tuple(proofs))

    def _proven_here(
        self,
        received: Received,
        proof: tuple[str, tuple[str, ...]] | None,
        at: Checkpoint | None,
    ) -> bool:
        """Check a delivery's entry in the log from the page's own leaf and inclusion proof
        against `at`, a checkpoint already verified; False if the page has none for it (then
        the caller asks the log itself). A proof that is there and wrong raises."""
        index = received.delivery.log_index
        if proof is None or at is None or index >= at.size:
            return False
        leaf = self._checked_received_leaf(received, {"leaf": proof[0]})
        hashes = [canonical.b64decode(h, "inclusion proof") for h in proof[1]]
        logleaf.check_inclusion(leaf, index, at, hashes)
        return True

    @classmethod
    def _stream_pages(cls, lines: Iterable[str], after: int, ended: list[str]) -> Iterator[InboxPage]:
        """The pages of an inbox event stream (docs/protocol.md section 9.4), in order; the
        `end` event's reason goes into `ended`. A page that does not continue from the cursor
        before it (a delivery at or below it) is the broker's error, raised, never skipped."""
        reader = _StreamReader(cls._page, after)
        for line in lines:
            page = reader.feed(line)
            if page is not None:
                yield page
            if reader.ended is not None:
                ended.append(reader.ended)
                return

    @staticmethod
    def _inbox_params(
        after: int, limit: int, wait: float, envelopes: bool, proofs: int | None = None
    ) -> dict[str, int | float | str]:
        params: dict[str, int | float | str] = {"after": after, "limit": limit, "wait": wait}
        if envelopes:
            params["include"] = "envelope"
        if proofs:
            params["proofs"] = proofs
        return params

    @staticmethod
    def _acks(seqs: Iterable[int]) -> list[list[int]]:
        values = list(seqs)
        return [values[i : i + MAX_ACK_SEQS] for i in range(0, len(values), MAX_ACK_SEQS)]

    @staticmethod
    def _preflight(data: dict[str, Any]) -> Preflight:
        return Preflight(tuple(data["allowed"]), dict(data["denied"]))


class Client(_ClientCore):
    """Synchronous client. Use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str,
        keys: AgencyKeys,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(base_url, keys, **options)
        self._http = httpx.Client(base_url=base_url, transport=transport, timeout=timeout)  # thread-safe
        self._ahead: _Ahead[Future[InboxPage]] | None = None  # the next page, read ahead
        self._ahead_pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        progress: Progress | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response: httpx.Response | None = None
            try:
                response = self._http.send(self._build(self._http, method, path, headers, kwargs, progress))
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise self._unreachable(exc) from exc
                self._retrying(attempt, None, exc)
            if response is not None and (not self._retryable(response) or attempt == self.retries):
                return self._raise_for_problem(response)
            if response is not None:
                self._retrying(attempt, response, None)
            time.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")

    def directory(self, *, refresh: bool = False) -> Directory:
        """The directory, verified from the pinned root before it is used for anything."""
        cached = None if refresh else self._cached_directory()
        if cached is not None:
            return cached
        served: list[tuple[int, bytes]] = []
        after = self._chain_after()
        while True:
            params = {"after": after}
            seq, digest, complete = self._chain_page(
                self._request("GET", "/v1/directory/entries", params=params).json(), served
            )
            if complete:
                return self._store_directory(seq, digest, served)
            after = served[-1][0]

    def preflight(self, markings: Markings) -> Preflight:
        """Which partners may receive an item with these markings, and why the others may not."""
        return self._preflight(
            self._request("POST", "/v1/preflight", json={"markings": markings.to_dict()}).json()
        )

    def submit(self, envelope: bytes, *, progress: Progress | None = None) -> Receipt:
        """Submit sealed envelope bytes; safe to call again with the same bytes.

        The envelope stays in the outbox until the receipt is checked; when the broker cannot
        be reached (or keeps answering 5xx/429) this raises `SubmitPending` and the outbox
        re-sends the same bytes later. When the members' root pins a log, the receipt is
        checked to be in it: the log's leaf for this item must be exactly what we sent, under
        a checkpoint consistent with every one we verified before."""
        item_id = self._keep(envelope)
        try:
            response = self._request(
                "POST",
                "/v1/items",
                content=envelope,
                headers={"Content-Type": ENVELOPE_MEDIA_TYPE},
                progress=progress,
            )
        except ClientError as exc:
            raise self._not_acknowledged(item_id, exc) from exc
        receipt = self._accepted(response)
        if receipt.log_index is not None and self.trust.log is not None:
            self.prove_included(receipt.log_index, self._sent_leaf(receipt, envelope))
        if item_id is not None:
            self.outbox.done(item_id)
        return receipt

    def resend_pending(self) -> list[Receipt]:
        """Submit every envelope still in the outbox, oldest first, with the bytes it was
        sealed with. Refused ones are moved aside (see `outbox.refused()`); raises
        `SubmitPending` when the broker still cannot be reached."""
        receipts = []
        for entry in self.outbox.pending():
            try:
                receipts.append(self.submit(entry.envelope))
            except BrokerError:
                continue  # moved aside with the broker's reason
        return receipts

    def page_checkpoint(self) -> Checkpoint:
        """What an inbox page's proofs are asked against (`inbox(proofs=...)`): the log's latest
        checkpoint, verified as `log_checkpoint` does, or an empty one (size 0: no proofs) while
        the log has none witnessed yet."""
        return self._newer_checkpoint()

    def _newer_checkpoint(self) -> Checkpoint:
        try:
            return self.log_checkpoint()
        except BrokerError as exc:
            if exc.code != "no-checkpoint":
                raise
            return Checkpoint("-", 0, bytes(32))  # none witnessed yet: wait like for a short one

    def log_checkpoint(self) -> Checkpoint:
        """The log's latest checkpoint, verified against the pinned log key and consistent
        with the last one this agency accepted (which it then replaces on disk)."""
        data = self._request("GET", "/v1/log/checkpoint", params=self._checkpoint_params()).json()
        sizes = self._needs_consistency(data)
        proof = None
        if sizes is not None:
            params = {"first": sizes[0], "second": sizes[1]}
            proof = self._request("GET", "/v1/log/proof/consistency", params=params).json()["proof"]
        return self._accept_checkpoint(data, proof)

    def prove_included(self, index: int, leaf: bytes) -> Checkpoint:
        """Check that `leaf` is entry `index` of the log, under a verified (and, when the root
        asks for it, witnessed) checkpoint; wait a little for the witnesses to catch up."""
        checkpoint = self.trust.checkpoint()
        delays = iter(WITNESS_WAITS)
        while checkpoint is None or index >= checkpoint.size:
            checkpoint = self._newer_checkpoint()
            if index < checkpoint.size:
                break
            time.sleep(self._not_yet_witnessed(index, checkpoint, next(delays, None)))
        params = {"index": index, "size": checkpoint.size}
        proof = self._request("GET", "/v1/log/proof/inclusion", params=params).json()["proof"]
        logleaf.check_inclusion(leaf, index, checkpoint, [canonical.b64decode(p, "proof") for p in proof])
        return checkpoint

    def send(
        self,
        payload: bytes,
        *,
        content_type: str,
        markings: Markings,
        recipients: Iterable[str] | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> Receipt:
        """Seal for `recipients` (default: every partner preflight allows) and submit.

        With explicit recipients, preflight runs first so a refusal is reported before sealing.
        """
        directory = self.directory(refresh=True)
        targets = self._recipients(directory, markings, self.preflight(markings), recipients)
        envelope = self._seal(directory, payload, content_type, markings, targets, options)
        return self.submit(envelope, progress=progress)

    def recipients_for(self, markings: Markings, recipients: Iterable[str] | None = None) -> set[str]:
        """Who `send` would seal for, without sealing: the members' verified directory and our
        policy copy decide, the broker's preflight only narrows (a named recipient it refuses
        raises PolicyRefused)."""
        return self._recipients(self.directory(), markings, self.preflight(markings), recipients)

    def forward(self, received: Received, recipients: Iterable[str]) -> Receipt:
        """Pass a received item on as a new item (in reply to it), under its original markings.

        Refused for ORCON items unless this agency is their originator.
        """
        payload, content_type, markings = self._check_forward(received)
        return self.send(
            payload,
            content_type=content_type,
            markings=markings,
            recipients=recipients,
            in_reply_to=received.opened.header.item_id,
        )

    def inbox(
        self,
        after: int = 0,
        *,
        limit: int = 100,
        wait: float = 0,
        envelopes: bool = False,
        proofs: int | None = None,
    ) -> InboxPage:
        """Deliveries after the cursor; with `envelopes`, each with its (unverified) envelope
        bytes, in a page the broker caps in bytes: go on from `cursor`. With `proofs` (a log
        size), each delivery in that tree also carries its leaf and inclusion proof."""
        params = self._inbox_params(after, limit, wait, envelopes, proofs)
        return self._page(self._request("GET", "/v1/inbox", params=params, timeout=wait + 30).json())

    def stream(self, after: int = 0, *, max_s: float | None = None) -> Iterator[InboxPage]:
        """Deliveries after the cursor as the broker pushes them (GET /v1/inbox/stream): a page
        per event, in order, each as soon as its items are logged; no request per wake-up. Ends
        when the broker ends the stream (after `max_s` or its own limit, at its shutdown, or when
        this agency's API key is no longer in force: `last_stream_end` says which); go on with
        another call from the last page's cursor. Pages are the broker's word like `inbox()`'s:
        `open()` or `receive()` verifies each delivery."""
        params: dict[str, float] = {"after": after} if max_s is None else {"after": after, "max": max_s}
        request = self._build(self._http, "GET", "/v1/inbox/stream", None, {"params": params}, None)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        ended: list[str] = []
        try:
            if response.status_code != 200:
                response.read()
                self._raise_for_problem(response)
            yield from self._stream_pages(response.iter_lines(), after, ended)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        finally:
            response.close()
            self.last_stream_end = ended[0] if ended else "connection-closed"

    def fetch(self, item_id: str) -> bytes:
        return self._request("GET", f"/v1/items/{item_id}").content

    def open(
        self,
        delivery: Delivery,
        *,
        data: bytes | None = None,
        proof: tuple[str, tuple[str, ...]] | None = None,
        at: Checkpoint | None = None,
        allow_expired: bool = False,
    ) -> Received:
        """Verify (signature against the directory, entry in the log) and decrypt one delivery:
        `data` from an inbox page, else fetched; its log entry from the page's `proof` against
        the verified checkpoint `at`, else asked of the log. Either way the bytes are the
        broker's word, checked in full. A delivery the broker lists as expired or purged raises
        `ItemUnavailable` (nothing is fetched); an item past its header's `expires_ms` raises
        `ItemExpired` unless `allow_expired`."""
        if delivery.unavailable is not None:
            raise ItemUnavailable(unavailable_reason(delivery))
        if data is None:
            data = self.fetch(delivery.item_id)
        try:
            received = self._open(self.directory(), delivery, data, allow_expired)
        except EnvelopeError:  # a key may be newer
            received = self._open(self.directory(refresh=True), delivery, data, allow_expired)
        if self.trust.log is not None and not self._proven_here(received, proof, at):
            leaf = self._request("GET", f"/v1/log/leaves/{delivery.log_index}").json()
            self.prove_included(delivery.log_index, self._checked_received_leaf(received, leaf))
        return received

    def receive(
        self, after: int = 0, *, limit: int = 100, wait: float = 0, read_ahead: bool = False
    ) -> Batch:
        """One inbox page with its envelopes (one request), each delivery verified and
        decrypted from the page's bytes exactly as `open` does. A delivery that cannot be
        opened (`rejects_delivery`) is in `rejected`; any other error raises. Then `confirm`
        the received ones and go on from `cursor`.

        `read_ahead` (a consumer draining its inbox page after page): while this page is
        verified, the next one (after its cursor, the same `limit`) is fetched in the
        background, and the next `receive` from that cursor takes it instead of asking again:
        the broker's work overlaps ours. What it takes is checked exactly as a page asked for
        then; a page fetched ahead that is not taken is dropped."""
        page, at = self._ahead_or_fetch(after, limit, wait)
        if read_ahead and page.deliveries:
            self._read_ahead(page.cursor, limit)
        attempts = self._attempts(self.directory() if self._needs_directory(page) else None, page, at)
        reopened: dict[int, Received | Exception] = {}
        for index in self._to_reopen(attempts):  # one by one, in order, as `open` does it
            attempt = attempts[index]
            assert attempt is not None
            try:
                if attempt.undecodable is not None:
                    raise attempt.undecodable
                reopened[index] = self.open(
                    page.deliveries[index], data=attempt.data, proof=page.proof(index), at=at
                )
            except Exception as exc:
                if not rejects_delivery(exc):
                    raise
                reopened[index] = exc
        return self._batch(page, attempts, reopened)

    def _ahead_or_fetch(self, after: int, limit: int, wait: float) -> tuple[InboxPage, Checkpoint | None]:
        """The page after `after`: the one read ahead for it if there is one (and it is not an
        empty page where the caller would wait), else asked now, each with the checkpoint its
        proofs are against."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and (ahead.after, ahead.limit) == (after, limit):
            try:
                page = ahead.page.result()
                if page.deliveries or not wait:
                    return page, ahead.at
            except Exception:  # noqa: S110 - asked again below, which raises what is wrong
                pass
        at = self._newer_checkpoint() if self.trust.log is not None else None  # one for the page
        return self.inbox(after, limit=limit, wait=wait, envelopes=True, proofs=at.size if at else None), at

    def _read_ahead(self, after: int, limit: int) -> None:
        at = self._newer_checkpoint() if self.trust.log is not None else None  # here, not in the thread
        if self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(1, thread_name_prefix="msmt-read-ahead")
        future = self._ahead_pool.submit(
            self.inbox, after, limit=limit, envelopes=True, proofs=at.size if at else None
        )
        self._ahead = _Ahead(after, limit, at, future)

    def open_bytes(self, data: bytes, *, accepted_ms: int, allow_expired: bool = False) -> Opened:
        """Verify and decrypt envelope bytes, with signing keys as they stood at `accepted_ms`;
        an item past its `expires_ms` raises `ItemExpired` unless `allow_expired`."""
        return self._open_with(self.directory(), data, accepted_ms, allow_expired=allow_expired)

    def acknowledge(self, seqs: Iterable[int]) -> list[int]:
        acknowledged: list[int] = []
        for chunk in self._acks(seqs):
            acknowledged += self._request("POST", "/v1/inbox/ack", json={"seqs": chunk}).json()[
                "acknowledged"
            ]
        return acknowledged

    def confirm(self, received: Iterable[Received], *, unavailable: Iterable[Delivery] = ()) -> list[int]:
        """Send a signed delivery receipt for each verified item, then acknowledge them (a page
        of up to 100: one receipts request, one acknowledgement), with the `unavailable`
        deliveries (expired or purged: no receipt, they were never opened)."""
        items = list(received)
        gone = [d.seq for d in unavailable]
        if not items and not gone:
            return []
        for receipts in _receipt_requests(self._receipts(items)):
            self._request("POST", "/v1/inbox/receipts", json={"receipts": receipts})
        return self.acknowledge([*(r.delivery.seq for r in items), *gone])

    def status(self, item_id: str) -> dict[str, Any]:
        """Delivery state of an item this agency sent: its full id, or a unique prefix of it
        (8 hex digits at least) among this agency's own items; `item_id` in the answer is full."""
        result: dict[str, Any] = self._resolved(
            item_id, self._request("GET", self._status_path(item_id)).json()
        )
        return result

    def delivery_proofs(self, item_id: str) -> dict[str, str]:
        """Per recipient: "signed" when its verified delivery receipt is there, else "missing"."""
        return self._delivery_proofs(self.directory(), self.status(item_id), self.fetch(item_id))

    def inbox_gaps(self, entries: Iterable[tuple[int, int]] | None = None) -> list[int]:
        """Walk the whole inbox (or take `entries`, from `inbox_entries`): the entry numbers
        missing below the highest one."""
        return self._gaps(seq for seq, _ in (self.inbox_entries() if entries is None else entries))

    def inbox_entries(self) -> list[tuple[int, int]]:
        """Walk the whole inbox: (inbox number, log index) of every entry the broker lists."""
        entries: list[tuple[int, int]] = []
        after = 0
        while True:
            page = self.inbox(after, limit=1000)
            entries.extend((d.seq, d.log_index) for d in page.deliveries)
            if not page.deliveries:
                return entries
            after = page.cursor

    def _inboxes_links(self, checkpoint: Checkpoint, after: int, *, own: bool) -> list[logleaf.InboxesLink]:
        """The chain of inboxes leaves above `after` under `checkpoint`, newest first, as the
        broker serves it (checked by the caller), with our own openings when `own`."""
        links: list[logleaf.InboxesLink] = []
        params: dict[str, int] = {"size": checkpoint.size, "after": after, "limit": INBOXES_PAGE}
        while True:
            data = self._request("GET", "/v1/log/inboxes", params=params).json()
            for leaf in data["leaves"]:
                opening = leaf["own"] if own else None
                links.append(
                    logleaf.InboxesLink(
                        int(leaf["log_index"]),
                        canonical.b64decode(leaf["leaf"], "inboxes leaf"),
                        [canonical.b64decode(h, "inclusion proof") for h in leaf["inclusion"]],
                        None
                        if opening is None
                        else (int(opening["size"]), canonical.b64decode(opening["salt"], "salt")),
                    )
                )
            following = data["next"]
            if (
                following is None
                or not data["leaves"]
                or int(following) >= params.get("before", checkpoint.size)
            ):
                return links
            params["before"] = int(following)

    def inbox_tail(self, entries: Iterable[tuple[int, int]] | None = None) -> list[str]:
        """Check that this agency's inbox is complete at its end (docs/protocol.md 14.8): every
        inboxes leaf since the one verified last time is in the log, chained, commits to our
        inbox without ever shrinking, and the newest one's size is reached by the inbox as the
        broker lists it. Returns the findings (none: the state is kept for next time).

        `entries` (from `inbox_entries`) must have been listed after the checkpoint this
        agency holds was accepted; without them, a newer checkpoint is accepted and the inbox
        walked here. Nothing to check without a pinned log or a witnessed checkpoint."""
        if self.trust.log is None:
            return []
        if entries is None or self.trust.checkpoint() is None:
            try:
                self.log_checkpoint()
            except BrokerError as exc:
                if exc.code != "no-checkpoint":
                    raise
                return []
            entries = self.inbox_entries()
        checkpoint = self.trust.checkpoint()
        assert checkpoint is not None
        since = self.trust.inbox_tail()
        try:
            links = self._inboxes_links(checkpoint, -1 if since is None else since[0], own=True)
        except (BrokerError, MsmtError, KeyError, TypeError, ValueError) as exc:
            return [f"the broker did not serve the chain of inboxes leaves ({_cause(exc)})"]
        chain = logleaf.check_inboxes_chain(
            self.country, links, checkpoint, since, max_commitments=len(self.directory().members)
        )
        findings = list(chain.findings)
        if not findings:
            findings = logleaf.inbox_end_findings(chain.size, entries, checkpoint.size)
        if not findings and chain.index is not None:
            self.trust.save_inbox_tail(chain.index, chain.size)
        return findings

    def sent_inboxes(self, statuses: Iterable[dict[str, Any]]) -> list[str]:
        """The originator's check (docs/protocol.md 14.8) for items it sent, from their status:
        the inboxes leaf that closed each item's batch is on the chain under the checkpoint
        this agency holds, and commits each recipient's inbox to at least the entry the item
        got. Items not yet under that checkpoint are left for a later audit."""
        checkpoint = self.trust.checkpoint()
        if self.trust.log is None or checkpoint is None:
            return []
        found: list[tuple[str, dict[str, Any]]] = []
        findings: list[str] = []
        for status in statuses:
            index = status.get("log_index")
            if index is None or index >= checkpoint.size:
                continue
            try:
                data = self._request("GET", f"/v1/items/{status['item_id']}/inboxes").json()
            except BrokerError as exc:
                findings.append(f"{status['item_id']}: the broker shows no inboxes leaf after it ({exc})")
                continue
            if int(data["inboxes_index"]) < checkpoint.size:
                found.append((status["item_id"], data))
        if not found:
            return findings
        floor = min(int(data["inboxes_index"]) for _, data in found) - 1
        try:
            links = self._inboxes_links(checkpoint, floor, own=False)
        except (BrokerError, MsmtError, KeyError, TypeError, ValueError) as exc:
            return [*findings, f"the broker did not serve the chain of inboxes leaves ({_cause(exc)})"]
        chain = logleaf.check_inboxes_chain(None, links, checkpoint, None, floor=floor)
        findings.extend(chain.findings)
        by_id = {str(s["item_id"]): s for s in statuses}
        for item_id, data in found:
            index = int(data["inboxes_index"])
            served = canonical.b64decode(data["leaf"], "inboxes leaf")
            leaf = chain.leaves.get(index)
            try:
                on_chain = leaf is not None and logleaf.parse_inboxes_leaf(served) == leaf
            except LeafMismatch:
                on_chain = False
            if leaf is None or not on_chain:
                findings.append(
                    f"{item_id}: the inboxes leaf {index} the broker names is not on the log's chain"
                )
                continue
            status = by_id[item_id]
            # the inbox numbers the log gave the item, not the ones the status answer claims: its
            # leaf, proven under our checkpoint, describing the envelope we sent
            try:
                seqs = self._logged_seqs(item_id, int(status["log_index"]), checkpoint)
            except (BrokerError, MsmtError, KeyError, TypeError, ValueError) as exc:
                findings.append(f"{item_id}: its log entry does not hold up ({_cause(exc)})")
                continue
            openings = {
                r["recipient"]: (int(r["size"]), canonical.b64decode(r["salt"], "salt"))
                for r in data["recipients"]
            }
            findings.extend(
                f"{item_id}: {f}"
                for f in logleaf.check_item_inboxes(leaf, index, int(status["log_index"]), seqs, openings)
            )
        return findings

    def _logged_seqs(self, item_id: str, index: int, checkpoint: Checkpoint) -> dict[str, int]:
        """Each recipient's inbox number for an item this agency sent, from the item's leaf at
        `index`: included under `checkpoint`, and describing exactly the envelope we sent."""
        leaf = canonical.b64decode(self._request("GET", f"/v1/log/leaves/{index}").json()["leaf"], "leaf")
        proof = self._request(
            "GET", "/v1/log/proof/inclusion", params={"index": index, "size": checkpoint.size}
        )
        logleaf.check_inclusion(
            leaf, index, checkpoint, [canonical.b64decode(h, "proof") for h in proof.json()["proof"]]
        )
        envelope = self.fetch(item_id)
        parsed = parse(envelope)
        verify(parsed, self.keys.signing.public_key)  # ours: the broker cannot have made it
        header = parsed.header
        logleaf.check_item_leaf(
            leaf,
            item_id=item_id,
            envelope=envelope,
            originator=self.country,
            recipients=header.recipient_countries,
            own=None,
        )
        return dict(logleaf.parse_item_leaf(leaf)[3])

    # --- governance: statements about members and keys, signed by members --------------------

    def propose(self, entry: bytes) -> dict[str, Any]:
        """Post a directory statement with the signatures it has (applied when they suffice)."""
        response = self._request(
            "POST", "/v1/governance/proposals", json={"entry": canonical.b64encode(entry)}
        )
        result: dict[str, Any] = response.json()
        return result

    def proposals(self, status: str = "pending") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request(
            "GET", "/v1/governance/proposals", params={"status": status}
        ).json()
        return result

    def proposal(self, pid: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/governance/proposals/{pid}").json()
        return result

    def add_signature(self, pid: str, signature: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/v1/governance/proposals/{pid}/signatures", json=signature
        ).json()
        return result

    def explain(self, recipient: str, markings: Markings) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", "/v1/preflight/explain", json={"recipient": recipient, "markings": markings.to_dict()}
        ).json()
        return result


class AsyncClient(_ClientCore):
    """Asynchronous client with the same methods as `Client`, as coroutines."""

    def __init__(
        self,
        base_url: str,
        keys: AgencyKeys,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(base_url, keys, **options)
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)
        self._ahead: _Ahead[asyncio.Future[InboxPage]] | None = None  # the next page, read ahead

    async def aclose(self) -> None:
        if self._ahead is not None:
            self._ahead.page.cancel()
            self._ahead = None
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        progress: Progress | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response: httpx.Response | None = None
            try:
                response = await self._http.send(
                    self._build(self._http, method, path, headers, kwargs, progress)
                )
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise self._unreachable(exc) from exc
                self._retrying(attempt, None, exc)
            if response is not None and (not self._retryable(response) or attempt == self.retries):
                return self._raise_for_problem(response)
            if response is not None:
                self._retrying(attempt, response, None)
            await asyncio.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")

    async def directory(self, *, refresh: bool = False) -> Directory:
        cached = None if refresh else self._cached_directory()
        if cached is not None:
            return cached
        served: list[tuple[int, bytes]] = []
        after = self._chain_after()
        while True:
            response = await self._request("GET", "/v1/directory/entries", params={"after": after})
            seq, digest, complete = self._chain_page(response.json(), served)
            if complete:
                return self._store_directory(seq, digest, served)
            after = served[-1][0]

    async def preflight(self, markings: Markings) -> Preflight:
        response = await self._request("POST", "/v1/preflight", json={"markings": markings.to_dict()})
        return self._preflight(response.json())

    async def submit(self, envelope: bytes, *, progress: Progress | None = None) -> Receipt:
        item_id = self._keep(envelope)
        try:
            response = await self._request(
                "POST",
                "/v1/items",
                content=envelope,
                headers={"Content-Type": ENVELOPE_MEDIA_TYPE},
                progress=progress,
            )
        except ClientError as exc:
            raise self._not_acknowledged(item_id, exc) from exc
        receipt = self._accepted(response)
        if receipt.log_index is not None and self.trust.log is not None:
            await self.prove_included(receipt.log_index, self._sent_leaf(receipt, envelope))
        if item_id is not None:
            self.outbox.done(item_id)
        return receipt

    async def resend_pending(self) -> list[Receipt]:
        receipts = []
        for entry in self.outbox.pending():
            try:
                receipts.append(await self.submit(entry.envelope))
            except BrokerError:
                continue
        return receipts

    async def log_checkpoint(self) -> Checkpoint:
        data = (await self._request("GET", "/v1/log/checkpoint", params=self._checkpoint_params())).json()
        sizes = self._needs_consistency(data)
        proof = None
        if sizes is not None:
            params = {"first": sizes[0], "second": sizes[1]}
            proof = (await self._request("GET", "/v1/log/proof/consistency", params=params)).json()["proof"]
        return self._accept_checkpoint(data, proof)

    async def page_checkpoint(self) -> Checkpoint:
        return await self._newer_checkpoint()

    async def _newer_checkpoint(self) -> Checkpoint:
        try:
            return await self.log_checkpoint()
        except BrokerError as exc:
            if exc.code != "no-checkpoint":
                raise
            return Checkpoint("-", 0, bytes(32))

    async def prove_included(self, index: int, leaf: bytes) -> Checkpoint:
        checkpoint = self.trust.checkpoint()
        delays = iter(WITNESS_WAITS)
        while checkpoint is None or index >= checkpoint.size:
            checkpoint = await self._newer_checkpoint()
            if index < checkpoint.size:
                break
            await asyncio.sleep(self._not_yet_witnessed(index, checkpoint, next(delays, None)))
        params = {"index": index, "size": checkpoint.size}
        proof = (await self._request("GET", "/v1/log/proof/inclusion", params=params)).json()["proof"]
        logleaf.check_inclusion(leaf, index, checkpoint, [canonical.b64decode(p, "proof") for p in proof])
        return checkpoint

    async def send(
        self,
        payload: bytes,
        *,
        content_type: str,
        markings: Markings,
        recipients: Iterable[str] | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> Receipt:
        directory = await self.directory(refresh=True)
        targets = self._recipients(directory, markings, await self.preflight(markings), recipients)
        envelope = self._seal(directory, payload, content_type, markings, targets, options)
        return await self.submit(envelope, progress=progress)

    async def forward(self, received: Received, recipients: Iterable[str]) -> Receipt:
        payload, content_type, markings = self._check_forward(received)
        return await self.send(
            payload,
            content_type=content_type,
            markings=markings,
            recipients=recipients,
            in_reply_to=received.opened.header.item_id,
        )

    async def inbox(
        self,
        after: int = 0,
        *,
        limit: int = 100,
        wait: float = 0,
        envelopes: bool = False,
        proofs: int | None = None,
    ) -> InboxPage:
        params = self._inbox_params(after, limit, wait, envelopes, proofs)
        response = await self._request("GET", "/v1/inbox", params=params, timeout=wait + 30)
        return self._page(response.json())

    async def stream(self, after: int = 0, *, max_s: float | None = None) -> AsyncIterator[InboxPage]:
        """`Client.stream` as an async iterator: the pages the broker pushes on
        GET /v1/inbox/stream, in order, until it ends the stream (`last_stream_end` says why)."""
        params: dict[str, float] = {"after": after} if max_s is None else {"after": after, "max": max_s}
        request = self._build(self._http, "GET", "/v1/inbox/stream", None, {"params": params}, None)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        reader = _StreamReader(self._page, after)
        try:
            if response.status_code != 200:
                await response.aread()
                self._raise_for_problem(response)
            async for line in response.aiter_lines():
                page = reader.feed(line)
                if page is not None:
                    yield page
                if reader.ended is not None:
                    return
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        finally:
            await response.aclose()
            self.last_stream_end = reader.ended if reader.ended is not None else "connection-closed"

    async def fetch(self, item_id: str) -> bytes:
        return (await self._request("GET", f"/v1/items/{item_id}")).content

    async def open(
        self,
        delivery: Delivery,
        *,
        data: bytes | None = None,
        proof: tuple[str, tuple[str, ...]] | None = None,
        at: Checkpoint | None = None,
        allow_expired: bool = False,
    ) -> Received:
        if delivery.unavailable is not None:
            raise ItemUnavailable(unavailable_reason(delivery))
        if data is None:
            data = await self.fetch(delivery.item_id)
        try:
            received = self._open(await self.directory(), delivery, data, allow_expired)
        except EnvelopeError:
            received = self._open(await self.directory(refresh=True), delivery, data, allow_expired)
        if self.trust.log is not None and not self._proven_here(received, proof, at):
            leaf = (await self._request("GET", f"/v1/log/leaves/{delivery.log_index}")).json()
            await self.prove_included(delivery.log_index, self._checked_received_leaf(received, leaf))
        return received

    async def receive(
        self, after: int = 0, *, limit: int = 100, wait: float = 0, read_ahead: bool = False
    ) -> Batch:
        page, at = await self._ahead_or_fetch(after, limit, wait)
        if read_ahead and page.deliveries:
            await self._read_ahead(page.cursor, limit)
        directory = await self.directory() if self._needs_directory(page) else None
        # off the event loop: verifying a page of 200 takes a few hundred milliseconds
        attempts = await asyncio.to_thread(self._attempts, directory, page, at)
        reopened: dict[int, Received | Exception] = {}
        for index in self._to_reopen(attempts):
            attempt = attempts[index]
            assert attempt is not None
            try:
                if attempt.undecodable is not None:
                    raise attempt.undecodable
                reopened[index] = await self.open(
                    page.deliveries[index], data=attempt.data, proof=page.proof(index), at=at
                )
            except Exception as exc:
                if not rejects_delivery(exc):
                    raise
                reopened[index] = exc
        return self._batch(page, attempts, reopened)

    async def _ahead_or_fetch(
        self, after: int, limit: int, wait: float
    ) -> tuple[InboxPage, Checkpoint | None]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and (ahead.after, ahead.limit) == (after, limit):
            try:
                page = await ahead.page
                if page.deliveries or not wait:
                    return page, ahead.at
            except Exception:  # noqa: S110 - asked again below, which raises what is wrong
                pass
        elif ahead is not None:
            ahead.page.cancel()
        at = await self._newer_checkpoint() if self.trust.log is not None else None
        page = await self.inbox(after, limit=limit, wait=wait, envelopes=True, proofs=at.size if at else None)
        return page, at

    async def _read_ahead(self, after: int, limit: int) -> None:
        at = await self._newer_checkpoint() if self.trust.log is not None else None
        task = asyncio.ensure_future(
            self.inbox(after, limit=limit, envelopes=True, proofs=at.size if at else None)
        )
        self._ahead = _Ahead(after, limit, at, task)

    async def open_bytes(self, data: bytes, *, accepted_ms: int, allow_expired: bool = False) -> Opened:
        return self._open_with(await self.directory(), data, accepted_ms, allow_expired=allow_expired)

    async def acknowledge(self, seqs: Iterable[int]) -> list[int]:
        acknowledged: list[int] = []
        for chunk in self._acks(seqs):
            response = await self._request("POST", "/v1/inbox/ack", json={"seqs": chunk})
            acknowledged += response.json()["acknowledged"]
        return acknowledged

    async def confirm(
        self, received: Iterable[Received], *, unavailable: Iterable[Delivery] = ()
    ) -> list[int]:
        items = list(received)
        gone = [d.seq for d in unavailable]
        if not items and not gone:
            return []
        for receipts in _receipt_requests(self._receipts(items)):
            await self._request("POST", "/v1/inbox/receipts", json={"receipts": receipts})
        return await self.acknowledge([*(r.delivery.seq for r in items), *gone])

    async def status(self, item_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._resolved(
            item_id, (await self._request("GET", self._status_path(item_id))).json()
        )
        return result

    async def explain(self, recipient: str, markings: Markings) -> dict[str, Any]:
        response = await self._request(
            "POST", "/v1/preflight/explain", json={"recipient": recipient, "markings": markings.to_dict()}
        )
        result: dict[str, Any] = response.json()
        return result

    async def propose(self, entry: bytes) -> dict[str, Any]:
        response = await self._request(
            "POST", "/v1/governance/proposals", json={"entry": canonical.b64encode(entry)}
        )
        result: dict[str, Any] = response.json()
        return result

    async def proposals(self, status: str = "pending") -> list[dict[str, Any]]:
        response = await self._request("GET", "/v1/governance/proposals", params={"status": status})
        result: list[dict[str, Any]] = response.json()
        return result

    async def proposal(self, pid: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self._request("GET", f"/v1/governance/proposals/{pid}")).json()
        return result

    async def add_signature(self, pid: str, signature: dict[str, str]) -> dict[str, Any]:
        response = await self._request("POST", f"/v1/governance/proposals/{pid}/signatures", json=signature)
        result: dict[str, Any] = response.json()
        return result


def _b64_lines(proof: list[bytes]) -> bytes:
    return "\n".join(base64.b64encode(h).decode() for h in proof).encode()
