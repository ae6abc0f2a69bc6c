"""msmt-verify: the offline verifier's output, exit codes, reader's page, and its imports."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from msmt import verify
from msmt.core import SigningPrivateKey, canonical
from msmt.core import report as rp

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "report-v1"
DIRECTORY = ROOT / "tests" / "vectors" / "directory-v1"
VALID = VECTORS / "valid" / "all.json"
PIN = json.loads((DIRECTORY / "fingerprint.json").read_text())["fingerprint"]
KEYS: dict[str, Any] = json.loads((VECTORS / "keys.json").read_text(encoding="utf-8"))
CHAIN = [(DIRECTORY / "root.json").read_bytes()] + [
    p.read_bytes() for p in sorted((DIRECTORY / "chain").glob("*.json"))
]
T0 = 1_796_000_000_000
HOUR = 3_600_000
SENTENCE = (
    "endorsed by KOR, USA, JPN on 2026-11-30; reservations: JPN: Japan does not associate itself "
    "with finding 4 (the broker in a third country)."
)


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    fake_stdin = io.TextIOWrapper(io.BytesIO(stdin or b""))
    code = verify.main(list(argv), stdin=fake_stdin)
    out = capsys.readouterr()
    return code, out.out, out.err


def key(country: str, generation: int) -> SigningPrivateKey:
    return SigningPrivateKey.from_seed(bytes.fromhex(KEYS["signing"][country][str(generation)]["seed"]))


def test_valid_bundle_prints_the_sentence_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(VALID), "--root-fingerprint", PIN.lower())
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"VERIFIED: {SENTENCE}"
    assert f"members' root: {PIN} (the pinned root)" in lines


def test_unpinned_bundle_names_the_root_to_compare(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(VALID))
    assert code == 0
    assert f"members' root: {PIN} -- NOT PINNED" in out


def test_stdin_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-", "--json", "--root-fingerprint", PIN, stdin=VALID.read_bytes())
    assert code == 0
    verdict = json.loads(out)
    assert verdict["valid"] is True and verdict["sentence"] == SENTENCE and verdict["root_pinned"] is True
    assert [e["country"] for e in verdict["endorsements"]] == ["KOR", "USA", "JPN"]


@pytest.mark.parametrize("name", ["rule-not-met", "key-bytes-swapped", "endorsement-for-other-version"])
def test_rejected_bundle_says_why_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    vector = json.loads((VECTORS / "negative" / f"{name}.json").read_text())
    from tests.unit.test_report import apply_edits

    bad = tmp_path / "bad.json"
    bad.write_bytes(apply_edits(VALID.read_bytes(), vector["edits"]))
    code, out, _ = run(capsys, str(bad), "--html", str(tmp_path / "page.html"))
    assert code == 1
    assert out.startswith("REJECTED: ") and out.rstrip().endswith(f"[{vector['error']}]")
    assert len(out.strip().splitlines()) == 1
    assert not (tmp_path / "page.html").exists()  # no reader's page for a rejected bundle
    code, out, _ = run(capsys, str(bad), "--json")
    assert code == 1 and json.loads(out)["code"] == vector["error"]


def test_wrong_root_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(VALID), "--root-fingerprint", "0" * 32)
    assert code == 1 and "[root-mismatch]" in out


@pytest.mark.parametrize(
    "argv",
    [["/nonexistent/bundle.json"], [str(VALID), "--root-fingerprint", "F794"], [], [str(VALID), "--bogus"]],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    try:
        code, _, _ = run(capsys, *argv)
    except SystemExit as exc:  # argparse
        code = int(str(exc.code))
    assert code == 2


def test_unwritable_page_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(VALID), "--html", str(tmp_path / "missing" / "page.html"))
    assert code == 2 and "cannot write" in err


ALLOWED_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "p",
    "strong",
    "code",
    "pre",
    "table",
    "tr",
    "th",
    "td",
    "span",
    "ol",
    "li",
}


class Tags(HTMLParser):
    """Every element and attribute name a browser would see in the page."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes |= {name for name, _ in attrs}


def hostile_bundle() -> bytes:
    doc = rp.new_document(
        title='<script>alert("t")</script> & "quotes"',
        body='# Title\n\n<img src=x onerror=alert(1)>\n<a href="https://evil.example/">x</a>\n</pre><script>x()</script>',
        participants=["KOR", "USA"],
        rule=rp.Rule("all"),
        attachments={"a.html": ("text/html", b"<script>alert(2)</script>")},
        report_id="01a229f1-2800-7000-8000-00000000f001",
    )
    statements = [
        rp.endorse(doc, "KOR", key("KOR", 0), T0 + 10 * HOUR, "<b>bold</b> & </td></tr><script>y()</script>"),
        rp.endorse(doc, "USA", key("USA", 1), T0 + 11 * HOUR),
    ]
    return rp.build_bundle(doc.to_bytes(), statements, CHAIN)


def test_html_page_is_static_and_escapes_everything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = tmp_path / "report.msmt.json"
    bundle.write_bytes(hostile_bundle())
    page_path = tmp_path / "page.html"
    code, _, _ = run(capsys, str(bundle), "--root-fingerprint", PIN, "--html", str(page_path))
    assert code == 0
    page = page_path.read_text(encoding="utf-8")
    tags = Tags()
    tags.feed(page)
    assert tags.names <= ALLOWED_TAGS, tags.names - ALLOWED_TAGS
    assert tags.attributes <= {"lang", "charset", "http-equiv", "content", "name", "class"}, tags.attributes
    assert "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;/pre&gt;&lt;script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;/td&gt;&lt;/tr&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("https://") == 1  # the escaped one from the body; the page itself links nothing
    # what a reader needs: verdict, content hash, root, and how to check
    verdict = rp.verify_bundle(bundle.read_bytes(), PIN)
    for text in (
        verdict.content_hash,
        PIN,
        verdict.bundle_sha256,
        f"msmt-verify report.msmt.json --root-fingerprint {PIN}",
    ):
        assert text in page
    assert "endorsed by KOR, USA on 2026-11-30; reservations: KOR:" in page


def test_html_page_without_pin_warns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, _ = run(capsys, str(VALID), "--html", str(tmp_path / "p.html"))
    assert code == 0
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "without a pinned root" in page and PIN in page
    assert canonical.decode(VALID.read_bytes())["report"]["manifest"]["title"] in page


# orjson and pybase64 too: canonical decoding uses them when they are there (speed-ups), never needs them
BLOCKED = [
    "httpx",
    "jwt",
    "broker",
    "fastapi",
    "sqlalchemy",
    "pydantic",
    "anyio",
    "h11",
    "httpcore",
    "orjson",
    "pybase64",
]
RUNNER = """
import importlib.abc, sys
BEFORE = set(sys.modules)
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked for this test")
        return None
sys.meta_path.insert(0, Block())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
from msmt import verify
code = verify.main(sys.argv[2:])
new = {m.split(".")[0] for m in set(sys.modules) - BEFORE}
third_party = sorted(new - set(sys.stdlib_module_names))
print("MODULES " + " ".join(third_party))
raise SystemExit(code)
"""


def test_verifier_runs_without_the_clients_network_libraries(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            ",".join(BLOCKED),
            str(VALID),
            "--root-fingerprint",
            PIN,
            "--html",
            str(tmp_path / "p.html"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"VERIFIED: {SENTENCE}")
    modules = result.stdout.strip().splitlines()[-1].removeprefix("MODULES ").split()
    assert set(modules) <= {"msmt", "cryptography", "_cffi_backend", "_openssl", "_rust"}, modules
    # and the blocker does block: the client proper cannot be imported in that interpreter
    blocked = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER.replace("from msmt import verify", "import msmt.client"),
            ",".join(BLOCKED),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert blocked.returncode != 0 and "is blocked for this test" in blocked.stderr
