"""`GET /v1/items/{id}/status` takes a unique prefix of an item id (`msmt status 01a2260c`).

Only the items the caller may see the status of are searched (its own; all for an admin), so
a prefix never tells one country whether another's item exists.
"""

from __future__ import annotations

import httpx
import pytest

from msmt.client import Client
from msmt.errors import BrokerError, ClientError

from .conftest import AUDIENCE, World
from .test_client import forwarding

PREFIX = "urn:msmt:problem:"


def _sent(world: World, origin: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        r = world.submit(origin, world.seal(origin, ["USA"], payload=f"report {n}".encode()))
        assert r.status_code in (201, 202), r.text
        ids.append(r.json()["item_id"])
    return ids


def _unique_prefix(item_id: str, others: list[str]) -> str:
    for length in range(8, 37):
        if not any(o != item_id and o.startswith(item_id[:length]) for o in others):
            return item_id[:length]
    raise AssertionError("no unique prefix")


def test_a_unique_prefix_gives_the_full_status(world: World) -> None:
    kor = _sent(world, "KOR", 3)
    prefix = _unique_prefix(kor[1], kor)
    r = world.client.get(f"/v1/items/{prefix}/status", headers=world.auth("KOR"))
    assert r.status_code == 200, r.text
    assert r.json()["item_id"] == kor[1]
    full = world.client.get(f"/v1/items/{kor[1]}/status", headers=world.auth("KOR"))
    assert full.json() == r.json()
    admin = world.client.get(f"/v1/items/{prefix}/status", headers=world.auth("admin:alice"))
    assert admin.status_code == 200 and admin.json()["item_id"] == kor[1]


def test_an_ambiguous_prefix_says_how_many_match(world: World) -> None:
    kor = _sent(world, "KOR", 3)  # the world's clock stands still: the ids share 12 hex digits
    common = kor[0][:8]
    assert all(i.startswith(common) for i in kor)
    r = world.client.get(f"/v1/items/{common}/status", headers=world.auth("KOR"))
    assert r.status_code == 409
    assert r.json()["type"] == PREFIX + "ambiguous-item-id"
    assert r.json()["detail"].startswith("3 of the items you may see start with")


def test_others_items_are_neither_found_nor_counted(world: World) -> None:
    kor = _sent(world, "KOR", 1)
    jpn = _sent(world, "JPN", 2)
    # the ids share their first 12 hex digits; the prefix is unique among KOR's own items
    assert kor[0][:8] == jpn[0][:8]
    r = world.client.get(f"/v1/items/{kor[0][:8]}/status", headers=world.auth("KOR"))
    assert r.status_code == 200 and r.json()["item_id"] == kor[0]  # JPN's two are not counted
    theirs = _unique_prefix(jpn[0], kor + jpn)
    for prefix in (theirs, jpn[0]):  # another's item: 404 whether prefix or full id
        r = world.client.get(f"/v1/items/{prefix}/status", headers=world.auth("KOR"))
        assert r.status_code == 404 and r.json()["type"] == PREFIX + "unknown-item"
    # the admin sees all three: ambiguous for it
    r = world.client.get(f"/v1/items/{kor[0][:8]}/status", headers=world.auth("admin:alice"))
    assert r.status_code == 409 and r.json()["detail"].startswith("3 of")


@pytest.mark.parametrize(
    "prefix",
    ["01a2260", "01A2260C", "01a2260c%", "01a2260c_", "01a2260cz", "0" * 37],
)
def test_a_prefix_is_8_to_36_lowercase_hex_digits_or_hyphens(world: World, prefix: str) -> None:
    r = world.client.get(f"/v1/items/{prefix}/status", headers=world.auth("KOR"))
    assert r.status_code in (404, 422), r.text
    if r.status_code == 404:  # routing: '%' decoded away, or not matched at all
        assert r.json()["type"] in (PREFIX + "not-found", PREFIX + "unknown-item")


def test_the_client_resolves_prefixes_and_checks_them_first(world: World) -> None:
    kor = _sent(world, "KOR", 2)
    prefix = _unique_prefix(kor[0], kor)
    with Client(
        "http://testserver",
        world.members["KOR"],
        trust=world.trust(),
        audience=AUDIENCE,
        transport=forwarding(world),
        backoff_s=0.001,
    ) as client:
        assert client.status(prefix.upper())["item_id"] == kor[0]
        with pytest.raises(BrokerError) as info:
            client.status(kor[0][:8])
        assert info.value.status == 409 and info.value.code == "ambiguous-item-id"
    calls: list[httpx.Request] = []
    never = httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(500))
    with Client(
        "http://testserver", world.members["KOR"], trust=world.trust(), audience=AUDIENCE, transport=never
    ) as client:
        for bad in ("01a2", "01a2260g", "../../x", ""):
            with pytest.raises(ClientError, match="at least 8 hex digits"):
                client.status(bad)
    assert calls == []  # refused before any request


def test_an_envelope_is_fetched_by_a_prefix_among_what_the_caller_sent_or_received(world: World) -> None:
    kor = _sent(world, "KOR", 3)
    world.settle()
    prefix = _unique_prefix(kor[2], kor)
    for who in ("KOR", "USA"):  # its originator and its recipient
        r = world.client.get(f"/v1/items/{prefix}", headers=world.auth(who))
        assert r.status_code == 200, r.text
        assert r.content == world.client.get(f"/v1/items/{kor[2]}", headers=world.auth(who)).content
    stranger = world.client.get(f"/v1/items/{prefix}", headers=world.auth("JPN"))
    absent = world.client.get("/v1/items/ffffffffff", headers=world.auth("JPN"))
    assert stranger.status_code == absent.status_code == 404  # not in JPN's view: as if absent
    assert stranger.json()["type"] == absent.json()["type"] == PREFIX + "unknown-item"
