"""Hardening: strict tokens, clock-skew answers, private database files, `init` validating
before it writes, and the body limit on streamed (chunked) JSON bodies."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from broker import cli as broker_cli
from broker.store.db import make_engine
from msmt.auth import mint_token
from msmt.core import ApiPrivateKey

from .conftest import AUDIENCE, World

PROBLEM = "urn:msmt:problem:"
LEEWAY_S = 30  # Settings.token_leeway_s


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- tokens ---------------------------------------------------------------------------------


def _claims(world: World, who: str, **changes: Any) -> dict[str, Any]:
    now = world.clock.ms // 1000
    claims = {"iss": who, "aud": AUDIENCE, "iat": now, "exp": now + 120, "jti": secrets.token_urlsafe(18)}
    claims.update(changes)
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header_json: str, payload_json: str, key: ApiPrivateKey) -> str:
    """A token from literal JSON texts (so keys may repeat), signed for real."""
    signing_input = f"{_b64(header_json.encode())}.{_b64(payload_json.encode())}"
    return f"{signing_input}.{_b64(key.ed_key.sign(signing_input.encode()))}"


def _get(world: World, token: str) -> httpx.Response:
    return world.client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"})


def test_token_with_a_list_audience_is_refused(world: World) -> None:
    key = world.members["USA"].api
    token = jwt.encode(
        _claims(world, "USA", aud=[AUDIENCE]), key.ed_key, "EdDSA", headers={"kid": key.key_id}
    )
    body = assert_problem(_get(world, token), 401, "invalid-token")
    assert "aud" in body["detail"]
    token = jwt.encode(
        _claims(world, "USA", aud=[AUDIENCE, "another-broker"]),
        key.ed_key,
        "EdDSA",
        headers={"kid": key.key_id},
    )
    assert_problem(_get(world, token), 401, "invalid-token")


@pytest.mark.parametrize("delta", [0, -1, -60])
def test_token_expiring_at_or_before_its_issue_is_refused(world: World, delta: int) -> None:
    key = world.members["USA"].api
    now = world.clock.ms // 1000
    token = jwt.encode(
        _claims(world, "USA", iat=now, exp=now + delta), key.ed_key, "EdDSA", headers={"kid": key.key_id}
    )
    body = assert_problem(_get(world, token), 401, "invalid-token")
    assert "exp" in body["detail"]


@pytest.mark.parametrize("claim", ["iss", "aud", "iat", "exp", "jti"])
def test_token_repeating_a_claim_is_refused(world: World, claim: str) -> None:
    key = world.members["USA"].api
    claims = _claims(world, "USA")
    fields = [f"{json.dumps(name)}:{json.dumps(value)}" for name, value in claims.items()]
    decoy = {"iss": "JPN", "aud": "another-broker", "iat": 1, "exp": 2, "jti": "x" * 10}[claim]
    fields.insert(0, f"{json.dumps(claim)}:{json.dumps(decoy)}")  # the last one would win in json.loads
    header = json.dumps({"alg": "EdDSA", "kid": key.key_id, "typ": "JWT"})
    body = assert_problem(
        _get(world, _raw_token(header, "{" + ",".join(fields) + "}", key)), 401, "invalid-token"
    )
    assert claim in body["detail"]


@pytest.mark.parametrize("name", ["kid", "alg"])
def test_token_header_repeating_a_key_is_refused(world: World, name: str) -> None:
    key = world.members["USA"].api
    decoy = {"kid": world.members["JPN"].api.key_id, "alg": "none"}[name]
    header = (
        f'{{"{name}":{json.dumps(decoy)},"alg":"EdDSA","kid":{json.dumps(key.key_id)},"typ":"JWT"}}'
        if name == "kid"
        else f'{{"alg":{json.dumps(decoy)},"alg":"EdDSA","kid":{json.dumps(key.key_id)},"typ":"JWT"}}'
    )
    body = assert_problem(
        _get(world, _raw_token(header, json.dumps(_claims(world, "USA")), key)), 401, "invalid-token"
    )
    assert name in body["detail"]


def test_a_well_formed_raw_token_is_accepted(world: World) -> None:
    """The helper above makes tokens the broker accepts when nothing repeats."""
    key = world.members["USA"].api
    header = json.dumps({"alg": "EdDSA", "kid": key.key_id, "typ": "JWT"})
    assert _get(world, _raw_token(header, json.dumps(_claims(world, "USA")), key)).status_code == 200


def test_broker_clock_behind_the_tokens_iat_says_so(world: World) -> None:
    """The agency's clock is right, the broker's is 10 minutes slow: the answer is about clocks,
    not an unknown key (the key's validity, too, starts after the broker's 'now')."""
    world.clock.ms -= 10 * 60 * 1000
    token = mint_token(world.members["USA"].api, "USA", AUDIENCE, now=time.time())
    body = assert_problem(_get(world, token), 401, "invalid-token")
    assert "clock" in body["detail"] and "issued at" in body["detail"]
    assert "check both clocks" in body["detail"]


def test_broker_clock_behind_the_keys_validity_says_so(world: World) -> None:
    """Within the leeway the token is fine, but the key is not valid yet by the broker's clock."""
    world.clock.ms -= 5 * 1000
    token = mint_token(world.members["USA"].api, "USA", AUDIENCE, now=time.time())
    body = assert_problem(_get(world, token), 401, "key-not-yet-valid")
    assert "check both clocks" in body["detail"]


def test_tokens_on_the_broker_clock_still_work(world: World) -> None:
    assert world.client.get("/v1/inbox", headers=world.auth("USA")).status_code == 200
    assert world.client.get("/v1/directory", headers=world.auth("admin:alice")).status_code == 200


# --- the SQLite database file is private ----------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_sqlite_database_folder_and_files_are_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "new" / "deeper" / "broker.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with engine.connect() as conn:  # keep a connection open: -wal and -shm exist meanwhile
            conn.execute(text("SELECT * FROM t")).all()
            for folder in (tmp_path / "new", tmp_path / "new" / "deeper"):
                assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
            for name in ("broker.db", "broker.db-wal", "broker.db-shm"):
                file = path.parent / name
                assert file.exists(), name
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, name
    finally:
        engine.dispose()


def test_an_existing_world_readable_database_is_made_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "broker.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        engine.dispose()


# --- msmt-broker init validates before it writes ----------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "Alice", "a/b", "", "alice\n", "-x", "a" * 65, "al ice"])
def test_init_refuses_an_invalid_admin_name_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    monkeypatch.setenv("MSMT_TEST_PASSPHRASE", "correct horse battery staple")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code = broker_cli.main(
        [
            "--database-url",
            f"sqlite:///{work / 'db' / 'broker.db'}",
            "init",
            "--data-dir",
            str(work / "data"),
            f"--admin={name}",
            "--passphrase-env",
            "MSMT_TEST_PASSPHRASE",
        ]
    )
    assert code == broker_cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "admin name" in err and err.count("\n") == 1
    assert list(work.iterdir()) == []
    assert list(tmp_path.iterdir()) == [work]


# --- the body limit applies to streamed JSON bodies too ---------------------------------------


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"seqs": ['
    sent = 0
    while sent < total:
        chunk = b"1, " * (size // 3)
        sent += len(chunk)
        yield chunk
    yield b"1]}"


def test_chunked_json_body_over_the_limit_is_413(world: World) -> None:
    r = world.client.post(
        "/v1/inbox/ack",
        content=_chunks(2 * 1024 * 1024),
        headers={**world.auth("USA"), "Content-Type": "application/json"},
    )
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_problem(r, 413, "body-too-large")


def test_chunked_json_body_over_the_limit_is_413_on_every_json_route(world: World) -> None:
    for path in ("/v1/governance/proposals", "/v1/preflight"):
        r = world.client.post(
            path,
            content=_chunks(2 * 1024 * 1024),
            headers={**world.auth("USA"), "Content-Type": "application/json"},
        )
        assert_problem(r, 413, "body-too-large")


def test_chunked_json_body_under_the_limit_is_read(world: World) -> None:
    r = world.client.post(
        "/v1/inbox/ack",
        content=iter([b'{"seqs": ', b"[1]}"]),
        headers={**world.auth("USA"), "Content-Type": "application/json"},
    )
    assert_problem(r, 422, "unknown-delivery")  # read and understood: seq 1 is not in the inbox


def test_a_token_issued_far_in_the_future_gets_a_sentence_not_a_500(world: World) -> None:
    key = world.members["USA"].api
    iat = 2**40 - 10  # past the year 9999
    token = jwt.encode(
        _claims(world, "USA", iat=iat, exp=iat + 5), key.ed_key, "EdDSA", headers={"kid": key.key_id}
    )
    body = assert_problem(_get(world, token), 401, "invalid-token")
    assert "check both clocks" in body["detail"]
