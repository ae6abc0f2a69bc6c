"""The agency CLI `msmt` and the admin CLI `msmt-broker` against a real broker process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import broker_process

AUDIENCE = "msmt-cli-test"


def run(
    *args: str, env: dict[str, str], expect: int = 0, module: str = "msmt.cli"
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == expect, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("cli")
    db = f"sqlite:///{tmp / 'broker.db'}"
    env = {**os.environ, "MSMT_PASSPHRASE": "correct horse battery staple", "MSMT_AUDIENCE": AUDIENCE}
    admin = [*("--database-url", db)]
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
    founders = (("KOR", "SECRET"), ("USA", "SECRET"), ("NZL", "RESTRICTED"))
    members = ""
    for code, accreditation in founders:
        run("keys", "generate", code, "--out", str(tmp / code), env=env)
        run("--keys", str(tmp / code), "keys", "export", "--out", str(tmp / "pub"), env=env)
        members += f'[members.{code}]\nname = "{code}"\naccreditation = "{accreditation}"\nkeys = "pub"\n'
    (tmp / "members.toml").write_text(members)
    root = str(tmp / "root.json")
    run("governance", "root", "draft", str(tmp / "members.toml"), "-o", root, env=env)
    for code, _ in founders:
        run("--keys", str(tmp / code), "governance", "root", "sign", root, env=env)
    fingerprint = run("governance", "root", "check", root, env=env).stdout.split()[-1]
    run(*admin, "directory", "install", root, env=env, module="broker.cli")
    for code, _ in founders:
        run("--keys", str(tmp / code), "trust", "init", root, "--fingerprint", fingerprint, env=env)
    return {"tmp": tmp, "db": db, "env": env}


def test_send_refuse_pull_and_status(setup: dict[str, object]) -> None:
    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    report = tmp / "sighting.md"
    report.write_text("# Ship-to-ship transfer\n\nTwo tankers alongside at night, AIS off.\n")
    with broker_process(db, AUDIENCE, tmp / "broker.log") as base:
        kor = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "KOR")}
        usa = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "USA")}

        preflight = json.loads(
            run("--json", "preflight", "-c", "SECRET", "--tlp", "AMBER", "-r", "ALL", env=kor).stdout
        )
        assert preflight["allowed"] == []
        assert "NZL" in preflight["denied"] and "USA" in preflight["denied"]

        refused = run(
            "submit",
            str(report),
            "-c",
            "SECRET",
            "--tlp",
            "AMBER",
            "-r",
            "ALL",
            "--to",
            "NZL",
            env=kor,
            expect=3,
        )
        assert "NZL: SECRET is above NZL's accreditation (RESTRICTED)" in refused.stderr

        explained = run("explain", "NZL", "-c", "SECRET", "--tlp", "AMBER", "-r", "ALL", env=kor, expect=3)
        assert "DENIED" in explained.stdout and "above-accreditation" in explained.stdout

        sent = json.loads(
            run(
                "--json",
                "submit",
                str(report),
                "-c",
                "RESTRICTED",
                "--tlp",
                "AMBER",
                "-r",
                "USA",
                "-t",
                "maritime",
                env=kor,
            ).stdout
        )
        assert sent["recipients"] == ["USA"]  # preflight picked the only allowed partner

        inbox = json.loads(run("--json", "inbox", env=usa).stdout)
        assert [d["item_id"] for d in inbox["deliveries"]] == [sent["item_id"]]

        shown = json.loads(run("--json", "show", sent["item_id"], "--open", env=usa).stdout)
        assert shown["originator"]["country"] == "KOR"
        assert shown["signature"].startswith("verified")

        out = tmp / "usa-inbox"
        pulled = json.loads(run("--json", "pull", str(out), env=usa).stdout)
        assert pulled == {"saved": 1, "rejected": 0, "folder": str(out)}
        (payload,) = out.glob("*.md")
        assert payload.read_bytes() == report.read_bytes()
        assert (
            json.loads(next(out.glob("*.header.json")).read_text())["markings"]["classification"]
            == "RESTRICTED"
        )
        assert json.loads(run("--json", "pull", str(out), env=usa).stdout)["saved"] == 0  # cursor kept

        status = json.loads(run("--json", "status", sent["item_id"], env=kor).stdout)
        assert [(d["recipient"], d["state"]) for d in status["deliveries"]] == [("USA", "acknowledged")]
        assert status["proofs"] == {"USA": "signed"}  # pull sent a signed delivery receipt
        audit = json.loads(run("--json", "audit", env=kor).stdout)
        assert audit == {"problems": [], "items_checked": 1, "witnesses": [], "evidence": []}
        assert json.loads(run("--json", "audit", env=usa).stdout)["problems"] == []

        # USA cannot see KOR's delivery status, and NZL cannot read the item: 404s, exit 1
        run("status", sent["item_id"], env=usa, expect=1)
        nzl = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "NZL")}
        run("show", sent["item_id"], env=nzl, expect=1)

        wrong = {**kor, "MSMT_PASSPHRASE": "wrong"}
        assert "wrong passphrase" in run("inbox", env=wrong, expect=6).stderr

    unreachable = {**env, "MSMT_BROKER_URL": "http://127.0.0.1:9", "MSMT_KEYS": str(tmp / "KOR")}
    run("inbox", env=unreachable, expect=4)


def test_governance_rotation_and_audit_from_the_command_line(setup: dict[str, object]) -> None:
    from sqlalchemy import create_engine, text

    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    report = tmp / "audit.md"
    report.write_text("# For the audit\n")
    with broker_process(db, AUDIENCE, tmp / "broker-2.log") as base:
        kor, usa, nzl = (
            {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / c)} for c in ("KOR", "USA", "NZL")
        )

        assert "is now" in run("keys", "rotate", "--kind", "encryption", "--overlap", "1h", env=kor).stdout
        history = json.loads(run("--json", "keys", "history", "--country", "KOR", env=kor).stdout)
        assert (history[-1]["type"], history[-1]["signed_by"]) == ("rotate-key", "KOR")
        assert run("keys", "check", env=kor).stdout.startswith("ok:")

        # suspending NZL needs 2 of the 3 founders: USA proposes (and signs), KOR approves
        proposed = json.loads(
            run("--json", "governance", "propose", "update", "NZL", "--status", "suspended", env=usa).stdout
        )
        assert proposed["state"] == "pending" and proposed["signers"] == ["USA"]
        approved = json.loads(run("--json", "governance", "approve", proposed["id"][:12], env=kor).stdout)
        assert approved["state"] == "applied"
        assert "suspended" in run("inbox", env=nzl, expect=1).stderr

        sent = [
            json.loads(
                run(
                    "--json",
                    "submit",
                    str(report),
                    "-c",
                    "RESTRICTED",
                    "--tlp",
                    "AMBER",
                    "-r",
                    "USA",
                    env=kor,
                ).stdout
            )["item_id"]
            for _ in range(2)
        ]
        engine = create_engine(db)  # the operator deletes USA's first new delivery
        with engine.begin() as conn:
            deleted = conn.execute(
                text("SELECT seq FROM deliveries WHERE item_id = :i"), {"i": sent[0]}
            ).scalar_one()
            conn.execute(text("DELETE FROM deliveries WHERE item_id = :i"), {"i": sent[0]})
        engine.dispose()
        usa_audit = run("--json", "audit", env=usa, expect=8)
        assert f"inbox entry {deleted} is missing" in usa_audit.stderr
        kor_audit = run("--json", "audit", "--overdue-hours", "0", env=kor, expect=8)
        assert f"{sent[0]}: the broker shows no delivery to USA" in kor_audit.stderr
        assert f"{sent[1]}: no signed receipt from USA" in kor_audit.stderr
        status = json.loads(run("--json", "status", sent[0], env=kor, expect=1).stdout)
        assert status["proofs"] == {"USA": "no delivery"}


ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
EPOCH_MS = re.compile(r"\b1\d{12}\b")
SPOKEN = re.compile(r"\b[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}\b")


def test_people_get_tables_short_ids_and_suggestions(setup: dict[str, object]) -> None:
    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    report = tmp / "short.md"
    report.write_text("# Short ids\n")
    marking = ("-c", "RESTRICTED", "--tlp", "AMBER", "-r", "USA")
    with broker_process(db, AUDIENCE, tmp / "broker-3.log") as base:
        kor, usa = (
            {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / c), "COLUMNS": "200"}
            for c in ("KOR", "USA")
        )
        sent = [
            json.loads(run("--json", "submit", str(report), *marking, env=kor).stdout)["item_id"]
            for _ in range(2)
        ]
        # a unique prefix is enough; the whole item id is in the answer
        status = json.loads(run("--json", "status", sent[1][:13], env=kor).stdout)
        assert status["item_id"] == sent[1]
        if sent[0][:8] == sent[1][:8]:  # 8 hex digits name every item of ~65 s
            ambiguous = run("status", sent[1][:8], env=kor, expect=1)
            assert "of the items you may see start with" in ambiguous.stderr
        assert "not an item id or a prefix" in run("status", sent[1][:6], env=kor, expect=1).stderr
        # another country's prefix is as unknown as a made-up one
        assert "404 unknown-item" in run("status", sent[1][:13], env=usa, expect=1).stderr

        human = run("status", sent[1][:13], env=kor).stdout
        assert "RECIPIENT" in human and ISO_TIME.search(human) and not EPOCH_MS.search(human), human
        shown = run("show", sent[1], "--open", env=usa).stdout
        assert "verified" in shown and ISO_TIME.search(shown) and not EPOCH_MS.search(shown), shown
        assert "{'" not in shown and SPOKEN.search(shown), shown  # no reprs; keys by fingerprint
        inbox = run("inbox", env=usa).stdout
        assert ISO_TIME.search(inbox) and not EPOCH_MS.search(inbox), inbox

        narrow = {**kor, "COLUMNS": "60"}
        preflight = run("preflight", "-c", "SECRET", "--tlp", "AMBER", "-r", "ALL", env=narrow).stdout
        assert all(len(line) <= 60 for line in preflight.splitlines()), preflight
        assert "accreditation" in preflight  # the reason is wrapped, not cut off

        typos = [
            (
                ("preflight", "-c", "CONFIDENTAIL", "--tlp", "AMBER", "-r", "ALL"),
                "did you mean CONFIDENTIAL?",
            ),
            (("preflight", "-c", "SECRET", "--tlp", "AMBER", "-r", "NZK"), "did you mean NZL?"),
            (
                ("preflight", "-c", "SECRET", "--tlp", "AMBER", "-r", "ALL", "-t", "maritme"),
                "did you mean maritime?",
            ),
            (("explain", "KRO", "-c", "SECRET", "--tlp", "AMBER", "-r", "ALL"), "did you mean KOR?"),
            (("submit", str(report), *marking, "--expires-in", "0"), "--expires-in must be a positive"),
        ]
        for args, expected in typos:
            assert expected in run(*args, env=kor, expect=2).stderr

        no_scheme = run("--broker", base.removeprefix("http://"), "inbox", env=kor, expect=2)
        assert "must start with https:// or http://" in no_scheme.stderr

    assert run("--version", env=env).stdout.startswith("msmt ")
    admin = ("--database-url", db)
    assert run("--version", env=env, module="broker.cli").stdout.startswith("msmt-broker ")
    env["COLUMNS"] = "200"  # no time is wrapped over two lines
    actions = run(*admin, "list", "actions", env=env, module="broker.cli").stdout
    assert ISO_TIME.search(actions) and not EPOCH_MS.search(actions), actions
    keys = run(*admin, "list", "keys", env=env, module="broker.cli").stdout
    assert SPOKEN.search(keys) and "public_key" not in keys.lower(), keys
    assert json.loads(run(*admin, "--json", "list", "keys", env=env, module="broker.cli").stdout)[0][
        "public_key"
    ]


def test_init_reads_msmt_passphrase_and_checks_before_writing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSMT_")}
    db = f"sqlite:///{tmp_path / 'broker.db'}"
    data = tmp_path / "keys"
    init = ("--database-url", db, "init", "--admin", "alice", "--data-dir", str(data))
    refused = run(*init, env=env, module="broker.cli", expect=2)  # no passphrase, no terminal
    assert "set MSMT_PASSPHRASE or pass --passphrase-env" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
    env["MSMT_PASSPHRASE"] = "correct horse"
    done = run(*init, env=env, module="broker.cli")
    assert "broker initialised" in done.stdout and SPOKEN.search(done.stdout)
    again = run(*init[:-2], "--data-dir", str(tmp_path / "other"), env=env, module="broker.cli", expect=2)
    assert "already holds a broker" in again.stderr and not (tmp_path / "other").exists()
