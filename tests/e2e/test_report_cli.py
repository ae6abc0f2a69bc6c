"""`msmt report` against a real broker process, each step a separate CLI process: KOR drafts,
revises, the three participants endorse (JPN with a reservation), KOR publishes, and
`msmt-verify` accepts the bundle; withdrawing another member's item fails with one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import broker_process
from .test_cli import run

AUDIENCE = "msmt-report-cli-test"
FOUNDERS = ("KOR", "USA", "JPN")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("report-cli")
    db = f"sqlite:///{tmp / 'broker.db'}"
    env = {**os.environ, "MSMT_PASSPHRASE": "correct horse battery staple", "MSMT_AUDIENCE": AUDIENCE}
    admin = ("--database-url", db)
    run(
        *admin,
        "init",
        "--admin",
        "ops",
        "--data-dir",
        str(tmp / "broker"),
        "--passphrase-env",
        "MSMT_PASSPHRASE",
        "--default-ceiling",
        "RESTRICTED",
        env=env,
        module="broker.cli",
    )
    members = ""
    for code in FOUNDERS:
        run("keys", "generate", code, "--out", str(tmp / code), env=env)
        run("--keys", str(tmp / code), "keys", "export", "--out", str(tmp / "pub"), env=env)
        members += f'[members.{code}]\nname = "{code}"\naccreditation = "SECRET"\nkeys = "pub"\n'
    (tmp / "members.toml").write_text(members)
    root = str(tmp / "root.json")
    run("governance", "root", "draft", str(tmp / "members.toml"), "-o", root, env=env)
    for code in FOUNDERS:
        run("--keys", str(tmp / code), "governance", "root", "sign", root, env=env)
    fingerprint = run("governance", "root", "check", root, env=env).stdout.split()[-1]
    run(*admin, "directory", "install", root, env=env, module="broker.cli")
    for code in FOUNDERS:
        run("--keys", str(tmp / code), "trust", "init", root, "--fingerprint", fingerprint, env=env)
    return {"tmp": tmp, "db": db, "env": env, "fingerprint": fingerprint}


def test_draft_revise_endorse_publish_and_verify(setup: dict[str, object]) -> None:
    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    draft = tmp / "draft.md"
    draft.write_text("# Findings\n\nThree transfers were observed.\n")
    track = tmp / "track.csv"
    track.write_text("time,lat,lon\n1,31.2,124.1\n")
    with broker_process(db, AUDIENCE, tmp / "broker.log") as base:
        as_ = {c: {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / c)} for c in FOUNDERS}
        sent = json.loads(
            run(
                "--json",
                "report",
                "draft",
                str(draft),
                "--title",
                "Ship-to-ship transfers, East China Sea, Q3",
                "--participants",
                "KOR,USA,JPN",
                "--rule",
                "all",
                "--attach",
                str(track),
                env=as_["KOR"],
            ).stdout
        )
        report_id = sent["report_id"]
        assert (tmp / "KOR" / "reports" / "items" / f"{sent['item_id']}.json").exists()

        comment = run("report", "comment", sent["item_id"], "Add the fourth transfer.", env=as_["USA"])
        assert "comment" in comment.stdout

        revised = tmp / "v2.md"
        revised.write_text(draft.read_text() + "A fourth transfer on 2 September.\n")
        v2 = json.loads(run("--json", "report", "revise", report_id, str(revised), env=as_["KOR"]).stdout)
        assert v2["sent"] == "version 2"

        for code in FOUNDERS:
            extra = ["--reservation", "JPN does not endorse the attribution."] if code == "JPN" else []
            run("report", "endorse", report_id, "--version", "2", *extra, env=as_[code])

        changes = run("report", "diff", report_id, env=as_["USA"]).stdout
        assert "+A fourth transfer on 2 September." in changes

        bundle, page = tmp / "report.msmt", tmp / "report.html"
        published = run(
            "report", "publish", report_id, "--version", "2", "-o", str(bundle), "--html", str(page),
            env=as_["KOR"],
        )  # fmt: skip
        assert published.stdout.startswith("VERIFIED:")
        log = json.loads(run("--json", "report", "log", report_id, env=as_["KOR"]).stdout)
        assert [row["version"] for row in log] == [1, 2] and log[1]["satisfied"]
        assert log[0]["comments"] == 1
        status = json.loads(run("--json", "report", "status", env=as_["KOR"]).stdout)
        assert status[0]["state"] == "ready to publish"

        verified = subprocess.run(
            [
                sys.executable,
                "-m",
                "msmt.verify",
                str(bundle),
                "--root-fingerprint",
                str(setup["fingerprint"]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("VERIFIED: endorsed by")
        assert "JPN does not endorse the attribution." in verified.stdout
        assert "JPN does not endorse the attribution." in page.read_text()

        # only an item's originator may withdraw it
        refused = run("report", "withdraw", sent["item_id"], "--reason", "not mine", env=as_["USA"], expect=1)
        assert "only its originator may withdraw it" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        withdrawn = json.loads(
            run(
                "--json", "report", "withdraw", sent["item_id"], "--reason", "superseded", env=as_["KOR"]
            ).stdout
        )
        assert withdrawn["withdrawn"] == sent["item_id"]
        run("report", "sync", env=as_["USA"])
        log = json.loads(run("--json", "report", "log", report_id, env=as_["USA"]).stdout)
        assert log[0]["withdrawn"] and not log[1]["withdrawn"]

        short = run("report", "publish", report_id, "--version", "1", "-o", str(tmp / "v1.msmt"),
                    env=as_["KOR"], expect=1)  # fmt: skip
        assert not (tmp / "v1.msmt").exists() and "Traceback" not in short.stderr


@pytest.mark.parametrize("keep", [False, True])
def test_a_withdrawn_tlp_red_item_loses_its_plaintext_at_the_recipient(
    setup: dict[str, object], keep: bool
) -> None:
    """Issue 13 item 4: the originator withdraws a mis-sent TLP:RED item; the recipient's pull
    marks it withdrawn and deletes its decrypted payload, unless told to keep it."""
    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    report = tmp / f"red-{keep}.md"
    report.write_text("Sent to the wrong partner.\n")
    inbox = tmp / f"usa-inbox-{keep}"
    with broker_process(db, AUDIENCE, tmp / f"broker-red-{keep}.log") as base:
        kor = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "KOR")}
        usa = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "USA")}
        sent = json.loads(
            run(
                "--json", "submit", str(report), "-c", "RESTRICTED", "--tlp", "RED", "-r", "USA", env=kor
            ).stdout
        )
        item_id = sent["item_id"]
        keep_flag = ["--keep-withdrawn"] if keep else []
        run("pull", str(inbox), *keep_flag, env=usa)
        (payload,) = [p for p in inbox.glob(f"*-{item_id}.*") if not p.name.endswith(".json")]
        assert payload.read_text() == "Sent to the wrong partner.\n"

        withdrawn = run("withdraw", item_id[:13], "--reason", "sent in error", env=kor)
        assert item_id in withdrawn.stdout
        other = run("withdraw", item_id, "--reason", "not mine", env=usa, expect=1)  # not USA's item: a 404
        assert "originated by USA" in other.stderr and "Traceback" not in other.stderr
        pulled = run("pull", str(inbox), *keep_flag, env=usa)
        assert f"KOR WITHDREW item {item_id}: sent in error" in pulled.stderr
    marker = json.loads(next(inbox.glob(f"*-{item_id}.withdrawn.json")).read_text())
    assert marker["withdrawn_by"] == "KOR" and marker["reason"] == "sent in error"
    assert payload.exists() == keep
    assert next(inbox.glob(f"*-{item_id}.header.json")).exists()  # its signed header stays
