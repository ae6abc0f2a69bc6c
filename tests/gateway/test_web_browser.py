"""The web inbox in a real browser (issue 12, item 5): Debian's headless Chromium, driven by
Playwright, against `msmt-gateway serve` as a real process following a real broker.

USA's gateway holds items KOR sent it through the broker (followed, verified and decrypted by
the gateway itself) and items put in its store beforehand (a hostile Markdown report, a
TLP:RED one, JPN's STIX, a withdrawn one). An analyst logs in (after a wrong password),
filters, searches, opens a Markdown, a STIX, a TLP:RED and a withdrawn item, then sends a
bundle through the send form: the live preflight shows the TLP derived from the bundle and the
recipients, the item really reaches KOR through the broker; a TLP:RED bundle in a TLP:CLEAR
profile is refused by the preflight and by the send, naming the object, and nothing goes out.

Every request the browser makes is recorded, and every one that is not to the gateway's own
origin is blocked: the test asserts none was attempted (the hostile report's remote image
included), and that no page tripped its Content-Security-Policy or threw an error. The flags,
the network blocking and the CSP probe are those of tests/e2e/test_docs_page.py; with CI=true
a missing browser is a failure, not a skip. Screenshots go to
`$MSMT_TEST_ARTEFACTS/web-inbox/`, else the test's tmp_path (a failure saves one too).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from msmt.client import Client
from msmt.core import Markings
from msmt.gateway.config import hash_password
from msmt.gateway.store import Store
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server, free_port
from tests.e2e.test_docs_page import CHROMIUM, CSP_PROBE, FLAGS, Watch, _require_browser
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .stix_samples import bundle, indicator, vessel_report
from .support import withdrawal
from .test_web import HOSTILE_MARKDOWN, sealed, store_items

PASSWORD = "correct horse battery"
PASSPHRASE = "usa passphrase"
FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}
GATEWAY = [sys.executable, "-m", "msmt.gateway.cli"]


@pytest.fixture
def artefacts(tmp_path: Path, record_property: Any) -> Path:
    base = os.environ.get("MSMT_TEST_ARTEFACTS")
    folder = Path(base) / "web-inbox" if base else tmp_path / "artefacts"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"web inbox screenshots: {folder}")
    record_property("artefacts", str(folder))
    return folder


@dataclass
class World:
    gateway: str
    kor: Client
    items: dict[str, str]  # a name -> the item id


def _wait(check: Any, seconds: float, why: Any) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, why()
        time.sleep(0.1)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    _require_browser()
    broker_db = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(broker_db, int(time.time() * 1000))
    root = root_of(broker_db)
    home = tmp_path / "usa-gateway"
    _KEYS["USA"].save(home / "keys", PASSPHRASE, kdf=FAST_KDF)
    TrustStore.pin(root, home / "keys" / "trust")
    store_url = f"sqlite:///{home / 'gateway.db'}"

    # what the gateway holds before it starts: made and opened here, as it would have stored them
    stix_jpn = vessel_report("GREEN")
    stix_jpn["name"] = "Übergabe auf See: ship-to-ship transfer at 38.1N"
    prefilled = {
        "hostile": sealed(HOSTILE_MARKDOWN, topics=("arms",)),
        "red": sealed(
            b"# Cyber theft\n\nA TLP:RED account of the theft.",
            tlp="RED",
            classification="CONFIDENTIAL",
            topics=("cyber",),
        ),
        "jpn": sealed(bundle(stix_jpn, levels=("GREEN",)), origin="JPN", tlp="GREEN"),
        "withdrawn": sealed(b"# Vessel sighting\n\nLater found to be the wrong vessel."),
    }
    store = Store(store_url)
    store_items(store, *prefilled.values())
    store_items(store, withdrawal(500, prefilled["withdrawn"].opened.header.item_id, reason="Wrong vessel."))
    store.close()
    items = {name: r.opened.header.item_id for name, r in prefilled.items()}

    port = free_port()
    users = "\n".join(f'{u} = "{hash_password(PASSWORD, n=2**10)}"' for u in ("analyst", "reader"))
    with broker_server(broker_db, AUDIENCE, tmp_path / "broker.log") as (broker, _):
        (home / "gateway.toml").write_text(
            f'broker_url = "{broker}"\nkeys = "keys"\naudience = "{AUDIENCE}"\n'
            f'database_url = "{store_url}"\nlisten = "127.0.0.1:{port}"\ntitle = "USA gateway"\n\n'
            f"[users]\n{users}\n\n"
            '[send.partners]\nclassification = "RESTRICTED"\ntlp = "bundle"\nreleasable_to = ["JPN", "KOR"]\n'
            'topics = ["maritime"]\nwriters = ["analyst"]\n\n'
            '[send.everyone]\nclassification = "RESTRICTED"\ntlp = "CLEAR"\nreleasable_to = ["ALL"]\n'
            'topics = ["maritime"]\nwriters = ["analyst"]\n'
        )
        with Client(
            broker, _KEYS["KOR"], trust=TrustStore.pin(root, tmp_path / "kor"), audience=AUDIENCE
        ) as kor:
            # KOR sends USA a report and a bundle through the broker; the gateway follows them
            markings = Markings.create("RESTRICTED", "GREEN", ["USA"], topics=["maritime"])
            report = kor.send(
                b"# Port call at Nampo\n\nThe tanker *SEA STAR* called at Nampo on 3 March.",
                content_type="text/markdown",
                markings=markings,
                recipients=["USA"],
            )
            sighting = bundle(vessel_report("GREEN"), indicator("GREEN"), levels=("GREEN",))
            stix_kor = kor.send(
                json.dumps(sighting).encode(),
                content_type="application/stix+json",
                markings=markings,
                recipients=["USA"],
            )
            items.update(kor_report=report.item_id, kor_stix=stix_kor.item_id)
            log_path = tmp_path / "gateway.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [*GATEWAY, "serve", "--config", str(home / "gateway.toml"), "--wait", "1"],
                    env={**os.environ, "MSMT_PASSPHRASE": PASSPHRASE},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            base = f"http://127.0.0.1:{port}"

            def why() -> str:
                return log_path.read_text()[-3000:]

            def serving() -> bool:
                assert proc.poll() is None, why()
                try:
                    return httpx.get(f"{base}/inbox/login", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            def followed() -> bool:
                with contextlib.closing(Store(store_url, upgrade=False)) as opened:
                    return all(opened.item(i) is not None for i in (report.item_id, stix_kor.item_id))

            try:
                _wait(serving, 30, why)
                _wait(followed, 60, why)  # the gateway verified, decrypted and stored KOR's items
                yield World(base, kor, items)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class Probe:
    """The CSP violations of every page visited (read before leaving it), the script errors
    of the pages, and the console's errors."""

    def __init__(self) -> None:
        self.violations: dict[str, list[str]] = {}
        self.script_errors: list[str] = []
        self.console: list[str] = []

    def read(self, page: Any, name: str) -> None:
        found: list[str] = page.evaluate("window.__cspViolations || []")
        if found:
            self.violations[name] = found


def _walk(context: Any, world: World, artefacts: Path, watch: Watch, probe: Probe) -> None:
    from playwright.sync_api import expect

    context.route("**/*", watch.route)
    context.on("request", lambda request: watch.requested.append(request.url))
    context.add_init_script(CSP_PROBE)
    page = context.new_page()
    page.on("console", lambda m: probe.console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: probe.script_errors.append(str(e)))
    base = world.gateway
    shot = 0

    def snap(name: str) -> None:
        nonlocal shot
        shot += 1
        page.screenshot(path=artefacts / f"{shot:02d}-{name}.png", full_page=True)
        probe.read(page, name)

    # --- log in, after a wrong password
    page.goto(base + "/")
    expect(page).to_have_url(f"{base}/inbox/login?next=%2Finbox%2F")
    page.fill("#username", "analyst")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    snap("login-refused")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Inbox")
    expect(page.locator("#count")).to_have_text("7 items")
    # TLP 2.0 colours, from the stylesheet (so it loaded under the CSP)
    red = page.locator("tr", has=page.locator(f'a[href="/inbox/items/{world.items["red"]}"]')).locator(".tlp")
    expect(red).to_have_text("TLP:RED")
    expect(red).to_have_css("color", "rgb(255, 43, 43)")
    expect(red).to_have_css("background-color", "rgb(0, 0, 0)")
    expect(page.locator('[data-banner="top"]')).to_contain_text("CONFIDENTIAL")
    expect(page.locator('[data-banner="bottom"]')).to_contain_text("CONFIDENTIAL")
    expect(page.locator("tr.withdrawn")).to_have_count(1)
    snap("list")

    # --- filter, then search
    page.select_option("#originator", "JPN")
    page.click("text=Apply")
    expect(page.locator("#count")).to_have_text("1 item matches")
    expect(page.locator("td.origin")).to_have_text(["JPN"])
    snap("filter-jpn")
    page.click("#clear-filters")
    page.select_option("#tlp", "RED")
    page.click("text=Apply")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr .tlp")).to_have_text("TLP:RED")
    page.click("#clear-filters")
    page.fill("#q", "nampo")  # a Markdown report's text (KOR's, through the broker)
    page.press("#q", "Enter")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("td.subject a").first).to_have_text("Port call at Nampo")
    snap("search-text")
    page.fill("#q", "Übergabe")  # a STIX object's name
    page.press("#q", "Enter")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("td.origin")).to_have_text(["JPN"])

    # --- a STIX item (JPN's): the object table
    page.locator("td.subject a").first.click()
    expect(page.locator("h1")).to_have_text("STIX bundle from JPN")
    expect(page.locator("#objects")).to_contain_text("Übergabe auf See")
    expect(page.locator('[data-banner="top"] .tlp')).to_have_text("TLP:GREEN")
    expect(page.locator('[data-banner="top"] .tlp')).to_have_css("color", "rgb(51, 255, 0)")
    snap("item-stix")

    # --- the hostile Markdown report: rendered, inert, no remote image
    page.goto(f"{base}/inbox/items/{world.items['hostile']}")
    expect(page.locator("#markdown h1")).to_contain_text("Findings <script>")
    expect(page.locator("#markdown .blocked-image")).to_contain_text("image not loaded: tracking pixel")
    expect(page.locator("#markdown a")).to_have_count(2)  # the https link, and the ms-msdt: one made inert
    expect(page.locator('#markdown a[href^="https://example.org/"]')).to_have_attribute(
        "rel", "noopener noreferrer nofollow"
    )
    assert page.evaluate("window.__xss") is None
    assert page.locator("#markdown script, #markdown img, #markdown iframe").count() == 0
    expect(page.locator('[data-banner="top"]')).to_contain_text("RESTRICTED // REL TO USA")
    expect(page.locator('[data-banner="bottom"]')).to_contain_text("RESTRICTED // REL TO USA")
    snap("item-hostile-markdown")

    # --- KOR's report through the broker: provenance
    page.goto(f"{base}/inbox/items/{world.items['kor_report']}")
    expect(page.locator("#markdown em")).to_have_text("SEA STAR")
    expect(page.locator("#provenance")).to_contain_text(_KEYS["KOR"].signing.public_key.key_id)
    snap("item-markdown")

    # --- the TLP:RED item
    page.goto(f"{base}/inbox/items/{world.items['red']}")
    expect(page.locator("#red-notice")).to_be_visible()
    expect(page.locator('[data-banner="top"]')).to_contain_text("CONFIDENTIAL // REL TO USA")
    expect(page.locator('[data-banner="top"] .tlp')).to_have_text("TLP:RED")
    expect(page.locator('[data-banner="bottom"] .tlp')).to_have_text("TLP:RED")
    snap("item-red")

    # --- the withdrawn item
    page.goto(f"{base}/inbox/items/{world.items['withdrawn']}")
    expect(page.locator("#withdrawn")).to_contain_text("Withdrawn by its originator.")
    expect(page.locator("#withdrawn")).to_contain_text("Wrong vessel.")
    snap("item-withdrawn")

    # --- send a bundle: the live preflight derives its TLP and the recipients; it reaches KOR
    page.click("nav >> text=Send")
    expect(page.locator("h1")).to_have_text("Send to partners")
    page.select_option("#profile", "partners")
    sent_objects = bundle(vessel_report("GREEN"), indicator("GREEN", value="203.0.113.9"), levels=("GREEN",))
    page.fill("#content", json.dumps(sent_objects, indent=1))
    expect(page.locator("#preflight")).to_have_attribute("data-state", "ok", timeout=20_000)
    expect(page.locator("#preflight-tlp")).to_have_text("TLP:GREEN")
    expect(page.locator("#preflight-recipients")).to_contain_text("JPN, KOR")
    expect(page.locator("#preflight-objects")).to_have_text("3")
    snap("send-preflight-ok")
    page.click("#send-button")
    expect(page.locator("#status")).to_have_attribute("data-outcome", "sent", timeout=30_000)
    expect(page.locator("#status-recipients")).to_have_text("JPN, KOR")
    snap("send-sent")
    got = world.kor.receive(0)
    from_usa = [r for r in got.received if r.opened.header.originator == "USA"]
    assert len(from_usa) == 1 and json.loads(from_usa[0].payload) == sent_objects
    assert from_usa[0].opened.header.markings.tlp == "GREEN"

    # --- a TLP:RED bundle in the TLP:CLEAR profile: refused, naming the object; nothing sent
    page.click("text=Send another")
    page.select_option("#profile", "everyone")
    red_object = indicator("RED", value="192.0.2.66")
    pasted = json.dumps(bundle(indicator("GREEN"), red_object, levels=("GREEN", "RED")))
    page.fill("#content", pasted)
    expect(page.locator("#preflight")).to_have_attribute("data-state", "error", timeout=20_000)
    expect(page.locator("#preflight-object")).to_have_text(red_object["id"])
    expect(page.locator("#preflight-title")).to_contain_text("stricter than the envelope's TLP:CLEAR")
    snap("send-preflight-refused")
    page.click("#send-button")
    expect(page.locator("#refusal-object")).to_have_text(red_object["id"])
    expect(page.locator("#content")).to_have_value(pasted)  # kept, to be fixed
    snap("send-refused")
    again = world.kor.receive(got.cursor)
    assert [r for r in again.received if r.opened.header.originator == "USA"] == []

    # --- log out
    page.click("text=Log out")
    expect(page.locator("h1")).to_have_text("Log in")
    page.goto(f"{base}/inbox/")
    expect(page).to_have_url(f"{base}/inbox/login?next=%2Finbox%2F")
    probe.read(page, "logged-out")


def test_the_web_inbox_in_a_real_browser(world: World, artefacts: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    watch = Watch(world.gateway)
    probe = Probe()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user data dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1360, "height": 900},
        )
        try:
            _walk(context, world, artefacts, watch, probe)
        except Exception as exc:
            for page in context.pages:
                with contextlib.suppress(Exception):
                    page.screenshot(path=artefacts / "failure.png", full_page=True)
            raise AssertionError(
                f"{type(exc).__name__}: {exc}\nrequests blocked: {watch.blocked}\n"
                f"script errors: {probe.script_errors}\nconsole: {probe.console}\nCSP violations: {probe.violations}\n"
                f"requests: {watch.requested}\n"
                f"screenshot: {artefacts / 'failure.png'}"
            ) from exc
        finally:
            context.close()

    print(f"browser test: {time.monotonic() - started:.1f} s; screenshots in {artefacts}")
    problems = {
        "requests to other hosts (blocked)": watch.blocked,
        "requests to other hosts (seen)": watch.outside(),
        "CSP violations": probe.violations,
        "script errors": probe.script_errors,
        "console errors": [e for e in probe.console if not e.startswith("Failed to load resource")],
    }
    assert {k: v for k, v in problems.items() if v} == {}
    # the only pages answered with an error status: the wrong password, and the refused send
    assert [e.rsplit("status of ", 1)[-1] for e in probe.console] == [
        "401 (Unauthorized)",
        "422 (Unprocessable Entity)",
    ]
    assert any(u == f"{world.gateway}/inbox/static/inbox.css" for u in watch.requested)
    assert any(u == f"{world.gateway}/inbox/static/send.js" for u in watch.requested)
    assert any(u == f"{world.gateway}/inbox/send/preflight" for u in watch.requested)
    shots = sorted(artefacts.glob("*.png"))
    assert len(shots) >= 12 and all(s.stat().st_size > 10_000 for s in shots), shots
