"""Batched inbox consumption and pushed wake-ups, on both databases.

- `GET /v1/inbox?include=envelope`: each delivery with its envelope, the page capped in bytes;
  without it the page never reads `items.envelope`;
- `POST /v1/inbox/ack`: 1000 seqs in constant statements; more is refused whole;
- the client opens a page's envelopes exactly as fetched ones: nothing it refuses when fetched
  is accepted from a page; `msmt pull` uses pages and confirms them in one request each;
- long-polls wake on the notifier, not on a timer, and lose no wake-up.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, insert, select

from broker.api.deps import BrokerState
from broker.app import create_app
from broker.services import inbox as inbox_service
from broker.settings import Settings
from broker.store.db import make_engine, make_sessionmaker, transaction
from broker.store.models import Delivery, Item
from msmt import cli
from msmt.client import AsyncClient, Client, _receipt_requests
from msmt.core import canonical, errors, parse
from msmt.errors import ClientError

from .conftest import AUDIENCE, World, log_key_file
from .test_client import client

ENVELOPE_COLUMN = re.compile(r"\bitems\.envelope\b")  # not items.envelope_sha256


# --- helpers -----------------------------------------------------------------------------------


@contextmanager
def broker(world: World, tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    """A second broker process on the world's database, with other settings."""
    app = create_app(
        Settings(database_url=world.url, audience=AUDIENCE, log_key_file=log_key_file(tmp_path), **settings),
        clock=world.clock,
    )
    try:
        with TestClient(app, raise_server_exceptions=False) as test_client:
            yield test_client
    finally:
        app.state.engine.dispose()


def state_of(test_client: TestClient) -> BrokerState:
    state: BrokerState = test_client.app.state.broker  # type: ignore[attr-defined]
    return state


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine runs meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def send(world: World, count: int, to: str = "USA", payload: bytes = b"report") -> list[str]:
    """KOR sends `count` items to `to`; returns their ids, integrated (numbered) in that order."""
    ids = []
    for i in range(count):
        data = world.seal("KOR", [to], payload + f" {i:04d}".encode())
        r = world.submit("KOR", data)
        assert r.status_code in (201, 202), r.text
        ids.append(parse(data).header.item_id)
    world.settle()
    return ids


def page(test_client: TestClient, world: World, who: str = "USA", **params: Any) -> dict[str, Any]:
    r = test_client.get("/v1/inbox", params=params, headers=world.auth(who))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def fetched(world: World, item_id: str, who: str = "USA") -> bytes:
    r = world.client.get(f"/v1/items/{item_id}", headers=world.auth(who))
    assert r.status_code == 200, r.text
    return bytes(r.content)


Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response]


def transport(
    test_client: TestClient, calls: list[tuple[str, str]] | None = None, rewrite: Rewrite | None = None
) -> httpx.MockTransport:
    """Hand each request to the app (recording it), optionally rewriting the answer like a
    hostile broker would."""

    def handle(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append((request.method, request.url.path))
        r = test_client.request(
            request.method,
            request.url.path,
            params=request.url.params,
            content=request.content,
            headers=dict(request.headers),
        )
        headers = {
            k: v for k, v in r.headers.items() if k.lower() not in ("content-length", "content-encoding")
        }
        response = httpx.Response(r.status_code, headers=headers, content=r.content)
        return rewrite(request, response) if rewrite else response

    return httpx.MockTransport(handle)


def rewrite_page(change: Callable[[dict[str, Any]], None]) -> Rewrite:
    """Rewrite each delivery of every inbox page."""

    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/v1/inbox" or response.status_code != 200:
            return response
        body = response.json()
        for delivery in body["deliveries"]:
            change(delivery)
        return httpx.Response(
            200, headers={"content-type": "application/json"}, content=json.dumps(body).encode()
        )

    return rewrite


def rewrite_fetch(change: Callable[[str, bytes], bytes]) -> Rewrite:
    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if (
            request.method == "GET"
            and request.url.path.startswith("/v1/items/")
            and response.status_code == 200
        ):
            item_id = request.url.path.rsplit("/", 1)[-1]
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            return httpx.Response(200, headers=headers, content=change(item_id, response.content))
        return response

    return rewrite


def flip(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[-1] ^= 1
    return bytes(changed)


def usa(world: World, rewrite: Rewrite | None = None, calls: list[tuple[str, str]] | None = None) -> Client:
    return client(world, "USA", transport(world.client, calls, rewrite))


def states(world: World) -> dict[int, str]:
    engine = make_engine(world.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Delivery.seq, Delivery.state).where(Delivery.recipient == "USA"))
            return {int(seq or 0): str(state) for seq, state in rows}
    finally:
        engine.dispose()


# --- include=envelope ---------------------------------------------------------------------------


def test_a_page_with_envelopes_carries_exactly_the_fetched_bytes(world: World) -> None:
    ids = send(world, 3)
    plain = page(world.client, world)
    full = page(world.client, world, include="envelope")
    assert [d["item_id"] for d in full["deliveries"]] == ids
    for delivery in full["deliveries"]:
        data = canonical.b64decode(delivery["envelope"])
        assert data == fetched(world, delivery["item_id"])
        assert len(data) == delivery["size"]
    # the default page is unchanged: the same deliveries, no envelope field at all
    assert all("envelope" not in d for d in plain["deliveries"])
    assert plain["deliveries"] == [
        {k: v for k, v in d.items() if k != "envelope"} for d in full["deliveries"]
    ]
    assert plain["cursor"] == full["cursor"] == full["deliveries"][-1]["seq"]
    r = world.client.get("/v1/inbox", params={"include": "payload"}, headers=world.auth("USA"))
    assert r.status_code == 422 and r.json()["type"].endswith("invalid-request")


def test_without_include_the_page_never_reads_an_envelope(world: World) -> None:
    send(world, 2)
    engine = world.client.app.state.engine  # type: ignore[attr-defined]
    with statements(engine) as plain:
        assert len(page(world.client, world)["deliveries"]) == 2
    assert any("deliveries" in s for s in plain)
    assert not [s for s in plain if ENVELOPE_COLUMN.search(s)]
    with statements(engine) as full:  # the same check sees the column when it is read
        assert len(page(world.client, world, include="envelope")["deliveries"]) == 2
    assert [s for s in full if ENVELOPE_COLUMN.search(s)]


def test_a_page_with_envelopes_is_capped_in_bytes(world: World, tmp_path: Path) -> None:
    ids = send(world, 5)
    size = len(fetched(world, ids[0]))
    assert all(len(fetched(world, i)) == size for i in ids)

    def walk(test_client: TestClient, cap: int | None = None) -> list[list[str]]:
        """Every page from the start: with `cap`, with envelopes, checking the page bound."""
        pages: list[list[str]] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after": after, **({"include": "envelope"} if cap is not None else {})}
            body = page(test_client, world, **params)
            if not body["deliveries"]:
                return pages
            pages.append([d["item_id"] for d in body["deliveries"]])
            assert body["cursor"] == body["deliveries"][-1]["seq"]  # the last one returned
            if cap is not None:
                carried = [len(canonical.b64decode(d["envelope"])) for d in body["deliveries"]]
                assert sum(carried) <= cap or len(carried) == 1
            after = body["cursor"]

    cap = 2 * size + size // 2
    with broker(world, tmp_path, inbox_max_page_bytes=cap) as capped:
        assert walk(capped, cap) == [ids[0:2], ids[2:4], ids[4:5]]
        assert walk(capped) == [ids]  # without envelopes, no byte cap
    with broker(world, tmp_path, inbox_max_page_bytes=2 * size) as exact:
        assert walk(exact, 2 * size) == [ids[0:2], ids[2:4], ids[4:5]]
    with broker(world, tmp_path, inbox_max_page_bytes=2 * size - 1) as under:
        assert walk(under, 2 * size - 1) == [[i] for i in ids]
    with broker(world, tmp_path, inbox_max_page_bytes=1) as tiny:  # always at least one
        assert walk(tiny, 1) == [[i] for i in ids]


# --- acknowledgements ----------------------------------------------------------------------------


def add_deliveries(world: World, count: int, first: int = 1, logged: bool = False) -> list[str]:
    """Deliveries numbered first … first + count - 1 in USA's inbox, written directly: sealing
    and submitting a thousand items would take minutes, and acknowledging only needs the rows.
    `logged`: with a log index, so that the inbox lists them, yet without the integrator
    (which, once wired, publishes what it integrates)."""
    numbers = range(first, first + count)
    items = [
        {
            "item_id": f"00000000-0000-7000-8000-{n:012d}",
            "originator": "KOR",
            "originator_key_id": "0" * 32,
            "created_ms": world.clock.ms,
            "received_ms": world.clock.ms,
            "classification": "RESTRICTED",
            "tlp": "AMBER",
            "content_type": "text/plain",
            "size": 1,
            "envelope_sha256": "0" * 64,
            "envelope": b"x",
            "submitted_with_key": "0" * 32,
            "recipients": "USA",
            "log_index": 1_000_000 + n if logged else None,
        }
        for n in numbers
    ]
    deliveries = [
        {"item_id": i["item_id"], "recipient": "USA", "seq": n, "state": "pending", "created_ms": 0}
        for n, i in zip(numbers, items, strict=True)
    ]
    engine = make_engine(world.url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            session.execute(insert(Item), items)
            session.execute(insert(Delivery), deliveries)
    finally:
        engine.dispose()
    return [str(i["item_id"]) for i in items]


def ack(world: World, seqs: list[int]) -> httpx.Response:
    response: httpx.Response = world.client.post(
        "/v1/inbox/ack", json={"seqs": seqs}, headers=world.auth("USA")
    )
    return response


def test_a_batch_of_1000_is_acknowledged_in_two_statements(world: World) -> None:
    add_deliveries(world, 1001)
    # the writer integrates what the world's set-up staged now, not while the ack is counted:
    # an integration writes in one statement on PostgreSQL, which names the deliveries too
    world.settle()
    engine = world.client.app.state.engine  # type: ignore[attr-defined]
    with statements(engine) as seen:
        r = ack(world, list(range(1000, 0, -1)))
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged"] == list(range(1, 1001))
    assert len([s for s in seen if "deliveries" in s]) <= 2  # no round trip per seq
    assert states(world) == {**{n: "acknowledged" for n in range(1, 1001)}, 1001: "pending"}
    # again, with duplicates: the same answer, nothing changes
    r = ack(world, [5, 5, 1001, 1001])
    assert r.status_code == 200 and r.json()["acknowledged"] == [5, 1001]


def test_more_than_1000_seqs_are_refused_and_nothing_is_acknowledged(world: World) -> None:
    add_deliveries(world, 1001)
    r = ack(world, list(range(1, 1002)))
    assert r.status_code == 422 and r.json()["type"].endswith("invalid-request"), r.text
    assert set(states(world).values()) == {"pending"}
    r = ack(world, [1, 2, 1002])  # one unknown: all or none
    assert r.status_code == 422 and r.json()["type"].endswith("unknown-delivery")
    assert set(states(world).values()) == {"pending"}


# --- the client: pages are verified exactly like fetched envelopes -------------------------------


def test_receive_opens_a_page_and_confirm_sends_one_receipts_and_one_ack_request(world: World) -> None:
    ids = send(world, 3)
    calls: list[tuple[str, str]] = []
    with usa(world, calls=calls) as recipient:
        recipient.directory()
        calls.clear()
        batch = recipient.receive()
        assert [r.opened.header.item_id for r in batch.received] == ids
        assert [r.payload for r in batch.received] == [b"report 0000", b"report 0001", b"report 0002"]
        assert batch.rejected == ()
        assert batch.cursor == batch.received[-1].delivery.seq
        assert recipient.confirm(batch.received) == [r.delivery.seq for r in batch.received]
    assert ("GET", "/v1/inbox") in calls
    assert not [c for c in calls if c[1].startswith("/v1/items/")]  # no request per envelope
    assert calls.count(("GET", "/v1/inbox")) == 1
    assert calls.count(("POST", "/v1/inbox/receipts")) == 1
    assert calls.count(("POST", "/v1/inbox/ack")) == 1
    assert set(states(world).values()) == {"acknowledged"}
    with client(world, "KOR") as kor:
        assert kor.delivery_proofs(ids[1]) == {"USA": "signed"}


def test_a_tampered_envelope_in_a_page_is_refused_like_a_tampered_fetch(world: World) -> None:
    (item_id,) = send(world, 1)

    def tamper_page(delivery: dict[str, Any]) -> None:
        delivery["envelope"] = canonical.b64encode(flip(canonical.b64decode(delivery["envelope"])))

    with usa(world, rewrite_fetch(lambda _, data: flip(data))) as recipient:
        (delivery,) = recipient.inbox().deliveries
        with pytest.raises(errors.PayloadMismatch):
            recipient.open(delivery)  # the fetched bytes, tampered
    with usa(world, rewrite_page(tamper_page)) as recipient:
        batch = recipient.receive()
        assert batch.received == ()
        (rejected,) = batch.rejected
        assert isinstance(rejected.error, errors.PayloadMismatch)
        assert rejected.envelope == flip(fetched(world, item_id))  # the bytes that were refused
        page_ = recipient.inbox(envelopes=True)
        with pytest.raises(errors.PayloadMismatch):
            recipient.open(page_.deliveries[0], data=page_.envelope(0))
    assert states(world) == {1: "pending"}


def test_an_envelope_the_log_does_not_hold_is_refused_from_a_page_as_when_fetched(world: World) -> None:
    """Another envelope for the same item id, validly signed by its originator: only the log's
    leaf (its envelope digest) tells it from the one that was submitted."""
    (item_id,) = send(world, 1)
    other = world.seal("KOR", ["USA"], b"another text", item_id=item_id)

    def swap_page(delivery: dict[str, Any]) -> None:
        delivery["envelope"] = canonical.b64encode(other)

    with usa(world, rewrite_fetch(lambda _, data: other)) as recipient:
        (delivery,) = recipient.inbox().deliveries
        with pytest.raises(errors.LeafMismatch):
            recipient.open(delivery)
    with usa(world, rewrite_page(swap_page)) as recipient:
        with pytest.raises(errors.LeafMismatch):  # not about one delivery: the log lies
            recipient.receive()
        page_ = recipient.inbox(envelopes=True)
        with pytest.raises(errors.LeafMismatch):
            recipient.open(page_.deliveries[0], data=page_.envelope(0))


def test_another_items_envelope_or_broken_base64_in_a_page_is_refused(world: World) -> None:
    first, second = send(world, 2)
    envelopes = {i: canonical.b64encode(fetched(world, i)) for i in (first, second)}

    def swap(delivery: dict[str, Any]) -> None:
        delivery["envelope"] = envelopes[second if delivery["item_id"] == first else first]

    with usa(world, rewrite_page(swap)) as recipient:
        batch = recipient.receive()
        assert batch.received == ()
        assert [type(r.error) for r in batch.rejected] == [ClientError, ClientError]
        assert "another item" in str(batch.rejected[0].error)

    def garble(delivery: dict[str, Any]) -> None:
        delivery["envelope"] = delivery["envelope"][:-1] + "="

    with usa(world, rewrite_page(garble)) as recipient:
        batch = recipient.receive()
        assert batch.received == ()
        assert all(isinstance(r.error, errors.EnvelopeError) and r.envelope is None for r in batch.rejected)
    assert set(states(world).values()) == {"pending"}


def test_a_page_without_envelopes_falls_back_to_fetching_them(world: World) -> None:
    """A broker that ignores `include=envelope` (an older one): each envelope is fetched."""
    ids = send(world, 2)

    def drop(delivery: dict[str, Any]) -> None:
        delivery.pop("envelope", None)

    calls: list[tuple[str, str]] = []
    with usa(world, rewrite_page(drop), calls) as recipient:
        batch = recipient.receive()
    assert [r.opened.header.item_id for r in batch.received] == ids
    assert [c for c in calls if c[1].startswith("/v1/items/")] == [("GET", f"/v1/items/{i}") for i in ids]


def test_receipts_and_acks_are_split_only_beyond_the_brokers_limits() -> None:
    """A page of 100 receipts (~6.4 KB each) is one request; larger pages stay under the
    broker's 1 MiB JSON body limit and 1000 entries per request."""
    receipt = "r" * 6404
    assert len(_receipt_requests([receipt] * 100)) == 1
    requests = _receipt_requests([f"{i:06d}" + receipt for i in range(1000)])
    assert len(requests) > 1
    assert all(sum(len(r) + 3 for r in request) + 20 < 1024 * 1024 for request in requests)
    assert [r for request in requests for r in request] == [f"{i:06d}" + receipt for i in range(1000)]
    assert [len(r) for r in _receipt_requests(["x"] * 2500)] == [1000, 1000, 500]
    assert _receipt_requests([]) == []
    assert Client._acks(range(1, 2501)) == [
        list(range(1, 1001)),
        list(range(1001, 2001)),
        list(range(2001, 2501)),
    ]


# --- msmt pull -------------------------------------------------------------------------------


def pull(monkeypatch: pytest.MonkeyPatch, make: Callable[[], Client], folder: Path) -> int:
    """`msmt --json pull FOLDER` with this client."""
    monkeypatch.setattr(cli, "_client", lambda args: make())
    args = cli.build_parser().parse_args(["--json", "pull", str(folder)])
    code: int = args.func(args)
    return code


def test_pull_uses_pages_and_quarantines_the_bytes_the_page_carried(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad, good = send(world, 2)

    def tamper(delivery: dict[str, Any]) -> None:
        if delivery["item_id"] == bad:
            delivery["envelope"] = canonical.b64encode(flip(canonical.b64decode(delivery["envelope"])))

    calls: list[tuple[str, str]] = []
    folder = tmp_path / "usa-inbox"
    code = pull(monkeypatch, lambda: usa(world, rewrite_page(tamper), calls), folder)
    assert code == cli.EXIT_INVALID_ITEM
    assert json.loads(capsys.readouterr().out) == {"saved": 1, "rejected": 1, "folder": str(folder)}
    assert not [c for c in calls if c[1].startswith("/v1/items/")]  # no fetch, not even to quarantine
    assert calls.count(("POST", "/v1/inbox/receipts")) == 1
    assert calls.count(("POST", "/v1/inbox/ack")) == 1
    (envelope,) = (folder / "quarantine").glob(f"*-{bad}.envelope")
    assert envelope.read_bytes() == flip(fetched(world, bad))  # what failed, as the page carried it
    assert [p.read_bytes() for p in folder.glob(f"*-{good}.md")] == [b"report 0001"]
    assert states(world) == {1: "pending", 2: "acknowledged"}


def test_pull_checks_a_page_against_one_checkpoint_without_a_request_per_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    send(world, 3)
    world.settle()
    calls: list[tuple[str, str]] = []
    code = pull(monkeypatch, lambda: usa(world, calls=calls), tmp_path / "usa-inbox")
    assert code == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["saved"] == 3
    per_delivery = [
        c for c in calls if c[1].startswith(("/v1/log/leaves", "/v1/log/proof/inclusion", "/v1/items/"))
    ]
    assert per_delivery == []  # envelopes and log proofs came with the page
    assert set(states(world).values()) == {"acknowledged"}


def test_pull_refuses_a_page_whose_log_proof_is_wrong(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    send(world, 1)
    world.settle()

    def bad_proof(delivery: dict[str, Any]) -> None:
        if delivery.get("inclusion"):
            delivery["inclusion"][0] = canonical.b64encode(
                flip(canonical.b64decode(delivery["inclusion"][0]))
            )

    folder = tmp_path / "usa-inbox"
    with pytest.raises(errors.MsmtError):
        pull(monkeypatch, lambda: usa(world, rewrite_page(bad_proof)), folder)
    assert not list(folder.glob("*.md")) and states(world) == {1: "pending"}


def test_pull_goes_on_after_a_page_shortened_by_the_byte_cap(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ids = send(world, 5)
    size = len(fetched(world, ids[0]))
    calls: list[tuple[str, str]] = []
    with broker(world, tmp_path, inbox_max_page_bytes=2 * size) as capped:

        def make() -> Client:
            return client(world, "USA", transport(capped, calls))

        code = pull(monkeypatch, make, tmp_path / "usa-inbox")
    assert code == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["saved"] == 5
    assert calls.count(("GET", "/v1/inbox")) == 4  # 2 + 2 + 1, then an empty page
    assert set(states(world).values()) == {"acknowledged"}


# --- long-polls: woken by the notifier ---------------------------------------------------------


class LongPoll:
    """A `GET /v1/inbox?wait=…` running in its own thread."""

    def __init__(self, test_client: TestClient, world: World, wait: float, **params: Any) -> None:
        self.result: dict[str, Any] | None = None
        self.started = time.monotonic()
        self.ended = 0.0
        headers = world.auth("USA")

        def go() -> None:
            r = test_client.get("/v1/inbox", params={"wait": wait, **params}, headers=headers)
            assert r.status_code == 200, r.text
            self.result = r.json()
            self.ended = time.monotonic()

        self.thread = threading.Thread(target=go)
        self.thread.start()

    def join(self, timeout: float = 40) -> dict[str, Any]:
        self.thread.join(timeout)
        assert self.result is not None, "the long-poll did not answer"
        return self.result


def waiting(test_client: TestClient, recipient: str = "USA") -> None:
    deadline = time.monotonic() + 10
    while state_of(test_client).notifier.waiting(recipient) == 0:
        assert time.monotonic() < deadline, "the long-poll never waited"
        time.sleep(0.01)


@contextmanager
def polling(world: World, monkeypatch: pytest.MonkeyPatch, recheck_s: float) -> Iterator[TestClient]:
    """The world's broker, re-checking the database while long-polling every `recheck_s`."""
    state = state_of(world.client)
    monkeypatch.setattr(
        state, "settings", state.settings.model_copy(update={"inbox_poll_interval_s": recheck_s})
    )
    # PostgreSQL: the listener wakes every waiter when it (re)connects; let that be behind us
    assert world.url.startswith("sqlite") or state.notifier.wait_listening(10)
    yield world.client


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, one entry per inbox page read from the database."""
    original = inbox_service.list_inbox
    reads: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        reads.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(inbox_service, "list_inbox", counted)
    return reads


def test_a_long_poll_wakes_when_its_recipient_is_published(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # re-checks the database only every 30 s: only the notifier can end the wait early
    with polling(world, monkeypatch, recheck_s=30) as polled:
        poll = LongPoll(polled, world, wait=20, include="envelope")
        waiting(polled)
        (item_id,) = add_deliveries(world, 1, logged=True)  # committed, but nobody published it
        time.sleep(0.5)
        assert poll.result is None
        state_of(polled).notifier.publish(["JPN"])  # someone else's delivery: still waiting
        time.sleep(0.3)
        assert poll.result is None
        published = time.monotonic()
        state_of(polled).notifier.publish(["USA"])
        result = poll.join()
    assert [d["item_id"] for d in result["deliveries"]] == [item_id]
    assert canonical.b64decode(result["deliveries"][0]["envelope"]) == b"x"
    assert poll.ended - published < 2


def test_a_long_poll_without_news_times_out(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    with polling(world, monkeypatch, recheck_s=30) as polled:
        poll = LongPoll(polled, world, wait=1)
        waiting(polled)
        state_of(polled).notifier.publish(["JPN"])
        result = poll.join()
    assert result == {"deliveries": [], "cursor": 0}
    assert 1 <= poll.ended - poll.started < 5


def test_a_publish_between_the_check_and_the_wait_is_not_lost(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The integrator commits and publishes just after the long-poll's database check found
    nothing, before the long-poll starts waiting: it answers at once, not after 20 s."""
    (item_id,) = add_deliveries(world, 1, logged=True)
    original = inbox_service.list_inbox
    with polling(world, monkeypatch, recheck_s=30) as polled:
        checks: list[int] = []

        def racing(*args: Any, **kwargs: Any) -> dict[str, Any]:
            checks.append(1)
            if len(checks) == 1:  # the first check "misses" the delivery, which lands right after
                state_of(polled).notifier.publish(["USA"])
                return {"deliveries": [], "cursor": args[2]}
            return original(*args, **kwargs)

        monkeypatch.setattr(inbox_service, "list_inbox", racing)
        started = time.monotonic()
        result = page(polled, world, wait=20)
    assert [d["item_id"] for d in result["deliveries"]] == [item_id]
    assert len(checks) == 2
    assert time.monotonic() - started < 3


def test_without_a_publish_the_safety_recheck_still_finds_the_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with polling(world, monkeypatch, recheck_s=0.3) as polled:
        poll = LongPoll(polled, world, wait=20)
        waiting(polled)
        (item_id,) = add_deliveries(world, 1, logged=True)  # nobody publishes it
        added = time.monotonic()
        result = poll.join()
    assert [d["item_id"] for d in result["deliveries"]] == [item_id]
    assert poll.ended - added < 3


def test_a_woken_long_poll_answers_from_what_its_process_just_integrated(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The integrator hands its new deliveries to this process's waiting long-polls with the
    wake-up: the woken long-poll answers without reading the database again, and with exactly
    what the database shows."""
    with polling(world, monkeypatch, recheck_s=30) as polled:
        reads = counting_reads(monkeypatch)
        poll = LongPoll(polled, world, wait=20)
        waiting(polled)
        assert len(reads) == 1  # its first check found nothing
        r = world.submit("KOR", world.seal("KOR", ["USA", "JPN"]))
        assert r.status_code == 201, r.text
        result = poll.join()
        assert len(reads) == 1  # answered from memory
        assert result["deliveries"][0]["item_id"] == r.json()["item_id"]
        assert result == page(polled, world, after=0)  # what the database shows, field for field
        assert len(reads) == 2


def test_a_woken_long_poll_never_skips_a_delivery_its_process_did_not_integrate(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seq 1 was numbered elsewhere (another broker process: here written directly), and this
    process holds seq 2 in memory: the long-poll after 0 must read the database and answer 1,
    never jump to 2."""
    with polling(world, monkeypatch, recheck_s=30) as polled:
        poll = LongPoll(polled, world, wait=20)
        waiting(polled)
        (first,) = add_deliveries(world, 1, logged=True)
        held = {**page(polled, world, after=0)["deliveries"][0], "item_id": "held-in-memory"}
        del held["seq"]
        state_of(polled).notifier.publish(["USA"], {"USA": [(2, held, None)]})
        result = poll.join()
    assert [d["item_id"] for d in result["deliveries"]] == [first]


def test_a_long_poll_at_the_end_its_process_numbered_waits_without_reading_the_database(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after a wake-up the recipient asks again after what it got: its process numbered
    that last, so nothing follows it yet, and the long-poll waits without a read that would
    find nothing; the next delivery wakes it as any other."""
    with polling(world, monkeypatch, recheck_s=30) as polled:
        first = world.submit("KOR", world.seal("KOR", ["USA"]))
        assert first.status_code == 201, first.text
        cursor = page(polled, world)["cursor"]
        reads = counting_reads(monkeypatch)
        poll = LongPoll(polled, world, wait=20, after=cursor)
        waiting(polled)
        assert reads == []
        second = world.submit("KOR", world.seal("KOR", ["USA"]))
        result = poll.join()
        assert [d["item_id"] for d in result["deliveries"]] == [second.json()["item_id"]]
        assert reads == []
        assert page(polled, world, after=cursor, wait=0) == result  # a poll that does not wait reads
        assert reads == [1]


def test_after_a_delivery_numbered_elsewhere_the_long_poll_reads_the_database_first(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process numbered the next delivery and its NOTIFY (here: a publish without
    deliveries) arrived: what this process numbered last is no longer the inbox's end."""
    with polling(world, monkeypatch, recheck_s=30) as polled:
        r = world.submit("KOR", world.seal("KOR", ["USA"]))
        assert r.status_code == 201, r.text
        cursor = page(polled, world)["cursor"]
        (elsewhere,) = add_deliveries(world, 1, first=cursor + 1, logged=True)
        state_of(polled).notifier.publish(["USA"])
        started = time.monotonic()
        result = page(polled, world, after=cursor, wait=20)
    assert [d["item_id"] for d in result["deliveries"]] == [elsewhere]
    assert time.monotonic() - started < 3


def test_a_long_poll_that_skipped_its_first_read_still_rechecks_the_database(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery numbered elsewhere whose wake-up never arrives: the safety re-check finds it."""
    with polling(world, monkeypatch, recheck_s=0.3) as polled:
        r = world.submit("KOR", world.seal("KOR", ["USA"]))
        assert r.status_code == 201, r.text
        cursor = page(polled, world)["cursor"]
        poll = LongPoll(polled, world, wait=20, after=cursor)
        waiting(polled)
        (elsewhere,) = add_deliveries(world, 1, first=cursor + 1, logged=True)  # nobody publishes it
        added = time.monotonic()
        result = poll.join()
    assert [d["item_id"] for d in result["deliveries"]] == [elsewhere]
    assert poll.ended - added < 3


# --- log proofs in the page (proofs=N) ------------------------------------------------------------


def test_a_page_carries_each_deliverys_log_proof_so_receive_asks_the_log_once_per_page(world: World) -> None:
    ids = send(world, 4)
    world.settle()
    calls: list[tuple[str, str]] = []
    with usa(world, calls=calls) as recipient:
        recipient.directory()
        calls.clear()
        batch = recipient.receive()
        assert [r.opened.header.item_id for r in batch.received] == ids
    per_delivery = [
        c for c in calls if c[1].startswith(("/v1/log/leaves", "/v1/log/proof/inclusion", "/v1/items/"))
    ]
    assert per_delivery == []  # proofs and envelopes came with the page
    assert calls.count(("GET", "/v1/log/checkpoint")) == 1
    assert calls.count(("GET", "/v1/inbox")) == 1


def test_the_proofs_in_a_page_are_those_of_the_log(world: World) -> None:
    send(world, 3)
    world.settle()
    size = world.client.get("/v1/log/checkpoint", headers=world.auth("USA")).json()["size"]
    body = page(world.client, world, include="envelope", proofs=size)
    for delivery in body["deliveries"]:
        expected = world.client.get(
            "/v1/log/proof/inclusion",
            params={"index": delivery["log_index"], "size": size},
            headers=world.auth("USA"),
        ).json()["proof"]
        assert delivery["inclusion"] == expected
        leaf = world.client.get(f"/v1/log/leaves/{delivery['log_index']}", headers=world.auth("USA")).json()
        assert delivery["leaf"] == leaf["leaf"]
    smaller = page(world.client, world, proofs=body["deliveries"][1]["log_index"])  # only the first is in it
    assert ["leaf" in d for d in smaller["deliveries"]] == [True, False, False]


def test_proofs_for_a_tree_the_log_does_not_have_are_refused(world: World) -> None:
    send(world, 1)
    world.settle()
    r = world.client.get("/v1/inbox", params={"proofs": 10**6}, headers=world.auth("USA"))
    assert r.status_code == 422
    assert r.json()["type"].endswith("invalid-proof-request")


def test_a_wrong_proof_or_leaf_in_a_page_is_caught(world: World) -> None:
    send(world, 1, payload=b"first")
    send(world, 1, payload=b"second")
    world.settle()

    def bad_proof(delivery: dict[str, Any]) -> None:
        if "inclusion" in delivery:
            hashes = delivery["inclusion"]
            hashes[0] = canonical.b64encode(flip(canonical.b64decode(hashes[0])))

    def other_leaf(delivery: dict[str, Any]) -> None:
        if delivery.get("leaf"):
            delivery["leaf"] = canonical.b64encode(flip(canonical.b64decode(delivery["leaf"])))

    with usa(world, rewrite_page(bad_proof)) as recipient, pytest.raises(errors.MsmtError):
        recipient.receive()
    with usa(world, rewrite_page(other_leaf)) as recipient, pytest.raises(errors.MsmtError):
        recipient.receive()
    assert states(world) == {1: "pending", 2: "pending"}


# --- read_ahead: the next page is fetched while this one is opened --------------------------------


def test_read_ahead_takes_the_next_page_without_asking_again(world: World) -> None:
    ids = send(world, 5)
    world.settle()
    calls: list[tuple[str, str]] = []
    with usa(world, calls=calls) as recipient:
        recipient.directory()
        calls.clear()
        got: list[str] = []
        cursor = 0
        pages = 0
        while True:
            batch = recipient.receive(cursor, limit=2, read_ahead=True)
            if not batch.page.deliveries:
                break
            pages += 1
            assert batch.rejected == ()
            got += [r.opened.header.item_id for r in batch.received]
            recipient.acknowledge(r.delivery.seq for r in batch.received)
            cursor = batch.cursor
    assert got == ids and pages == 3
    # pages 1-3, and the empty one after the last: each asked for once, three of them ahead
    assert calls.count(("GET", "/v1/inbox")) == 4
    assert [c for c in calls if c[1].startswith(("/v1/items/", "/v1/log/leaves"))] == []
    assert set(states(world).values()) == {"acknowledged"}


def test_a_page_read_ahead_is_checked_like_one_asked_for(world: World) -> None:
    send(world, 4)
    world.settle()

    def tamper_after_the_first_page(delivery: dict[str, Any]) -> None:
        if delivery["seq"] > 2:
            delivery["envelope"] = canonical.b64encode(flip(canonical.b64decode(delivery["envelope"])))

    with usa(world, rewrite_page(tamper_after_the_first_page)) as recipient:
        first = recipient.receive(0, limit=2, read_ahead=True)
        assert len(first.received) == 2 and first.rejected == ()
        second = recipient.receive(first.cursor, limit=2, read_ahead=True)  # the page read ahead
        assert second.received == ()
        assert [type(r.error) for r in second.rejected] == [errors.PayloadMismatch] * 2


def test_a_page_read_ahead_for_another_cursor_is_not_used(world: World) -> None:
    ids = send(world, 3)
    world.settle()
    calls: list[tuple[str, str]] = []
    with usa(world, calls=calls) as recipient:
        first = recipient.receive(0, limit=1, read_ahead=True)  # reads ahead after entry 1
        again = recipient.receive(0, limit=1)  # another cursor: asked for afresh
        assert (
            [r.opened.header.item_id for r in again.received]
            == ids[:1]
            == [r.opened.header.item_id for r in first.received]
        )
        wider = recipient.receive(first.cursor, limit=2)  # the cursor read ahead, another limit
        assert [r.opened.header.item_id for r in wider.received] == ids[1:]
    assert calls.count(("GET", "/v1/inbox")) == 4


def test_the_async_client_reads_ahead_too(world: World) -> None:
    ids = send(world, 3)
    world.settle()
    calls: list[tuple[str, str]] = []
    sync_transport = transport(world.client, calls)

    class Async(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await request.aread()
            return await asyncio.to_thread(sync_transport.handle_request, request)

    async def drain() -> list[str]:
        async with AsyncClient(
            "http://testserver",
            world.members["USA"],
            transport=Async(),
            trust=world.trust(),
            audience=AUDIENCE,
        ) as recipient:
            got: list[str] = []
            cursor = 0
            while batch := await recipient.receive(cursor, limit=2, read_ahead=True):
                if not batch.page.deliveries:
                    return got
                got += [r.opened.header.item_id for r in batch.received]
                cursor = batch.cursor
        return got

    assert asyncio.run(drain()) == ids
    assert calls.count(("GET", "/v1/inbox")) == 3
