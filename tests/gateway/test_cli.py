"""`msmt-gateway`: its configuration, password hashing, and `serve` as a real process (issue 12)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from msmt.client import Client
from msmt.core import Markings
from msmt.gateway.cli import main
from msmt.gateway.config import ConfigError, Credentials, GatewayConfig, verify_password
from msmt.gateway.taxii import TAXII_MEDIA_TYPE, collection_id
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server, free_port
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .stix_samples import bundle, indicator

FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}


def test_hash_password_and_new_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["hash-password"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert hashed.startswith("scrypt$16384$8$1$") and verify_password(hashed, "correct horse battery")
    assert not verify_password(hashed, "correct horse batterY")
    assert main(["new-token", "opencti"]) == 0
    out = capsys.readouterr().out
    token = out.split("shown once): ")[1].split()[0]
    line = out.split("[tokens] line: ")[1].strip()
    credentials = Credentials(tokens={"opencti": line.split('"')[1]})
    assert credentials.token(token) == "opencti" and credentials.token(token + "x") is None


def test_the_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names no"):
        GatewayConfig.from_dict({"broker_url": "https://b", "keys": "k"})
    with pytest.raises(ConfigError, match="unknown"):
        GatewayConfig.from_dict({"broker_url": "https://b", "keys": "k", "passwords": {}})
    with pytest.raises(ConfigError, match="scrypt"):
        GatewayConfig.from_dict({"broker_url": "https://b", "keys": "k", "users": {"a": "plaintext"}})
    config = GatewayConfig.from_dict(
        {
            "broker_url": "https://b",
            "keys": "k",
            "tokens": {"t": "sha256$" + "0" * 64},
            "listen": "0.0.0.0:9000",
        },
        base=tmp_path,
    )
    assert (config.host, config.port, config.trust) == ("0.0.0.0", 9000, tmp_path / "k" / "trust")
    assert config.database_url == f"sqlite:///{tmp_path / 'gateway.db'}"


def test_serve_follows_the_inbox_and_serves_taxii(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    root = root_of(url)
    home = tmp_path / "usa-gateway"
    _KEYS["USA"].save(home / "keys", "usa passphrase", kdf=FAST_KDF)
    TrustStore.pin(root, home / "keys" / "trust")
    hashed = subprocess.run(
        [sys.executable, "-m", "msmt.gateway.cli", "hash-password"],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    sent = bundle(indicator("GREEN"), indicator("GREEN"), levels=("GREEN",))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        (home / "gateway.toml").write_text(
            f'broker_url = "{base}"\nkeys = "keys"\naudience = "{AUDIENCE}"\n'
            f'listen = "127.0.0.1:{port}"\n\n[users]\nanalyst = "{hashed}"\n'
        )
        env = {**os.environ, "MSMT_PASSPHRASE": "usa passphrase"}
        command = [sys.executable, "-m", "msmt.gateway.cli", "serve", "--config", str(home / "gateway.toml")]
        with open(tmp_path / "gateway.log", "wb") as log:
            gateway = subprocess.Popen(
                [*command, "--wait", "1"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            with Client(base, _KEYS["KOR"], trust=TrustStore.pin(root), audience=AUDIENCE) as kor:
                markings = Markings.create("RESTRICTED", "GREEN", ["USA"], topics=["cyber"])
                kor.send(json.dumps(sent).encode(), content_type="application/stix+json", markings=markings)
            objects_url = f"http://127.0.0.1:{port}/msmt/collections/{collection_id('KOR')}/objects/"
            deadline = time.monotonic() + 30
            while True:
                assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
                try:
                    r = httpx.get(
                        objects_url,
                        auth=("analyst", "correct horse battery"),
                        headers={"Accept": TAXII_MEDIA_TYPE},
                    )
                    if r.status_code == 200 and r.json().get("objects"):
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
                time.sleep(0.2)
            assert r.json()["objects"] == sent["objects"]
        finally:
            gateway.terminate()
            gateway.wait(timeout=20)
    # SIGTERM is a clean stop: the follower joined, the database closed, exit 0
    assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]
    assert "stopped: the inbox follower is joined" in (tmp_path / "gateway.log").read_text()
    database = home / "gateway.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert "correct horse" not in (tmp_path / "gateway.log").read_text()
