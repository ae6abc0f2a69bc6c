"""The client library against the real app, through httpx transports (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from msmt.client import AsyncClient, Client
from msmt.core import Markings, errors
from msmt.errors import BrokerError, BrokerUnavailable, OriginatorControlled, PolicyRefused

from .conftest import AUDIENCE, World

MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])


def forwarding(
    world: World,
    before: Callable[[int], None] | None = None,
    after: Callable[[int, httpx.Response], None] | None = None,
) -> httpx.MockTransport:
    """A transport that hands each request to the app, with hooks to fail before or after it."""
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if before:
            before(calls["n"])
        response = world.client.request(
            request.method,
            request.url.path,
            params=request.url.params,
            content=request.content,
            headers=dict(request.headers),
        )
        if after:
            after(calls["n"], response)
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)

    return httpx.MockTransport(handle)


def client(world: World, country: str, transport: httpx.BaseTransport | None = None, **kw: object) -> Client:
    trust = kw.pop("trust", None) or world.trust()
    return Client(
        "http://testserver",
        world.members[country],
        trust=trust,
        audience=AUDIENCE,
        transport=transport or forwarding(world),
        backoff_s=0.001,
        **kw,
    )  # type: ignore[arg-type]


def test_send_receive_open_acknowledge(world: World) -> None:
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        receipt = kor.send(
            b"sighting", content_type="text/plain", markings=MARKINGS, recipients=["USA", "JPN"]
        )
        assert receipt.recipients == ("JPN", "USA")
        page = usa.inbox()
        (delivery,) = page.deliveries
        received = usa.open(delivery)
        assert received.payload == b"sighting"
        assert received.opened.header.originator == "KOR"
        assert usa.acknowledge([delivery.seq]) == [delivery.seq]
        states = {d["recipient"]: d["state"] for d in kor.status(receipt.item_id)["deliveries"]}
        assert states == {"JPN": "pending", "USA": "acknowledged"}


def test_send_without_recipients_uses_preflight(world: World) -> None:
    markings = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
    with client(world, "KOR") as kor:
        check = kor.preflight(markings)
        assert set(check.allowed) == {"USA", "JPN"}  # CONFIDENTIAL agreements exist only with these
        assert check.denied["NZL"][0]["rule"] == "above-accreditation"
        receipt = kor.send(b"x", content_type="text/plain", markings=markings)
        assert receipt.recipients == ("JPN", "USA")


def test_refusal_happens_before_sealing_and_names_reasons(world: World) -> None:
    markings = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
    with client(world, "KOR") as kor, pytest.raises(PolicyRefused) as info:
        kor.send(b"x", content_type="text/plain", markings=markings, recipients=["USA", "FRA"])
    assert list(info.value.refusals) == ["FRA"]
    assert world.count("items") == 0


def test_lost_response_is_retried_without_a_double_submission(world: World) -> None:
    """The broker commits, the answer is lost, the client retries: one item, one delivery each."""

    def lose_first_submit_answer(n: int, response: httpx.Response) -> None:
        if n == 3:  # 1 preflight, 2 directory, 3 submit
            raise httpx.ReadTimeout("answer lost")

    # integrate what set-up queued first: a batch that holds it also ends with an inboxes leaf,
    # so counting the queue instead would be off by one whenever the sweeper had not run yet
    world.settle()
    logged_before = world.count("log_entries")
    assert world.count("log_pending") == 0
    with client(world, "KOR", forwarding(world, after=lose_first_submit_answer)) as kor:
        receipt = kor.send(b"once", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    assert world.count("items") == 1
    assert world.count("deliveries") == 1
    assert receipt.log_index == logged_before
    assert world.count("log_entries WHERE kind = 'item'") == 1


def test_connection_errors_are_retried_then_reported(world: World) -> None:
    def refuse_twice(n: int) -> None:
        if n <= 2:
            raise httpx.ConnectError("connection refused")

    with client(world, "USA", forwarding(world, before=refuse_twice)) as usa:
        assert usa.inbox().deliveries == ()

    def always(n: int) -> None:
        raise httpx.ConnectError("connection refused")

    with (
        client(world, "USA", forwarding(world, before=always), retries=2) as usa,
        pytest.raises(BrokerUnavailable),
    ):
        usa.inbox()


def test_problems_become_exceptions_with_details(world: World) -> None:
    with client(world, "USA") as usa, pytest.raises(BrokerError) as info:
        usa.fetch("01890a5d-ac96-7000-8000-000000000000")
    assert info.value.status == 404
    assert info.value.code == "unknown-item"
    assert "USA" in info.value.detail


def test_tampered_envelope_from_broker_is_rejected_by_open(world: World) -> None:
    with client(world, "KOR") as kor:
        kor.send(b"original", content_type="text/plain", markings=MARKINGS, recipients=["USA"])

    def tamper(n: int, response: httpx.Response) -> None:
        if response.headers.get("content-type") == "application/vnd.msmt.envelope":
            body = bytearray(response.content)
            body[-1] ^= 1
            response._content = bytes(body)

    with client(world, "USA", forwarding(world, after=tamper)) as usa:
        (delivery,) = usa.inbox().deliveries
        with pytest.raises(errors.PayloadMismatch):
            usa.open(delivery)


def test_async_client_through_asgi_transport(world: World) -> None:
    app = world.client.app
    transport = httpx.ASGITransport(app=app)

    async def scenario() -> None:
        async with (
            AsyncClient(
                "http://testserver",
                world.members["KOR"],
                trust=world.trust(),
                audience=AUDIENCE,
                transport=transport,
            ) as kor,
            AsyncClient(
                "http://testserver",
                world.members["JPN"],
                trust=world.trust(),
                audience=AUDIENCE,
                transport=transport,
            ) as jpn,
        ):
            receipt = await kor.send(
                b"async report", content_type="text/plain", markings=MARKINGS, recipients=["JPN"]
            )
            page = await jpn.inbox(wait=0)
            (delivery,) = page.deliveries
            assert delivery.item_id == receipt.item_id
            assert (await jpn.open(delivery)).payload == b"async report"
            assert await jpn.acknowledge([delivery.seq]) == [delivery.seq]
            with pytest.raises(PolicyRefused):
                await kor.send(
                    b"x",
                    content_type="text/plain",
                    markings=Markings.create("SECRET", "RED", ["NZL"]),
                    recipients=["NZL"],
                )

    asyncio.run(scenario())


def test_orcon_items_cannot_be_forwarded_by_recipients(world: World) -> None:
    orcon = Markings.create("RESTRICTED", "AMBER", ["ALL"], caveats=["ORCON"], topics=["cyber"])
    plain = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["cyber"])
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        kor.send(b"controlled", content_type="text/plain", markings=orcon, recipients=["USA"])
        kor.send(b"shareable", content_type="text/plain", markings=plain, recipients=["USA"])
        first, second = (usa.open(d) for d in usa.inbox().deliveries)
        with pytest.raises(OriginatorControlled, match="ORCON"):
            usa.forward(first, ["GBR"])
        forwarded = usa.forward(second, ["GBR"])
        assert forwarded.recipients == ("GBR",)
    with client(world, "GBR") as gbr:
        (delivery,) = gbr.inbox().deliveries
        received = gbr.open(delivery)
        assert received.payload == b"shareable"
        assert received.opened.header.originator == "USA"
        assert received.opened.header.in_reply_to == second.opened.header.item_id
