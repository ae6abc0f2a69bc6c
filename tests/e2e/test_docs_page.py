"""The offline API docs in a real browser: Debian's headless Chromium, driven by Playwright,
against a real broker process, with every request that is not to the broker's own origin
blocked (and recorded, so that the test can say none was attempted).

`/docs` must show the API's operations and an Authorize button whose dialog takes a bearer
token; a token minted by hand (docs/api.md) must then make "Try it out" work. `/redoc` must
render the same API. Neither page may trip its Content-Security-Policy. Screenshots go to
`$MSMT_TEST_ARTEFACTS/docs-page/` (CI keeps them beside its junit.xml), else the test's
tmp_path; the test prints where.

Playwright rather than Selenium: its request routing sees and blocks every request the page
and its workers make, and reports console messages and page errors, with no driver process
to match to the browser's version; it drives the system's Chromium through
`executable_path`, so no browser is downloaded (`playwright install` is never run).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from msmt.auth import mint_token

from ..integration.conftest import _KEYS, AUDIENCE, bootstrap
from .servers import broker_server

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a second wall behind the request routing: no host name resolves except the broker's
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# Collects Content-Security-Policy violations in every page, before the page's own scripts.
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


def _require_browser() -> None:
    """Skip without Chromium or Playwright; with CI=true that is a failure, not a skip."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (a dev dependency)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test is required in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def artefacts(tmp_path: Path, record_property: Any) -> Path:
    base = os.environ.get("MSMT_TEST_ARTEFACTS")
    folder = Path(base) / "docs-page" if base else tmp_path / "artefacts"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"docs page screenshots: {folder}")
    record_property("artefacts", str(folder))
    return folder


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    _require_browser()
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))  # the 11 members and an admin
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        yield base


@dataclass
class Watch:
    """What the browser asked for, and what went wrong in the page."""

    base: str
    requested: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.base + "/"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def outside(self) -> list[str]:
        return [u for u in self.requested if not u.startswith((self.base + "/", "data:", "blob:"))]


def _visit(context: Any, broker: str, artefacts: Path, watch: Watch) -> tuple[list[str], list[str]]:
    """Walk both pages as a person would; return each page's CSP violations."""
    from playwright.sync_api import expect

    context.route("**/*", watch.route)
    context.on("request", lambda request: watch.requested.append(request.url))
    context.add_init_script(CSP_PROBE)
    page = context.new_page()
    page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.errors.append(str(e)))

    # --- Swagger UI: the operations and the Authorize button
    page.goto(broker + "/docs")
    page.locator(".opblock").first.wait_for(timeout=20_000)
    paths = page.locator(".opblock-summary-path").evaluate_all(
        "els => els.map(e => e.getAttribute('data-path'))"
    )
    assert {"/v1/items", "/v1/inbox", "/v1/directory", "/v1/health"} <= set(paths), paths
    expect(page.get_by_text("/v1/items", exact=True).first).to_be_visible()
    authorize = page.locator("button.authorize")
    expect(authorize).to_be_visible()
    expect(authorize).to_contain_text("Authorize")
    # a lock on every operation that needs a token, none on the public ones
    health = page.locator(".opblock", has=page.locator('[data-path="/v1/health"]'))
    inbox = page.locator(".opblock", has=page.locator('[data-path="/v1/inbox"]'))
    expect(health.locator(".authorization__btn")).to_have_count(0)
    expect(inbox.locator(".authorization__btn")).to_have_count(1)
    page.screenshot(path=artefacts / "docs.png")

    authorize.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("bearerToken")
    expect(dialog).to_contain_text("Bearer")
    page.screenshot(path=artefacts / "docs-authorize.png")

    # --- authorise with a token minted by hand, then "Try it out" on GET /v1/directory
    token = mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE)  # unbound: good for one request
    dialog.locator("input").first.fill(token)
    dialog.locator("button.authorize").click()
    expect(dialog).to_contain_text("Authorized")
    dialog.locator("button.btn-done").click()
    directory = page.locator(".opblock", has=page.locator('[data-path="/v1/directory"]')).first
    directory.locator(".opblock-summary").click()
    directory.locator("button.try-out__btn").click()
    directory.locator("button.execute").click()
    status = directory.locator(".live-responses-table tr.response .response-col_status").first
    expect(status).to_have_text("200", timeout=15_000)
    expect(directory.locator(".live-responses-table")).to_contain_text('"KOR"')
    directory.scroll_into_view_if_needed()
    page.screenshot(path=artefacts / "docs-try-it-out.png")
    docs_violations: list[str] = page.evaluate("window.__cspViolations")

    # --- ReDoc: the same API, offline
    page.goto(broker + "/redoc")
    page.locator("h1", has_text="MSMT Broker").wait_for(timeout=20_000)
    expect(page.get_by_text("/v1/items", exact=True).first).to_be_attached()
    expect(page.locator("body")).to_contain_text("bearerToken")
    page.screenshot(path=artefacts / "redoc.png")
    redoc_violations: list[str] = page.evaluate("window.__cspViolations")
    return docs_violations, redoc_violations


def test_docs_pages_render_offline_and_authorise(broker: str, artefacts: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    watch = Watch(broker)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user data dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            docs_violations, redoc_violations = _visit(context, broker, artefacts, watch)
        except Exception as exc:
            for page in context.pages:
                with contextlib.suppress(Exception):
                    page.screenshot(path=artefacts / "failure.png")
            raise AssertionError(
                f"{type(exc).__name__}: {exc}\nrequests blocked: {watch.blocked}\n"
                f"page errors: {watch.errors}\nscreenshot: {artefacts / 'failure.png'}"
            ) from exc
        finally:
            context.close()

    print(f"browser test: {time.monotonic() - started:.1f} s; screenshots in {artefacts}")
    problems = {
        "requests to other hosts (blocked)": watch.blocked,
        "requests to other hosts (seen)": watch.outside(),
        "CSP violations on /docs": docs_violations,
        "CSP violations on /redoc": redoc_violations,
        "CSP errors in the console": [e for e in watch.errors if "Content Security Policy" in e],
    }
    assert {k: v for k, v in problems.items() if v} == {}
    assert any(u.startswith(broker + "/docs/assets/") for u in watch.requested)
    for name in ("docs.png", "docs-authorize.png", "docs-try-it-out.png", "redoc.png"):
        assert (artefacts / name).stat().st_size > 10_000, name
