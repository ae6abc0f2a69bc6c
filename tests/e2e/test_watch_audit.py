"""Issue 9 Build 7: `msmt pull` and `msmt watch` run the cheap part of `msmt audit` on every
poll: an inbox entry the broker skips (withheld, or its row deleted by the operator) is named
on the spot, and the exit status says so. Against a real broker process."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, text

from .servers import broker_process
from .test_cli import AUDIENCE, run, setup

__all__ = ["setup"]  # the module-scoped agencies and broker database of test_cli

EXIT_AUDIT = 8


def test_a_deleted_delivery_is_named_by_the_next_poll(setup: dict[str, object], tmp_path: Path) -> None:
    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    report = tmp_path / "note.md"
    report.write_text("# For the watch\n")
    with broker_process(db, AUDIENCE, tmp / "broker-watch.log") as base:
        kor = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "KOR")}
        usa = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "USA")}
        inbox = tmp_path / "usa-inbox"
        run("pull", str(inbox), env=usa)  # whatever earlier tests left: the cursor starts after it
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
                    "--to",
                    "USA",
                    env=kor,
                ).stdout
            )["item_id"]
            for _ in range(3)
        ]
        engine = create_engine(db)  # the operator deletes the middle delivery
        with engine.begin() as conn:
            seq = conn.execute(
                text("SELECT seq FROM deliveries WHERE item_id = :i"), {"i": sent[1]}
            ).scalar_one()
            conn.execute(text("DELETE FROM deliveries WHERE item_id = :i"), {"i": sent[1]})
        engine.dispose()
        watched = run("watch", str(inbox), "--once", env=usa, expect=EXIT_AUDIT)
        assert f"AUDIT: inbox entry {seq} is missing: withheld or deleted by the broker" in watched.stderr
        assert "2 saved" in watched.stderr  # the others still arrive: one hole blocks nothing
        # pull says the same for a hole it meets; one already passed is `msmt audit`'s to find
        pulled = run("--json", "pull", str(inbox), env=usa)
        assert json.loads(pulled.stdout)["saved"] == 0
        assert f"inbox entry {seq} is missing" in run("audit", env=usa, expect=EXIT_AUDIT).stderr
