"""A joint report, end to end against a real broker process, with the unmodified client:
three members draft it in two revisions, endorse version 2 (one with a reservation), publish a
bundle, and `msmt-verify` (a separate process, offline) accepts it, and rejects it when any
part is changed, when an endorsement is for another version, or when the rule is not met."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msmt import reports
from msmt.client import Client
from msmt.core import Markings, canonical
from msmt.core import report as rp
from msmt.trust import TrustStore
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .servers import broker_server

MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
PARTICIPANTS = ("KOR", "USA", "JPN")


def verify(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msmt.verify", str(bundle), *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("reports")
    url = f"sqlite:///{folder / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    root = root_of(url)
    with broker_server(url, AUDIENCE, folder / "broker.log") as (base, _):
        clients = {
            c: Client(base, _KEYS[c], trust=TrustStore.pin(root), audience=AUDIENCE) for c in PARTICIPANTS
        }
        stores = {c: reports.ThreadStore(folder / c) for c in PARTICIPANTS}
        try:
            draft = rp.new_document(
                title="Ship-to-ship transfers, East China Sea, Q3",
                body="# Findings\n\nThree transfers were observed.\n",
                participants=PARTICIPANTS,
                rule=rp.Rule("all"),
                attachments={"track.csv": ("text/csv", b"time,lat,lon\n1,31.2,124.1\n")},
            )
            v1 = reports.send_draft(clients["KOR"], draft, MARKINGS)
            stores["KOR"].add(v1)
            comment = reports.send_comment(
                clients["USA"], v1.item_id, "Add the fourth transfer.", PARTICIPANTS, MARKINGS
            )
            stores["USA"].add(comment)
            for c in ("USA", "JPN"):
                reports.sync(clients[c], stores[c])
            first = reports.thread_status(stores["USA"].items(), clients["USA"].directory().state)
            early = reports.send_endorsement(
                clients["USA"], first.report(draft.manifest.report_id).latest, MARKINGS
            )
            stores["USA"].add(early)  # an endorsement of version 1: it must not count for version 2

            reports.sync(clients["KOR"], stores["KOR"])
            status = reports.thread_status(stores["KOR"].items(), clients["KOR"].directory().state)
            second = rp.revise(draft, body=draft.body + "A fourth transfer on 2 September.\n")
            v2 = reports.send_revision(
                clients["KOR"], status.report(draft.manifest.report_id).latest, second, MARKINGS
            )
            stores["KOR"].add(v2)

            for c in PARTICIPANTS:
                reports.sync(clients[c], stores[c])
                thread = reports.thread_status(stores[c].items(), clients[c].directory().state)
                latest = thread.report(draft.manifest.report_id).latest
                assert latest.number == 2
                reservation = "JPN does not endorse the attribution in paragraph 2." if c == "JPN" else ""
                stores[c].add(reports.send_endorsement(clients[c], latest, MARKINGS, reservation=reservation))
            reports.sync(clients["KOR"], stores["KOR"])
            thread = reports.thread_status(stores["KOR"].items(), clients["KOR"].directory().state).report(
                draft.manifest.report_id
            )
            version2 = thread.version(2)
            assert thread.satisfied(version2)
            entries = list(clients["KOR"].trust.entries)
            bundle, verdict = reports.publish(thread, version2, entries)
            assert sorted(e.country for e in verdict.endorsements) == sorted(PARTICIPANTS)
            log = reports.log(thread)
            return {
                "folder": folder,
                "bundle": bundle,
                "entries": entries,
                "thread": thread,
                "early": early,
                "log": log,
                "fingerprint": verdict.root_fingerprint,
            }
        finally:
            for client in clients.values():
                client.close()


def test_the_thread_shows_who_changed_what_version_by_version(published: dict[str, object]) -> None:
    log = published["log"]
    assert isinstance(log, list)
    assert [(row["version"], row["by"]) for row in log] == [(1, "KOR"), (2, "KOR")]
    assert log[0]["endorsed_by"] == ["USA"] and not log[0]["satisfied"] and log[0]["comments"] == 1
    assert sorted(log[1]["endorsed_by"]) == ["JPN (with reservation)", "KOR", "USA"] and log[1]["satisfied"]
    thread = published["thread"]
    assert isinstance(thread, reports.ReportThread)
    changes = reports.diff(thread.version(1).document, thread.version(2).document)
    assert "+A fourth transfer on 2 September." in changes


def test_msmt_verify_accepts_the_bundle_offline_and_says_who_endorsed(published: dict[str, object]) -> None:
    path = Path(str(published["folder"])) / "report.msmt"
    path.write_bytes(published["bundle"])  # type: ignore[arg-type]
    html = path.with_suffix(".html")
    result = verify(path, "--root-fingerprint", str(published["fingerprint"]), "--html", str(html))
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("VERIFIED: endorsed by") and all(c in first for c in PARTICIPANTS)
    assert "JPN does not endorse the attribution" in result.stdout
    page = html.read_text()
    assert "JPN does not endorse the attribution" in page and "<script" not in page


def _mutated(bundle: bytes, change: str) -> bytes:
    value = canonical.decode(bundle)
    if change == "report byte":
        value["report"]["body"] = value["report"]["body"].replace("fourth", "fifth")
    elif change == "attachment byte":
        name = next(iter(value["report"]["attachments"]))
        data = bytearray(canonical.b64decode(value["report"]["attachments"][name]))
        data[0] ^= 1
        value["report"]["attachments"][name] = canonical.b64encode(bytes(data))
    elif change == "endorsement byte":
        value["endorsements"][0]["signed"]["created_ms"] += 1
    elif change == "endorsement signature":
        sig = bytearray(canonical.b64decode(value["endorsements"][1]["sig"]))
        sig[10] ^= 1
        value["endorsements"][1]["sig"] = canonical.b64encode(bytes(sig))
    elif change == "key byte":
        key = bytearray(canonical.b64decode(value["keys"][0]["public_key"]))
        key[-1] ^= 1
        value["keys"][0]["public_key"] = canonical.b64encode(bytes(key))
    else:
        raise AssertionError(change)
    return canonical.encode(value)


@pytest.mark.parametrize(
    "change", ["report byte", "attachment byte", "endorsement byte", "endorsement signature", "key byte"]
)
def test_msmt_verify_rejects_any_changed_part(
    published: dict[str, object], tmp_path: Path, change: str
) -> None:
    path = tmp_path / "changed.msmt"
    path.write_bytes(_mutated(published["bundle"], change))  # type: ignore[arg-type]
    result = verify(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("REJECTED:")


def test_msmt_verify_rejects_an_endorsement_of_another_version(
    published: dict[str, object], tmp_path: Path
) -> None:
    thread = published["thread"]
    assert isinstance(thread, reports.ReportThread)
    version2 = thread.version(2)
    ours = [e.statement for e in thread.endorsements_of(version2) if e.endorsement.country != "USA"]
    early = published["early"]
    assert isinstance(early, reports.ThreadItem)
    bundle = rp.build_bundle(version2.document.to_bytes(), [*ours, early.payload], published["entries"])  # type: ignore[arg-type]
    path = tmp_path / "mixed.msmt"
    path.write_bytes(bundle)
    result = verify(path, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["code"] == "endorsement-for-other-version"


def test_msmt_verify_rejects_a_bundle_short_of_its_rule(published: dict[str, object], tmp_path: Path) -> None:
    thread = published["thread"]
    assert isinstance(thread, reports.ReportThread)
    version2 = thread.version(2)
    two = [e.statement for e in thread.endorsements_of(version2)][:2]
    path = tmp_path / "short.msmt"
    path.write_bytes(rp.build_bundle(version2.document.to_bytes(), two, published["entries"]))  # type: ignore[arg-type]
    result = verify(path, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["code"] == "rule-not-met"
