"""Issue 10: a test per finding, against a real broker process (`msmt-broker serve` in its own
process, reached over HTTP), not the in-process TestClient the integration tests use.

One bootstrapped broker per database (module scope), on SQLite and on PostgreSQL; the SQLite
file-mode finding starts its own broker on a fresh path.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from broker.store.db import is_sqlite, make_engine
from msmt.auth import mint_token
from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    Markings,
    SigningPrivateKey,
    canonical,
    parse,
    seal,
)
from msmt.core import governance as gov

from ..integration.conftest import _KEYS, ADMIN_KEY, AUDIENCE, bootstrap, postgresql_schema
from ..unit.test_key_import import ED_SMALL_ORDER, NONCANONICAL, X_LOW_ORDER
from .servers import broker_server

PROBLEM = "urn:msmt:problem:"
RELAY = "admin:alice"
ENVELOPE = {"Content-Type": "application/vnd.msmt.envelope"}
MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
STORED = (
    "items",
    "deliveries",
    "keys",
    "countries",
    "directory_entries",
    "governance_proposals",
    "admin_actions",
)


@dataclass
class Broker:
    url: str  # the database
    base: str  # the real process

    def count(self, table: str) -> int:
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        finally:
            engine.dispose()

    def counts(self) -> dict[str, int]:
        return {table: self.count(table) for table in STORED}

    def get(self, path: str, token: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def post(self, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.post(f"{self.base}{path}", headers=headers, timeout=30, **kwargs)

    def directory(self) -> gov.DirectoryState:
        r = self.get("/v1/directory/entries", token(RELAY))
        assert r.status_code == 200, r.text
        return gov.verify_chain(canonical.b64decode(e["entry"]) for e in r.json()["entries"])

    def propose(self, entry: bytes) -> httpx.Response:
        return self.post("/v1/governance/proposals", token(RELAY), json={"entry": canonical.b64encode(entry)})


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    folder = tmp_path_factory.mktemp(f"findings-{request.param}")
    with _database(request.param, folder) as url:
        bootstrap(url, int(time.time() * 1000))
        with broker_server(url, AUDIENCE, folder / "broker.log") as (base, _):
            yield Broker(url, base)


def _database(kind: str, folder: Path) -> AbstractContextManager[str]:
    if kind == "postgresql":
        return postgresql_schema()
    return nullcontext(f"sqlite:///{folder / 'broker.db'}")


def token(who: str, **kwargs: Any) -> str:
    key = ADMIN_KEY if who.startswith("admin:") else _KEYS[who].api
    return mint_token(key, who, AUDIENCE, **kwargs)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- finding: tokens --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "USA", "aud": AUDIENCE, "iat": now, "exp": now + 120, "jti": secrets.token_urlsafe(18)}
    claims.update(changes)
    return claims


def _jwt(claims: dict[str, Any]) -> str:
    key = _KEYS["USA"].api
    return jwt.encode(claims, key.ed_key, "EdDSA", headers={"kid": key.key_id})


def _repeating(claim: str) -> str:
    """A token whose payload names `claim` twice (a decoy first: json.loads keeps the last)."""
    key = _KEYS["USA"].api
    fields = [f"{json.dumps(n)}:{json.dumps(v)}" for n, v in _claims().items()]
    decoy = {"iss": "JPN", "aud": "another-broker", "iat": 1, "exp": 2, "jti": "x" * 10}[claim]
    fields.insert(0, f"{json.dumps(claim)}:{json.dumps(decoy)}")
    header = json.dumps({"alg": "EdDSA", "kid": key.key_id, "typ": "JWT"})
    signing_input = f"{_b64(header.encode())}.{_b64(('{' + ','.join(fields) + '}').encode())}"
    return f"{signing_input}.{_b64(key.ed_key.sign(signing_input.encode()))}"


TOKENS: dict[str, tuple[Any, str, str]] = {
    "a list aud": (lambda: _jwt(_claims(aud=[AUDIENCE])), "invalid-token", "aud"),
    "a list aud naming two brokers": (
        lambda: _jwt(_claims(aud=[AUDIENCE, "another-broker"])),
        "invalid-token",
        "aud",
    ),
    "exp equal to iat": (lambda: _jwt(_claims(exp=int(time.time()))), "invalid-token", "exp"),
    "exp before iat": (lambda: _jwt(_claims(exp=int(time.time()) - 60)), "invalid-token", "exp"),
    **{f"a repeated {c}": (lambda c=c: _repeating(c), "invalid-token", c) for c in ("iss", "aud", "iat", "exp", "jti")},
    "another broker's audience": (lambda: _jwt(_claims(aud="another-broker")), "wrong-audience", AUDIENCE),
}  # fmt: skip


@pytest.mark.parametrize("case", TOKENS)
def test_a_token_breaking_a_rule_is_refused_by_the_real_broker(broker: Broker, case: str) -> None:
    build, code, named = TOKENS[case]
    before = broker.count("used_tokens")
    body = assert_problem(broker.get("/v1/inbox", build()), 401, code)
    assert named in body["detail"]
    assert broker.count("used_tokens") == before  # refused before its jti was recorded


def test_a_token_bound_to_one_request_is_refused_on_another_route(broker: Broker) -> None:
    bound = token("USA", method="GET", target="/v1/inbox")
    for path in ("/v1/directory", "/v1/inbox?after=0"):
        assert_problem(broker.get(path, bound), 401, "token-binding")
    r = broker.post("/v1/inbox/ack", bound, json={"seqs": [1]})  # the same path, another method
    assert_problem(r, 401, "token-binding")
    assert broker.get("/v1/inbox", bound).status_code == 200  # still good for its own request
    assert_problem(broker.get("/v1/inbox", bound), 401, "replayed-token")


def test_a_bound_get_is_checked_against_the_body_it_carries_or_not(broker: Broker) -> None:
    """A request without Content-Length or Transfer-Encoding has an empty body (RFC 9112 6.3)
    and the broker does not read one; a GET that does carry a body is read and hashed."""
    auth = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    url = f"{broker.base}/v1/inbox"
    bound_to_bytes = token("USA", method="GET", target="/v1/inbox", body=b"some bytes")
    assert_problem(httpx.get(url, headers=auth(bound_to_bytes), timeout=30), 401, "token-binding")
    bound_to_nothing = token("USA", method="GET", target="/v1/inbox")
    carrying = httpx.request("GET", url, headers=auth(bound_to_nothing), content=b"some bytes", timeout=30)
    assert_problem(carrying, 401, "token-binding")
    chunked = httpx.request(
        "GET",
        url,
        headers=auth(token("USA", method="GET", target="/v1/inbox")),
        content=iter([b"x"]),
        timeout=30,
    )
    assert_problem(chunked, 401, "token-binding")
    fresh = token("USA", method="GET", target="/v1/inbox", body=b"some bytes")
    good = httpx.request("GET", url, headers=auth(fresh), content=b"some bytes", timeout=30)
    assert good.status_code == 200, good.text


def test_an_unbound_token_is_single_use_across_routes(broker: Broker) -> None:
    unbound = token("USA")
    assert broker.get("/v1/inbox", unbound).status_code == 200
    assert_problem(broker.get("/v1/directory", unbound), 401, "replayed-token")
    assert_problem(broker.post("/v1/inbox/ack", unbound, json={"seqs": [1]}), 401, "replayed-token")


# --- finding: the broker's clock behind a token's iat says so ---------------------------------


def test_a_token_issued_past_the_brokers_clock_names_the_clock(broker: Broker) -> None:
    """The agency's clock is 10 minutes ahead of the broker's (beyond the 30 s leeway): the
    answer is about clocks, not an unknown key."""
    future = token("USA", now=time.time() + 600)
    body = assert_problem(broker.get("/v1/inbox", future), 401, "invalid-token")
    assert "clock" in body["detail"] and "issued at" in body["detail"]
    assert "check both clocks" in body["detail"]


# --- finding: reads with bound tokens write nothing -------------------------------------------


def _quiet(watcher: sqlite3.Connection) -> Any:
    """The data version once no commit came for longer than the log sweeper's interval (0.5 s):
    an item another test submitted may still have its log leaf integrated in the background."""
    version = watcher.execute("PRAGMA data_version").fetchone()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.7)
        now = watcher.execute("PRAGMA data_version").fetchone()
        if now == version:
            return version
        version = now
    raise AssertionError("the broker kept committing with no request")


def test_reads_with_bound_tokens_write_nothing(broker: Broker) -> None:
    """Twenty authenticated inbox reads: no used-token row, and on SQLite no commit at all
    (PRAGMA data_version of another connection changes on any other connection's commit)."""
    watcher = None
    if is_sqlite(broker.url):
        path = broker.url.removeprefix("sqlite:///")
        watcher = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = _quiet(watcher) if watcher else None
        before = broker.count("used_tokens")
        for _ in range(20):
            r = broker.get("/v1/inbox", token("USA", method="GET", target="/v1/inbox"))
            assert r.status_code == 200, r.text
        assert broker.count("used_tokens") == before
        if watcher is not None:
            assert watcher.execute("PRAGMA data_version").fetchone() == version
        unbound = broker.get("/v1/inbox", token("USA"))  # the check sees a write when there is one
        assert unbound.status_code == 200
        assert broker.count("used_tokens") == before + 1
        if watcher is not None:
            assert watcher.execute("PRAGMA data_version").fetchone() != version
    finally:
        if watcher is not None:
            watcher.close()


# --- finding: the body limit applies to chunked JSON bodies -----------------------------------


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"seqs": ['
    sent = 0
    while sent < total:
        chunk = b"1, " * (size // 3)
        sent += len(chunk)
        yield chunk
    yield b"1]}"


def test_a_chunked_json_body_over_the_limit_is_413(broker: Broker) -> None:
    r = broker.post(
        "/v1/inbox/ack",
        token("USA"),
        content=_chunks(2 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "body-too-large")


# --- finding: an unsigned envelope cannot tell whether an item id exists ----------------------


def _seal(payload: bytes, created_ms: int, **kwargs: Any) -> bytes:
    return seal(
        payload,
        content_type="text/markdown",
        markings=MARKINGS,
        recipients=[("USA", _KEYS["USA"].encryption.public_key)],
        originator="KOR",
        signing_key=_KEYS["KOR"].signing,
        created_ms=created_ms,
        **kwargs,
    )


def _bad_signature(envelope: bytes) -> bytes:
    out = bytearray(envelope)
    out[9 + len(parse(envelope).header_bytes) + 5] ^= 0x01
    return bytes(out)


def test_an_unsigned_envelope_cannot_tell_whether_an_item_id_exists(broker: Broker) -> None:
    now_ms = int(time.time() * 1000)  # an item id carries its envelope's created_ms
    stored = _seal(b"the real item", now_ms)
    r = broker.post("/v1/items", token("KOR"), content=stored, headers=ENVELOPE)
    assert r.status_code == 201, r.text
    forged = _seal(b"a probe", now_ms, item_id=parse(stored).header.item_id)
    fresh = _seal(b"a probe", now_ms)
    before = broker.counts()
    answers = []
    for envelope in (forged, fresh):
        r = broker.post("/v1/items", token("KOR"), content=_bad_signature(envelope), headers=ENVELOPE)
        answers.append((r.status_code, r.json()["type"]))
    assert answers[0] == answers[1] == (422, PROBLEM + "bad-signature")
    assert broker.counts() == before


# --- finding: keys are imported strictly ------------------------------------------------------

GOOD_ENCRYPTION = EncryptionPrivateKey.generate().public_key.raw
BAD_KEYS: dict[str, tuple[str, bytes, str]] = {
    "an identity-point API key": ("api", ED_SMALL_ORDER["identity"], "small order"),
    "a non-canonical API key": ("api", NONCANONICAL[0], "not canonically encoded"),
    "a low-order X25519 half": ("encryption", GOOD_ENCRYPTION[:1184] + X_LOW_ORDER["zero"], "small order"),
    "an order-8 X25519 half": ("encryption", GOOD_ENCRYPTION[:1184] + X_LOW_ORDER["order-8-a"], "small order"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_KEYS)
def test_a_bad_public_key_is_refused_and_nothing_stored(broker: Broker, case: str) -> None:
    """KOR rotates its own key (the only way a member key reaches the registry: the admin's
    POST /v1/admin/keys is refused for member keys) to a key no one can hold."""
    kind, raw, says = BAD_KEYS[case]
    placeholder = {"api": ApiPrivateKey, "encryption": EncryptionPrivateKey}[kind].generate().public_key
    signed = gov.rotate_key(broker.directory(), "KOR", placeholder, int(time.time() * 1000))
    signed["public_key"] = canonical.b64encode(raw)
    entry = gov.signed_entry(signed, [("KOR", _KEYS["KOR"].signing)])
    before = broker.counts()
    body = assert_problem(broker.propose(entry), 422, "malformed-statement")
    assert f"{kind} key" in body["detail"] and says in body["detail"], body
    assert broker.counts() == before


# --- finding: names with bidirectional overrides or C1 controls -------------------------------


@pytest.mark.parametrize("name", ["Swe\u202eden", "Swe\u0085den", "Swe\u2066den", "Swe\x9bden"])
def test_a_country_name_with_a_control_character_is_refused(broker: Broker, name: str) -> None:
    member = gov.member_body(
        name,
        "RESTRICTED",
        [],
        {
            KeyKind.SIGNING: SigningPrivateKey.generate().public_key,
            KeyKind.ENCRYPTION: EncryptionPrivateKey.generate().public_key,
            KeyKind.API: ApiPrivateKey.generate().public_key,
        },
    )
    signed = gov.statement(
        broker.directory(), "enrol-member", int(time.time() * 1000), country="SWE", member=member
    )
    entry = gov.signed_entry(signed, [("KOR", _KEYS["KOR"].signing)])
    before = broker.counts()
    assert_problem(broker.propose(entry), 422, "malformed-statement")
    assert broker.counts() == before


# --- finding: the SQLite database and its folder are private ----------------------------------


def test_a_served_sqlite_database_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "broker.db"
    url = f"sqlite:///{path}"
    old = os.umask(0o022)  # the processes below inherit an open umask
    try:
        result = subprocess.run(
            [sys.executable, "-m", "broker.cli", "--database-url", url, "migrate"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        for folder in (tmp_path / "new", tmp_path / "new" / "deeper"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert not (path.parent / "broker.db-wal").exists()  # `serve` below makes -wal and -shm
        with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
            ready = httpx.get(f"{base}/readyz", timeout=10)  # the database answers: it is open
            assert ready.status_code == 200, ready.text
            for name in ("broker.db", "broker.db-wal", "broker.db-shm"):
                file = path.parent / name
                assert file.exists(), name
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, name
    finally:
        os.umask(old)
