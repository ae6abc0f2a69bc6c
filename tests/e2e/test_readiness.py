"""Readiness follows the database, and an outage is one log line, not a traceback per request.

Against a PostgreSQL server of the test's own (tests/e2e/pg_instance.py), stopped and started
under a real `msmt-broker serve` process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from msmt.auth import mint_token
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap

from .pg_instance import private_postgresql
from .servers import broker_server


def _ready(base: str) -> int:
    return httpx.get(f"{base}/readyz", timeout=5).status_code


def _wait_for(base: str, status: int, within_s: float) -> float:
    """Seconds until /readyz answers `status`; fails after `within_s`."""
    started = time.monotonic()
    while True:
        if _ready(base) == status:
            return time.monotonic() - started
        assert time.monotonic() - started < within_s, f"/readyz not {status} within {within_s} s"
        time.sleep(0.02)


def _inbox(base: str) -> httpx.Response:
    token = mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE, method="GET", target="/v1/inbox")
    return httpx.get(f"{base}/v1/inbox", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_readyz_follows_the_database_and_an_outage_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    with private_postgresql() as pg:
        bootstrap(pg.url, int(time.time() * 1000))
        with broker_server(pg.url, AUDIENCE, log, log_sweep_interval_s="0.2") as (base, _):
            _wait_for(base, 200, 10)
            assert _inbox(base).status_code == 200

            pg.stop()
            stopped = time.monotonic()
            _wait_for(base, 503, 1.0)
            flipped = time.monotonic() - stopped
            assert flipped < 1.0, flipped
            body = httpx.get(f"{base}/readyz", timeout=5).json()
            assert body["status"] == "not ready" and body["checks"]["database"].startswith("unreachable")
            assert httpx.get(f"{base}/livez", timeout=5).status_code == 200  # the process is fine

            refused = [_inbox(base) for _ in range(20)]
            assert {r.status_code for r in refused} == {503}
            assert {r.json()["type"].rsplit(":", 1)[1] for r in refused} == {"database-unavailable"}
            assert all(r.headers.get("retry-after") for r in refused)
            time.sleep(1.0)  # the sequencer's sweeps and the listener's reconnections fail meanwhile

            pg.start()
            _wait_for(base, 200, 15)
            assert _inbox(base).status_code == 200

        lines = _lines(log)  # every line is JSON: json.loads raised otherwise
        text = log.read_text()
        assert "Traceback" not in text
        down = [x for x in lines if str(x["event"]).startswith("database unavailable")]
        up = [x for x in lines if str(x["event"]).startswith("database available again")]
        assert len(down) == 1, down
        assert len(up) == 1, up
        assert "requests were refused" in str(up[0]["event"])


def test_broker_starts_without_its_database_and_becomes_ready_when_it_comes(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    with private_postgresql() as pg:
        bootstrap(pg.url, int(time.time() * 1000))
        pg.stop()
        with broker_server(pg.url, AUDIENCE, log) as (base, proc):
            assert httpx.get(f"{base}/livez", timeout=5).status_code == 200
            assert _ready(base) == 503
            assert _inbox(base).status_code == 503
            pg.start()
            _wait_for(base, 200, 15)
            assert _inbox(base).status_code == 200
            assert proc.poll() is None
        assert "Traceback" not in log.read_text()
