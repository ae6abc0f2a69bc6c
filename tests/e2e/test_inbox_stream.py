"""GET /v1/inbox/stream (issue 14, pushed wake-ups): a recipient's deliveries as Server-Sent
Events from a real broker process, on both databases: in order, none skipped, each pushed as its
item is logged; counted as a waiting long-poll; ended by an `end` event at its maximum duration
and when the broker stops."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from msmt.auth import mint_token
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap
from tests.integration.conftest import database_url as database_url  # the SQLite / PostgreSQL fixture

from .servers import broker_server


def _auth(who: str, method: str, target: str, body: bytes = b"") -> dict[str, str]:
    token = mint_token(_KEYS[who].api, who, AUDIENCE, method=method, target=target, body=body)
    return {"Authorization": f"Bearer {token}"}


def _submit(base: str, origin: str, recipients: list[str]) -> str:
    from msmt.core import Markings, parse, seal

    data = seal(
        b"report",
        content_type="text/markdown",
        markings=Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"]),
        recipients=[(r, _KEYS[r].encryption.public_key) for r in recipients],
        originator=origin,
        signing_key=_KEYS[origin].signing,
    )
    r = httpx.post(
        f"{base}/v1/items",
        content=data,
        headers={**_auth(origin, "POST", "/v1/items", data), "Content-Type": "application/vnd.msmt.envelope"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return parse(data).header.item_id


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse an event stream: each event as {"event", "id", "data"}; comments as {"comment"}."""
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            event[name] = value


class Stream:
    """One stream read in a thread: every event with the monotonic time it arrived."""

    def __init__(self, base: str, who: str, after: int = 0) -> None:
        self.target = f"/v1/inbox/stream?after={after}"
        self.who = who
        self.base = base
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.status: int | None = None
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.opened.wait(10)

    def _run(self) -> None:
        with httpx.stream(
            "GET", f"{self.base}{self.target}", headers=_auth(self.who, "GET", self.target), timeout=60
        ) as r:
            self.status = r.status_code
            self.content_type = r.headers.get("content-type", "")
            if r.status_code != 200:
                self.body = r.read().decode()
                self.opened.set()
                return
            lines = r.iter_lines()
            for event in _events(lines):
                self.got.append((time.monotonic(), event))
                self.opened.set()

    def deliveries(self) -> list[dict[str, Any]]:
        return [
            d
            for _, e in self.got
            if e.get("event") == "deliveries"
            for d in json.loads(e["data"])["deliveries"]
        ]

    def ended(self) -> str | None:
        ends = [json.loads(e["data"])["reason"] for _, e in self.got if e.get("event") == "end"]
        return ends[-1] if ends else None


def _wait_for(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_deliveries_are_pushed_in_order_with_none_skipped(database_url: str, tmp_path: Path) -> None:
    bootstrap(database_url, int(time.time() * 1000))
    with broker_server(database_url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        first = _submit(base, "KOR", ["USA", "JPN"])  # before the stream opens: sent at once
        stream = Stream(base, "USA")
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        _wait_for(lambda: len(stream.deliveries()) == 1)
        sent: list[tuple[str, float]] = []
        for _ in range(12):
            sent.append((_submit(base, "KOR", ["USA", "JPN"]), time.monotonic()))
        _submit(base, "KOR", ["JPN"])  # not USA's: never on its stream
        _wait_for(lambda: len(stream.deliveries()) == 13)
        got = stream.deliveries()
        assert [d["item_id"] for d in got] == [first] + [i for i, _ in sent]
        assert [d["seq"] for d in got] == list(range(1, 14))  # gap-free, in order
        ids = [int(e["id"]) for _, e in stream.got if e.get("event") == "deliveries"]
        assert ids == sorted(ids) and ids[-1] == 13  # each event's id is the cursor after it
        # pushed, not found by a poll timer (inbox_poll_interval_s is 2 s): well under it
        arrived = {
            d["item_id"]: t
            for t, e in stream.got
            if e.get("event") == "deliveries"
            for d in json.loads(e["data"])["deliveries"]
        }
        assert max(arrived[i] - at for i, at in sent) < 1.5


def test_a_stream_resumes_after_its_cursor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        ids = [_submit(base, "KOR", ["NZL"]) for _ in range(3)]
        stream = Stream(base, "NZL", after=2)
        _wait_for(lambda: len(stream.deliveries()) == 1)
        assert [d["item_id"] for d in stream.deliveries()] == ids[2:]


def test_a_stream_ends_at_its_maximum_duration_and_frees_its_slot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    caps = {
        "inbox_stream_max_s": "1.5",
        "inbox_stream_keepalive_s": "0.4",
        "inbox_max_waiting_per_member": "1",
    }
    with broker_server(url, AUDIENCE, tmp_path / "broker.log", **caps) as (base, _):
        stream = Stream(base, "CAN")
        time.sleep(0.3)
        second = Stream(base, "CAN")  # the stream holds CAN's one long-poll slot
        assert second.status == 429 and "too-many-long-polls" in second.body
        stream.thread.join(10)
        assert stream.ended() == "max-duration"
        assert any(e.get("comment") == "keep-alive" for _, e in stream.got)
        target = "/v1/inbox?wait=0.2"
        r = httpx.get(f"{base}{target}", headers=_auth("CAN", "GET", target), timeout=10)
        assert r.status_code == 200  # the slot is free again


def test_a_stopping_broker_ends_its_streams_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, proc):
        stream = Stream(base, "AUS")
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stream.thread.join(10)
        assert stream.ended() == "shutting-down"
        assert time.monotonic() - started < 3
        # stopped, not killed after its graceful timeout: uvicorn ends by re-raising SIGTERM
        assert proc.wait(10) in (0, -signal.SIGTERM)


def test_a_stream_needs_a_token_for_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        r = httpx.get(f"{base}/v1/inbox/stream", timeout=10)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        target = "/v1/inbox?after=0"  # a token minted for another request
        r = httpx.get(f"{base}/v1/inbox/stream", headers=_auth("USA", "GET", target), timeout=10)
        assert r.status_code == 401 and r.json()["type"].endswith(":token-binding")


def test_a_stream_ends_when_its_key_is_revoked_through_another_broker_process(
    database_url: str, tmp_path: Path
) -> None:
    from msmt.core import canonical
    from msmt.core import governance as gov
    from tests.integration.conftest import ADMIN_KEY, RELAY

    bootstrap(database_url, int(time.time() * 1000))
    with (
        broker_server(database_url, AUDIENCE, tmp_path / "broker.log", inbox_stream_max_s="60") as (base, _),
        broker_server(database_url, AUDIENCE, tmp_path / "other.log") as (other, _),
    ):
        stream = Stream(base, "CAN")
        _submit(base, "KOR", ["CAN"])
        _wait_for(lambda: len(stream.deliveries()) == 1)

        def admin(method: str, target: str, body: bytes = b"") -> dict[str, str]:
            token = mint_token(ADMIN_KEY, RELAY, AUDIENCE, method=method, target=target, body=body)
            return {"Authorization": f"Bearer {token}"}

        # revoked through another broker process: the stream's own process learns it from the
        # database, not from having served the statement
        base_of_stream, base = base, other
        entries = httpx.get(f"{base}/v1/directory/entries", headers=admin("GET", "/v1/directory/entries"))
        state = gov.verify_chain(canonical.b64decode(e["entry"]) for e in entries.json()["entries"])
        signed = gov.statement(
            state, "revoke-key", int(time.time() * 1000), country="CAN", key_id=_KEYS["CAN"].api.key_id
        )
        body = json.dumps(
            {"entry": canonical.b64encode(gov.signed_entry(signed, [("CAN", _KEYS["CAN"].signing)]))}
        )
        r = httpx.post(
            f"{base}/v1/governance/proposals",
            content=body,
            headers={
                **admin("POST", "/v1/governance/proposals", body.encode()),
                "Content-Type": "application/json",
            },
        )
        assert r.status_code == 201, r.text
        revoked = time.monotonic()
        stream.thread.join(10)
        # at its next wake (the 2 s safety re-check at the latest), not at its 60 s end
        assert stream.ended() == "key-not-in-force"
        assert stream.got[-1][0] - revoked < 5
        _submit(base_of_stream, "KOR", ["CAN"])  # CAN's later deliveries are never pushed on it
        assert len(stream.deliveries()) == 1


def test_the_client_library_follows_a_stream_and_opens_what_it_pushes(tmp_path: Path) -> None:
    from msmt.client import Client
    from msmt.trust import TrustStore
    from tests.integration.conftest import root_of

    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        sent = [_submit(base, "KOR", ["JPN"]) for _ in range(2)]
        with Client(base, _KEYS["JPN"], trust=TrustStore.pin(root_of(url)), audience=AUDIENCE) as client:
            late: list[str] = []
            pusher = threading.Timer(0.5, lambda: late.append(_submit(base, "KOR", ["JPN"])))
            pusher.start()
            pages = list(client.stream(0, max_s=3))
            pusher.join()
            assert client.last_stream_end == "max-duration"
            deliveries = [d for page in pages for d in page.deliveries]
            assert [d.item_id for d in deliveries] == sent + late
            assert [d.seq for d in deliveries] == [1, 2, 3]
            assert pages[-1].cursor == 3
            opened = client.open(deliveries[-1])  # verified against the directory and the log
            assert opened.payload == b"report"
            assert list(client.stream(3, max_s=0)) == [] and client.last_stream_end == "max-duration"


def test_the_async_client_follows_a_stream_as_the_sync_one_does(tmp_path: Path) -> None:
    import asyncio

    from msmt.client import AsyncClient
    from msmt.errors import BrokerError
    from msmt.trust import TrustStore
    from tests.integration.conftest import root_of

    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        sent = [_submit(base, "KOR", ["JPN"]) for _ in range(2)]

        async def follow() -> None:
            trust = TrustStore.pin(root_of(url))
            async with AsyncClient(base, _KEYS["JPN"], trust=trust, audience=AUDIENCE) as client:
                late: list[str] = []
                pusher = threading.Timer(0.5, lambda: late.append(_submit(base, "KOR", ["JPN"])))
                pusher.start()
                pages = [page async for page in client.stream(0, max_s=3)]
                pusher.join()
                assert client.last_stream_end == "max-duration"
                deliveries = [d for page in pages for d in page.deliveries]
                assert [d.item_id for d in deliveries] == sent + late
                assert [d.seq for d in deliveries] == [1, 2, 3]
                opened = await client.open(deliveries[-1])
                assert opened.payload == b"report"
                assert [p async for p in client.stream(3, max_s=0)] == []
            # a broker's refusal is the same problem as from the sync client
            async with AsyncClient(base, _KEYS["JPN"], trust=trust, audience=AUDIENCE) as client:
                try:
                    [p async for p in client.stream(-1)]
                except BrokerError as exc:
                    assert exc.status == 422
                else:
                    raise AssertionError("a negative cursor was accepted")

        asyncio.run(follow())


def _lines(*events: str) -> list[str]:
    return [line for event in events for line in [*event.split("\n"), ""]]


def _page(*seqs: int) -> str:
    deliveries = [
        {
            "seq": s,
            "item_id": f"0190{s:028x}",
            "originator": "KOR",
            "created_ms": 1,
            "received_ms": 2,
            "classification": "RESTRICTED",
            "tlp": "AMBER",
            "content_type": "text/markdown",
            "size": 22,
            "log_index": s,
            "state": "pending",
        }
        for s in seqs
    ]
    return json.dumps({"deliveries": deliveries, "cursor": max(seqs)})


def test_the_client_refuses_a_stream_that_goes_back() -> None:
    from msmt.client import Client
    from msmt.errors import ClientError

    ended: list[str] = []
    pages = Client._stream_pages(
        _lines(
            ": hello", f"id: 2\nevent: deliveries\ndata: {_page(1, 2)}", 'event: end\ndata: {"reason":"x"}'
        ),
        0,
        ended,
    )
    assert [p.cursor for p in pages] == [2] and ended == ["x"]
    replayed = Client._stream_pages(
        _lines(f"event: deliveries\ndata: {_page(3)}", f"event: deliveries\ndata: {_page(3, 4)}"), 0, []
    )
    with pytest.raises(ClientError, match="went back past entry 3"):
        list(replayed)
    with pytest.raises(ClientError, match="went back past entry 5"):
        list(Client._stream_pages(_lines(f"event: deliveries\ndata: {_page(5)}"), 5, []))


def test_a_stream_its_client_drops_frees_its_slot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    caps = {"inbox_max_waiting_per_member": "1", "inbox_stream_keepalive_s": "60"}
    with broker_server(url, AUDIENCE, tmp_path / "broker.log", **caps) as (base, _):
        target = "/v1/inbox/stream"
        with httpx.stream("GET", f"{base}{target}", headers=_auth("ITA", "GET", target), timeout=10) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the opening comment: the stream holds ITA's one slot now
        # the connection is closed; no event or keep-alive is due for a minute, yet the slot is
        # given back at once (a leaked slot would lock the member out of waiting for good)
        deadline = time.monotonic() + 5
        while True:
            again = Stream(base, "ITA")
            if again.status == 200:
                break
            assert again.status == 429 and time.monotonic() < deadline, again.status
            time.sleep(0.2)


def test_bad_stream_parameters_are_problems_and_hold_no_slot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log", inbox_max_waiting_per_member="1") as (base, _):
        for query in ("after=-1", "after=x", "max=-1", "max=86401", "after=9223372036854775808"):
            target = f"/v1/inbox/stream?{query}"
            r = httpx.get(f"{base}{target}", headers=_auth("FRA", "GET", target), timeout=10)
            assert r.status_code == 422, (query, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith(":invalid-request"), r.text
        assert Stream(base, "FRA").status == 200  # none of them kept FRA's one slot


def test_deliveries_integrated_by_two_broker_processes_interleave_without_a_gap(
    database_url: str, tmp_path: Path
) -> None:
    """A process pushes what it integrated itself from memory, and reads the database for what
    another process numbered: with both integrating in turn, the stream still holds every
    delivery once, in order, none skipped (a run in memory that does not start right after the
    stream's cursor is never used)."""
    bootstrap(database_url, int(time.time() * 1000))
    with (
        broker_server(database_url, AUDIENCE, tmp_path / "broker.log") as (base, _),
        broker_server(database_url, AUDIENCE, tmp_path / "other.log") as (other, _),
    ):
        stream = Stream(base, "USA")
        sent = [_submit(base if n % 3 else other, "KOR", ["USA", "JPN"]) for n in range(15)]
        _wait_for(lambda: len(stream.deliveries()) >= 15)
        time.sleep(0.3)  # nothing more (no duplicate) arrives after the last
        got = stream.deliveries()
    assert [d["seq"] for d in got] == list(range(1, 16))
    assert [d["item_id"] for d in got] == sent
