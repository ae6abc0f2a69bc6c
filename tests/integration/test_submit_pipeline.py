"""The submit path built for throughput (issue 14): bound tokens without a database write,
batched submissions, group commit through the sequencer, and honest answers on outages."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from broker.app import create_app
from broker.services.submit import join_batch
from broker.settings import Settings
from broker.store.db import make_engine
from msmt.core import EncryptionPrivateKey, Markings, seal

from .conftest import AUDIENCE, World, log_key_file

ENVELOPE = {"Content-Type": "application/vnd.msmt.envelope"}
BATCH = {"Content-Type": "application/vnd.msmt.envelope-batch"}


def bound(world: World, who: str, method: str, target: str, body: bytes = b"") -> dict[str, str]:
    return world.auth(who, method=method, target=target, body=body)


def used_tokens(world: World) -> int:
    return world.count("used_tokens")


# --- bound tokens ----------------------------------------------------------------------------


def test_a_bound_token_submits_and_reads_without_a_database_write(world: World) -> None:
    before = used_tokens(world)
    envelope = world.seal("KOR", ["USA"])
    r = world.client.post(
        "/v1/items",
        content=envelope,
        headers={**bound(world, "KOR", "POST", "/v1/items", envelope), **ENVELOPE},
    )
    assert r.status_code == 201, r.text
    r = world.client.get(
        "/v1/inbox?after=0&limit=10", headers=bound(world, "USA", "GET", "/v1/inbox?after=0&limit=10")
    )
    assert r.status_code == 200, r.text
    assert [d["item_id"] for d in r.json()["deliveries"]] == [json.loads(r.text)["deliveries"][0]["item_id"]]
    assert used_tokens(world) == before  # neither request wrote a used-token row


def test_an_unbound_token_is_still_recorded_in_the_database(world: World) -> None:
    before = used_tokens(world)
    r = world.client.get("/v1/inbox", headers=world.auth("USA"))
    assert r.status_code == 200
    assert used_tokens(world) == before + 1


@pytest.mark.parametrize(
    ("method", "target", "body", "why"),
    [
        ("GET", "/v1/items", b"", "another method"),
        ("POST", "/v1/items?x=1", None, "another target"),
        ("POST", "/v1/items", b"other bytes", "another body"),
    ],
)
def test_a_bound_token_is_good_only_for_its_own_request(
    world: World, method: str, target: str, body: bytes | None, why: str
) -> None:
    envelope = world.seal("KOR", ["USA"])
    token_body = envelope if body is None else body
    r = world.client.post(
        "/v1/items", content=envelope, headers={**bound(world, "KOR", method, target, token_body), **ENVELOPE}
    )
    assert r.status_code == 401, why
    assert r.json()["type"].endswith("token-binding")
    assert world.count("items") == 0


def test_a_token_with_part_of_a_binding_is_refused(world: World) -> None:
    import jwt

    from .conftest import _KEYS

    claims = jwt.decode(world.token("USA"), options={"verify_signature": False})
    claims["htm"] = "GET"  # htu and bh missing
    key = _KEYS["USA"].api
    token = jwt.encode(claims, key.ed_key, algorithm="EdDSA", headers={"kid": key.key_id})
    r = world.client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json()["type"].endswith("invalid-token")


def test_a_bound_token_is_refused_the_second_time_by_the_same_process(world: World) -> None:
    headers = bound(world, "USA", "GET", "/v1/inbox")
    assert world.client.get("/v1/inbox", headers=headers).status_code == 200
    r = world.client.get("/v1/inbox", headers=headers)
    assert r.status_code == 401
    assert r.json()["type"].endswith("replayed-token")


@pytest.fixture
def second_process(world: World, tmp_path: Path) -> Iterator[TestClient]:
    """Another broker process on the same database (its own memory, its own writer)."""
    settings = Settings(database_url=world.url, audience=AUDIENCE, log_key_file=log_key_file(tmp_path))
    app = create_app(settings, clock=world.clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    app.state.engine.dispose()


def test_a_bound_submission_replayed_to_another_process_changes_nothing(
    world: World, second_process: TestClient
) -> None:
    envelope = world.seal("KOR", ["USA"])
    headers = {**bound(world, "KOR", "POST", "/v1/items", envelope), **ENVELOPE}
    assert world.client.post("/v1/items", content=envelope, headers=headers).status_code == 201
    counts = (world.count("items"), world.count("deliveries"), world.count("log_entries"))
    r = second_process.post("/v1/items", content=envelope, headers=headers)
    assert r.status_code == 200  # answered as the identical re-submission it is
    world.settle()
    assert (world.count("items"), world.count("deliveries"), world.count("log_entries")) == counts


@pytest.mark.parametrize("route", ["admin", "governance"])
def test_bound_tokens_for_admin_and_governance_routes_are_refused_by_every_process(
    world: World, second_process: TestClient, route: str
) -> None:
    if route == "admin":
        who, target = "admin:alice", "/v1/admin/policy/versions"
    else:
        who, target = "KOR", "/v1/governance/proposals"
    headers = bound(world, who, "GET", target)
    assert world.client.get(target, headers=headers).status_code == 200
    r = second_process.get(target, headers=headers)
    assert r.status_code == 401
    assert r.json()["type"].endswith("replayed-token")


# --- batches -----------------------------------------------------------------------------------


def post_batch(world: World, who: str, envelopes: list[bytes]) -> Any:
    body = join_batch(envelopes)
    return world.client.post(
        "/v1/items/batch",
        content=body,
        headers={**bound(world, who, "POST", "/v1/items/batch", body), **BATCH},
    )


def test_each_envelope_of_a_batch_is_answered_on_its_own(world: World) -> None:
    good = world.seal("KOR", ["USA", "JPN"])
    again = world.seal("KOR", ["GBR"])
    assert world.submit("KOR", again).status_code == 201
    secret = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
    refused = world.seal("KOR", ["NZL"], markings=secret)
    r = post_batch(world, "KOR", [good, b"MSMT-not-an-envelope", refused, again, good])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 422, 403, 200, 200]
    assert results[2]["problem"]["type"].endswith("recipients-refused")
    assert results[0]["receipt"]["log_index"] is not None
    assert {d["recipient"] for d in results[0]["receipt"]["deliveries"]} == {"JPN", "USA"}
    assert results[4]["receipt"]["item_id"] == results[0]["receipt"]["item_id"]
    world.settle()
    assert world.count("items") == 2  # `again` before, `good` once; nothing of the refused ones
    assert world.count("deliveries") == 3


def test_a_batch_logged_where_it_is_stored_writes_each_item_row_once(world: World) -> None:
    """When the process that stores a batch also integrates it (in the same transaction), each
    item row is inserted with its log index, never inserted and then updated: an update
    rewrites the row's ~23 KB envelope on SQLite and makes a new row version with new index
    entries on PostgreSQL (services/log.py `integrate`'s `staged`)."""
    from sqlalchemy import event

    world.settle()
    engine = world.client.app.state.engine  # type: ignore[attr-defined]
    statements: list[str] = []
    updated: list[object] = []  # PostgreSQL: the items the integration's one statement updates

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append(" ".join(statement.split()).lower())
        if isinstance(parameters, dict) and "i_b_item" in parameters:
            updated.extend(parameters["i_b_item"])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        envelopes = [world.seal("KOR", ["USA", "JPN"]) for _ in range(3)]
        r = post_batch(world, "KOR", envelopes)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == [201, 201, 201]
    assert all(x["receipt"]["log_index"] is not None for x in r.json()["results"])
    assert [s for s in statements if s.startswith("insert into items")]
    assert not [s for s in statements if s.startswith("update items")]
    assert updated == []
    engine2 = make_engine(world.url)
    try:
        with engine2.connect() as conn:
            indexes = conn.execute(text("SELECT log_index FROM items")).scalars().all()
    finally:
        engine2.dispose()
    assert len(indexes) == 3 and None not in indexes


def test_a_batchs_policy_decisions_are_each_envelopes_own(world: World) -> None:
    """The store decides a batch's recipients once per question (originator, markings, the
    recipients and the keys they were sealed to, the arrival time): envelopes that differ in
    any of these are decided apart, and each refusal names its own recipients and rules."""
    secret = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
    stranger = EncryptionPrivateKey.generate()
    stale = seal(
        b"report",
        content_type="text/markdown",
        markings=Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"]),  # world.seal's
        recipients=[("USA", stranger.public_key)],
        originator="KOR",
        signing_key=world.members["KOR"].signing,
        created_ms=world.clock.ms,
    )
    batch = [
        world.seal("KOR", ["USA"]),  # allowed
        stale,  # the same markings and recipient, another key: refused
        world.seal("KOR", ["NZL"]),  # allowed
        world.seal("KOR", ["NZL"], markings=secret),  # the same recipient, other markings: refused
        world.seal("KOR", ["USA"]),  # the first question again: allowed
    ]
    r = post_batch(world, "KOR", batch)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 403, 201, 403, 201]
    rules = [
        {c: {d["rule"] for d in denials} for c, denials in x["problem"]["recipients"].items()}
        for x in (results[1], results[3])
    ]
    assert rules[0] == {"USA": {"stale-encryption-key"}}
    assert set(rules[1]) == {"NZL"} and "stale-encryption-key" not in rules[1]["NZL"]
    world.settle()
    assert world.count("items") == 3


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "bad-batch"),
        (b"\x00\x00\x00", "bad-batch"),
        (b"\x00\x00\x00\x00", "bad-batch"),
        (b"\x00\x00\x10\x00short", "bad-batch"),
    ],
)
def test_a_batch_whose_frames_do_not_cover_the_body_stores_nothing(
    world: World, body: bytes, code: str
) -> None:
    good = join_batch([world.seal("KOR", ["USA"])])
    data = good + body if body else body
    r = world.client.post(
        "/v1/items/batch",
        content=data,
        headers={**bound(world, "KOR", "POST", "/v1/items/batch", data), **BATCH},
    )
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith(code)
    assert world.count("items") == 0


def test_a_batch_over_the_item_limit_stores_nothing(world: World) -> None:
    limit = world.client.app.state.broker.settings.submit_batch_max_items  # type: ignore[attr-defined]
    envelopes = [world.seal("KOR", ["USA"], payload=str(i).encode()) for i in range(limit + 1)]
    r = post_batch(world, "KOR", envelopes)
    assert r.status_code == 422
    assert r.json()["type"].endswith("batch-too-large")
    assert world.count("items") == 0


def test_a_batch_with_another_members_envelope_stores_nothing(world: World) -> None:
    r = post_batch(world, "KOR", [world.seal("KOR", ["USA"]), world.seal("FRA", ["USA"])])
    assert r.status_code == 403
    assert r.json()["type"].endswith("originator-mismatch")
    assert world.count("items") == 0


# --- the sequencer -----------------------------------------------------------------------------


def test_concurrent_submissions_share_transactions(world: World) -> None:
    sequencer = world.client.app.state.broker.writer  # type: ignore[attr-defined]
    batches_before = sequencer.batches
    envelopes = [world.seal("KOR", ["USA", "JPN"], payload=str(i).encode()) for i in range(60)]
    statuses: list[int] = []
    lock = threading.Lock()

    def send(chunk: list[bytes]) -> None:
        for envelope in chunk:
            status = world.submit("KOR", envelope).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=send, args=(envelopes[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 60
    # inbox numbers are gap-free and ordered by log index for each recipient
    with make_engine(world.url).connect() as conn:
        for recipient in ("USA", "JPN"):
            rows = conn.execute(
                text(
                    "SELECT d.seq, i.log_index FROM deliveries d JOIN items i ON i.item_id = d.item_id "
                    "WHERE d.recipient = :r ORDER BY d.seq"
                ),
                {"r": recipient},
            ).all()
            assert [seq for seq, _ in rows] == list(range(1, 61))
            assert [index for _, index in rows] == sorted(index for _, index in rows)
    post = world.client.post(
        "/v1/items/batch",
        content=join_batch(envelopes[:1]),
        headers={**world.auth("KOR"), **BATCH},
    )
    assert post.json()["results"][0]["status"] == 200
    assert sequencer.batches - batches_before <= 61


def test_a_batch_is_stored_in_one_transaction(world: World) -> None:
    sequencer = world.client.app.state.broker.writer  # type: ignore[attr-defined]
    before = sequencer.batches
    r = post_batch(world, "KOR", [world.seal("KOR", ["USA"], payload=str(i).encode()) for i in range(40)])
    assert [x["status"] for x in r.json()["results"]] == [201] * 40
    assert sequencer.batches - before <= 2  # queued together: one batch (two if the writer woke mid-way)


def test_a_batch_answer_is_encoded_as_its_response_model(world: World) -> None:
    """The batch answer is built without the model (api/items.py `_batch_json`): the same bytes."""
    from broker.api.schemas import BatchResults

    good = world.seal("KOR", ["USA", "JPN"])
    secret = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
    r = post_batch(
        world, "KOR", [good, b"MSMT-not-an-envelope", world.seal("KOR", ["NZL"], markings=secret), good]
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert [x["status"] for x in r.json()["results"]] == [201, 422, 403, 200]
    assert r.content == BatchResults(**r.json()).model_dump_json().encode()


def break_storing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch the sequencer stores fails as when the database connection drops."""
    from sqlalchemy.exc import OperationalError

    from broker.services import sequencer as sequencer_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(sequencer_module, "accept_batch", broken)


def test_a_database_failure_while_storing_a_batch_is_503_for_each_of_its_envelopes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_storing(monkeypatch)
    envelopes = [
        world.seal("KOR", ["USA"], payload=b"a"),
        b"MSMT-not-an-envelope",
        world.seal("KOR", ["USA"]),
    ]
    r = post_batch(world, "KOR", envelopes)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [503, 422, 503]
    assert results[0]["problem"]["type"].endswith("database-unavailable") and results[0]["receipt"] is None
    monkeypatch.undo()
    assert [x["status"] for x in post_batch(world, "KOR", envelopes[:1]).json()["results"]] == [201]


def test_a_database_failure_while_storing_is_503_and_says_the_outcome_is_unknown(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_storing(monkeypatch)
    r = world.submit("KOR", world.seal("KOR", ["USA"]))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    problem = r.json()
    assert problem["type"].endswith("database-unavailable")
    assert "nothing was changed" not in problem["detail"]
    monkeypatch.undo()
    assert world.submit("KOR", world.seal("KOR", ["USA"])).status_code == 201  # the writer lives on


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)  # the advisory lock is PostgreSQL's; SQLite has one writer
def test_items_are_logged_by_whichever_process_holds_the_integration_lock(world: World) -> None:
    """While another process integrates (holds the lock), a submission is stored at once and
    answered 201 as soon as that process has logged it, not later."""
    from broker.services.log import ADVISORY_LOCK

    world.settle()  # the founders' directory leaves: nothing else pending
    engine = make_engine(world.url)
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k, hashtext(current_schema()))"), {"k": ADVISORY_LOCK})
        result: dict[str, Any] = {}
        sender = threading.Thread(
            target=lambda: result.update(r=world.submit("KOR", world.seal("KOR", ["USA"])))
        )
        sender.start()
        sender.join(timeout=0.5)
        assert sender.is_alive()  # stored, waiting for the log
        assert world.count("items") == 1 and world.count("log_pending") == 1
        holder.execute(
            text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))"), {"k": ADVISORY_LOCK}
        )
    sender.join(timeout=10)
    assert result["r"].status_code == 201
    assert result["r"].json()["log_index"] is not None
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # SQLite's write lock
def test_a_read_on_sqlite_does_not_wait_for_a_writer(world: World) -> None:
    import sqlite3
    import time

    path = world.url.removeprefix("sqlite:///")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        start = time.monotonic()
        r = world.client.get("/v1/inbox", headers=bound(world, "USA", "GET", "/v1/inbox"))
        assert r.status_code == 200
        assert time.monotonic() - start < 5  # a read that took the write lock would wait 30 s
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# --- pushed wake-ups -----------------------------------------------------------------------------


@pytest.fixture
def slow_recheck(world: World, tmp_path: Path) -> Iterator[TestClient]:
    """A broker process on the same database whose long-polls re-check the database only every
    30 s: a prompt answer can only come from a pushed wake-up."""
    settings = Settings(
        database_url=world.url,
        audience=AUDIENCE,
        log_key_file=log_key_file(tmp_path),
        inbox_poll_interval_s=30.0,
    )
    app = create_app(settings, clock=world.clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.broker.notifier.wait_listening(10)
        yield client
    app.state.engine.dispose()


def _long_poll(client: TestClient, world: World, out: dict[str, Any]) -> None:
    import time

    start = time.monotonic()
    out["r"] = client.get("/v1/inbox?wait=20", headers=world.auth("USA"))
    out["s"] = time.monotonic() - start


def test_a_long_poll_returns_when_the_log_integrates_not_when_it_next_rechecks(
    world: World, slow_recheck: TestClient
) -> None:
    """The long-poll waits on the process that integrates (it submits through that process)."""
    import time

    world.settle()
    out: dict[str, Any] = {}
    poller = threading.Thread(target=_long_poll, args=(slow_recheck, world, out))
    poller.start()
    time.sleep(0.5)  # the poll is waiting
    sent = time.monotonic()
    r = slow_recheck.post(
        "/v1/items", content=world.seal("KOR", ["USA"]), headers={**world.auth("KOR"), **ENVELOPE}
    )
    assert r.status_code == 201
    poller.join(timeout=25)
    assert out["r"].status_code == 200
    assert [d["item_id"] for d in out["r"].json()["deliveries"]] == [r.json()["item_id"]]
    assert time.monotonic() - sent < 5  # pushed: not the 30 s re-check, not the 20 s timeout


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)  # one process per SQLite database; across processes PostgreSQL's NOTIFY carries the wake-up
def test_a_long_poll_wakes_when_another_process_integrates(world: World, slow_recheck: TestClient) -> None:
    import time

    world.settle()
    out: dict[str, Any] = {}
    poller = threading.Thread(target=_long_poll, args=(slow_recheck, world, out))
    poller.start()
    time.sleep(0.5)
    sent = time.monotonic()
    r = world.submit("KOR", world.seal("KOR", ["USA"]))  # stored and integrated by the other process
    assert r.status_code == 201
    poller.join(timeout=25)
    assert [d["item_id"] for d in out["r"].json()["deliveries"]] == [r.json()["item_id"]]
    assert time.monotonic() - sent < 5


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)  # the advisory lock is PostgreSQL's; SQLite has one writer
def test_a_session_hung_holding_the_integration_lock_is_ended(world: World) -> None:
    """A broker process that stops while PostgreSQL is still sending it a result keeps the
    integration lock for ever: its session is active (waiting on ClientWrite), so the server's
    idle-in-transaction limit never ends it. Another broker ends it once it has held the lock
    longer than `hung_after_s`, and logs what it did; the log goes on."""
    from broker.services.log import ADVISORY_LOCK, LOCK_HOLDER_SQL

    world.settle()
    integrator = world.client.app.state.broker.integrator  # type: ignore[attr-defined]
    # not before the session is seen hung below: on a loaded machine the 64 MB result takes
    # more than a second to build, and the broker's sweep would end the session first
    integrator.hung_after_s = 3600.0
    engine = make_engine(world.url)
    raw = engine.raw_connection()
    try:
        hung = raw.driver_connection
        assert hung is not None
        hung.execute("SELECT set_config('application_name', 'hung-broker', false)")
        hung.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (ADVISORY_LOCK,))
        # a result far larger than the socket buffers, which this "process" never reads
        hung.pgconn.send_query(b"SELECT repeat('x', 64000000)")
        hung.pgconn.flush()
        with engine.connect() as admin:
            deadline = time.monotonic() + 10
            while (row := admin.execute(text(LOCK_HOLDER_SQL), {"k": ADVISORY_LOCK}).first()) is None or (
                row.wait_event != "ClientWrite"
            ):
                assert time.monotonic() < deadline, row
                time.sleep(0.05)
            assert row.state == "active"
            integrator.hung_after_s = 1.0

            started = time.monotonic()
            r = world.submit("KOR", world.seal("KOR", ["USA"]))
            assert r.status_code == 201, r.text  # logged, not merely stored (202)
            assert r.json()["log_index"] is not None
            assert time.monotonic() - started < 4
            assert integrator.ended_hung == 1
            holder = admin.execute(text(LOCK_HOLDER_SQL), {"k": ADVISORY_LOCK}).first()
            assert holder is None or holder.pid != row.pid  # (or our broker's own integration)
    finally:
        raw.invalidate()
        engine.dispose()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)  # across processes PostgreSQL's NOTIFY carries it; SQLite has one writer
def test_a_process_hears_by_notify_that_another_integrated_its_items(world: World, tmp_path: Path) -> None:
    """A submission stored by one process and integrated by another is answered 201 as soon
    as that integration commits: the other process's NOTIFY sets off the look-up, not the
    backstop poll (30 s here; past the 4 s settle time the answer would be 202)."""
    from broker.services.log import ADVISORY_LOCK

    world.settle()
    settings = Settings(database_url=world.url, audience=AUDIENCE, log_key_file=log_key_file(tmp_path))
    app = create_app(settings, clock=world.clock)
    engine = make_engine(world.url)
    with TestClient(app, raise_server_exceptions=False) as other, engine.connect() as holder:
        broker = app.state.broker
        assert broker.notifier.wait_listening(10)
        broker.sequencer.pushed_poll_s = 30.0
        holder.execute(text("SELECT pg_advisory_lock(:k, hashtext(current_schema()))"), {"k": ADVISORY_LOCK})
        result: dict[str, Any] = {}
        envelope = world.seal("KOR", ["USA"])

        def send() -> None:
            result["r"] = other.post("/v1/items", content=envelope, headers={**world.auth("KOR"), **ENVELOPE})

        sender = threading.Thread(target=send)
        sender.start()
        # stored by the other process, waiting for the log (on a loaded machine the first check
        # in its new signature workers may take longer than a fixed wait: poll for the store)
        deadline = time.monotonic() + 20
        while world.count("items") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.count("items") == 1 and world.count("log_pending") == 1
        sender.join(timeout=0.5)
        assert sender.is_alive()
        holder.execute(
            text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))"), {"k": ADVISORY_LOCK}
        )
        released = time.monotonic()
        # this process integrates everything pending with its own next batch, the other's item too
        assert world.submit("JPN", world.seal("JPN", ["USA"])).status_code == 201
        sender.join(timeout=40)
        waited = time.monotonic() - released
    engine.dispose()
    app.state.engine.dispose()
    assert result["r"].status_code == 201, result["r"].text
    assert result["r"].json()["log_index"] is not None
    assert waited < 3.0


def test_while_notifications_arrive_waiting_items_are_looked_up_at_the_backstop_interval() -> None:
    """With a listener (pushed() true), a writer with items waiting for another process's
    integration wakes at `pushed_poll_s`, not every POLL_S; without one, every POLL_S."""
    from broker.services.sequencer import POLL_S, Sequencer

    sequencer = Sequencer(None, None, None)  # type: ignore[arg-type]  # _take touches none of them
    sequencer._waiting["an-item"] = []

    def take_s() -> float:
        start = time.monotonic()
        assert sequencer._take() == ([], True, True)  # integrate (if it can), and look up
        return time.monotonic() - start

    assert take_s() < 0.1  # POLL_S: 3 ms
    sequencer.pushed, sequencer.pushed_poll_s = (lambda: True), 0.3
    assert take_s() >= 0.25
    sequencer.others_integrated()  # a NOTIFY: at once, and only the look-up
    start = time.monotonic()
    assert sequencer._take() == ([], False, True)
    assert time.monotonic() - start < 0.1
    sequencer.kick()  # something staged for the log: integrate, no look-up of its own
    assert sequencer._take() == ([], True, False)
    assert POLL_S < 0.1


def test_with_batches_back_to_back_waiting_items_are_still_looked_up_at_the_backstop_interval() -> None:
    """The queue's timeout never passes while batches keep coming: the writer still looks its
    waiting items up every `pushed_poll_s` (a lost notification is not waited on for ever), and
    not after every batch."""
    from broker.services.sequencer import Sequencer, Ticket

    sequencer = Sequencer(None, None, None)  # type: ignore[arg-type]  # _store is replaced below
    sequencer.pushed, sequencer.pushed_poll_s = (lambda: True), 0.2
    sequencer._waiting["an-item"] = []
    looks: list[float] = []

    def look_up() -> None:
        sequencer._looked_at = time.monotonic()
        looks.append(sequencer._looked_at)

    sequencer._look_up_waiting = look_up  # type: ignore[method-assign]
    sequencer._store = lambda batch: time.sleep(0.005)  # type: ignore[method-assign]
    writer = threading.Thread(target=sequencer._write_loop)
    writer.start()
    try:
        end = time.monotonic() + 1.2
        batches = 0
        while time.monotonic() < end:
            sequencer._queue.put(Ticket(None))  # type: ignore[arg-type]
            batches += 1
            time.sleep(0.004)
    finally:
        sequencer._stop.set()
        sequencer.kick()
        writer.join(5)
    assert batches > 100
    assert 4 <= len(looks) <= 10, looks  # ~1.2 s / 0.2 s (+1 at the start), not one per batch
