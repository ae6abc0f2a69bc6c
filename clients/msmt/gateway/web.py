"""The gateway's web inbox for analysts (`/inbox/`, next to the TAXII 2.1 routes).

Server-rendered pages (Jinja2, autoescaped), one stylesheet and one small script of ours, no
framework, nothing fetched from anywhere but the gateway:

- a login form for the configuration's `[users]` (API tokens are for TAXII consumers only);
- the list of received items: originator, TLP badge (TLP 2.0 colours), classification, topics,
  times; filters (originator, TLP, topic, content type), a search over the verified headers,
  the STIX objects and the text of Markdown/plain-text reports (SQL LIKE, wildcards escaped),
  pages of 50;
- an item: the classification banner top and bottom, its verified provenance, the payload
  (Markdown rendered with raw HTML disabled, then sanitised with nh3; STIX as a table of its
  objects; anything else as a download, never inline), the thread it belongs to, and a
  "withdrawn by its originator" banner when it was;
- a send form for the writers of a `[send.NAME]` profile: a STIX bundle or a Markdown report,
  checked live (`/inbox/send/preflight`: the checks a TAXII POST runs before sealing, and the
  recipients the sender would seal for), then sent through the same `Sender` as a TAXII POST.

Sessions live in this process's memory: the cookie holds a random session id and its
HMAC-SHA256 under a key drawn when the process starts, so a restart logs everyone out and no
session secret is ever written down (the database holds plaintext already; it need not hold
login keys too). A session ends after `idle_s` without a request, `max_age_s` after login, or
at logout. The cookie is HttpOnly, SameSite=Strict, Path=/inbox, and Secure when the request
came over https (uvicorn's proxy headers). Every POST form carries the session's CSRF token
(the login form a signed token matched by a short-lived cookie), the preflight call carries it
in a header, and a POST whose `Sec-Fetch-Site` is not same-origin is refused. Failed logins are
counted per user and per client address in memory: past the limit, further attempts are
refused for the rest of the window without checking the password.

Every response carries a strict Content-Security-Policy (`CSP`), `X-Content-Type-Options:
nosniff`, `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`; pages carry
`Cache-Control: no-store` (decrypted content must not sit in caches), the static files
`no-cache`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import nh3
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markupsafe import Markup
from sqlalchemy import Select, String, cast, func, or_, select
from sqlalchemy.sql.elements import ColumnElement
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.errors import MsmtError
from ..core.markings import TLP_LEVELS, TOPIC_RE, TOPICS, Markings
from ..errors import BrokerError, BrokerUnavailable, PolicyRefused
from . import stix
from .config import BUNDLE_TLP, Credentials, SendProfile
from .send import BadSubmission, Prepared, Sender, prepare
from .store import WITHDRAWAL_MEDIA_TYPE, Item, StixObject, Store, Submission, Withdrawn

log = logging.getLogger("msmt.gateway.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
SESSION_COOKIE = "msmt_inbox"
LOGIN_COOKIE = "msmt_inbox_login"
PAGE_SIZE = 50
MAX_SEND_BYTES = 10 * 1024 * 1024  # as a TAXII POST
MAX_FORM_BYTES = MAX_SEND_BYTES + 64 * 1024  # the payload, the other fields and multipart framing
MAX_LOGIN_BYTES = 8 * 1024
MAX_RENDERED = 2 * 1024 * 1024  # a larger Markdown or text report is offered as a download
MAX_TABLE = 1000  # STIX objects listed on an item page
MAX_QUERY = 200
MARKDOWN_TYPES = ("text/markdown", "text/x-markdown")
TEXT_TYPES = ("text/plain",)
# the classification ladder most coalitions use, loosest first; an unknown name ranks above all
CLASSIFICATION_ORDER = ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP_SECRET")
ITEM_ID_RE = re.compile(r"^[0-9a-f-]{1,64}$")
STATUS_ID_RE = re.compile(r"^[0-9a-f-]{1,36}$")
COUNTRY_RE = re.compile(r"^[A-Z0-9_]{1,16}$")
EXTENSIONS = {
    "text/markdown": ".md",
    "text/plain": ".txt",
    "application/stix+json": ".stix.json",
    "application/json": ".json",
    WITHDRAWAL_MEDIA_TYPE: ".json",
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "text/csv": ".csv",
}


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def when(ms: int | None) -> str:
    if ms is None:
        return ""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def classification_rank(name: str) -> int:
    return CLASSIFICATION_ORDER.index(name) if name in CLASSIFICATION_ORDER else len(CLASSIFICATION_ORDER)


def classification_class(name: str) -> str:
    """The CSS class of a classification's banner colour."""
    return "cls-" + (name.lower().replace("_", "-") if name in CLASSIFICATION_ORDER else "other")


def tlp_class(level: str) -> str:
    return "tlp-" + (level.lower().replace("+", "-") if level in TLP_LEVELS else "unknown")


# --- Markdown, rendered safely -------------------------------------------------------------


def _image(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    """No image is ever loaded from a report: its alt text and address, as text."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    src = str(token.attrGet("src") or "")
    return (
        f'<span class="blocked-image">[image not loaded: {escapeHtml(alt or "no description")}'
        f" &lt;{escapeHtml(src[:300])}&gt;]</span>"
    )


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)
_MARKDOWN.add_render_rule("image", _image)
_ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "span",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}


def render_markdown(text: str) -> Markup:
    """A Markdown report as HTML that can do nothing: markdown-it with raw HTML disabled (and
    its own check of link schemes), then nh3 (ammonia) keeping only plain formatting tags,
    http(s)/mailto links with rel="noopener noreferrer", no style, no images."""
    html = _MARKDOWN.render(text)
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href", "title"}, "ol": {"start"}},
        allowed_classes={"span": {"blocked-image"}, "code": {f"language-{n}" for n in ("json", "text")}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return Markup(clean)  # noqa: S704 - sanitised just above


# --- sessions, CSRF and login throttling -----------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class Session:
    sid: str
    user: str
    csrf: str
    created: float
    seen: float


class Sessions:
    """Sessions in this process's memory; the cookie is `<id>.<HMAC-SHA256(key, id)>` under a
    key drawn at start-up (a restart logs everyone out)."""

    def __init__(self, *, idle_s: float = 1800, max_age_s: float = 10 * 3600, limit: int = 10_000) -> None:
        self.key = secrets.token_bytes(32)
        self.idle_s, self.max_age_s, self.limit = idle_s, max_age_s, limit
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self.key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest())

    def create(self, user: str, now: float | None = None) -> tuple[Session, str]:
        now = time.time() if now is None else now
        with self._lock:
            self._prune(now)
            if len(self._sessions) >= self.limit:  # the oldest goes
                oldest = min(self._sessions.values(), key=lambda s: s.seen)
                del self._sessions[oldest.sid]
            sid = secrets.token_urlsafe(32)
            session = Session(sid, user, secrets.token_urlsafe(32), now, now)
            self._sessions[sid] = session
        return session, f"{sid}.{self._mac('session', sid)}"

    def get(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or len(cookie) > 200:
            return None
        sid, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", sid).encode()):
            return None
        now = time.time() if now is None else now
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle_s or now - session.created > self.max_age_s:
                del self._sessions[sid]
                return None
            session.seen = now
            return session

    def drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.sid, None)

    def _prune(self, now: float) -> None:
        for sid, s in list(self._sessions.items()):
            if now - s.seen > self.idle_s or now - s.created > self.max_age_s:
                del self._sessions[sid]

    # the login form's CSRF token: random, signed, matched by a cookie of the same value
    def login_token(self, now: float | None = None) -> str:
        stamp = str(int(time.time() if now is None else now))
        nonce = secrets.token_urlsafe(16)
        return f"{stamp}.{nonce}.{self._mac('login', stamp + '.' + nonce)}"

    def check_login_token(self, form: str, cookie: str | None, now: float | None = None) -> bool:
        if not form or not cookie or not hmac.compare_digest(form.encode(), cookie.encode()):
            return False
        stamp, _, rest = form.partition(".")
        nonce, _, mac = rest.partition(".")
        if not stamp.isdigit() or not hmac.compare_digest(
            mac.encode(), self._mac("login", f"{stamp}.{nonce}").encode()
        ):
            return False
        now = time.time() if now is None else now
        return 0 <= now - int(stamp) <= 3600


@dataclass
class Throttle:
    """Failed logins per user name and per client address, in a sliding window."""

    per_user: int = 5
    per_address: int = 20
    window_s: float = 900
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def wait(self, user: str, address: str, now: float | None = None) -> float:
        """Seconds until another attempt is allowed (0: now)."""
        now = time.time() if now is None else now
        with self._lock:
            waits = [0.0]
            for key, limit in ((f"user:{user.lower()}", self.per_user), (f"ip:{address}", self.per_address)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append(self.window_s - (now - times[-limit]))
            return max(waits)

    def failed(self, user: str, address: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of names: forget the quiet ones
                for key in [k for k, v in self._failures.items() if not v or now - v[-1] > self.window_s]:
                    del self._failures[key]
            for key in (f"user:{user.lower()}", f"ip:{address}"):
                self._failures.setdefault(key, deque(maxlen=1000)).append(now)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{user.lower()}", None)


# --- the security headers, on every response --------------------------------------------------


class SecurityHeaders:
    """ASGI middleware: the headers of SECURITY_HEADERS on every response; `no-store` on
    everything but the static files (pages hold decrypted content)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))[len(str(scope.get("root_path", ""))) :]
        static = path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["Cache-Control"] = "no-cache" if static else "no-store"
                if not static:
                    headers["Pragma"] = "no-cache"
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- reading the store -------------------------------------------------------------------------


def _like(text: str) -> str:
    """A LIKE pattern that matches `text` literally anywhere (escape character: backslash)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class Filters:
    originator: str = ""
    tlp: str = ""
    topic: str = ""
    content_type: str = ""
    q: str = ""
    page: int = 1

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filters:
        """The list page's query, each value checked; a malformed one is ignored."""
        originator = params.get("originator", "").strip().upper()
        tlp = params.get("tlp", "").strip().upper()
        topic = params.get("topic", "").strip()
        content_type = params.get("content_type", "").strip()[:255]
        page = params.get("page", "1").strip()
        return cls(
            originator=originator if COUNTRY_RE.fullmatch(originator) else "",
            tlp=tlp if tlp in TLP_LEVELS else "",
            topic=topic if TOPIC_RE.fullmatch(topic) else "",
            content_type=content_type,
            q=params.get("q", "").strip()[:MAX_QUERY],
            page=min(int(page), 1_000_000) if page.isdigit() and int(page) > 0 else 1,
        )

    def query(self, **changes: Any) -> str:
        values = {
            "originator": self.originator,
            "tlp": self.tlp,
            "topic": self.topic,
            "content_type": self.content_type,
            "q": self.q,
            "page": self.page,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v and not (k == "page" and v == 1)})

    @property
    def active(self) -> bool:
        return bool(self.originator or self.tlp or self.topic or self.content_type or self.q)


def _payload_text(dialect: str) -> ColumnElement[str]:
    """The payload as text for LIKE: SQLite reads a BLOB as UTF-8 text; PostgreSQL's
    encode(..., 'escape') never fails (bytes outside ASCII become escapes)."""
    if dialect == "postgresql":
        return func.encode(Item.payload, "escape")
    return cast(Item.payload, String)


_Q = TypeVar("_Q", bound="Select[*tuple[Any, ...]]")


def _filtered(query: _Q, filters: Filters, dialect: str) -> _Q:
    if filters.originator:
        query = query.where(Item.originator == filters.originator)
    if filters.tlp:
        query = query.where(Item.tlp == filters.tlp)
    if filters.topic:
        # markings are stored as JSON with sorted keys: "topics" is the last list
        query = query.where(
            Item.markings.like('%"topics": [%"' + filters.topic.replace("_", "\\_") + '"%', escape="\\")
        )
    if filters.content_type:
        query = query.where(Item.content_type == filters.content_type)
    if filters.q:
        raw = _like(filters.q.lower())
        escaped = _like(json.dumps(filters.q)[1:-1].lower())  # as json.dumps stored it
        in_objects = select(StixObject.item_id).where(
            or_(func.lower(StixObject.data).like(escaped, escape="\\"), StixObject.object_id == filters.q)
        )
        in_text = func.lower(_payload_text(dialect)).like(raw, escape="\\")
        query = query.where(
            or_(
                func.lower(Item.header).like(escaped, escape="\\"),
                Item.item_id.in_(in_objects),
                Item.content_type.in_(MARKDOWN_TYPES + TEXT_TYPES) & in_text,
            )
        )
    return query


@dataclass(frozen=True)
class Row:
    item_id: str
    originator: str
    classification: str
    tlp: str
    topics: tuple[str, ...]
    releasable_to: tuple[str, ...]
    content_type: str
    created_ms: int
    received_ms: int
    stored_ms: int
    size: int
    subject: str
    withdrawn: bool


def _markings(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:160]
    return ""


def _stix_subject(prefix: bytes) -> str:
    """A name for a bundle from the start of its JSON: its first report's name, else the
    first named object that is not a marking definition (objects are read one by one, so a
    bundle cut off after them still gives one)."""
    text = prefix.decode("utf-8", errors="ignore")
    start = text.find('"objects"')
    start = text.find("[", start) if start >= 0 else -1
    if start < 0:
        return ""
    decoder = json.JSONDecoder()
    position, fallback = start + 1, ""
    for _ in range(200):
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        try:
            obj, position = decoder.raw_decode(text, position)
        except ValueError:
            break
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        if obj.get("type") == "report":
            return f"{obj['name']}"[:160]
        if not fallback and obj.get("type") != "marking-definition":
            fallback = f"{obj.get('type')}: {obj['name']}"[:160]
    return fallback


def _subject(content_type: str, prefix: bytes, header: dict[str, Any]) -> str:
    kind = media_type(content_type)
    if kind == stix.STIX_MEDIA_TYPE:
        return _stix_subject(prefix) or "STIX bundle"
    if kind == WITHDRAWAL_MEDIA_TYPE:
        return f"Withdrawal of item {header.get('in_reply_to', '?')}"
    if kind in MARKDOWN_TYPES or kind in TEXT_TYPES:
        return _first_line(prefix.decode("utf-8", errors="replace")) or "(empty report)"
    return ""


class InboxReader:
    """The queries of the web inbox, over the gateway's database."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.engine.dialect.name

    def options(self) -> dict[str, list[str]]:
        with self.store.sessions() as session:
            originators = sorted(set(session.scalars(select(Item.originator).distinct())))
            types = sorted(set(session.scalars(select(Item.content_type).distinct())))
        return {"originators": originators, "content_types": types}

    def page(self, filters: Filters) -> tuple[list[Row], int]:
        count = _filtered(select(func.count()).select_from(Item), filters, self.dialect)
        columns = select(
            Item.item_id,
            Item.originator,
            Item.classification,
            Item.tlp,
            Item.markings,
            Item.content_type,
            Item.created_ms,
            Item.received_ms,
            Item.stored_ms,
            Item.header,
            func.length(Item.payload),
            func.substr(Item.payload, 1, 16384),
        )
        query = (
            _filtered(columns, filters, self.dialect)
            .order_by(Item.stored_ms.desc(), Item.inbox_seq.desc(), Item.item_id.desc())
            .offset((filters.page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        )
        with self.store.sessions() as session:
            total = int(session.scalar(count) or 0)
            rows = list(session.execute(query))
            ids = [row[0] for row in rows]
            withdrawn = set(
                session.scalars(
                    select(Withdrawn.item_id).where(
                        Withdrawn.item_id.in_(ids),
                        Withdrawn.applied_ms.is_not(None),
                        Withdrawn.refused.is_(None),
                    )
                )
            )
        out = []
        for row in rows:
            markings = _markings(row[4])
            try:
                header = json.loads(row[9])
            except ValueError:
                header = {}
            prefix = bytes(row[11] or b"")
            out.append(
                Row(
                    item_id=row[0],
                    originator=row[1],
                    classification=row[2],
                    tlp=row[3],
                    topics=tuple(markings.get("topics") or ()),
                    releasable_to=tuple(markings.get("releasable_to") or ()),
                    content_type=row[5],
                    created_ms=row[6],
                    received_ms=row[7],
                    stored_ms=row[8],
                    size=int(row[10] or 0),
                    subject=_subject(row[5], prefix, header if isinstance(header, dict) else {}),
                    withdrawn=row[0] in withdrawn,
                )
            )
        return out, total

    def item(self, item_id: str) -> Item | None:
        return self.store.item(item_id)

    def brief(self, item_ids: Iterable[str]) -> dict[str, tuple[str, str, str]]:
        """(originator, TLP, content type) of the items this gateway holds among `item_ids`."""
        ids = [i for i in item_ids if i]
        if not ids:
            return {}
        with self.store.sessions() as session:
            rows = session.execute(
                select(Item.item_id, Item.originator, Item.tlp, Item.content_type).where(
                    Item.item_id.in_(ids)
                )
            )
            return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def referring(self, item_id: str, field_name: str) -> list[tuple[str, str, str, str, int]]:
        """Items whose verified header names `item_id` in `field_name` (in_reply_to or
        supersedes): (item id, originator, TLP, content type, created)."""
        pattern = _like(f'"{field_name}": "{item_id}"')
        with self.store.sessions() as session:
            rows = session.execute(
                select(Item.item_id, Item.originator, Item.tlp, Item.content_type, Item.created_ms)
                .where(Item.header.like(pattern, escape="\\"))
                .order_by(Item.created_ms, Item.item_id)
                .limit(200)
            )
            return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def withdrawals(self, item_id: str) -> list[Withdrawn]:
        return self.store.withdrawals(item_id)

    def withdrawal_record(self, withdrawal_item_id: str) -> Withdrawn | None:
        with self.store.sessions() as session:
            return session.get(Withdrawn, withdrawal_item_id)

    def submissions(self, user: str, limit: int = 10) -> list[Submission]:
        with self.store.sessions() as session:
            return list(
                session.scalars(
                    select(Submission)
                    .where(Submission.requested_by == user)
                    .order_by(Submission.request_us.desc())
                    .limit(limit)
                )
            )


# --- the item page's payload ---------------------------------------------------------------------


@dataclass(frozen=True)
class StixRow:
    type: str
    name: str
    id: str
    markings: tuple[str, ...]
    modified: str


def stix_rows(objects: list[Any]) -> list[StixRow]:
    rows = []
    for obj in objects[:MAX_TABLE]:
        if not isinstance(obj, dict):
            rows.append(StixRow("(not an object)", "", "", (), ""))
            continue
        labels = []
        for ref in stix.object_marking_refs(obj):
            ref_text = str(ref)
            labels.append(f"TLP:{stix.TLP_BY_ID[ref_text]}" if ref_text in stix.TLP_BY_ID else ref_text[:120])
        name = obj.get("name")
        if name is None and obj.get("type") == "marking-definition":
            name = obj.get("definition_type", "")
        rows.append(
            StixRow(
                type=str(obj.get("type", ""))[:250],
                name=str(name if name is not None else obj.get("value", ""))[:500],
                id=str(obj.get("id", ""))[:300],
                markings=tuple(dict.fromkeys(labels)),
                modified=str(obj.get("modified") or obj.get("created") or "")[:40],
            )
        )
    return rows


@dataclass
class Shown:
    """What the item page shows of the payload."""

    kind: str  # markdown, text, stix, withdrawal, deleted, download, too-large
    html: Markup | None = None
    text: str = ""
    objects: list[StixRow] = field(default_factory=list)
    object_count: int = 0
    error: str = ""


def show_payload(item: Item, deleted: bool) -> Shown:
    kind = media_type(item.content_type)
    payload = item.payload or b""
    if not payload and deleted:
        return Shown("deleted")
    if kind in MARKDOWN_TYPES or kind in TEXT_TYPES:
        if len(payload) > MAX_RENDERED:
            return Shown("too-large")
        text = payload.decode("utf-8", errors="replace")
        if kind in MARKDOWN_TYPES:
            return Shown("markdown", html=render_markdown(text))
        return Shown("text", text=text)
    if kind == stix.STIX_MEDIA_TYPE:
        try:
            bundle = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return Shown("stix", error=f"the payload is not JSON: {exc}", text=_preview(payload))
        objects = bundle.get("objects") if isinstance(bundle, dict) else None
        if not isinstance(objects, list):
            return Shown("stix", error="the payload is not a STIX bundle", text=_preview(payload))
        return Shown(
            "stix",
            objects=stix_rows(objects),
            object_count=len(objects),
            text=json.dumps(bundle, indent=2)[:MAX_RENDERED] if len(payload) <= MAX_RENDERED else "",
            error=item.stix_error or "",
        )
    if kind == WITHDRAWAL_MEDIA_TYPE:
        return Shown("withdrawal", text=_preview(payload))
    return Shown("download")


def _preview(payload: bytes) -> str:
    return payload[:MAX_RENDERED].decode("utf-8", errors="replace")


# --- sending ---------------------------------------------------------------------------------------


class Refusal(Exception):
    """Why a send (or its preflight) would not go out; nothing was sealed or sent."""

    def __init__(
        self,
        message: str,
        code: str,
        *,
        object_id: str | None = None,
        recipients: Mapping[str, Any] | None = None,
        status: int = 422,
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.object_id = message, code, object_id
        self.recipients = dict(recipients or {})
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.object_id:
            data["object_id"] = self.object_id
        if self.recipients:
            data["recipients"] = {
                country: "; ".join(str(r.get("reason", "")) for r in reasons if isinstance(r, dict))
                for country, reasons in self.recipients.items()
                if isinstance(reasons, list)
            }
        return data


@dataclass(frozen=True)
class Outgoing:
    """What a send form holds, checked: the payload, its content type and its markings."""

    profile: SendProfile
    format: str  # stix or markdown
    payload: bytes
    content_type: str
    markings: Markings
    tlp_source: str
    objects: int
    prepared: Prepared


def _refusal(exc: Exception) -> Refusal:
    """A client or STIX error as a refusal (the words a TAXII POST would answer)."""
    if isinstance(exc, stix.StixError):
        return Refusal(exc.detail, exc.code, object_id=exc.object_id)
    if isinstance(exc, PolicyRefused):
        reasons = "; ".join(f"{c}: {r.get('reason', '')}" for c, rs in exc.refusals.items() for r in rs)
        return Refusal(
            f"{exc.problem.get('detail', 'policy refused it')}: {reasons}",
            "recipients-refused",
            recipients=exc.refusals,
        )
    if isinstance(exc, BrokerUnavailable):
        return Refusal(
            f"the broker could not be reached, nothing was sealed or sent: {exc.detail}", exc.code, status=503
        )
    if isinstance(exc, BrokerError):
        return Refusal(
            f"the broker refused the item, nothing was delivered: {exc.detail}", exc.code, status=502
        )
    if isinstance(exc, MsmtError):
        return Refusal(exc.detail, exc.code)
    raise exc


def check_outgoing(profile: SendProfile, fmt: str, content: bytes) -> Outgoing:
    """The checks a TAXII POST runs before sealing (`send.prepare`: each object validated, its
    TLP against the profile's markings), or, for Markdown, the profile's markings as they
    are (a `bundle` profile: AMBER, as for an unmarked bundle). Raises Refusal."""
    if not content.strip():
        raise Refusal("paste or upload something to send", "empty")
    if len(content) > MAX_SEND_BYTES:
        raise Refusal(f"at most {MAX_SEND_BYTES} bytes can be sent at once", "too-large", status=413)
    try:
        if fmt == "markdown":
            try:
                content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Refusal(f"the report is not UTF-8 text: {exc}", "not-text") from exc
            tlp = stix.derive_tlp({"objects": []}) if profile.tlp == BUNDLE_TLP else profile.tlp
            markings = profile.markings(tlp)
            stix.check_outgoing(content, "text/markdown", markings)
            source = (
                "AMBER: a report carries no TLP of its own, and unmarked is not CLEAR"
                if profile.tlp == BUNDLE_TLP
                else f"the profile's ({profile.name})"
            )
            prepared = Prepared({"objects": []}, content, markings)
            return Outgoing(profile, fmt, content, "text/markdown", markings, source, 0, prepared)
        if fmt != "stix":
            raise Refusal("choose what you are sending: a STIX bundle or a Markdown report", "bad-format")
        try:
            body = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refusal(f"this is not JSON: {exc}", "stix-invalid") from exc
        except RecursionError as exc:
            raise Refusal("this JSON is nested too deeply to be a STIX bundle", "stix-invalid") from exc
        if isinstance(body, list):  # a bare list of objects
            body = {"objects": body}
        try:
            prepared = prepare(profile, body)
        except RecursionError as exc:
            raise Refusal("an object is nested too deeply to be STIX", "stix-invalid") from exc
        source = (
            "derived from its objects: the strictest TLP they carry (AMBER when none is marked)"
            if profile.tlp == BUNDLE_TLP
            else f"the profile's ({profile.name}); no object is marked stricter"
        )
        count = len(prepared.bundle.get("objects", []))
        return Outgoing(
            profile, fmt, prepared.payload, stix.STIX_MEDIA_TYPE, prepared.markings, source, count, prepared
        )
    except (MsmtError, BadSubmission) as exc:
        raise _refusal(exc) from exc


def preview_recipients(sender: Sender, outgoing: Outgoing) -> tuple[list[str] | None, str]:
    """Who `Client.send` would seal for: the members' verified directory and our policy copy,
    narrowed by the broker's preflight (the profile's `recipients` must all pass). Raises
    Refusal for a recipient policy refuses; (None, why) when it cannot be worked out now."""
    try:
        targets = sender.preview_recipients(outgoing.markings, outgoing.profile.recipients)
    except BrokerUnavailable as exc:
        return None, f"the broker cannot be reached now ({exc.detail}); they are worked out when it is sealed"
    except MsmtError as exc:
        raise _refusal(exc) from exc
    if targets is None:
        named = list(outgoing.profile.recipients) if outgoing.profile.recipients else None
        return named, "worked out when it is sealed"
    if not targets:
        raise Refusal("no recipient: policy allows none of the partners for these markings", "no-recipient")
    how = "the profile's, each allowed" if outgoing.profile.recipients else "every partner the markings allow"
    return sorted(targets), f"{how} (the members' verified directory, narrowed by the broker's preflight)"


def submit(sender: Sender, outgoing: Outgoing, user: str) -> Submission:
    """Send through the gateway's `Sender`: a STIX bundle exactly as a TAXII POST
    (`Sender.submit`); a Markdown report the same way (its lock, its client, its outbox, its
    status rows), with the report's content type. Raises Refusal (nothing was sent)."""
    try:
        if outgoing.format == "stix":
            return sender.submit(outgoing.profile, user, outgoing.prepared.bundle)
        return _submit_report(sender, outgoing, user)
    except (MsmtError, BadSubmission) as exc:
        raise _refusal(exc) from exc


def _submit_report(sender: Sender, outgoing: Outgoing, user: str) -> Submission:
    return sender.send_prepared(
        outgoing.profile, user, outgoing.prepared, outgoing.payload, outgoing.content_type, via="web send"
    )


# --- the app ---------------------------------------------------------------------------------------


class _LoginRequired(Exception):
    pass


class _Forbidden(Exception):
    def __init__(self, title: str, detail: str, status: int = 403) -> None:
        super().__init__(title)
        self.title, self.detail, self.status = title, detail, status


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["tlp_class"] = tlp_class
    env.filters["classification_class"] = classification_class
    env.globals["TLP_LEVELS"] = TLP_LEVELS
    return env


def _banner(classification: str, caveats: Iterable[str], releasable_to: Iterable[str]) -> str:
    parts = [classification.replace("_", " ")]
    parts += list(caveats)
    rel = [r for r in releasable_to]
    if rel:
        parts.append("REL TO " + ", ".join(rel))
    return " // ".join(parts)


def create_inbox(
    store: Store,
    credentials: Credentials,
    *,
    title: str = "MSMT agency gateway",
    sender: Sender | None = None,
    sessions: Sessions | None = None,
    throttle: Throttle | None = None,
) -> ASGIApp:
    """The web inbox as an ASGI app, to be mounted at `/inbox` (`with_inbox`)."""
    sessions = sessions or Sessions()
    throttle = throttle or Throttle()
    reader = InboxReader(store)
    env = _environment()
    profiles: dict[str, SendProfile] = dict(sender.profiles) if sender is not None else {}
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def writable(user: str) -> list[SendProfile]:
        return [p for p in profiles.values() if user in p.writers] if sender is not None else []

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    def render(
        request: Request, template: str, session: Session | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        data = {
            "title": title,
            "base": base(request),
            "user": session.user if session else None,
            "csrf": session.csrf if session else "",
            "can_send": bool(session and writable(session.user)),
            "section": "",
            **context,
        }
        return HTMLResponse(env.get_template(template).render(**data), status_code=status)

    def current(request: Request) -> Session | None:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None and session.user not in credentials.users:
            sessions.drop(session)
            return None
        return session

    def required(request: Request) -> Session:
        session = current(request)
        if session is None:
            raise _LoginRequired()
        return session

    def same_origin(request: Request) -> None:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            raise _Forbidden("refused", "this form must be sent from the gateway's own pages")

    def check_csrf(session: Session, token: str | None) -> None:
        if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise _Forbidden(
                "the form has expired",
                "it did not carry this session's token (CSRF): reload the page and try again",
            )

    async def read_form(request: Request, limit: int) -> FormData:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _Forbidden("too large", f"the gateway takes at most {limit} bytes in a form", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _Forbidden("too large", f"the gateway takes at most {limit} bytes in a form", 413)
        request._body = bytes(body)  # request.form() parses what was read
        return await request.form(max_files=1, max_fields=20, max_part_size=limit)

    def field_text(form: FormData, name: str, limit: int = 1000) -> str:
        value = form.get(name)
        return value[:limit] if isinstance(value, str) else ""

    @app.exception_handler(_LoginRequired)
    async def _login_required(request: Request, _: _LoginRequired) -> Response:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{base(request)}/login?{urlencode({'next': target})}", 303)
        if request.url.path.endswith("/preflight"):
            return JSONResponse({"ok": False, "error": {"code": "login", "message": "log in again"}}, 401)
        return RedirectResponse(f"{base(request)}/login", 303)

    @app.exception_handler(_Forbidden)
    async def _forbidden(request: Request, exc: _Forbidden) -> Response:
        if request.url.path.endswith("/preflight"):
            return JSONResponse(
                {"ok": False, "error": {"code": "refused", "message": exc.detail}}, exc.status
            )
        return render(
            request, "error.html", current(request), exc.status, heading=exc.title, detail=exc.detail
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        heading = {404: "Not found", 405: "Not allowed"}.get(exc.status_code, "Refused")
        detail = str(exc.detail) if exc.status_code not in (404, 405) else "There is no such page here."
        return render(
            request, "error.html", current(request), exc.status_code, heading=heading, detail=detail
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return render(request, "error.html", current(request), 400, heading="Bad request", detail="")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("web inbox: %s %s failed", request.method, request.url.path)
        return render(
            request,
            "error.html",
            None,
            500,
            heading="Something went wrong",
            detail="The gateway could not show this page; it logged why.",
        )

    # --- login ------------------------------------------------------------------------------

    def safe_next(request: Request, target: str) -> str:
        prefix = base(request) + "/"
        if target.startswith(prefix) and "//" not in target and "\\" not in target and len(target) < 2000:
            return target
        return prefix

    def login_page(
        request: Request, status: int = 200, error: str = "", user: str = "", target: str = ""
    ) -> Response:
        token = sessions.login_token()
        response = render(
            request,
            "login.html",
            None,
            status,
            login_token=token,
            error=error,
            username=user,
            next=safe_next(request, target or request.query_params.get("next", "")),
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=3600,
            path=base(request) + "/",
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )
        return response

    @app.get("/login")
    def login_form(request: Request) -> Response:
        if current(request) is not None:
            return RedirectResponse(safe_next(request, request.query_params.get("next", "")), 303)
        return login_page(request)

    @app.post("/login")
    async def login(request: Request) -> Response:
        same_origin(request)
        form = await read_form(request, MAX_LOGIN_BYTES)
        user = field_text(form, "username", 128).strip()
        password = field_text(form, "password", 1024)
        target = field_text(form, "next", 2000)
        if not sessions.check_login_token(field_text(form, "csrf", 200), request.cookies.get(LOGIN_COOKIE)):
            return login_page(request, 403, "The login form expired: try again.", user, target)
        address = request.client.host if request.client else "unknown"
        wait = throttle.wait(user, address)
        if wait > 0:
            log.warning("web inbox: login for %r from %s refused: too many failures", user[:64], address)
            minutes = max(1, int(wait // 60) + 1)
            return login_page(
                request, 429, f"Too many failed logins: try again in {minutes} minute(s).", user, target
            )
        who = await run_in_threadpool(credentials.basic, user, password) if user and password else None
        if who is None:
            throttle.failed(user, address)
            log.warning("web inbox: failed login for %r from %s", user[:64], address)
            return login_page(request, 401, "Wrong user name or password.", user, target)
        throttle.succeeded(user)
        _, cookie = sessions.create(who)
        log.info("web inbox: %s logged in from %s", who, address)
        response = RedirectResponse(safe_next(request, target), 303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(sessions.max_age_s),
            path=base(request) + "/",
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )
        response.delete_cookie(
            LOGIN_COOKIE, path=base(request) + "/", httponly=True, samesite="strict", secure=secure(request)
        )
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        same_origin(request)
        session = required(request)
        form = await read_form(request, MAX_LOGIN_BYTES)
        check_csrf(session, field_text(form, "csrf", 200))
        sessions.drop(session)
        response = RedirectResponse(f"{base(request)}/login", 303)
        response.delete_cookie(
            SESSION_COOKIE, path=base(request) + "/", httponly=True, samesite="strict", secure=secure(request)
        )
        return response

    # --- the list -----------------------------------------------------------------------------

    @app.get("/")
    def inbox(request: Request) -> Response:
        session = required(request)
        filters = Filters.of(request.query_params)
        rows, total = reader.page(filters)
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
        top = max((r.classification for r in rows), key=classification_rank, default="")
        return render(
            request,
            "list.html",
            session,
            section="inbox",
            rows=rows,
            total=total,
            filters=filters,
            pages=pages,
            first=(filters.page - 1) * PAGE_SIZE + 1,
            options=reader.options(),
            topics=TOPICS,
            top_classification=top,
        )

    # --- an item --------------------------------------------------------------------------------

    def find(item_id: str) -> Item:
        item = reader.item(item_id) if ITEM_ID_RE.fullmatch(item_id) else None
        if item is None:
            raise _Forbidden("No such item", "This gateway holds no item with that id.", 404)
        return item

    @app.get("/items/{item_id}")
    def item_page(request: Request, item_id: str) -> Response:
        session = required(request)
        item = find(item_id)
        try:
            header = json.loads(item.header)
        except ValueError:
            header = {}
        markings = _markings(item.markings)
        withdrawals = reader.withdrawals(item.item_id)
        applied = [w for w in withdrawals if w.applied_ms is not None and w.refused is None]
        refused = [w for w in withdrawals if w.refused is not None]
        deleted = any(w.plaintext_deleted for w in applied)
        parents = {
            "in_reply_to": str(header.get("in_reply_to") or ""),
            "supersedes": str(header.get("supersedes") or ""),
        }
        held = reader.brief(parents.values())
        this_withdrawal = (
            reader.withdrawal_record(item.item_id)
            if media_type(item.content_type) == WITHDRAWAL_MEDIA_TYPE
            else None
        )
        return render(
            request,
            "item.html",
            session,
            section="inbox",
            item=item,
            header=header,
            markings=markings,
            banner=_banner(
                item.classification, markings.get("caveats") or (), markings.get("releasable_to") or ()
            ),
            recipients=[r.get("country", "") for r in header.get("recipients", []) if isinstance(r, dict)],
            shown=show_payload(item, deleted),
            withdrawn=applied,
            refused_withdrawals=refused,
            this_withdrawal=this_withdrawal,
            parents=parents,
            held=held,
            replies=reader.referring(item.item_id, "in_reply_to"),
            superseded_by=reader.referring(item.item_id, "supersedes"),
            downloadable=bool(item.payload),
            size=len(item.payload or b""),
        )

    @app.get("/items/{item_id}/download")
    def download(request: Request, item_id: str) -> Response:
        required(request)
        item = find(item_id)
        if not item.payload:
            raise _Forbidden(
                "Gone", "This item's plaintext was deleted when its originator withdrew it.", 410
            )
        extension = EXTENSIONS.get(media_type(item.content_type), ".bin")
        name = f"{item.originator}-{item.item_id}{extension}"
        return Response(
            item.payload,
            media_type="application/octet-stream",  # never rendered by the browser, whatever it is
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # --- sending ----------------------------------------------------------------------------

    def send_profiles(session: Session) -> list[SendProfile]:
        if sender is None or not profiles:
            raise _Forbidden(
                "Nothing to send through", "This gateway has no send profiles ([send.NAME]).", 404
            )
        mine = writable(session.user)
        if not mine:
            raise _Forbidden(
                "Not a writer",
                f"{session.user} is not among the writers of any send profile: sending signs items as "
                "the agency, and the gateway's configuration names who may.",
            )
        return mine

    def describe(profile: SendProfile) -> str:
        tlp = "the strictest TLP of its objects" if profile.tlp == BUNDLE_TLP else f"TLP:{profile.tlp}"
        to = ", ".join(profile.recipients) if profile.recipients else "every partner the markings allow"
        topics = f", topics {', '.join(profile.topics)}" if profile.topics else ""
        caveats = f", caveats {', '.join(profile.caveats)}" if profile.caveats else ""
        return (
            f"{profile.classification}, {tlp}, releasable to {', '.join(profile.releasable_to)}"
            f"{caveats}{topics}; to {to}"
        )

    def send_page(
        request: Request,
        session: Session,
        mine: list[SendProfile],
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        values = {"profile": "", "format": "stix", "content": "", "refusal": None}
        values.update(context)
        return render(
            request,
            "send.html",
            session,
            status,
            section="send",
            profiles=[(p, describe(p)) for p in mine],
            recent=reader.submissions(session.user),
            **values,
        )

    async def outgoing_of(
        request: Request, session: Session, mine: list[SendProfile]
    ) -> tuple[Outgoing | Refusal, dict[str, Any]]:
        form = await read_form(request, MAX_FORM_BYTES)
        check_csrf(session, request.headers.get("x-csrf-token") or field_text(form, "csrf", 200))
        name = field_text(form, "profile", 64)
        fmt = field_text(form, "format", 16)
        text_value = form.get("content")
        text = text_value if isinstance(text_value, str) else ""
        upload = form.get("file")
        content = text.encode()
        if isinstance(upload, UploadFile) and upload.filename:
            data = await upload.read(MAX_SEND_BYTES + 1)
            if data:
                content = data
        kept = {"profile": name, "format": fmt, "content": text}
        profile = next((p for p in mine if p.name == name), None)
        if profile is None:
            return Refusal("choose one of your send profiles", "no-profile"), kept
        try:
            return check_outgoing(profile, fmt, content), kept
        except Refusal as refusal:
            return refusal, kept

    @app.get("/send")
    def send_form(request: Request) -> Response:
        session = required(request)
        mine = send_profiles(session)
        return send_page(request, session, mine, profile=request.query_params.get("profile", ""))

    @app.post("/send/preflight")
    async def send_preflight(request: Request) -> Response:
        same_origin(request)
        session = required(request)
        mine = send_profiles(session)
        outgoing, _ = await outgoing_of(request, session, mine)
        if isinstance(outgoing, Refusal):
            return JSONResponse({"ok": False, "error": outgoing.to_dict()})
        assert sender is not None
        result: dict[str, Any] = {
            "ok": True,
            "profile": outgoing.profile.name,
            "format": outgoing.format,
            "tlp": outgoing.markings.tlp,
            "tlp_source": outgoing.tlp_source,
            "markings": outgoing.markings.to_dict(),
            "banner": _banner(
                outgoing.markings.classification, outgoing.markings.caveats, outgoing.markings.releasable_to
            ),
            "objects": outgoing.objects,
            "bytes": len(outgoing.payload),
        }
        try:
            recipients, note = await run_in_threadpool(preview_recipients, sender, outgoing)
        except Refusal as refusal:
            return JSONResponse({**result, "ok": False, "error": refusal.to_dict()})
        result.update(recipients=recipients, recipients_note=note)
        return JSONResponse(result)

    @app.post("/send")
    async def send(request: Request) -> Response:
        same_origin(request)
        session = required(request)
        mine = send_profiles(session)
        outgoing, kept = await outgoing_of(request, session, mine)
        assert sender is not None
        if not isinstance(outgoing, Refusal):
            try:
                row = await run_in_threadpool(submit, sender, outgoing, session.user)
            except Refusal as refusal:
                outgoing = refusal
            else:
                return RedirectResponse(f"{base(request)}/send/status/{row.status_id}", 303)
        log.info("web send by %s refused: %s: %s", session.user, outgoing.code, outgoing.message[:300])
        return send_page(request, session, mine, outgoing.status, refusal=outgoing, **kept)

    @app.get("/send/status/{status_id}")
    def send_status(request: Request, status_id: str) -> Response:
        session = required(request)
        mine = send_profiles(session)
        row = sender.status(status_id) if sender is not None and STATUS_ID_RE.fullmatch(status_id) else None
        if row is None or (row.requested_by != session.user and row.profile not in {p.name for p in mine}):
            raise _Forbidden("No such submission", "There is no submission of yours with that id.", 404)
        return render(
            request,
            "status.html",
            session,
            section="send",
            row=row,
            markings=_banner(profile.classification, profile.caveats, profile.releasable_to)
            if (profile := profiles.get(row.profile)) is not None
            else "",
            recipients=json.loads(row.recipients or "[]"),
            objects=len(json.loads(row.objects or "[]")),
        )

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return SecurityHeaders(app)


def with_inbox(
    taxii: ASGIApp,
    store: Store,
    credentials: Credentials,
    *,
    title: str = "MSMT agency gateway",
    sender: Sender | None = None,
    sessions: Sessions | None = None,
    throttle: Throttle | None = None,
) -> Starlette:
    """The gateway's app: the web inbox under `/inbox/` (and `/` leading to it), every other
    path to the TAXII app unchanged."""
    inbox = create_inbox(store, credentials, title=title, sender=sender, sessions=sessions, throttle=throttle)

    async def to_inbox(request: Any) -> Response:
        return RedirectResponse(str(request.scope.get("root_path", "")).rstrip("/") + "/inbox/", 307)

    return Starlette(
        routes=[
            Route("/", to_inbox, methods=["GET"]),
            Route("/inbox", to_inbox, methods=["GET"]),
            Mount("/inbox", app=inbox),
            Mount("", app=taxii),
        ]
    )


__all__ = [
    "CSP",
    "Filters",
    "InboxReader",
    "Refusal",
    "Sessions",
    "Throttle",
    "check_outgoing",
    "create_inbox",
    "preview_recipients",
    "render_markdown",
    "submit",
    "with_inbox",
]
