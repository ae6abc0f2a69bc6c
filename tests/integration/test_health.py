"""Liveness, readiness and the request log, in process (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.observability import REQUEST_LOGGER, json_formatter, redact_text
from broker.services.health import Outage
from broker.settings import Settings

from .conftest import AUDIENCE, World


def test_livez_and_readyz_when_all_is_well(world: World) -> None:
    assert world.client.get("/livez").json() == {"status": "ok"}
    r = world.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "schema": "ok", "log_key": "ok"}


def test_readyz_is_503_on_an_unmigrated_database(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", audience=AUDIENCE)
    with TestClient(create_app(settings)) as client:
        assert client.get("/livez").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["database"] == "ok"
        assert r.json()["checks"]["schema"].startswith("not migrated")


def test_readyz_is_503_when_the_schema_is_behind(world: World) -> None:
    engine = world.client.app.state.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    r = world.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["schema"].startswith("at 0001, expected")


def test_every_answer_carries_a_request_id_and_a_good_one_is_kept(world: World) -> None:
    r = world.client.get("/livez", headers={"X-Request-ID": "ops-42.a"})
    assert r.headers["x-request-id"] == "ops-42.a"
    for bad in ("has space", "x" * 65, "semi;colon", "new\\nline"):
        fresh = world.client.get("/livez", headers={"X-Request-ID": bad})
        assert fresh.headers["x-request-id"] != bad and len(fresh.headers["x-request-id"]) == 32


def test_one_request_line_with_caller_and_problem(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    world.client.get("/v1/inbox", headers={**world.auth("KOR"), "X-Request-ID": "inbox-1"})
    world.client.get("/v1/items/0000", headers={**world.auth("USA"), "X-Request-ID": "bad-1"})
    lines = {r.msg["request_id"]: r.msg for r in caplog.records if r.name == REQUEST_LOGGER}  # type: ignore[index]
    assert lines["inbox-1"]["caller"] == "KOR" and lines["inbox-1"]["status"] == 200
    assert lines["inbox-1"]["route"] == "/v1/inbox"
    assert lines["bad-1"]["status"] == 422 and lines["bad-1"]["problem"] == "invalid-request"
    assert lines["bad-1"]["route"] == "/v1/items/{item_id}"


def test_outage_is_told_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="msmt.broker.health")
    for _ in range(50):
        outage.failed("a test", OSError("connection refused"))
    now[0] += 7.5
    outage.recovered()
    outage.recovered()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "database unavailable (first seen by a test): connection refused",
        "database available again after 7.5 s; 50 requests were refused meanwhile",
    ]
    now[0] += 2.0  # well after its end: a new outage, told anew
    outage.failed("a test", OSError("again"))
    assert outage.outages == 2 and outage.down
    assert caplog.records[-1].getMessage() == "database unavailable (first seen by a test): again"


def test_a_failure_right_after_the_end_is_the_same_outage_relapsing(caplog: pytest.LogCaptureFixture) -> None:
    """A server still starting: one connection got in (the outage seemed over), the next is told
    "not yet accepting connections". Refused like any request, but no second pair of lines."""
    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="msmt.broker.health")
    outage.failed("a test", OSError("server closed the connection"))
    now[0] += 2.0
    outage.recovered()
    now[0] += 0.002
    outage.failed("a test", OSError("the database system is not yet accepting connections"))
    assert outage.down and outage.outages == 1
    now[0] += 0.1
    outage.recovered()
    assert not outage.down
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (logging.ERROR, "database unavailable (first seen by a test): server closed the connection"),
        (logging.WARNING, "database available again after 2.0 s; 1 requests were refused meanwhile"),
        (logging.INFO, "database steady after a relapse: 2.1 s in all; 2 requests were refused"),
    ]
    # half a second later the server goes down again: that is a new outage, told as one
    now[0] += 0.5
    outage.failed("a test", OSError("server closed the connection"))
    assert outage.outages == 2 and caplog.records[-1].levelno == logging.ERROR


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("postgresql+psycopg://msmt:s3cr3t-pw@db:5432/msmt", "postgresql+psycopg://msmt:***@db:5432/msmt"),
        ("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJLT1IifQ.c2lnbmF0dXJl", "[token]"),
        ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----", "[key material]"),
    ],
)
def test_secrets_are_masked_in_every_line(secret: str, shown: str) -> None:
    assert redact_text(f"before {secret} after") == f"before {shown} after"
    record = logging.LogRecord("msmt.test", logging.WARNING, __file__, 1, "saw %s", (secret,), None)
    line = json.loads(json_formatter().format(record))
    assert line["event"] == f"saw {shown}" and line["level"] == "warning"
    assert secret not in json.dumps(line)


def test_fields_named_like_secrets_are_masked() -> None:
    record = logging.LogRecord("msmt.test", logging.INFO, __file__, 1, "x", (), None)
    formatter = json_formatter()
    record.__dict__["_from_structlog"] = True
    record.msg = {"event": "x", "password": "hunter2", "passphrase": "p", "item": "ok"}  # type: ignore[assignment]
    record.__dict__["_logger"] = None
    record.__dict__["_name"] = "info"
    line = json.loads(formatter.format(record))
    assert line["password"] == "[redacted]" and line["passphrase"] == "[redacted]" and line["item"] == "ok"
