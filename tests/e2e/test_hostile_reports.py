"""A hostile broker against withdrawals and item-id prefixes (issue 13), with a real broker
process and the unmodified `msmt` CLI and client library:

- whoever can write the broker's database puts a "withdrawal" of USA's TLP:RED item into USA's
  inbox that its originator never signed (one by another member, one with a statement in the
  originator's name under another key, one signed by no member at all, and a genuine item the
  listing relabels as a withdrawal): `msmt pull` refuses each, and deletes nothing; the
  originator's own withdrawal, last, does delete it (the checks are not vacuous);
- a broker that answers an item-id prefix (`msmt show/status/withdraw 01a2...`) with another
  item, through a rewriting proxy in front of the real broker or by swapping envelope bytes in
  its database: the CLI and `Client.status` notice that the item is not the one asked for and
  refuse, and `msmt withdraw` sends nothing.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from broker.services.log import _LOCK_KEYS, ADVISORY_LOCK
from broker.store.db import make_engine
from msmt.cli import main
from msmt.client import Client
from msmt.core import Markings, SigningPrivateKey, parse, seal
from msmt.core import report as rp
from msmt.core.errors import LeafMismatch
from msmt.errors import ClientError
from msmt.trust import TrustStore

from ..integration.conftest import _KEYS, AUDIENCE, bootstrap, postgresql_schema
from .servers import broker_process

FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}
PASSPHRASE = "correct horse battery staple"
RED = Markings.create("RESTRICTED", "RED", ["USA"], topics=["maritime"])
AMBER = Markings.create("RESTRICTED", "AMBER", ["USA"], topics=["maritime"])
SECRET = b"# Sighting\n\nTLP:RED: the MV Example loaded at 38.1N 124.5E.\n"


@dataclass
class Deployment:
    url: str
    base: str
    root: bytes
    tmp: Path

    def sql(self, statement: str, **params: Any) -> list[Any]:
        engine = make_engine(self.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def client(self, code: str, base: str | None = None) -> Client:
        return Client(
            base or self.base, _KEYS[code], trust=TrustStore.pin(self.root), audience=AUDIENCE, backoff_s=0.01
        )

    def keys(self, code: str) -> Path:
        folder = self.tmp / f"keys-{code}"
        if not folder.exists():
            _KEYS[code].save(folder, PASSPHRASE, kdf=FAST_KDF)
            TrustStore.pin(self.root, folder / "trust")
        return folder


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    def run(url: str) -> Iterator[Deployment]:
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


@pytest.fixture
def msmt(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`msmt --keys <code's folder> ...` in process, unmodified: (exit status, stdout, stderr)."""
    monkeypatch.setenv("MSMT_PASSPHRASE", PASSPHRASE)

    def run(code: str, *args: str, broker: str | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(
            [
                "--broker",
                broker or deployment.base,
                "--keys",
                str(deployment.keys(code)),
                "--audience",
                AUDIENCE,
                *args,
            ]
        )
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


def insert_delivery(d: Deployment, envelope: bytes, recipient: str, content_type: str) -> str:
    """What a database operator can do: an item row and a delivery into `recipient`'s inbox,
    listed with the cleartext metadata the operator chooses."""
    header = parse(envelope).header
    seq = int(d.sql("SELECT last_seq FROM inbox_counters WHERE recipient = :r", r=recipient)[0][0]) + 1
    log_index = int(d.sql("SELECT count(*) FROM log_entries")[0][0]) + 1000 + seq
    d.sql(
        "INSERT INTO items (item_id, originator, originator_key_id, created_ms, received_ms, classification, "
        "tlp, content_type, in_reply_to, size, envelope_sha256, envelope, log_index, submitted_with_key, "
        "recipients) VALUES (:id, :o, :k, :c, :c, 'RESTRICTED', 'AMBER', :t, :r, :n, 'x', :e, :li, 'x', :rc)",
        id=header.item_id,
        o=header.originator,
        k=header.originator_key_id,
        c=header.created_ms,
        t=content_type,
        r=header.in_reply_to,
        n=len(envelope),
        e=envelope,
        li=log_index,
        rc=recipient,
    )
    d.sql(
        "INSERT INTO deliveries (item_id, recipient, seq, state, created_ms) VALUES (:i, :r, :s, 'pending', 0)",
        i=header.item_id,
        r=recipient,
        s=seq,
    )
    d.sql("UPDATE inbox_counters SET last_seq = :s WHERE recipient = :r", s=seq, r=recipient)
    return header.item_id


def withdrawal_envelope(
    item_id: str, sender: str, sender_key: SigningPrivateKey, country: str, statement_key: SigningPrivateKey
) -> bytes:
    """A withdrawal of `item_id` sealed to USA by `sender`, carrying `country`'s statement signed
    with `statement_key`."""
    now = int(time.time() * 1000)
    statement = rp.withdraw(item_id, country, statement_key, now, "This item is withdrawn.")
    return seal(
        statement,
        content_type=rp.WITHDRAWAL_MEDIA_TYPE,
        markings=AMBER,
        recipients=[("USA", _KEYS["USA"].encryption.public_key)],
        originator=sender,
        signing_key=sender_key,
        created_ms=now,
        in_reply_to=item_id,
    )


def test_a_withdrawal_its_originator_did_not_sign_is_refused_and_deletes_nothing(
    deployment: Deployment, msmt: Any
) -> None:
    inbox = deployment.tmp / "usa-inbox"
    jpn_key, outsider = _KEYS["JPN"].signing, SigningPrivateKey.generate()  # outsider: in no directory
    with deployment.client("KOR") as kor, deployment.client("JPN") as jpn:
        item_id = kor.send(SECRET, content_type="text/markdown", markings=RED, recipients=["USA"]).item_id
        genuine = kor.send(b"# Another sighting\n", content_type="text/markdown", markings=AMBER).item_id
        own = jpn.send(b"# JPN's note\n", content_type="text/markdown", markings=AMBER).item_id
        assert msmt("USA", "pull", str(inbox))[0] == 0
        (payload,) = inbox.glob(f"*-{item_id}.md")
        assert payload.read_bytes() == SECRET

        # JPN (a member colluding with the operator) gets past the broker's originator rule
        # with withdrawals that reply to its own item, while the signed statement inside (which
        # the broker cannot read) is about KOR's: submitted, logged and delivered as usual
        def smuggled(country: str) -> str:
            statement = rp.withdraw(item_id, country, jpn_key, int(time.time() * 1000), "Withdrawn.")
            sent = jpn.send(
                statement,
                content_type=rp.WITHDRAWAL_MEDIA_TYPE,
                markings=AMBER,
                recipients=["USA"],
                in_reply_to=own,
            )
            return sent.item_id

        by_jpn = smuggled("JPN")  # JPN's own statement, about KOR's item
        in_kors_name = smuggled("KOR")  # a statement in KOR's name, signed with JPN's key

    # written into the database: "withdrawals" of the item that no member signed as its
    # originator (JPN's, and one in KOR's name under a key in no directory)...
    written = [
        insert_delivery(
            deployment,
            withdrawal_envelope(item_id, sender, key, country, key),
            "USA",
            rp.WITHDRAWAL_MEDIA_TYPE,
        )
        for sender, country, key in (("JPN", "JPN", jpn_key), ("KOR", "KOR", outsider))
    ]
    # ... and a genuine delivery the operator relabels as KOR's withdrawal of the item
    deployment.sql(
        "UPDATE items SET content_type = :t, in_reply_to = :r WHERE item_id = :i",
        t=rp.WITHDRAWAL_MEDIA_TYPE,
        r=item_id,
        i=genuine,
    )
    status, out, _ = msmt("USA", "--json", "inbox")
    listed = {d["item_id"]: d for d in json.loads(out)["deliveries"]}
    assert listed[genuine]["content_type"] == rp.WITHDRAWAL_MEDIA_TYPE  # what the operator shows

    status, _, err = msmt("USA", "pull", str(inbox))
    assert status != 0  # the written ones are rejected (not in the log, or not signed by a member)
    assert f"withdrawal {by_jpn} ignored" in err and f"withdrawal {in_kors_name} ignored" in err
    for forged in written:
        assert f"item {forged} REJECTED" in err and list(inbox.glob(f"quarantine/*-{forged}.*"))
    assert "WITHDREW" not in err
    assert payload.read_bytes() == SECRET  # nothing deleted, nothing marked
    assert not list(inbox.glob("*.withdrawn.json"))
    (relabelled,) = inbox.glob(f"*-{genuine}.header.json")  # saved as what its signed header says
    assert json.loads(relabelled.read_text())["content_type"] == "text/markdown"

    # the originator's own withdrawal does delete it: the checks above are not vacuous
    assert msmt("KOR", "withdraw", item_id, "--reason", "Sent to the wrong partner.")[0] == 0
    _, _, err = msmt("USA", "pull", str(inbox))
    assert f"KOR WITHDREW item {item_id}" in err
    assert not payload.exists() and list(inbox.glob(f"*-{item_id}.withdrawn.json"))


class _Rewriting(http.server.BaseHTTPRequestHandler):
    """A broker that answers a prefix with another item: every request goes to the real broker
    unchanged (its tokens are bound to method and path), but the answers to
    `GET /v1/items/<prefix>` and `/v1/items/<prefix>/status` are the other item's: its envelope
    (from the database) and the status with its id."""

    upstream: str
    prefix: str
    asked: str
    other: str
    other_envelope: bytes

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        r = httpx.request(self.command, self.upstream + self.path, headers=headers, content=body, timeout=30)
        content = r.content
        path = self.path.split("?", 1)[0]
        if r.status_code == 200 and path == f"/v1/items/{self.prefix}":
            content = self.other_envelope
        elif r.status_code == 200 and path == f"/v1/items/{self.prefix}/status":
            content = content.replace(self.asked.encode(), self.other.encode())
        self.send_response(r.status_code)
        for name, value in r.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def two_items(deployment: Deployment) -> tuple[str, str]:
    with deployment.client("KOR") as kor:
        asked = kor.send(b"# The item asked for\n", content_type="text/markdown", markings=AMBER).item_id
        other = kor.send(b"# Another item\n", content_type="text/markdown", markings=AMBER).item_id
    return asked, other


@pytest.fixture
def hostile(deployment: Deployment, two_items: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """(base URL of the rewriting broker, the prefix it answers with the other item)."""
    asked, other = two_items
    prefix = asked[:24]  # unique at the real broker; the other item does not start with it
    assert not other.startswith(prefix)
    (envelope,) = deployment.sql("SELECT envelope FROM items WHERE item_id = :i", i=other)[0]
    attributes = {
        "upstream": deployment.base,
        "prefix": prefix,
        "asked": asked,
        "other": other,
        "other_envelope": bytes(envelope),
    }
    handler = type("Handler", (_Rewriting,), attributes)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", prefix
    finally:
        server.shutdown()
        server.server_close()


def withdrawals_sent(d: Deployment) -> int:
    return int(d.sql("SELECT count(*) FROM items WHERE content_type = :t", t=rp.WITHDRAWAL_MEDIA_TYPE)[0][0])


def test_a_prefix_answered_with_another_item_is_refused(
    deployment: Deployment, msmt: Any, hostile: tuple[str, str], two_items: tuple[str, str]
) -> None:
    base, prefix = hostile
    asked, other = two_items
    # the real broker resolves the prefix to the item asked for
    status, out, _ = msmt("KOR", "--json", "status", prefix)
    assert status == 0 and json.loads(out)["item_id"] == asked

    for command in (["show", prefix], ["show", prefix, "--open"], ["status", prefix]):
        status, out, err = msmt("KOR", *command, broker=base)
        assert status != 0, (command, out)
        assert other in err and prefix in err, (command, err)
        assert "does not start with" in err, (command, err)

    # withdrawing "the item the user named" must not withdraw another one
    status, _, err = msmt("KOR", "withdraw", prefix, "--reason", "Mis-sent.", broker=base)
    assert status != 0 and "does not start with" in err
    assert withdrawals_sent(deployment) == 0

    # the library itself refuses, for any caller of Client.status
    with deployment.client("KOR", base) as kor, pytest.raises(ClientError, match="does not start with"):
        kor.status(prefix)


def test_an_envelope_swapped_in_the_database_is_refused(
    deployment: Deployment, msmt: Any, two_items: tuple[str, str]
) -> None:
    asked, other = two_items
    prefix = asked[:24]
    (swapped,) = deployment.sql("SELECT envelope FROM items WHERE item_id = :i", i=other)[0]
    deployment.sql("UPDATE items SET envelope = :e WHERE item_id = :i", e=bytes(swapped), i=asked)
    for command in (["show", prefix], ["show", asked, "--open"]):
        status, _, err = msmt("KOR", *command)
        assert status != 0 and f"with item {other}" in err, (command, err)
    # status resolves the prefix honestly, but the envelope its receipts are checked against is
    # another item's
    status, _, err = msmt("KOR", "status", prefix)
    assert status != 0 and other in err, err


@contextmanager
def integration_held(d: Deployment) -> Iterator[None]:
    """The window between acceptance and integration, held open: this connection takes the
    schema's integration lock (the advisory lock a broker integrates under), so the broker
    stores and answers submissions (202, still durable) but logs none until it is let go."""
    engine = make_engine(d.url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_KEYS})"), {"k": ADVISORY_LOCK})
            yield
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "deployment", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
def test_recipients_rewritten_before_integration_are_refused_by_every_party(
    deployment: Deployment, msmt: Any
) -> None:
    """Whoever writes the database between an item's acceptance and its integration rewrites
    the recipients it is logged and delivered to (`items.recipients`): one item loses JPN (a
    censored delivery), another gains JPN (a delivery it was never sealed for). The broker
    logs and delivers what the row says; the unmodified clients each refuse it from their own
    signed headers: the recipients (`msmt pull`), the country added, and the originator
    (`msmt audit`). An item nobody touched, sent in the same window, is accepted by all.

    PostgreSQL only: there acceptance and integration are separate transactions (another
    process may hold the integration lock); on SQLite one transaction does both, so no
    accepted item ever waits un-logged for a hand to reach it."""
    everyone = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
    trust = TrustStore.load(deployment.keys("KOR") / "trust")
    with (
        integration_held(deployment),
        Client(deployment.base, _KEYS["KOR"], trust=trust, audience=AUDIENCE, backoff_s=0.01) as kor,
    ):
        sends = [
            (b"# Censored\n", ["JPN", "USA"]),
            (b"# Widened\n", ["USA"]),
            (b"# Untouched\n", ["USA"]),
        ]
        with ThreadPoolExecutor(len(sends)) as pool:  # each waits out the broker's settle time
            receipts = list(
                pool.map(
                    lambda s: kor.send(
                        s[0], content_type="text/markdown", markings=everyone, recipients=s[1]
                    ),
                    sends,
                )
            )
        censored, widened, untouched = (r.item_id for r in receipts)
        assert all(r.log_index is None for r in receipts)  # accepted, not yet logged
        deployment.sql("UPDATE items SET recipients = 'USA' WHERE item_id = :i", i=censored)
        deployment.sql("UPDATE items SET recipients = 'JPN,USA' WHERE item_id = :i", i=widened)

    def delivered_to(item_id: str) -> list[str]:
        rows = deployment.sql(
            "SELECT recipient FROM deliveries WHERE item_id = :i ORDER BY recipient", i=item_id
        )
        return [r[0] for r in rows]

    deadline = time.monotonic() + 20
    while not all(delivered_to(i) for i in (censored, widened, untouched)) and time.monotonic() < deadline:
        time.sleep(0.1)
    # the attack took: the broker logged and delivered what the rewritten rows say
    assert delivered_to(censored) == ["USA"]
    assert delivered_to(widened) == ["JPN", "USA"]
    assert delivered_to(untouched) == ["USA"]

    # each recipient checks every delivery's log entry against the header its originator
    # signed: a rewritten one is the log lying about an item (LeafMismatch), which stops a pull
    # (it is not about one delivery) with nothing of it saved
    usa_inbox, jpn_inbox = deployment.tmp / "usa-inbox", deployment.tmp / "jpn-inbox"
    with deployment.client("USA") as usa:
        deliveries = {d.item_id: d for d in usa.inbox().deliveries}
        for item_id, listed in ((censored, "recipients USA$"), (widened, "recipients JPN, USA$")):
            with pytest.raises(LeafMismatch, match=listed):
                usa.open(deliveries[item_id])
        assert usa.open(deliveries[untouched]).payload == b"# Untouched\n"  # the check is not vacuous
    status, _, err = msmt("USA", "pull", str(usa_inbox))
    assert status != 0 and "log-leaf-mismatch" in err, err
    assert censored in err or widened in err, err
    assert not list(usa_inbox.glob(f"*-{censored}.md")) and not list(usa_inbox.glob(f"*-{widened}.md"))

    status, _, err = msmt("JPN", "pull", str(jpn_inbox))
    assert status != 0 and f"item {widened} REJECTED" in err, err
    assert not list(jpn_inbox.glob(f"*-{widened}.md"))

    status, out, err = msmt("KOR", "audit")
    assert status != 0, out
    assert f"AUDIT: {censored}: the broker shows no delivery to JPN" in err, err
    for item_id, listed in ((censored, "recipients USA)"), (widened, "recipients JPN, USA)")):
        assert f"AUDIT: {item_id}: its log entry does not hold up" in err and listed in err, err
    assert untouched not in err, err
