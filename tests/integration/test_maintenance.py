"""`msmt-broker check` finds what a bad restore or a hostile database writer breaks, and
retention purges only envelopes every recipient acknowledged, keeping their log entries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text

from broker.services import maintenance
from broker.services.health import schema_head
from broker.store.db import make_engine, make_sessionmaker, transaction

from .conftest import World

DAY_MS = 24 * 3600 * 1000


def _sent(world: World, n: int = 3, envelopes: list[bytes] | None = None) -> list[str]:
    ids = []
    for i in range(n):
        envelope = world.seal("KOR", ["USA", "JPN"], payload=f"r{i}".encode())
        r = world.submit("KOR", envelope)
        assert r.status_code in (201, 202), r.text
        ids.append(r.json()["item_id"])
        if envelopes is not None:
            envelopes.append(envelope)
    world.settle()
    return ids


def _check(world: World, deep: bool = True) -> maintenance.Report:
    engine = make_engine(world.url)
    try:
        with make_sessionmaker(engine)() as session:
            return maintenance.check(session, schema_head(), deep=deep)
    finally:
        engine.dispose()


def _sql(world: World, statement: str) -> None:
    engine = make_engine(world.url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_a_consistent_database_has_no_finding(world: World) -> None:
    _sent(world)
    report = _check(world)
    assert report.ok, report.findings
    assert report.checks == (
        "schema",
        "deliveries",
        "inbox-sequences",
        "log-indexes",
        "log-roots",
        "stored-bytes",
        "envelope-digests",
    )
    assert report.counts["items"] == 3 and report.counts["deliveries"] == 6


BREAKS: dict[str, tuple[Callable[[list[str]], str], str, str]] = {
    "lost delivery": (
        lambda ids: f"DELETE FROM deliveries WHERE item_id = '{ids[1]}' AND recipient = 'USA'",
        "inbox-sequences",
        "USA's inbox has gaps",
    ),
    "delivery of a logged item lost": (
        lambda ids: f"DELETE FROM deliveries WHERE item_id = '{ids[1]}' AND recipient = 'USA'",
        "deliveries",
        "is in the log with 1 deliveries for 2 recipients",
    ),
    "delivery to a non-recipient": (
        lambda ids: (
            f"UPDATE deliveries SET recipient = 'FRA' WHERE item_id = '{ids[2]}' AND recipient = 'USA'"
        ),
        "deliveries",
        "has a delivery to FRA, which is not one of its recipients",
    ),
    "recipient dropped from an item": (
        lambda ids: f"UPDATE items SET recipients = 'JPN' WHERE item_id = '{ids[0]}'",
        "deliveries",
        "has a delivery to USA, which is not one of its recipients",
    ),
    "delivery before the log": (
        lambda ids: f"UPDATE items SET log_index = NULL WHERE item_id = '{ids[2]}'",
        "deliveries",
        "2 deliveries are of items not yet in the log",
    ),
    "counter behind": (
        lambda ids: "UPDATE inbox_counters SET last_seq = 1 WHERE recipient = 'JPN'",
        "inbox-sequences",
        "JPN's inbox counter says 1",
    ),
    "lost log entry": (
        lambda ids: "DELETE FROM log_entries WHERE log_index = (SELECT max(log_index) FROM log_entries)",
        "log-indexes",
        "the log's size is",
    ),
    "changed envelope": (
        lambda ids: f"UPDATE items SET envelope_sha256 = '{'0' * 64}' WHERE item_id = '{ids[0]}'",
        "envelope-digests",
        "envelope does not match its digest",
    ),
    "wrong log index": (
        lambda ids: (
            f"UPDATE items SET log_index = (SELECT min(log_index) FROM log_entries) WHERE item_id = '{ids[2]}'"
        ),
        "log-indexes",
        "items name a log index",
    ),
}


@pytest.mark.parametrize("what", [k for k in BREAKS if BREAKS[k][1]])
def test_each_break_is_found_and_named(world: World, what: str) -> None:
    ids = _sent(world)
    statement, rule, words = BREAKS[what]
    _sql(world, statement(ids))
    report = _check(world)
    assert not report.ok
    assert any(f.check == rule and words in f.detail for f in report.findings), report.findings


def test_a_leaf_hash_changed_in_place_breaks_the_signed_roots(world: World) -> None:
    _sent(world)
    leaf_hash = "'\\x" + "00" * 32 + "'" if "postgresql" in world.url else "X'" + "00" * 32 + "'"
    _sql(world, f"UPDATE log_entries SET leaf_hash = {leaf_hash} WHERE log_index = 0")
    report = _check(world, deep=False)
    assert [f.check for f in report.findings] == ["log-roots"] * len(report.findings) and report.findings
    assert "does not match the stored leaves" in report.findings[0].detail


def test_an_unmigrated_database_is_one_finding(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
    with make_sessionmaker(engine)() as session:
        report = maintenance.check(session, schema_head())
    assert [f.check for f in report.findings] == ["schema"]
    assert "msmt-broker migrate" in report.findings[0].detail


def _ack(world: World, who: str) -> None:
    page = world.client.get("/v1/inbox", headers=world.auth(who)).json()
    seqs = [d["seq"] for d in page["deliveries"]]
    r = world.client.post("/v1/inbox/ack", json={"seqs": seqs}, headers=world.auth(who))
    assert r.status_code == 200, r.text


def _purge(world: World, older_than_ms: int, now_ms: int, dry_run: bool = False) -> int:
    engine = make_engine(world.url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return maintenance.purge(session, older_than_ms, now_ms, "retention", dry_run=dry_run)
    finally:
        engine.dispose()


def test_retention_purges_only_what_every_recipient_acknowledged_and_keeps_the_log(world: World) -> None:
    envelopes: list[bytes] = []
    ids = _sent(world, envelopes=envelopes)
    _ack(world, "USA")
    later = world.clock.ms + 31 * DAY_MS
    assert _purge(world, 30 * DAY_MS, later) == 0  # JPN has not acknowledged anything yet
    _ack(world, "JPN")
    assert _purge(world, 90 * DAY_MS, later) == 0  # not old enough
    assert _purge(world, 30 * DAY_MS, later, dry_run=True) == 3
    assert _purge(world, 30 * DAY_MS, later) == 3
    assert _purge(world, 30 * DAY_MS, later) == 0  # once

    r = world.client.get(f"/v1/items/{ids[0]}", headers=world.auth("USA"))
    assert r.status_code == 410 and r.json()["type"].endswith(":purged")
    page = world.client.get("/v1/inbox?include=envelope", headers=world.auth("USA")).json()
    assert [d.get("unavailable") for d in page["deliveries"]] == ["purged"] * 3
    assert all("envelope" not in d for d in page["deliveries"])
    status = world.client.get(f"/v1/items/{ids[0]}/status", headers=world.auth("KOR"))
    assert status.status_code == 200 and status.json()["log_index"] is not None
    report = _check(world)
    assert report.ok, report.findings
    assert report.counts["purged"] == 3 and report.counts["log_entries"] >= 3
    assert world.count("admin_actions WHERE action = 'retention-purge'") == 1
    # the same envelope again is still recognised as already stored: its digest stayed
    again = world.submit("KOR", envelopes[0])
    assert again.status_code == 200 and again.json()["item_id"] == ids[0], again.text


def test_a_purge_age_must_be_positive(world: World) -> None:
    with pytest.raises(ValueError, match="positive"):
        _purge(world, 0, world.clock.ms)


def test_the_retention_setting_purges_in_the_background(world: World) -> None:
    import time

    from fastapi.testclient import TestClient

    from broker.app import create_app
    from broker.settings import Settings

    from .conftest import AUDIENCE

    _sent(world)
    _ack(world, "USA")
    _ack(world, "JPN")
    world.clock.ms += 31 * DAY_MS
    settings = Settings(
        database_url=world.url, audience=AUDIENCE, retention_days=30, retention_interval_s=0.05
    )
    with TestClient(create_app(settings, clock=world.clock)):
        deadline = time.monotonic() + 10
        while world.count("items WHERE envelope IS NULL") < 3:
            assert time.monotonic() < deadline, "the retention job did not purge within 10 s"
            time.sleep(0.05)
    assert world.count("items WHERE purged_ms IS NOT NULL") == 3
