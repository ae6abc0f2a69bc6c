"""`msmt-broker check` after a restore and `purge`, as an operator runs them (issue 11 item 9)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from msmt.client import Client
from msmt.core import Markings
from msmt.trust import TrustStore
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .servers import broker_server


def broker_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_finds_a_lost_delivery_and_purge_counts_what_it_may_remove(tmp_path: Path) -> None:
    db = tmp_path / "broker.db"
    url = f"sqlite:///{db}"
    bootstrap(url, int(time.time() * 1000))
    markings = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
    trust = TrustStore.pin(root_of(url))
    with (
        broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _),
        Client(base, _KEYS["KOR"], trust=trust, audience=AUDIENCE) as kor,
    ):
        for n in range(3):
            kor.send(f"report {n}".encode(), content_type="text/plain", markings=markings, recipients=["USA"])

    good = broker_cli("check", "--deep", url=url)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith(
        "consistent: checked schema, deliveries, inbox-sequences, log-indexes, log-roots"
    )
    assert "3 items" in good.stdout

    assert broker_cli("purge", "--older-than", "30", "--dry-run", url=url).stdout.startswith("would purge 0 ")

    with sqlite3.connect(db) as conn:  # a restore that lost a row
        conn.execute("DELETE FROM deliveries WHERE recipient = 'USA' AND seq = 2")
    bad = broker_cli("check", url=url)
    assert bad.returncode == 1
    assert "inbox-sequences: USA's inbox has gaps" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_help_never_shows_the_database_password() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "broker.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "MSMT_DATABASE_URL": "postgresql+psycopg://msmt:hunter2-canary@db/msmt",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert shown.returncode == 0
    assert "hunter2-canary" not in shown.stdout and "msmt:***@db/msmt" in shown.stdout.replace(
        "\n", ""
    ).replace(" ", "")
