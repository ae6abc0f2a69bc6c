"""Expiry in the client: an item past its signed `expires_ms` is opened only when asked, and a
delivery the broker lists as expired (or purged) is never fetched: `receive` and `msmt pull`
report it, acknowledge it and go on."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpx
import pytest

from msmt import cli
from msmt.client import ItemExpired, ItemUnavailable

from .conftest import World
from .test_client import client, forwarding


def _send(world: World, payload: bytes, expires_ms: int | None = None) -> str:
    options = {"expires_ms": expires_ms} if expires_ms is not None else {}
    data = world.seal("KOR", ["USA"], payload, created_ms=world.clock.ms - 1000, **options)
    r = world.submit("KOR", data)
    assert r.status_code in (201, 202), r.text
    return str(r.json()["item_id"])


def _counting(world: World, fetched: list[str]) -> httpx.BaseTransport:
    def note(_: int, response: httpx.Response) -> None:
        path = response.request.url.path
        if path.startswith("/v1/items/"):
            fetched.append(path)

    return forwarding(world, after=note)


def test_expired_item_is_opened_only_when_asked(world: World) -> None:
    expires_ms = world.clock.ms + 1  # the broker still serves it; the client's clock is past it
    item_id = _send(world, b"short-lived", expires_ms)
    while int(time.time() * 1000) <= expires_ms:
        time.sleep(0.01)
    with client(world, "USA") as usa:
        page = usa.inbox(envelopes=True)
        (delivery,) = page.deliveries
        assert delivery.item_id == item_id and delivery.unavailable is None
        with pytest.raises(ItemExpired) as refused:
            usa.open(delivery, data=page.envelope(0))
        assert refused.value.code == "item-expired" and "originator" in refused.value.detail
        assert usa.open(delivery, data=page.envelope(0), allow_expired=True).payload == b"short-lived"
        with pytest.raises(ItemExpired):
            usa.open_bytes(page.envelope(0) or b"", accepted_ms=delivery.received_ms)
        opened = usa.open_bytes(page.envelope(0) or b"", accepted_ms=delivery.received_ms, allow_expired=True)
        assert opened.payload == b"short-lived"


def test_receive_reports_and_acknowledges_unavailable_deliveries_without_fetching(world: World) -> None:
    expired = _send(world, b"gone", world.clock.ms + 1000)
    kept = _send(world, b"kept")
    world.clock.ms += 2000  # now the broker lists the first as expired, without its envelope
    fetched: list[str] = []
    with client(world, "USA", _counting(world, fetched)) as usa:
        batch = usa.receive()
        assert [d.item_id for d in batch.unavailable] == [expired]
        assert batch.unavailable[0].unavailable == "expired"
        assert [r.opened.header.item_id for r in batch.received] == [kept]
        assert batch.rejected == ()
        with pytest.raises(ItemUnavailable, match="expired by its originator's expiry"):
            usa.open(batch.unavailable[0])
        assert fetched == []  # never asked for: it would be 410
        acknowledged = usa.confirm(batch.received, unavailable=batch.unavailable)
        assert sorted(acknowledged) == sorted(d.seq for d in batch.page.deliveries)
        assert usa.receive(batch.cursor).page.deliveries == ()


def test_pull_does_not_get_stuck_on_an_unavailable_delivery(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expired = _send(world, b"gone", world.clock.ms + 1000)
    kept = _send(world, b"kept")
    world.clock.ms += 2000
    fetched: list[str] = []
    folder = tmp_path / "inbox"
    args = argparse.Namespace(limit=100, no_ack=False)
    with client(world, "USA", _counting(world, fetched)) as usa:
        # (saved, rejected, unavailable, skipped entry numbers)
        assert cli._pull_once(usa, folder, args, wait=0) == (1, 0, 1, [])
        assert cli._pull_once(usa, folder, args, wait=0) == (0, 0, 0, [])  # the cursor moved past it
        states = {d.item_id: d.state for d in usa.inbox().deliveries}
    assert states == {expired: "acknowledged", kept: "acknowledged"}
    assert fetched == []
    assert [p.name for p in folder.glob("*.md")] and not (folder / cli.QUARANTINE_FOLDER).exists()
    assert f"item {expired} from KOR was expired by its originator's expiry: not fetched" in (
        capsys.readouterr().err
    )
