"""`msmt pull` / `msmt watch` against a real broker process: a delivery the agency cannot open
is quarantined (envelope + reason, 0600), reported, not acknowledged, and the cursor moves past
it, so the next good item is saved. Names of written files come only from validated values: a
hostile broker's item id cannot put a file outside the folder.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from broker.store.db import make_engine
from msmt import cli
from msmt.agency import AgencyKeys
from msmt.client import Client
from msmt.core import EncryptionPrivateKey, Markings, canonical
from msmt.core import governance as gov
from msmt.trust import TrustStore

from ..integration.conftest import _KEYS, AUDIENCE, bootstrap, postgresql_schema
from .servers import broker_process

MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response]


@dataclass
class Deployment:
    url: str
    base: str
    root: bytes
    tmp: Path

    def client(
        self, code: str, keys: AgencyKeys | None = None, rewrite: Rewrite | None = None, **options: Any
    ) -> Client:
        return Client(
            self.base,
            keys or _KEYS[code],
            trust=TrustStore.pin(self.root),
            audience=AUDIENCE,
            transport=Hostile(rewrite) if rewrite else None,
            backoff_s=0.01,
            directory_ttl_s=0,
            **options,
        )


class Hostile(httpx.BaseTransport):
    """The broker as a hostile operator could make it answer: real answers, rewritten."""

    def __init__(self, rewrite: Rewrite) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        return self.rewrite(request, response)

    def close(self) -> None:
        self.inner.close()


def _answer(response: httpx.Response, content: bytes, status: int | None = None) -> httpx.Response:
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")
    }
    return httpx.Response(status or response.status_code, headers=headers, content=content)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    def run(url: str) -> Iterator[Deployment]:
        import time

        bootstrap(url, int(time.time() * 1000))
        engine = make_engine(url)
        with engine.connect() as conn:
            root = bytes(conn.execute(text("SELECT data FROM directory_entries WHERE seq = 0")).scalar_one())
        engine.dispose()
        with broker_process(url, AUDIENCE, tmp_path / "broker.log") as base:
            yield Deployment(url, base, root, tmp_path)

    if request.param == "sqlite":
        yield from run(f"sqlite:///{tmp_path / 'broker.db'}")
    else:
        with postgresql_schema() as url:
            yield from run(url)


def pull(
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[], Client],
    folder: Path,
    *options: str,
    command: str = "pull",
) -> int:
    """Run `msmt --json pull FOLDER` (or watch) with this client."""
    monkeypatch.setattr(cli, "_client", lambda args: make())
    args = cli.build_parser().parse_args(["--json", command, str(folder), *options])
    code: int = args.func(args)
    return code


def states(d: Deployment, item_id: str) -> dict[str, str]:
    with d.client("KOR") as kor:
        return {row["recipient"]: row["state"] for row in kor.status(item_id)["deliveries"]}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def send(d: Deployment, payload: bytes) -> str:
    with d.client("KOR") as kor:
        return kor.send(payload, content_type="text/plain", markings=MARKINGS, recipients=["USA"]).item_id


def rotate_usa_encryption(d: Deployment) -> AgencyKeys:
    """USA rotates its encryption key and loses the old one: older items can no longer be opened."""
    new_key = EncryptionPrivateKey.generate()
    with d.client("USA") as usa:
        state = usa.directory(refresh=True).state
        signed = gov.rotate_key(state, "USA", new_key.public_key, state.updated_ms + 1)
        assert usa.propose(gov.signed_entry(signed, [("USA", _KEYS["USA"].signing)]))["state"] == "applied"
    old = _KEYS["USA"]
    return AgencyKeys("USA", old.signing, new_key, old.api, retired={old.encryption.key_id})


def quarantined(folder: Path) -> dict[str, Any]:
    """The reasons in FOLDER/quarantine, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / "quarantine").glob("*.json"))}


def test_an_item_sealed_to_a_lost_key_is_quarantined_and_does_not_block_the_next(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = send(deployment, b"sealed to the old key")
    keys = rotate_usa_encryption(deployment)
    good = send(deployment, b"sealed to the new key")
    folder = deployment.tmp / "usa-inbox"

    code = pull(monkeypatch, lambda: deployment.client("USA", keys=keys), folder)
    out = capsys.readouterr()
    assert code == cli.EXIT_INVALID_ITEM
    assert json.loads(out.out) == {"saved": 1, "rejected": 1, "folder": str(folder)}
    assert lost in out.err and "quarantine" in out.err

    # the good item is saved, 0600
    (payload,) = folder.glob(f"*-{good}.txt")
    assert payload.read_bytes() == b"sealed to the new key"
    (header,) = folder.glob(f"*-{good}.header.json")
    assert mode(payload) == mode(header) == 0o600
    # the bad one is in quarantine: its envelope bytes and a reason, 0600, in a 0700 folder
    reasons = quarantined(folder)
    (name,) = reasons
    reason = reasons[name]
    assert reason["item_id"] == lost and reason["acknowledged"] is False
    assert "key" in reason["detail"]
    envelope = folder / "quarantine" / name.replace(".reason.json", ".envelope")
    with deployment.client("KOR") as kor:
        assert envelope.read_bytes() == kor.fetch(lost)
    assert mode(folder / "quarantine") == 0o700
    assert mode(envelope) == mode(folder / "quarantine" / name) == 0o600
    assert mode(folder / cli.CURSOR_FILE) == 0o600
    # not acknowledged; the good one is
    assert states(deployment, lost)["USA"] == "pending"
    assert states(deployment, good)["USA"] == "acknowledged"

    # the cursor moved past it: the next pull finds nothing and writes nothing new
    before = sorted(p.name for p in folder.rglob("*"))
    assert pull(monkeypatch, lambda: deployment.client("USA", keys=keys), folder) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["saved"] == 0
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_watch_quarantines_and_goes_on(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = send(deployment, b"sealed to the old key")
    keys = rotate_usa_encryption(deployment)
    good = send(deployment, b"sealed to the new key")
    folder = deployment.tmp / "usa-watch"
    code = pull(monkeypatch, lambda: deployment.client("USA", keys=keys), folder, "--once", command="watch")
    assert code == cli.EXIT_INVALID_ITEM
    assert "1 saved, 1 rejected" in capsys.readouterr().err
    assert [r["item_id"] for r in quarantined(folder).values()] == [lost]
    assert len(list(folder.glob(f"*-{good}.txt"))) == 1
    assert states(deployment, lost)["USA"] == "pending"
    assert states(deployment, good)["USA"] == "acknowledged"


def test_an_envelope_failing_verification_is_quarantined_not_acknowledged(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = send(deployment, b"tampered with by the broker")
    good = send(deployment, b"intact")

    def flip(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[-1] ^= 1
        return bytes(changed)

    def tamper(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        # wherever the envelope travels: fetched alone, or in the inbox page (what pull uses)
        if request.method == "GET" and request.url.path == f"/v1/items/{bad}":
            return _answer(response, flip(response.content))
        if request.url.path == "/v1/inbox" and response.status_code == 200:
            page = response.json()
            for d in page["deliveries"]:
                if d["item_id"] == bad and "envelope" in d:
                    d["envelope"] = canonical.b64encode(flip(canonical.b64decode(d["envelope"])))
            return _answer(response, json.dumps(page).encode())
        return response

    folder = deployment.tmp / "usa-inbox"
    code = pull(monkeypatch, lambda: deployment.client("USA", rewrite=tamper), folder)
    assert code == cli.EXIT_INVALID_ITEM
    assert json.loads(capsys.readouterr().out) == {"saved": 1, "rejected": 1, "folder": str(folder)}
    (reason,) = quarantined(folder).values()
    assert reason["item_id"] == bad and reason["error"] in {
        "bad-signature",
        "payload-mismatch",
        "malformed-envelope",
    }
    assert not list(folder.glob("*.rejected.json"))
    assert states(deployment, bad)["USA"] == "pending"  # rejected: never acknowledged
    assert states(deployment, good)["USA"] == "acknowledged"
    assert (folder / cli.CURSOR_FILE).read_text().strip() != "0"


@pytest.mark.parametrize(
    "hostile", ["x/../../escaped", "../escaped", "/tmp/escaped", "..", "x\\..\\escaped", "a" * 300]
)
def test_a_hostile_item_id_can_not_escape_the_folder(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], hostile: str
) -> None:
    victim = send(deployment, b"first")
    good = send(deployment, b"second")
    outside = deployment.tmp / "outside"
    folder = outside / "usa-inbox"
    folder.mkdir(parents=True)
    with deployment.client("USA") as usa:
        seq = next(d.seq for d in usa.inbox().deliveries if d.item_id == victim)
    (folder / f"{seq:08d}-x").mkdir()  # so that a name built from the id would resolve outside

    def lie(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/inbox" and response.status_code == 200:
            page = response.json()
            for d in page["deliveries"]:
                if d["item_id"] == victim:
                    d["item_id"] = hostile
            return _answer(response, json.dumps(page).encode())
        if request.method == "GET" and request.url.path.startswith("/v1/") and "escaped" in request.url.path:
            return _answer(response, b"not an envelope", status=200)
        return response

    before = set(outside.rglob("*"))
    code = pull(monkeypatch, lambda: deployment.client("USA", rewrite=lie), folder)
    assert code == cli.EXIT_INVALID_ITEM
    assert json.loads(capsys.readouterr().out)["saved"] == 1
    created = set(outside.rglob("*")) - before
    assert created, "pull wrote nothing"
    for path in created:
        assert folder in path.resolve().parents, f"{path} is outside {folder}"
    assert not [p for p in deployment.tmp.rglob("*escaped*")]
    assert not list(Path("/tmp").glob("escaped*"))
    (reason,) = quarantined(folder).values()
    assert reason["item_id"] == hostile[:200]
    assert not any(hostile in p.name for p in created)
    assert states(deployment, victim)["USA"] == "pending"
    assert states(deployment, good)["USA"] == "acknowledged"
    assert len(list(folder.glob(f"*-{good}.txt"))) == 1
    for path in created:
        if path.is_file():
            assert mode(path) == 0o600, path


def test_pull_with_no_ack_acknowledges_nothing(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    item = send(deployment, b"keep it pending")
    folder = deployment.tmp / "usa-inbox"
    assert pull(monkeypatch, lambda: deployment.client("USA"), folder, "--no-ack") == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["saved"] == 1
    assert states(deployment, item)["USA"] == "pending"
    assert not (folder / "quarantine").exists() or not os.listdir(folder / "quarantine")
