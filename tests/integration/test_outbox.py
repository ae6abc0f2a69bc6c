"""The durable outbox: a sealed item is submitted with the same bytes until the broker has it.

Issue 10 finding 1: with the broker restarting during sends, one report was stored as two items
because every `send()` sealed a new item. Now `send()` seals once and the envelope stays in the
outbox until the broker acknowledged it; every later attempt re-sends those bytes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from msmt.client import AsyncClient
from msmt.core import Markings
from msmt.errors import BrokerError, SubmitPending
from msmt.outbox import Outbox
from msmt.trust import TrustStore

from .conftest import AUDIENCE, World
from .test_client import client, forwarding

MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
SUBMIT = ("POST", "/v1/items")


def _down_for_submits(world: World) -> httpx.MockTransport:
    """The broker is reachable for everything but the submission itself."""
    inner = forwarding(world)

    def handle(request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) == SUBMIT:
            raise httpx.ConnectError("connection refused")
        return inner.handle_request(request)

    return httpx.MockTransport(handle)


def _answers_lost(world: World) -> httpx.MockTransport:
    """Every submission reaches the broker and is committed; every answer to it is lost."""
    inner = forwarding(world)

    def handle(request: httpx.Request) -> httpx.Response:
        response = inner.handle_request(request)
        if (request.method, request.url.path) == SUBMIT:
            raise httpx.ReadTimeout("answer lost")
        return response

    return httpx.MockTransport(handle)


def _answering(world: World, status: int, code: str) -> httpx.MockTransport:
    inner = forwarding(world)

    def handle(request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) == SUBMIT:
            problem = {"type": f"urn:msmt:problem:{code}", "title": code, "status": status, "detail": code}
            headers = {"Content-Type": "application/problem+json", "Retry-After": "0"}
            return httpx.Response(status, json=problem, headers=headers)
        return inner.handle_request(request)

    return httpx.MockTransport(handle)


def _trust(world: World, folder: Path) -> TrustStore:
    return TrustStore.pin(world.root_bytes(), folder)


def test_unreachable_broker_keeps_the_sealed_item_and_resending_stores_it_once(
    world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "KOR"
    with (
        client(world, "KOR", _down_for_submits(world), trust=_trust(world, folder), retries=1) as kor,
        pytest.raises(SubmitPending) as info,
    ):
        kor.send(b"once only", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    item_id = info.value.item_id
    assert world.count("items") == 0
    assert [e.item_id for e in Outbox(folder / "outbox").pending()] == [item_id]
    # a new process (the folder is all it shares with the old one) re-sends the same bytes
    with client(world, "KOR", trust=TrustStore.load(folder)) as kor:
        (receipt,) = kor.resend_pending()
        assert kor.resend_pending() == []
    assert receipt.item_id == item_id
    assert world.count("items") == 1 and world.count("deliveries") == 1
    assert Outbox(folder / "outbox").pending() == []
    assert TrustStore.load(folder).sent_items == [item_id]


def test_committed_but_unanswered_item_is_not_stored_twice(world: World, tmp_path: Path) -> None:
    """The broker stores the item, every answer is lost: re-sending gets the receipt it already
    gave (200), not a second item, and the audit list names the item once."""
    folder = tmp_path / "KOR"
    with (
        client(world, "KOR", _answers_lost(world), trust=_trust(world, folder), retries=2) as kor,
        pytest.raises(SubmitPending) as info,
    ):
        kor.send(b"stored once", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    assert world.count("items") == 1
    with client(world, "KOR", trust=TrustStore.load(folder)) as kor:
        (receipt,) = kor.resend_pending()
    assert receipt.item_id == info.value.item_id
    assert world.count("items") == 1 and world.count("deliveries") == 1
    assert TrustStore.load(folder).sent_items == [receipt.item_id]


@pytest.mark.parametrize(
    ("status", "code"), [(503, "database-unavailable"), (429, "rate-limited"), (401, "unknown-key")]
)
def test_answers_about_the_moment_leave_the_item_pending(world: World, status: int, code: str) -> None:
    with client(world, "KOR", _answering(world, status, code), retries=1) as kor:
        with pytest.raises((SubmitPending, BrokerError)) as info:
            kor.send(b"later", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        assert isinstance(info.value, SubmitPending), info.value
        (entry,) = kor.outbox.pending()
        assert entry.item_id == info.value.item_id
        assert kor.outbox.refused() == []


def test_a_refusal_about_the_envelope_moves_it_aside(world: World) -> None:
    """Re-sending cannot change an originator mismatch: the envelope is kept with the broker's
    reason (nothing sealed disappears silently) and is not retried."""
    foreign = world.seal("USA", ["JPN"])
    with client(world, "KOR") as kor:
        with pytest.raises(BrokerError) as info:
            kor.submit(foreign)
        assert info.value.code == "originator-mismatch"
        assert kor.outbox.pending() == []
        (refused,) = kor.outbox.refused()
        assert refused.envelope == foreign
        assert refused.refusal is not None and refused.refusal["code"] == "originator-mismatch"
        assert kor.resend_pending() == []
    assert world.count("items") == 0


def test_async_client_keeps_and_resends_the_same_bytes(world: World) -> None:
    app = world.client.app
    outbox = Outbox()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def scenario() -> None:
        common = {"trust": world.trust(), "audience": AUDIENCE, "outbox": outbox, "backoff_s": 0.001}
        async with AsyncClient(
            "http://testserver", world.members["KOR"], transport=httpx.ASGITransport(app=app), **common
        ) as kor:  # type: ignore[arg-type]
            directory = await kor.directory()
            envelope = kor._seal(directory, b"async once", "text/plain", MARKINGS, ["JPN"], {})
        async with AsyncClient(
            "http://testserver",
            world.members["KOR"],
            transport=httpx.MockTransport(down),
            retries=1,
            **common,
        ) as kor:  # type: ignore[arg-type]
            with pytest.raises(SubmitPending):
                await kor.submit(envelope)
        assert [e.envelope for e in outbox.pending()] == [envelope]
        async with AsyncClient(
            "http://testserver", world.members["KOR"], transport=httpx.ASGITransport(app=app), **common
        ) as kor:  # type: ignore[arg-type]
            (receipt,) = await kor.resend_pending()
        assert outbox.pending() == []
        assert world.count("items") == 1
        assert receipt.recipients == ("JPN",)

    asyncio.run(scenario())


def test_a_large_envelope_is_streamed_with_progress_and_its_token_still_binds_the_body(world: World) -> None:
    """Issue 11: upload progress. The body goes out in chunks, `progress(sent, total)` follows
    it (back to 0 when a retry sends it again), and the broker accepts the token bound to the
    whole body."""
    calls: list[tuple[int, int]] = []
    refused = {"n": 0}
    inner = forwarding(world)

    def once_refused(request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) == SUBMIT and refused["n"] == 0:
            refused["n"] += 1
            request.read()  # the first attempt is sent whole, then the connection fails
            raise httpx.ConnectError("connection reset")
        return inner.handle_request(request)

    payload = bytes(range(256)) * 6 * 1024  # 1.5 MiB
    with client(world, "KOR", httpx.MockTransport(once_refused)) as kor:
        receipt = kor.send(
            payload,
            content_type="application/octet-stream",
            markings=MARKINGS,
            recipients=["USA"],
            progress=lambda sent, total: calls.append((sent, total)),
        )
    total = calls[-1][1]
    assert total > len(payload) and calls[-1] == (total, total)
    restarts = [i for i, (sent, _) in enumerate(calls) if sent == 0]
    assert len(restarts) == 2  # one pass per attempt
    second = [sent for sent, _ in calls[restarts[1] :]]
    assert second == sorted(second) and len(second) >= 6  # 256 KiB chunks
    assert world.count("items") == 1
    with client(world, "USA") as usa:
        (delivery,) = usa.inbox().deliveries
        assert delivery.item_id == receipt.item_id
        assert usa.open(delivery).payload == payload
