"""A broker that hangs holding a lock does not stall the others (issue 10, finding 2).

A session of our own plays the hung broker: it takes the registry row lock that every
submission shares and every directory change takes, then goes silent inside its transaction.
The real broker process next to it answers `503 database-unavailable` with `Retry-After` once
its lock timeout passes (never a 5xx of another kind, never an open-ended wait), and works
again as soon as the server ends the hung transaction (idle_in_transaction_session_timeout).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from msmt.auth import mint_token
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, postgresql_schema

from .servers import broker_server


def _submit(base: str, envelope: bytes) -> httpx.Response:
    token = mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE, method="POST", target="/v1/items", body=envelope)
    return httpx.post(
        f"{base}/v1/items",
        content=envelope,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.msmt.envelope"},
        timeout=30,
    )


def _envelope() -> bytes:
    from msmt.core import Markings, seal

    return seal(
        b"report",
        content_type="text/plain",
        markings=Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"]),
        recipients=[("USA", _KEYS["USA"].encryption.public_key)],
        originator="KOR",
        signing_key=_KEYS["KOR"].signing,
    )


def test_a_hung_lock_holder_costs_the_others_one_lock_timeout_then_nothing(tmp_path: Path) -> None:
    with postgresql_schema() as url:
        bootstrap(url, int(time.time() * 1000))
        settings = {"db_lock_timeout_s": "1", "log_settle_timeout_s": "2"}
        with broker_server(url, AUDIENCE, tmp_path / "broker.log", **settings) as (base, _):
            assert _submit(base, _envelope()).status_code == 201

            hung = create_engine(url).connect()
            hung.execute(text("SET idle_in_transaction_session_timeout = 3000"))
            hung.commit()
            hung.execute(text("SELECT version FROM registry_state WHERE id = 1 FOR UPDATE"))
            # ... and now it hangs, inside its transaction
            started = time.monotonic()
            stalled = _submit(base, _envelope())
            waited = time.monotonic() - started
            assert stalled.status_code == 503, stalled.text
            assert stalled.json()["type"].endswith(":database-unavailable")
            assert stalled.headers.get("retry-after")
            assert waited < 2.5, waited  # the lock timeout (1 s) and a little, not the hang

            time.sleep(3.5)  # the server ends the hung transaction and frees its lock
            started = time.monotonic()
            assert _submit(base, _envelope()).status_code == 201
            assert time.monotonic() - started < 2
            with contextlib.suppress(Exception):  # the server ended it: nothing to roll back
                hung.close()
        log = (tmp_path / "broker.log").read_text()
        assert "Traceback" not in log
