"""Corrections, withdrawal and expiry (issue 13): only an item's originator may supersede or
withdraw it, a withdrawal reaches every recipient, replies stay within the sender's view, and
an item past its `expires_ms` is no longer delivered or fetched (410)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.services.submit import join_batch
from msmt.core import parse
from msmt.core.report import WITHDRAWAL_MEDIA_TYPE

from .conftest import World
from .test_submit_pipeline import BATCH, bound

ABSENT = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"  # a well-formed item id nobody submitted


def _submit(world: World, origin: str, recipients: list[str], **kwargs: Any) -> Any:
    return world.submit(origin, world.seal(origin, recipients, **kwargs))


def _id(response: Any) -> str:
    assert response.status_code in (201, 202), response.text
    return str(response.json()["item_id"])


def _code(response: Any) -> str:
    return str(response.json()["type"]).rsplit(":", 1)[1]


def test_only_the_originator_may_supersede_and_a_stranger_learns_nothing(world: World) -> None:
    original = _id(_submit(world, "KOR", ["USA", "JPN"]))
    usa = _submit(world, "USA", ["KOR", "JPN"], supersedes=original)
    assert usa.status_code == 403 and _code(usa) == "not-originator", usa.text
    absent = _submit(world, "USA", ["KOR", "JPN"], supersedes=ABSENT)
    assert absent.status_code == 403 and _code(absent) == "not-originator"
    # the same sentence for someone else's item and for no item at all: no existence oracle
    assert usa.json()["detail"].replace(original, "X") == absent.json()["detail"].replace(ABSENT, "X")
    assert _id(_submit(world, "KOR", ["USA", "JPN"], supersedes=original))
    assert world.count("items") == 2  # the refused ones stored nothing


def test_a_withdrawal_is_the_originators_and_reaches_every_recipient(world: World) -> None:
    original = _id(_submit(world, "KOR", ["USA", "JPN", "GBR"]))
    world.settle()
    stranger = _submit(world, "USA", ["JPN", "GBR"], content_type=WITHDRAWAL_MEDIA_TYPE, in_reply_to=original)
    assert stranger.status_code == 403 and _code(stranger) == "not-originator", stranger.text
    partial = _submit(world, "KOR", ["USA", "JPN"], content_type=WITHDRAWAL_MEDIA_TYPE, in_reply_to=original)
    assert partial.status_code == 422 and _code(partial) == "withdrawal-incomplete"
    assert "GBR" in partial.json()["detail"]
    loose = _submit(world, "KOR", ["USA"], content_type=WITHDRAWAL_MEDIA_TYPE)
    assert loose.status_code == 403 and _code(loose) == "not-originator"  # withdraws nothing named
    withdrawal = _id(
        _submit(world, "KOR", ["USA", "JPN", "GBR"], content_type=WITHDRAWAL_MEDIA_TYPE, in_reply_to=original)
    )
    world.settle()
    for recipient in ("USA", "JPN", "GBR"):
        page = world.client.get("/v1/inbox", headers=world.auth(recipient)).json()
        listed = [(d["item_id"], d["content_type"]) for d in page["deliveries"]]
        assert listed == [(original, "text/markdown"), (withdrawal, WITHDRAWAL_MEDIA_TYPE)]


def test_a_reply_stays_within_the_senders_view(world: World) -> None:
    original = _id(_submit(world, "KOR", ["USA", "JPN"]))
    assert _id(_submit(world, "USA", ["KOR", "JPN"], in_reply_to=original))  # a recipient replies
    assert _id(_submit(world, "KOR", ["USA"], in_reply_to=original))  # so does its originator
    outsider = _submit(world, "FRA", ["KOR"], in_reply_to=original)
    assert outsider.status_code == 403 and _code(outsider) == "unknown-reference"
    absent = _submit(world, "FRA", ["KOR"], in_reply_to=ABSENT)
    assert outsider.json()["detail"].replace(original, "X") == absent.json()["detail"].replace(ABSENT, "X")


def test_a_batch_may_supersede_what_it_stored_just_before(world: World) -> None:
    first = world.seal("KOR", ["USA"])
    first_id = parse(first).header.item_id
    body = join_batch(
        [
            first,
            world.seal("KOR", ["USA"], supersedes=first_id),
            world.seal("USA", ["KOR"], supersedes=first_id),
        ]
    )
    r = world.client.post(
        "/v1/items/batch",
        content=body,
        headers={**bound(world, "KOR", "POST", "/v1/items/batch", body), **BATCH},
    )
    assert r.status_code == 403  # a batch holding another originator's envelope is refused whole
    body = join_batch([first, world.seal("KOR", ["USA"], supersedes=first_id)])
    r = world.client.post(
        "/v1/items/batch",
        content=body,
        headers={**bound(world, "KOR", "POST", "/v1/items/batch", body), **BATCH},
    )
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == [201, 201]


@pytest.mark.parametrize("include", ["", "?include=envelope"])
def test_an_expired_item_is_listed_but_not_delivered_or_fetched(world: World, include: str) -> None:
    soon = world.clock.ms + 60_000
    expiring = _id(_submit(world, "KOR", ["USA"], expires_ms=soon))
    lasting = _id(_submit(world, "KOR", ["USA"]))
    world.settle()
    assert world.client.get(f"/v1/items/{expiring}", headers=world.auth("USA")).status_code == 200
    world.clock.ms = soon  # the moment it expires
    gone = world.client.get(f"/v1/items/{expiring}", headers=world.auth("USA"))
    assert gone.status_code == 410 and _code(gone) == "expired"
    assert world.client.get(f"/v1/items/{expiring}", headers=world.auth("KOR")).status_code == 410
    page = world.client.get(f"/v1/inbox{include}", headers=world.auth("USA")).json()
    by_id = {d["item_id"]: d for d in page["deliveries"]}
    assert by_id[expiring]["unavailable"] == "expired" and "envelope" not in by_id[expiring]
    assert "unavailable" not in by_id[lasting]
    assert [d["seq"] for d in page["deliveries"]] == [1, 2]  # still gap-free
    assert world.client.get(f"/v1/items/{lasting}", headers=world.auth("USA")).status_code == 200
    status = world.client.get(f"/v1/items/{expiring}/status", headers=world.auth("KOR"))
    assert status.status_code == 200  # its originator still sees what happened to it
