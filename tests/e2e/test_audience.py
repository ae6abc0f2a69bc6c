"""Issue 10 finding 6: every deployment shared the audience `msmt-broker`, so a token minted for
one broker was good at any other. A broker's identity is now its URL; against a real process."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.settings import Settings
from msmt.auth import mint_token
from msmt.client import Client
from msmt.trust import TrustStore

from ..integration.conftest import _KEYS, bootstrap, root_of
from .servers import broker_server


def test_a_broker_is_named_by_its_url_and_refuses_tokens_for_another(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    # MSMT_AUDIENCE empty: `serve` names the broker by the one address it listens on
    with broker_server(url, "", tmp_path / "broker.log") as (base, _):
        trust = TrustStore.pin(root_of(url))
        with Client(base, _KEYS["KOR"], trust=trust) as kor:  # no audience given: the URL
            assert kor.audience == base
            assert kor.inbox().deliveries == ()
        other = base.rsplit(":", 1)[0] + ":1"  # the same host, another broker's port
        for audience in (other, "msmt-broker"):
            token = mint_token(_KEYS["KOR"].api, "KOR", audience)
            answer = httpx.get(f"{base}/v1/inbox", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401
            assert answer.json()["type"].endswith(":wrong-audience"), answer.text
            assert base in answer.json()["detail"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serving_on_every_address_needs_the_url_said(tmp_path: Path, host: str) -> None:
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    env = {**os.environ, "MSMT_DATABASE_URL": url, "MSMT_AUDIENCE": ""}
    result = subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", "--host", host, "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "set MSMT_AUDIENCE to that URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_app_without_an_identity_accepts_no_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    app = create_app(Settings(database_url=url, audience=""))
    with TestClient(app) as client:
        token = mint_token(_KEYS["KOR"].api, "KOR", "")
        answer = client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"})
    app.state.engine.dispose()
    assert answer.status_code == 401
    assert "MSMT_AUDIENCE" in answer.json()["detail"]
