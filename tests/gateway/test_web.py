"""The gateway's web inbox in process (issue 12, item 5): login, sessions, CSRF, the security
headers, hostile content rendered inert, search and filters, downloads, threads and
withdrawals, and the send form with its live preflight. A real browser walks it in
test_web_browser.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from msmt.client import Delivery, Preflight, Receipt, Received
from msmt.core import Markings, open_envelope, seal
from msmt.core.ids import new_item_id
from msmt.errors import BrokerUnavailable, PolicyRefused, SubmitPending
from msmt.gateway import web
from msmt.gateway.config import Credentials, SendProfile, hash_password, hash_token
from msmt.gateway.send import Sender
from msmt.gateway.store import Store, Submission, check_withdrawals
from msmt.gateway.taxii import TAXII_MEDIA_TYPE, create_app
from msmt.outbox import Outbox
from tests.integration.conftest import _KEYS

from .stix_samples import bundle, indicator, vessel_report
from .support import FakeDirectory, FakeInbox, batch, withdrawal

PASSWORD = "correct horse battery"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
PROFILES = (
    SendProfile.from_dict(
        "derived",
        {
            "classification": "RESTRICTED",
            "tlp": "bundle",
            "releasable_to": ["JPN", "USA"],
            "topics": ["maritime"],
            "writers": ["analyst"],
        },
    ),
    SendProfile.from_dict(
        "all-clear",
        {
            "classification": "RESTRICTED",
            "tlp": "CLEAR",
            "releasable_to": ["ALL"],
            "topics": ["maritime"],
            "writers": ["analyst"],
        },
    ),
    SendProfile.from_dict(
        "named",
        {
            "classification": "RESTRICTED",
            "tlp": "AMBER",
            "releasable_to": ["NZL", "USA"],
            "recipients": ["NZL", "USA"],
            "writers": ["analyst"],
        },
    ),
)
_seq = iter(range(1, 10_000))


def sealed(
    payload: bytes | dict[str, Any],
    *,
    origin: str = "KOR",
    tlp: str = "AMBER",
    classification: str = "RESTRICTED",
    releasable_to: tuple[str, ...] = ("USA",),
    topics: tuple[str, ...] = ("maritime",),
    content_type: str | None = None,
    in_reply_to: str | None = None,
    supersedes: str | None = None,
) -> Received:
    """An item `origin` sealed for USA and USA opened (as tests/gateway/support.received, with
    the header fields the web inbox shows)."""
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    kind = content_type or ("application/stix+json" if isinstance(payload, dict) else "text/markdown")
    now = int(time.time() * 1000)
    envelope = seal(
        data,
        content_type=kind,
        markings=Markings.create(classification, tlp, list(releasable_to), topics=list(topics)),
        recipients=[("USA", _KEYS["USA"].encryption.public_key)],
        originator=origin,
        signing_key=_KEYS[origin].signing,
        created_ms=now,
        in_reply_to=in_reply_to,
        supersedes=supersedes,
    )
    opened = open_envelope(
        envelope,
        recipient="USA",
        private_key=_KEYS["USA"].encryption,
        originator_key=_KEYS[origin].signing.public_key,
    )
    seq = next(_seq)
    delivery = Delivery(
        seq,
        opened.header.item_id,
        origin,
        now,
        now,
        classification,
        tlp,
        kind,
        len(envelope),
        40 + seq,
        "pending",
    )
    return Received(delivery, opened, "ab" * 32)


def store_items(store: Store, *items: Received) -> None:
    page = batch(items)
    store.save(page, withdrawals=check_withdrawals(FakeInbox([]), page))


@dataclass
class FakeSending:
    """The sending side of `msmt.client.Client`, with what the preview asks of it."""

    allowed: tuple[str, ...] = ("JPN", "USA")
    denied: dict[str, list[dict[str, str]]] = field(
        default_factory=lambda: {
            "NZL": [{"rule": "accreditation", "reason": "NZL is accredited to RESTRICTED"}]
        }
    )
    pending: bool = False
    unreachable: bool = False
    outbox: Outbox = field(default_factory=Outbox)
    sent: list[tuple[bytes, str, Markings, tuple[str, ...] | None]] = field(default_factory=list)

    def send(
        self, payload: bytes, *, content_type: str, markings: Markings, recipients: Any = None
    ) -> Receipt:
        if self.unreachable:
            raise BrokerUnavailable("cannot reach the broker: connection refused")
        item_id = new_item_id()
        self.sent.append((payload, content_type, markings, tuple(recipients) if recipients else None))
        if self.pending:
            self.outbox.put(item_id, payload)
            raise SubmitPending(item_id, "connection reset")
        return Receipt(item_id, 77, int(time.time() * 1000), tuple(sorted(recipients or self.allowed)))

    def resend_pending(self) -> list[Receipt]:
        return []

    def directory(self, *, refresh: bool = False) -> FakeDirectory:
        if self.unreachable:
            raise BrokerUnavailable("cannot reach the broker: connection refused")
        return FakeDirectory()

    def preflight(self, markings: Markings) -> Preflight:
        return Preflight(self.allowed, self.denied)

    def recipients_for(self, markings: Markings, recipients: Any = None) -> set[str]:
        self.directory()
        check = self.preflight(markings)
        if recipients is None:
            return set(check.allowed)
        refused = {c: check.denied[c] for c in recipients if c in check.denied}
        if refused:
            raise PolicyRefused(
                403, {"detail": "policy does not allow every recipient", "recipients": refused}
            )
        return set(recipients)


@dataclass
class Gateway:
    client: TestClient
    store: Store
    sending: FakeSending
    credentials: Credentials

    def login(self, user: str = "analyst", password: str = PASSWORD) -> None:
        r = login(self.client, user, password)
        assert r.status_code == 303, r.text

    def csrf(self) -> str:
        page = self.client.get("/inbox/")
        return re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]


def login(client: TestClient, user: str, password: str, **extra: str) -> Any:
    page = client.get("/inbox/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    data = {"username": user, "password": password, "csrf": token, "next": "/inbox/", **extra}
    return client.post("/inbox/login", data=data)


def make_app(store: Store, sending: FakeSending | None, credentials: Credentials, **kw: Any) -> Any:
    sender = Sender(sending, store, PROFILES) if sending is not None else None
    return web.with_inbox(
        create_app(store, credentials, sender=sender), store, credentials, sender=sender, **kw
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    credentials = Credentials(
        {"analyst": hash_password(PASSWORD, n=2**10), "reader": hash_password(PASSWORD, n=2**10)},
        {"opencti": hash_token("t0k3n")},
    )
    sending = FakeSending()
    with TestClient(make_app(store, sending, credentials), follow_redirects=False) as client:
        yield Gateway(client, store, sending, credentials)
    store.close()


class Elements(HTMLParser):
    """The elements of an HTML text, with their attributes, as a browser's parser finds them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))

    @classmethod
    def of(cls, html: str) -> Elements:
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser

    def tags(self, name: str) -> list[list[tuple[str, str | None]]]:
        return [attrs for tag, attrs in self.found if tag == name]


def ids_listed(html: str) -> list[str]:
    return re.findall(r'data-item="([^"]+)"', html)


# --- login, sessions, CSRF -------------------------------------------------------------------


def test_every_page_needs_a_login(gateway: Gateway) -> None:
    item = sealed(b"# a report")
    store_items(gateway.store, item)
    client = gateway.client
    for path in ("/inbox/", f"/inbox/items/{item.opened.header.item_id}", "/inbox/send", "/inbox/?q=x"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/inbox/login?next=%2Finbox%2F"), (
            path
        )
    r = client.get(f"/inbox/items/{item.opened.header.item_id}/download")
    assert r.status_code == 303 and "a report" not in r.text
    r = client.post("/inbox/send/preflight", data={"profile": "derived", "format": "stix", "content": "{}"})
    assert r.status_code == 401 and r.json()["ok"] is False
    r = client.post("/inbox/send", data={"profile": "derived", "format": "markdown", "content": "# hi"})
    assert r.status_code == 303 and r.headers["location"] == "/inbox/login"
    assert gateway.sending.sent == []
    assert client.get("/").headers["location"] == "/inbox/"
    assert client.get("/inbox").headers["location"] == "/inbox/"
    # a cookie that is not one of ours, or tampered with, is no session
    client.cookies.set("msmt_inbox", "abc.def", path="/inbox/")
    assert client.get("/inbox/").status_code == 303


def test_a_wrong_password_or_unknown_user_gets_no_session(gateway: Gateway) -> None:
    client = gateway.client
    for user, password in (("analyst", "wrong"), ("mallory", PASSWORD), ("opencti", "t0k3n"), ("", "")):
        r = login(client, user, password)
        assert r.status_code == 401 and "Wrong user name or password." in r.text, user
        assert "msmt_inbox=" not in r.headers.get("set-cookie", "").replace("msmt_inbox_login", "")
        assert client.get("/inbox/").status_code == 303
    r = login(client, "analyst", PASSWORD, next="https://evil.example/")
    assert r.status_code == 303 and r.headers["location"] == "/inbox/"  # never off-site
    assert client.get("/inbox/").status_code == 200


def test_the_login_form_needs_its_csrf_token(gateway: Gateway) -> None:
    client = gateway.client
    client.get("/inbox/login")
    r = client.post("/inbox/login", data={"username": "analyst", "password": PASSWORD})
    assert r.status_code == 403 and "expired" in r.text
    r = client.post("/inbox/login", data={"username": "analyst", "password": PASSWORD, "csrf": "1.2.3"})
    assert r.status_code == 403
    other = TestClient(client.app).get("/inbox/login")  # another browser's token
    token = re.search(r'name="csrf" value="([^"]+)"', other.text)[1]  # type: ignore[index]
    r = client.post("/inbox/login", data={"username": "analyst", "password": PASSWORD, "csrf": token})
    assert r.status_code == 403
    assert client.get("/inbox/").status_code == 303
    r = login(client, "analyst", PASSWORD, **{})
    assert r.status_code == 303
    r = client.post(
        "/inbox/login",
        data={"username": "analyst", "password": PASSWORD, "csrf": "x"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403


def test_posts_need_the_sessions_csrf_token(gateway: Gateway) -> None:
    gateway.login()
    client = gateway.client
    csrf = gateway.csrf()
    r = client.post("/inbox/logout")
    assert r.status_code == 403 and client.get("/inbox/").status_code == 200  # still logged in
    r = client.post("/inbox/logout", data={"csrf": "not-it"})
    assert r.status_code == 403
    form = {"profile": "derived", "format": "markdown", "content": "# a report"}
    r = client.post("/inbox/send", data=form)
    assert r.status_code == 403 and gateway.sending.sent == []
    r = client.post("/inbox/send/preflight", data=form)
    assert r.status_code == 403 and r.json()["ok"] is False
    r = client.post("/inbox/send/preflight", data=form, headers={"X-CSRF-Token": "nope"})
    assert r.status_code == 403
    r = client.post("/inbox/send", data={**form, "csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and gateway.sending.sent == []
    assert client.post("/inbox/send/preflight", data=form, headers={"X-CSRF-Token": csrf}).json()["ok"]
    r = client.post("/inbox/logout", data={"csrf": csrf})
    assert r.status_code == 303 and client.get("/inbox/").status_code == 303  # logged out
    assert "Max-Age=0" in r.headers["set-cookie"]


def test_failed_logins_are_rate_limited_per_user_and_address(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = gateway.client
    for _ in range(5):
        assert login(client, "analyst", "wrong").status_code == 401
    checked: list[str] = []
    real = gateway.credentials.basic

    def counted(user: str, password: str) -> str | None:
        checked.append(user)
        return real(user, password)

    monkeypatch.setattr(gateway.credentials, "basic", counted)
    r = login(client, "analyst", PASSWORD)  # the right password, but too late
    assert r.status_code == 429 and "Too many failed logins" in r.text and checked == []
    assert client.get("/inbox/").status_code == 303
    assert login(client, "reader", PASSWORD).status_code == 303  # another user, same address


def test_the_address_limit_stops_guessing_across_names() -> None:
    throttle = web.Throttle(per_user=5, per_address=3, window_s=60)
    for name in ("a", "b", "c"):
        throttle.failed(name, "10.0.0.1", now=1000)
    assert throttle.wait("d", "10.0.0.1", now=1001) > 0
    assert throttle.wait("d", "10.0.0.2", now=1001) == 0
    assert throttle.wait("d", "10.0.0.1", now=1061) == 0  # the window passed


def test_sessions_expire_and_reject_tampering() -> None:
    sessions = web.Sessions(idle_s=60, max_age_s=600)
    session, cookie = sessions.create("analyst", now=1000)
    assert sessions.get(cookie, now=1030) is session
    assert sessions.get(cookie + "x", now=1031) is None
    sid, _, mac = cookie.partition(".")
    other = "B" if sid.endswith("A") else "A"  # a different last character (1 sid in 64 ends in A)
    assert sessions.get(f"{sid[:-1]}{other}.{mac}", now=1031) is None
    assert sessions.get(cookie, now=1089) is session  # seen at 1030: idle < 60 s
    assert sessions.get(cookie, now=1150) is None  # idle too long
    session, cookie = sessions.create("analyst", now=2000)
    for t in range(2050, 2600, 50):
        assert sessions.get(cookie, now=t) is session
    assert sessions.get(cookie, now=2601) is None  # too old, however busy
    session, cookie = sessions.create("analyst", now=3000)
    sessions.drop(session)
    assert sessions.get(cookie, now=3001) is None
    assert web.Sessions().get(cookie) is None  # another process's key


# --- headers ------------------------------------------------------------------------------------


def test_security_headers_on_every_response(gateway: Gateway) -> None:
    md = sealed(b"# report")
    pdf = sealed(b"%PDF-1.7 ...", content_type="application/pdf")
    store_items(gateway.store, md, pdf)
    client = gateway.client
    responses = {"login": client.get("/inbox/login")}
    gateway.login()
    responses.update(
        list=client.get("/inbox/"),
        item=client.get(f"/inbox/items/{md.opened.header.item_id}"),
        download=client.get(f"/inbox/items/{pdf.opened.header.item_id}/download"),
        missing=client.get("/inbox/items/0000"),
        nowhere=client.get("/inbox/nowhere"),
        send=client.get("/inbox/send"),
        css=client.get("/inbox/static/inbox.css"),
        js=client.get("/inbox/static/send.js"),
    )
    for name, r in responses.items():
        assert r.status_code < 500, name
        assert r.headers["content-security-policy"] == CSP, name
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["referrer-policy"] == "no-referrer", name
        assert r.headers["x-frame-options"] == "DENY", name
        expected = "no-cache" if name in ("css", "js") else "no-store"
        assert r.headers["cache-control"] == expected, name
    assert responses["missing"].status_code == 404 and responses["nowhere"].status_code == 404
    assert responses["css"].headers["content-type"].startswith("text/css")


def test_cookies_are_httponly_strict_and_secure_over_https(gateway: Gateway) -> None:
    r = login(gateway.client, "analyst", PASSWORD)
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("msmt_inbox="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/inbox/" in cookie
    assert "Secure" not in cookie  # plain http: the browser would drop a Secure cookie
    with TestClient(
        gateway.client.app, base_url="https://gateway.agency.example", follow_redirects=False
    ) as https:
        r = login(https, "analyst", PASSWORD)
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("msmt_inbox="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


# --- what the pages show -----------------------------------------------------------------------------

HOSTILE_MARKDOWN = b"""# Findings <script>window.__xss = 1</script>

<script>alert(document.cookie)</script>
<img src=x onerror=alert(1)>
<iframe src="https://evil.example/"></iframe>
<b>raw html</b>

[click me](javascript:alert(1)) [again](JAVASCRIPT:alert(2)) [proto](ms-msdt:/id%20PCWDiagnostic)
[safe](https://example.org/report "a title")

![tracking pixel](https://evil.example/pixel.png)

| vessel | flag |
|--------|------|
| **SEA STAR** | <u>unknown</u> |
"""


def test_hostile_content_renders_inert(gateway: Gateway) -> None:
    md = sealed(HOSTILE_MARKDOWN)
    evil = indicator("GREEN")
    evil["name"] = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    stix_item = sealed(bundle(evil, levels=("GREEN",)), tlp="GREEN")
    store_items(gateway.store, md, stix_item)
    gateway.login()

    page = gateway.client.get(f"/inbox/items/{md.opened.header.item_id}").text
    body = page.split('id="markdown">', 1)[1].split("</div>", 1)[0]
    assert "<h1>Findings &lt;script&gt;" in body  # raw HTML is shown as text, not run
    assert "&lt;b&gt;raw html&lt;/b&gt;" in body and "<b>" not in body
    elements = Elements.of(body)
    assert {tag for tag, _ in elements.found} <= {
        "h1",
        "p",
        "a",
        "span",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "strong",
    }
    assert all(
        not name.startswith("on") and name != "style" for _, attrs in elements.found for name, _ in attrs
    )
    hrefs = [value for tag, attrs in elements.found for name, value in attrs if name in ("href", "src")]
    assert hrefs == ["https://example.org/report"]  # javascript:, JAVASCRIPT:, ms-msdt: are gone
    assert "[click me](javascript:alert(1))" in body  # markdown-it would not make it a link: shown as text
    assert '<a rel="noopener noreferrer nofollow">proto</a>' in body  # nh3 dropped the ms-msdt: href
    assert Elements.of(page).tags("script") == []  # the item page runs no script at all
    # the safe link is kept, with no referrer and no opener
    assert '<a href="https://example.org/report" title="a title" rel="noopener noreferrer nofollow">' in body
    # no remote image: its alt text and address, as text
    assert (
        '<span class="blocked-image">[image not loaded: tracking pixel &lt;https://evil.example/pixel.png&gt;]'
        in body
    )
    assert "<table>" in body and "<strong>SEA STAR</strong>" in body and "&lt;u&gt;" in body

    page = gateway.client.get(f"/inbox/items/{stix_item.opened.header.item_id}").text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert Elements.of(page).tags("img") == [] and Elements.of(page).tags("script") == []
    listing = gateway.client.get("/inbox/").text
    assert Elements.of(listing).tags("img") == [] and Elements.of(listing).tags("script") == []
    assert "&lt;img src=x" in listing  # the list's subject is the object's name, escaped


def test_markdown_sanitiser_alone() -> None:
    html = str(web.render_markdown("[a](tel:123) [b](data:text/html;base64,PHNjcmlwdD4=) [c](mailto:x@y.z)"))
    assert 'href="tel' not in html and "data:" not in html.replace("[b](data:", "")
    assert 'href="mailto:x@y.z"' in html


def test_list_shows_badges_banner_topics_and_pages(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [
        sealed(b"# Arms shipment", tlp="RED", classification="CONFIDENTIAL", topics=("arms",)),
        sealed(bundle(vessel_report("GREEN"), levels=("GREEN",)), origin="JPN", tlp="GREEN"),
        sealed(b"# Labor report", tlp="AMBER+STRICT", topics=("labor", "finance")),
        sealed(b"plain words", tlp="CLEAR", content_type="text/plain", classification="UNCLASSIFIED"),
    ]
    store_items(gateway.store, *items)
    gateway.login()
    page = gateway.client.get("/inbox/").text
    for level, css in (("RED", "tlp-red"), ("GREEN", "tlp-green"), ("AMBER+STRICT", "tlp-amber-strict")):
        assert f'<span class="tlp {css}" title="Traffic Light Protocol 2.0">TLP:{level}</span>' in page
    assert '<span class="cls cls-confidential">CONFIDENTIAL</span>' in page
    assert 'data-banner="top"' in page and "items up to CONFIDENTIAL" in page
    assert '<span class="pill">labor</span>' in page and '<span class="pill">finance</span>' in page
    assert "Ship-to-ship transfer sighted" in page and "Arms shipment" in page  # subjects
    assert ">JPN<" in page and "4 items" in page

    monkeypatch.setattr(web, "PAGE_SIZE", 3)
    first = gateway.client.get("/inbox/").text
    second = gateway.client.get("/inbox/?page=2").text
    assert len(ids_listed(first)) == 3 and len(ids_listed(second)) == 1
    assert set(ids_listed(first) + ids_listed(second)) == {i.opened.header.item_id for i in items}
    assert 'rel="next" href="/inbox/?page=2"' in first and 'rel="prev"' in second
    assert ids_listed(gateway.client.get("/inbox/?page=99").text) == []


def test_filters(gateway: Gateway) -> None:
    red = sealed(b"# Arms", tlp="RED", topics=("arms",))
    jpn = sealed(bundle(vessel_report("GREEN"), levels=("GREEN",)), origin="JPN", tlp="GREEN")
    cyber = sealed(b"# Cyber", topics=("cyber", "finance"))
    text = sealed(b"plain", content_type="text/plain", topics=("other",))
    store_items(gateway.store, red, jpn, cyber, text)
    gateway.login()

    def listed(query: str) -> set[str]:
        r = gateway.client.get(f"/inbox/?{query}")
        assert r.status_code == 200, query
        return set(ids_listed(r.text))

    def ids(*items: Received) -> set[str]:
        return {i.opened.header.item_id for i in items}

    assert listed("originator=JPN") == ids(jpn)
    assert listed("originator=kor") == ids(red, cyber, text)
    assert listed("tlp=RED") == ids(red)
    assert listed("tlp=green") == ids(jpn)
    assert listed("topic=finance") == ids(cyber)
    assert listed("topic=maritime") == ids(jpn)
    assert listed("content_type=text%2Fplain") == ids(text)
    assert listed("content_type=application%2Fstix%2Bjson&originator=JPN") == ids(jpn)
    assert listed("originator=KOR&tlp=GREEN") == set()
    # malformed values are ignored, never an error
    assert listed("tlp=PURPLE&topic=%27%3B--&originator=%25&page=-3") == ids(red, jpn, cyber, text)
    assert listed("page=abc&q=" + "x" * 5000) == set()


def test_search_escapes_like_wildcards(gateway: Gateway) -> None:
    percent = indicator("GREEN")
    percent["name"] = "Discount 50% off_sale"
    lookalike = indicator("GREEN")
    lookalike["name"] = "Discount 500 offXsale"
    accent = vessel_report("GREEN")
    accent["name"] = "Übergabe auf See"
    a = sealed(bundle(percent, levels=("GREEN",)), tlp="GREEN")
    b = sealed(bundle(lookalike, levels=("GREEN",)), tlp="GREEN")
    c = sealed(bundle(accent, levels=("GREEN",)), origin="JPN", tlp="GREEN")
    d = sealed(b"# Port call\n\nThe vessel SEA STAR called at Nampo on 3 March.")
    store_items(gateway.store, a, b, c, d)
    gateway.login()

    def found(q: str) -> set[str]:
        r = gateway.client.get("/inbox/", params={"q": q})
        assert r.status_code == 200, q
        return set(ids_listed(r.text))

    assert found("50%") == {a.opened.header.item_id}  # % is literal, not "anything"
    assert found("off_sale") == {a.opened.header.item_id}  # _ is literal, not "any one character"
    assert found("%") == {a.opened.header.item_id}
    assert found("0_ o") == set()
    assert found("offxsale") == {b.opened.header.item_id}  # case does not matter
    assert found("Übergabe") == {c.opened.header.item_id}  # stored JSON-escaped, found all the same
    assert found("sea star") == {d.opened.header.item_id}  # a Markdown report's text
    assert found(percent["id"]) == {a.opened.header.item_id}  # an object id
    assert found(d.opened.header.item_id[:13]) == {d.opened.header.item_id}  # an item id
    assert found('"\\') == set()


def test_a_red_item_is_bannered_top_and_bottom(gateway: Gateway) -> None:
    red = sealed(
        b"# Cyber theft\n\nDetails.", tlp="RED", classification="CONFIDENTIAL", releasable_to=("USA",)
    )
    store_items(gateway.store, red)
    gateway.login()
    page = gateway.client.get(f"/inbox/items/{red.opened.header.item_id}").text
    banners = re.findall(
        r'<div class="banner cls-confidential" role="note" data-banner="(top|bottom)">\s*'
        r'<span class="banner-text">CONFIDENTIAL // REL TO USA</span>\s*'
        r'<span class="tlp tlp-red"',
        page,
    )
    assert banners == ["top", "bottom"]
    assert page.index('data-banner="top"') < page.index('id="payload"') < page.index('data-banner="bottom"')
    assert 'id="red-notice"' in page and "no further disclosure" in page and "sealed for USA only" in page
    amber = sealed(b"# not red")
    store_items(gateway.store, amber)
    assert 'id="red-notice"' not in gateway.client.get(f"/inbox/items/{amber.opened.header.item_id}").text


def test_provenance_and_stix_table(gateway: Gateway) -> None:
    report = vessel_report("AMBER")
    item = sealed(bundle(report, indicator("GREEN"), levels=("GREEN", "AMBER")))
    store_items(gateway.store, item)
    gateway.login()
    page = gateway.client.get(f"/inbox/items/{item.opened.header.item_id}").text
    stored = gateway.store.item(item.opened.header.item_id)
    assert stored is not None
    for fact in (stored.signing_key_id, stored.envelope_sha256, str(stored.log_index), str(stored.inbox_seq)):
        assert fact in page
    assert "4 STIX objects" in page
    row = re.search(r"<tr><td>report</td>.*?</tr>", page, re.S)
    assert (
        row is not None
        and report["id"] in row[0]
        and "Ship-to-ship transfer" in row[0]
        and "TLP:AMBER" in row[0]
    )


def test_other_content_is_a_download_never_inline(gateway: Gateway) -> None:
    pdf = sealed(b"%PDF-1.7 <script>alert(1)</script>", content_type="application/pdf")
    html = sealed(b"<html><script>alert(1)</script></html>", content_type="text/html")
    store_items(gateway.store, pdf, html)
    gateway.login()
    for item, extension in ((pdf, ".pdf"), (html, ".bin")):
        item_id = item.opened.header.item_id
        page = gateway.client.get(f"/inbox/items/{item_id}").text
        assert "not shown in the browser" in page and "<script" not in page
        assert f'href="/inbox/items/{item_id}/download"' in page
        r = gateway.client.get(f"/inbox/items/{item_id}/download")
        assert r.status_code == 200 and r.content == item.payload
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == f'attachment; filename="KOR-{item_id}{extension}"'
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    assert gateway.client.get("/inbox/items/nope/download").status_code == 404
    text = sealed(b"plain <b>words</b>", content_type="text/plain")
    conflict = sealed(bundle(indicator("RED"), levels=("RED",)))  # a RED object in an AMBER envelope
    store_items(gateway.store, text, conflict)
    page = gateway.client.get(f"/inbox/items/{text.opened.header.item_id}").text
    assert '<pre class="plain">plain &lt;b&gt;words&lt;/b&gt;</pre>' in page
    page = gateway.client.get(f"/inbox/items/{conflict.opened.header.item_id}").text
    assert 'id="stix-error">Not served over TAXII: stix-marking-conflict' in page


def test_thread_replies_and_supersedes(gateway: Gateway) -> None:
    first = sealed(b"# First sighting")
    store_items(gateway.store, first)
    first_id = first.opened.header.item_id
    reply = sealed(b"# Follow-up", origin="JPN", in_reply_to=first_id)
    correction = sealed(b"# Corrected sighting", supersedes=first_id)
    orphan = sealed(b"# Reply to something else", in_reply_to=new_item_id())
    store_items(gateway.store, reply, correction, orphan)
    gateway.login()
    page = gateway.client.get(f"/inbox/items/{first_id}").text
    thread = page.split('id="thread"', 1)[1].split("</section>", 1)[0]
    assert f'Reply: <a class="mono" href="/inbox/items/{reply.opened.header.item_id}">' in thread
    assert f'Superseded by <a class="mono" href="/inbox/items/{correction.opened.header.item_id}">' in thread
    page = gateway.client.get(f"/inbox/items/{reply.opened.header.item_id}").text
    assert f'In reply to <a class="mono" href="/inbox/items/{first_id}">' in page
    page = gateway.client.get(f"/inbox/items/{correction.opened.header.item_id}").text
    assert f'Supersedes <a class="mono" href="/inbox/items/{first_id}">' in page
    page = gateway.client.get(f"/inbox/items/{orphan.opened.header.item_id}").text
    assert "(not received by this gateway)" in page


def test_a_withdrawn_item_says_so(gateway: Gateway) -> None:
    amber = sealed(b"# Vessel misidentified?")
    red = sealed(b"# Secret source", tlp="RED")
    store_items(gateway.store, amber, red)
    statement = withdrawal(900, amber.opened.header.item_id, reason="Wrong vessel <b>sorry</b>")
    store_items(gateway.store, statement, withdrawal(901, red.opened.header.item_id))
    gateway.login()
    page = gateway.client.get(f"/inbox/items/{amber.opened.header.item_id}").text
    assert 'id="withdrawn"' in page and "Withdrawn by its originator." in page
    assert "Wrong vessel &lt;b&gt;sorry&lt;/b&gt;" in page
    page = gateway.client.get(f"/inbox/items/{red.opened.header.item_id}").text
    assert "Withdrawn by its originator." in page and "Its plaintext was deleted" in page
    assert "Secret source" not in page
    assert gateway.client.get(f"/inbox/items/{red.opened.header.item_id}/download").status_code == 410
    listing = gateway.client.get("/inbox/").text
    assert listing.count('<span class="pill pill-withdrawn">withdrawn</span>') == 2
    assert "Withdrawal of item" in listing
    page = gateway.client.get(f"/inbox/items/{statement.opened.header.item_id}").text
    assert "<h1>Withdrawal from KOR</h1>" in page and "KOR withdraws item" in page
    assert f'In reply to <a class="mono" href="/inbox/items/{amber.opened.header.item_id}">' in page
    fresh = sealed(b"# still standing")
    store_items(gateway.store, fresh)
    assert (
        "Withdrawn by its originator"
        not in gateway.client.get(f"/inbox/items/{fresh.opened.header.item_id}").text
    )


# --- sending -------------------------------------------------------------------------------------------


def test_the_send_form_is_for_writers_only(gateway: Gateway, tmp_path: Path) -> None:
    gateway.login("reader")
    page = gateway.client.get("/inbox/").text
    assert 'href="/inbox/send"' not in page  # no Send link for a reader
    r = gateway.client.get("/inbox/send")
    assert r.status_code == 403 and "not among the writers" in r.text
    csrf = gateway.csrf()
    form = {"csrf": csrf, "profile": "derived", "format": "markdown", "content": "# hello"}
    assert gateway.client.post("/inbox/send", data=form).status_code == 403
    assert gateway.client.post("/inbox/send/preflight", data=form).status_code == 403
    assert gateway.sending.sent == []

    # a gateway with no send profiles has no send form at all
    store = Store(f"sqlite:///{tmp_path / 'other.db'}")
    with TestClient(make_app(store, None, gateway.credentials), follow_redirects=False) as client:
        assert login(client, "analyst", PASSWORD).status_code == 303
        assert 'href="/inbox/send"' not in client.get("/inbox/").text
        assert client.get("/inbox/send").status_code == 404
    store.close()


def preflight(gateway: Gateway, **form: str) -> dict[str, Any]:
    csrf = gateway.csrf()
    r = gateway.client.post("/inbox/send/preflight", data=form, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    answer: dict[str, Any] = r.json()
    return answer


def test_preflight_of_a_good_bundle(gateway: Gateway) -> None:
    gateway.login()
    objects = bundle(vessel_report("GREEN"), indicator("GREEN"), levels=("GREEN",))
    answer = preflight(gateway, profile="derived", format="stix", content=json.dumps(objects))
    assert (
        answer["ok"] is True
        and answer["tlp"] == "GREEN"
        and "derived from its objects" in answer["tlp_source"]
    )
    assert answer["recipients"] == ["JPN", "USA"] and answer["objects"] == 3
    assert answer["banner"] == "RESTRICTED // REL TO JPN, USA"
    # a TAXII envelope's objects, or a bare list, are taken too
    envelope = json.dumps({"objects": objects["objects"]})
    assert preflight(gateway, profile="derived", format="stix", content=envelope)["tlp"] == "GREEN"
    unmarked = json.dumps([vessel_report()])
    assert preflight(gateway, profile="derived", format="stix", content=unmarked)["tlp"] == "AMBER"
    report = preflight(gateway, profile="derived", format="markdown", content="# A report")
    assert report["ok"] is True and report["tlp"] == "AMBER" and report["format"] == "markdown"
    assert gateway.sending.sent == []  # a preflight sends nothing


def test_preflight_of_a_red_bundle_as_clear_names_the_object(gateway: Gateway) -> None:
    gateway.login()
    red = indicator("RED")
    objects = bundle(indicator("GREEN"), red, levels=("GREEN", "RED"))
    answer = preflight(gateway, profile="all-clear", format="stix", content=json.dumps(objects))
    assert answer["ok"] is False
    assert answer["error"]["code"] == "stix-marking-conflict" and answer["error"]["object_id"] == red["id"]
    assert red["id"] in answer["error"]["message"] and "TLP:RED" in answer["error"]["message"]
    # the same bundle through the derived profile: RED, but releasable to named partners only
    answer = preflight(gateway, profile="derived", format="stix", content=json.dumps(objects))
    assert answer["ok"] is True and answer["tlp"] == "RED"


def test_preflight_errors(gateway: Gateway) -> None:
    gateway.login()
    broken = indicator("GREEN")
    del broken["pattern"]
    cases = {
        "stix-invalid": dict(profile="derived", format="stix", content="{not json"),
        "taxii-bad-envelope": dict(profile="derived", format="stix", content='{"objects": []}'),
        "empty": dict(profile="derived", format="stix", content="   "),
        "no-profile": dict(profile="someone-elses", format="stix", content="{}"),
        "bad-format": dict(profile="derived", format="pdf", content="x"),
        "recipients-refused": dict(profile="named", format="markdown", content="# to NZL and USA"),
    }
    for code, form in cases.items():
        answer = preflight(gateway, **form)
        assert answer["ok"] is False and answer["error"]["code"] == code, (code, answer)
    answer = preflight(gateway, profile="derived", format="stix", content=json.dumps([broken]))
    assert answer["error"]["code"] == "stix-invalid" and answer["error"]["object_id"] == broken["id"]
    answer = preflight(gateway, **cases["recipients-refused"])
    assert answer["error"]["recipients"] == {"NZL": "NZL is accredited to RESTRICTED"}
    gateway.sending.unreachable = True  # no broker: the local checks still answer
    answer = preflight(gateway, profile="derived", format="markdown", content="# hi")
    assert (
        answer["ok"] is True
        and answer["recipients"] is None
        and "cannot be reached" in answer["recipients_note"]
    )
    csrf = gateway.csrf()
    r = gateway.client.post(
        "/inbox/send/preflight",
        data={"csrf": csrf, "profile": "derived", "format": "markdown"},
        files={"file": ("report.md", b"\xff\xfe not utf-8", "text/markdown")},
    )
    assert r.status_code == 200 and r.json()["error"]["code"] == "not-text"


def test_send_goes_through_the_sender(gateway: Gateway) -> None:
    gateway.login()
    csrf = gateway.csrf()
    objects = bundle(vessel_report("GREEN"), levels=("GREEN",))
    r = gateway.client.post(
        "/inbox/send",
        data={"csrf": csrf, "profile": "derived", "format": "stix", "content": json.dumps(objects)},
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/inbox/send/status/")
    payload, content_type, markings, recipients = gateway.sending.sent[-1]
    assert json.loads(payload) == objects and content_type == "application/stix+json"
    assert markings.tlp == "GREEN" and markings.releasable_to == ("JPN", "USA") and recipients is None
    status = gateway.client.get(r.headers["location"])
    assert status.status_code == 200 and 'data-outcome="sent"' in status.text
    assert '<strong id="status-recipients">JPN, USA</strong>' in status.text
    with gateway.store.sessions() as session:
        row = session.scalars(select(Submission)).one()
    assert row.requested_by == "analyst" and row.profile == "derived" and row.outcome == "sent"
    assert row.tlp == "GREEN" and row.log_index == 77

    # a Markdown report, uploaded as a file, to named recipients; the broker does not acknowledge it
    gateway.sending.pending = True
    gateway.sending.denied = {}
    r = gateway.client.post(
        "/inbox/send",
        data={"csrf": csrf, "profile": "named", "format": "markdown", "content": "ignored"},
        files={"file": ("report.md", b"# Uploaded report\n", "text/markdown")},
    )
    assert r.status_code == 303
    payload, content_type, markings, recipients = gateway.sending.sent[-1]
    assert payload == b"# Uploaded report\n" and content_type == "text/markdown"
    assert markings.tlp == "AMBER" and recipients == ("NZL", "USA")
    status = gateway.client.get(r.headers["location"]).text
    assert 'data-outcome="pending"' in status and "Pending in the outbox" in status
    assert len(gateway.sending.outbox.pending()) == 1
    send_page = gateway.client.get("/inbox/send").text
    assert "pill-pending" in send_page and "pill-sent" in send_page  # the recent sends


def test_a_refused_send_keeps_the_form_and_sends_nothing(gateway: Gateway) -> None:
    gateway.login()
    csrf = gateway.csrf()
    red = indicator("RED")
    content = json.dumps(bundle(red, levels=("RED",)))
    r = gateway.client.post(
        "/inbox/send", data={"csrf": csrf, "profile": "all-clear", "format": "stix", "content": content}
    )
    assert r.status_code == 422 and gateway.sending.sent == []
    assert f'<span class="mono" id="refusal-object">{red["id"]}</span>' in r.text
    assert "stricter than the envelope" in r.text
    assert json.dumps(red["id"]) in r.text.replace("&#34;", '"')  # the pasted bundle is still there
    gateway.sending.unreachable = True
    r = gateway.client.post(
        "/inbox/send", data={"csrf": csrf, "profile": "derived", "format": "markdown", "content": "# x"}
    )
    assert r.status_code == 503 and "could not be reached" in r.text
    with gateway.store.sessions() as session:
        assert session.scalars(select(Submission)).all() == []


def test_status_pages_are_the_senders_own(gateway: Gateway) -> None:
    gateway.login()
    assert gateway.client.get("/inbox/send/status/0000").status_code == 404
    assert gateway.client.get("/inbox/send/status/../../etc").status_code == 404


# --- TAXII beside it, and bad input -----------------------------------------------------------------


def test_taxii_is_unchanged_beside_the_inbox(gateway: Gateway) -> None:
    client = gateway.client
    gateway.login()  # a web session is no TAXII credential
    r = client.get("/taxii2/", headers={"Accept": TAXII_MEDIA_TYPE})
    assert r.status_code == 401 and r.headers["content-type"] == TAXII_MEDIA_TYPE
    r = client.get("/taxii2/", headers={"Accept": TAXII_MEDIA_TYPE, "Authorization": "Bearer t0k3n"})
    assert r.status_code == 200 and r.json()["api_roots"] == ["http://testserver/msmt/"]
    r = client.get("/msmt/collections/", headers={"Accept": TAXII_MEDIA_TYPE, "Authorization": "Token t0k3n"})
    assert {c["title"] for c in r.json()["collections"]} == {
        "send: all-clear",
        "send: derived",
        "send: named",
    }
    assert "content-security-policy" not in r.headers  # the inbox's headers stay in the inbox
    r = client.get("/msmt/nowhere/", headers={"Accept": TAXII_MEDIA_TYPE, "Authorization": "Token t0k3n"})
    assert r.status_code == 404 and r.headers["content-type"] == TAXII_MEDIA_TYPE


def test_bad_input_never_gets_a_server_error(gateway: Gateway) -> None:
    client = gateway.client
    attempts = [
        client.post(
            "/inbox/login", content=b"\x00\xff" * 100, headers={"Content-Type": "multipart/form-data"}
        ),
        client.post(
            "/inbox/login",
            content=b"--x\r\nContent-Disposition: form-data\r\n\r\nbroken",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        ),
        client.post(
            "/inbox/login",
            content=b"a" * 20_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        client.post("/inbox/login", data={"username": "a" * 10_000, "password": "b", "csrf": "c"}),
        client.get("/inbox/login?next=" + "%2F" * 3000),
    ]
    gateway.login()
    csrf = gateway.csrf()
    attempts += [
        client.get("/inbox/items/" + "a" * 5000),
        client.get("/inbox/items/%00"),
        client.get("/inbox/?q=%FF%FE&originator=" + "Z" * 300),
        client.get("/inbox/?q=%00"),
        client.post("/inbox/send", data={"csrf": csrf}),
        client.post(
            "/inbox/send", data={"csrf": csrf, "profile": "derived", "format": "stix", "content": "[1,2]"}
        ),
        client.post(
            "/inbox/send", data={"csrf": csrf, "profile": "derived", "format": "stix", "content": "null"}
        ),
        client.post(
            "/inbox/send",
            content=b"x" * 100,
            headers={
                "Content-Type": "multipart/form-data; boundary=x",
                "Content-Length": str(20 * 1024 * 1024),
            },
        ),
        client.post(
            "/inbox/send/preflight",
            data={"csrf": csrf, "profile": "derived", "format": "stix", "content": "[" * 100_000},
        ),
        client.request("DELETE", "/inbox/"),
        client.get("/inbox/static/../web.py"),
    ]
    for r in attempts:
        assert r.status_code < 500, (r.request.method, str(r.request.url)[:100], r.status_code, r.text[:300])
        assert "Traceback" not in r.text
