"""Integration fixtures: every test here runs on SQLite and on PostgreSQL.

With CI=true an unreachable PostgreSQL fails the run instead of skipping it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from broker import policydoc
from broker.app import create_app
from broker.services import admin as admin_service
from broker.services import governance as governance_service
from broker.services import policy as policy_service
from broker.settings import Settings
from broker.store.db import make_engine, make_sessionmaker, migrate, transaction
from msmt.agency import AgencyKeys
from msmt.auth import mint_token
from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    Markings,
    SigningPrivateKey,
    canonical,
    seal,
)
from msmt.core import governance as gov
from msmt.core.logleaf import LogIdentity, LogSigner
from msmt.trust import TrustStore

PG_BASE = os.environ.get("MSMT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MEMBERS = ("KOR", "USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NLD", "CAN", "AUS", "NZL")
G7 = {"USA", "JPN", "FRA", "GBR", "DEU", "ITA", "CAN"}
AUDIENCE = "msmt-broker-test"
RELAY = "admin:alice"  # statements reach the broker through the admin, who relays but cannot sign


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_BASE)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]


_PG_ERROR = _pg_available()


def require_postgresql() -> None:
    if _PG_ERROR is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {_PG_ERROR}")
        pytest.skip(f"PostgreSQL unreachable: {_PG_ERROR}")


@contextmanager
def postgresql_schema() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    require_postgresql()
    schema = f"msmt_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'broker.db'}"
    else:
        with postgresql_schema() as url:
            yield url


def _seed(name: str, size: int) -> bytes:
    return hashlib.shake_256(f"msmt integration {name}".encode()).digest(size)


_KEYS = {
    code: AgencyKeys(
        code,
        SigningPrivateKey.from_seed(_seed(f"{code} signing", 64)),
        EncryptionPrivateKey.from_seed(_seed(f"{code} encryption", 32)),
        ApiPrivateKey.from_seed(_seed(f"{code} api", 32)),
    )
    for code in MEMBERS
}
ADMIN_KEY = ApiPrivateKey.from_seed(_seed("admin alice", 32))
LOG_SEED = _seed("log key", 64)
LOG_SIGNER = LogSigner.from_seed("msmt-broker/log", LOG_SEED)


def log_key_file(folder: Path) -> str:
    """The broker's log key as `msmt-broker init` writes it (base64 of the 64-byte seed)."""
    path = folder / "log.key"
    path.write_text(base64.b64encode(LOG_SEED).decode())
    path.chmod(0o600)
    return str(path)


class Clock:
    def __init__(self) -> None:
        import time

        self.ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.ms


@dataclass
class World:
    """A broker with the 11 members enrolled, an admin, and helpers to act as any of them."""

    url: str
    client: TestClient
    clock: Clock
    members: dict[str, AgencyKeys] = field(default_factory=lambda: dict(_KEYS))
    admin_key: ApiPrivateKey = ADMIN_KEY

    def token(self, who: str, **kwargs: Any) -> str:
        if who.startswith("admin:"):
            return mint_token(self.admin_key, who, AUDIENCE, now=self.clock.ms / 1000, **kwargs)
        return mint_token(self.members[who].api, who, AUDIENCE, now=self.clock.ms / 1000, **kwargs)

    def auth(self, who: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(who, **kwargs)}"}

    def seal(self, origin: str, recipients: list[str], payload: bytes = b"report", **kwargs: Any) -> bytes:
        markings = kwargs.pop(
            "markings", Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
        )
        return seal(
            payload,
            content_type=kwargs.pop("content_type", "text/markdown"),
            markings=markings,
            recipients=[(r, self.members[r].encryption.public_key) for r in recipients],
            originator=origin,
            signing_key=self.members[origin].signing,
            created_ms=kwargs.pop("created_ms", self.clock.ms),
            **kwargs,
        )

    def count(self, table: str) -> int:
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        finally:
            engine.dispose()

    def directory(self) -> gov.DirectoryState:
        """The chain the broker serves, verified from its root."""
        r = self.client.get("/v1/directory/entries", headers=self.auth("admin:alice"))
        assert r.status_code == 200, r.text
        return gov.verify_chain(canonical.b64decode(e["entry"]) for e in r.json()["entries"])

    def settle(self) -> None:
        """Integrate whatever is queued for the log now, instead of when the sweeper wakes."""
        integrator = self.client.app.state.broker.log  # type: ignore[attr-defined]
        # until nothing is queued: on PostgreSQL the background sweeper may hold the integrator
        # lock (run_once then returns None at once); its commit empties the queue
        deadline = time.monotonic() + 30
        while integrator.pending() and time.monotonic() < deadline:
            if integrator.run_once() is None:
                time.sleep(0.01)

    def root_bytes(self) -> bytes:
        r = self.client.get("/v1/directory/entries", headers=self.auth(RELAY))
        return canonical.b64decode(r.json()["entries"][0]["entry"])

    def trust(self) -> TrustStore:
        """A trust store pinned to this broker's root (in real life, compared out of band)."""
        return TrustStore.pin(self.root_bytes())

    def statement(self, type_: str, signers: list[str] | tuple[str, ...], **body: Any) -> bytes:
        """A statement on the broker's current head, signed by these members' signing keys."""
        signed = gov.statement(self.directory(), type_, self.clock.ms, **body)
        return gov.signed_entry(signed, [(c, self.members[c].signing) for c in signers])

    def propose(self, entry: bytes, who: str = "KOR") -> Any:
        return self.client.post(
            "/v1/governance/proposals", json={"entry": canonical.b64encode(entry)}, headers=self.auth(who)
        )

    def govern(self, type_: str, signers: list[str] | tuple[str, ...], **body: Any) -> Any:
        """Make, sign and post a statement; assert that it was applied."""
        r = self.propose(self.statement(type_, signers, **body), RELAY)
        assert r.status_code == 201, r.text
        return r.json()

    def quorum(self, excluding: str = "") -> list[str]:
        """Eight active members (2/3 of 11, rounded up), none of them `excluding`."""
        return [c for c in MEMBERS if c != excluding][:8]

    def suspend(self, code: str, status: str = "suspended") -> None:
        self.govern("update-member", self.quorum(code), country=code, changes={"status": status})
        self.settle()  # the entry's log leaf is integrated now, not while a test reads the log

    def revoke_own(self, code: str, key_id: str) -> None:
        self.govern("revoke-key", [code], country=code, key_id=key_id)

    def rotate_own(self, code: str, new_key: Any, overlap_ms: int = 0) -> None:
        signed = gov.rotate_key(self.directory(), code, new_key, self.clock.ms, overlap_ms=overlap_ms)
        signers = [(code, self.members[code].signing)]
        r = self.propose(gov.signed_entry(signed, signers), RELAY)
        assert r.status_code == 201, r.text

    def submit(self, origin: str, data: bytes, who: str | None = None) -> Any:
        return self.client.post(
            "/v1/items",
            content=data,
            headers={**self.auth(who or origin), "Content-Type": "application/vnd.msmt.envelope"},
        )


def founders_root(
    countries: Any, now_ms: int, keys: dict[str, AgencyKeys] | None = None, log: LogIdentity | None = None
) -> bytes:
    """A genesis root for `countries` (policy-document country entries), signed by every founder."""
    keys = keys or _KEYS
    members = {
        code: gov.member_body(
            entry.name,
            entry.accreditation,
            entry.groups,
            {
                KeyKind.SIGNING: keys[code].signing.public_key,
                KeyKind.ENCRYPTION: keys[code].encryption.public_key,
                KeyKind.API: keys[code].api.public_key,
            },
            status=entry.status,
        )
        for code, entry in countries.items()
    }
    log = log or LOG_SIGNER.identity()
    signed = gov.root_statement(members, now_ms, extra={"log": log.to_root_extra()})
    return gov.signed_entry(signed, [(code, keys[code].signing) for code in sorted(members)])


def found(
    session: Any, document: policydoc.PolicyDocument, now_ms: int, log: LogIdentity | None = None
) -> None:
    """Install a root made from the document's countries, then the rest of the document."""
    root = founders_root(document.countries, now_ms, log=log)
    governance_service.install_root(session, "test", root, now_ms)
    policy_service.apply_document(session, "test", document, now_ms, with_access=False)


def root_of(url: str) -> bytes:
    """The genesis root a bootstrapped database holds (what agencies pinned out of band)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return bytes(conn.execute(text("SELECT data FROM directory_entries WHERE seq = 0")).scalar_one())
    finally:
        engine.dispose()


def bootstrap(
    url: str, now_ms: int, log: LogIdentity | None = None, quotas: dict[str, Any] | None = None
) -> None:
    """Found the directory with the 11 members (a root they all sign), then an admin and a
    few agreements as one policy document (with `quotas`: its [quotas] table)."""
    migrate(url)
    document = policydoc.from_dict(
        {
            **({"quotas": quotas} if quotas else {}),
            "ladder": ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"],
            "default_agreement": {"ceiling": "RESTRICTED", "topics": "*"},
            "countries": {
                code: {
                    "name": code,
                    "accreditation": "CONFIDENTIAL" if code != "NZL" else "RESTRICTED",
                    "groups": ["G7"] if code in G7 else [],
                }
                for code in MEMBERS
            },
            "agreements": [
                {"originator": "KOR", "recipient": "USA", "ceiling": "CONFIDENTIAL"},
                {
                    "originator": "KOR",
                    "recipient": "JPN",
                    "ceiling": "CONFIDENTIAL",
                    "topics": ["maritime", "arms"],
                },
            ],
        }
    )
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    with transaction(factory) as s:
        found(s, document, now_ms - 1000, log)
        admin_service.create_admin(s, "test", "alice", now_ms - 1000)
        admin_service.add_key(s, "test", "admin:alice", "admin", ADMIN_KEY.public_key.raw, now_ms - 1000)
    engine.dispose()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    clock = Clock()
    bootstrap(database_url, clock.ms)
    settings = Settings(
        database_url=database_url,
        audience=AUDIENCE,
        inbox_poll_interval_s=0.05,
        log_key_file=log_key_file(tmp_path),
        # verified in the request's thread: a pool's two processes per test would cost the
        # suite minutes; test_signature_workers.py runs the checks through the workers
        signature_workers=0,
    )
    app = create_app(settings, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(database_url, client, clock)
    app.state.engine.dispose()
