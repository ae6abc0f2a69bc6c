"""Inboxes leaves on both databases (docs/protocol.md 14.7, 14.9): every batch ends with one,
chained, committing to the inbox counters with the stored salts; the routes show each country
its own openings only, the originator its recipients' for its item's batch, and refuse bad
parameters with a problem."""

from __future__ import annotations

import pytest

from msmt.core import canonical, logleaf, merkle

from .conftest import World
from .test_client import MARKINGS, client
from .test_log import _leaves, _sql


def _checkpoint_sizes(world: World) -> list[int]:
    return [int(r[0]) for r in _sql(world, "SELECT size FROM checkpoints ORDER BY size")]


def test_every_checkpoint_ends_with_an_inboxes_leaf_chained_to_the_previous_one(world: World) -> None:
    with client(world, "KOR") as kor:
        for n in range(3):
            kor.send(f"{n}".encode(), content_type="text/plain", markings=MARKINGS, recipients=["USA", "JPN"])
    world.settle()
    leaves = _leaves(world)
    kinds = [str(r[0]) for r in _sql(world, "SELECT kind FROM log_entries ORDER BY log_index")]
    sizes = _checkpoint_sizes(world)
    assert sizes and sizes[-1] == len(leaves)
    for size in sizes:  # the last leaf of every checkpoint the broker signed
        assert kinds[size - 1] == "inboxes"
    chain = [i for i, k in enumerate(kinds) if k == "inboxes"]
    assert chain == [s - 1 for s in sizes]  # one per batch, and nothing else
    previous = -1
    for index in chain:
        parsed = logleaf.parse_inboxes_leaf(leaves[index])
        assert parsed.previous == previous
        previous = index
    # the last one commits to every member's counter, empty inboxes (0) included, with the
    # stored salts: one commitment per member, no free slot
    counters = {str(r): int(n) for r, n in _sql(world, "SELECT recipient, last_seq FROM inbox_counters")}
    assert {r: n for r, n in counters.items() if n} == {"USA": 3, "JPN": 3}
    assert len(counters) == 11 and set(counters.values()) == {0, 3}
    last = chain[-1]
    stored = {
        str(c): (int(n), bytes(s))
        for c, n, s in _sql(
            world, "SELECT country, size, salt FROM inbox_commitments WHERE log_index = :i", i=last
        )
    }
    assert {c: n for c, (n, _) in stored.items()} == counters
    expected = sorted(logleaf.inbox_commitment(c, n, s) for c, (n, s) in stored.items())
    assert logleaf.parse_inboxes_leaf(leaves[last]).commitments == tuple(expected)
    # a fresh salt per leaf and country
    salts = [bytes(r[0]) for r in _sql(world, "SELECT salt FROM inbox_commitments")]
    assert len(salts) == len(set(salts))


def test_the_chain_route_shows_each_country_its_own_opening_only(world: World) -> None:
    with client(world, "KOR") as kor:
        receipt = kor.send(b"x", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    world.settle()
    leaves = _leaves(world)
    size = len(leaves)
    tree = merkle.MemoryTree()
    tree.extend(leaves)
    answers = {}
    for who in ("USA", "NZL", "admin:alice"):
        r = world.client.get(f"/v1/log/inboxes?size={size}", headers=world.auth(who))
        assert r.status_code == 200, r.text
        answers[who] = r.json()
    usa = answers["USA"]
    assert usa["size"] == size and usa["next"] is None
    indexes = [leaf["log_index"] for leaf in usa["leaves"]]
    assert indexes[0] == size - 1 and indexes == sorted(indexes, reverse=True)
    for leaf in usa["leaves"]:
        raw = canonical.b64decode(leaf["leaf"])
        assert raw == leaves[leaf["log_index"]]
        proof = [canonical.b64decode(h) for h in leaf["inclusion"]]
        merkle.verify_inclusion(merkle.leaf_hash(raw), leaf["log_index"], size, proof, tree.root())
    newest = usa["leaves"][0]
    assert newest["own"]["size"] == 1
    opening = logleaf.inbox_commitment("USA", 1, canonical.b64decode(newest["own"]["salt"]))
    assert opening in logleaf.parse_inboxes_leaf(canonical.b64decode(newest["leaf"])).commitments
    # the leaves are the same for everyone; the opening is USA's alone
    for who in ("NZL", "admin:alice"):
        assert [(x["log_index"], x["leaf"]) for x in answers[who]["leaves"]] == [
            (x["log_index"], x["leaf"]) for x in usa["leaves"]
        ]
    assert all(x["own"] is None for x in answers["admin:alice"]["leaves"])  # an admin has no inbox
    # NZL's inbox is empty, and committed as such: size 0, its own salt, in every leaf
    for leaf in answers["NZL"]["leaves"]:
        nzl = leaf["own"]
        assert nzl["size"] == 0 and nzl["salt"] != newest["own"]["salt"]
        committed = logleaf.parse_inboxes_leaf(canonical.b64decode(leaf["leaf"])).commitments
        assert logleaf.inbox_commitment("NZL", 0, canonical.b64decode(nzl["salt"])) in committed
    # pages: newest first, `next` is the `before` of the next page
    page = world.client.get(f"/v1/log/inboxes?size={size}&limit=1", headers=world.auth("USA")).json()
    assert [x["log_index"] for x in page["leaves"]] == indexes[:1] and page["next"] == indexes[0]
    rest = world.client.get(
        f"/v1/log/inboxes?size={size}&before={page['next']}&after={indexes[-1] - 1}",
        headers=world.auth("USA"),
    ).json()
    assert [x["log_index"] for x in rest["leaves"]] == indexes[1:]
    assert receipt.log_index is not None and receipt.log_index < size


def test_the_originator_gets_its_recipients_openings_for_its_batch_only(world: World) -> None:
    with client(world, "KOR") as kor:
        receipt = kor.send(b"x", content_type="text/plain", markings=MARKINGS, recipients=["USA", "JPN"])
    world.settle()
    r = world.client.get(f"/v1/items/{receipt.item_id}/inboxes", headers=world.auth("KOR"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["log_index"] == receipt.log_index and body["inboxes_index"] > receipt.log_index
    kinds = {
        int(i): str(k)
        for i, k in _sql(
            world, "SELECT log_index, kind FROM log_entries WHERE log_index > :i", i=receipt.log_index
        )
    }
    assert body["inboxes_index"] == min(i for i, k in kinds.items() if k == "inboxes")
    leaf = logleaf.parse_inboxes_leaf(canonical.b64decode(body["leaf"]))
    openings = {x["recipient"]: (x["size"], canonical.b64decode(x["salt"])) for x in body["recipients"]}
    assert sorted(openings) == ["JPN", "USA"]
    assert (
        logleaf.check_item_inboxes(leaf, body["inboxes_index"], receipt.log_index, receipt.seqs, openings)
        == []
    )
    for who, status in (("USA", 404), ("NZL", 404)):
        denied = world.client.get(f"/v1/items/{receipt.item_id}/inboxes", headers=world.auth(who))
        assert denied.status_code == status and denied.json()["type"].endswith("unknown-item")
    admin = world.client.get(f"/v1/items/{receipt.item_id}/inboxes", headers=world.auth("admin:alice"))
    assert admin.status_code == 403 and admin.json()["type"].endswith("country-only")


@pytest.mark.parametrize(
    "query",
    [
        "",
        "size=0",
        "size=-1",
        "size=abc",
        f"size={2**62 + 1}",
        "size=1&after=-2",
        "size=1&before=-1",
        "size=1&limit=0",
        "size=1&limit=1001",
        "size=99999",  # larger than the log
    ],
)
def test_bad_parameters_are_a_problem(world: World, query: str) -> None:
    world.settle()  # the founding leaves: nothing is pending when the request comes
    before = _leaves(world)
    r = world.client.get(f"/v1/log/inboxes?{query}", headers=world.auth("USA"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].split(":")[-1] in {"invalid-request", "invalid-proof-request"}
    assert _leaves(world) == before


def test_an_unknown_or_malformed_item_is_a_problem(world: World) -> None:
    for path, status in (
        ("/v1/items/01942f6c-3a5b-7d8e-9f01-23456789abcd/inboxes", 404),
        ("/v1/items/not-an-id/inboxes", 422),
    ):
        r = world.client.get(path, headers=world.auth("KOR"))
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")


def test_the_originator_check_of_its_sent_items(world: World) -> None:
    """`Client.sent_inboxes` (what `msmt audit` runs for the items an agency sent): honest, no
    finding; a stored opening rewritten to a size below the item's entry, or to another salt,
    is a finding; so is a leaf that did not close the item's batch."""
    with client(world, "KOR") as kor:
        receipt = kor.send(b"x", content_type="text/plain", markings=MARKINGS, recipients=["USA", "JPN"])
        kor.send(b"y", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        world.settle()
        kor.log_checkpoint()
        status = kor.status(receipt.item_id)
        assert kor.sent_inboxes([status]) == []
        closing = world.client.get(f"/v1/items/{receipt.item_id}/inboxes", headers=world.auth("KOR")).json()
        index = closing["inboxes_index"]
        _sql(world, "UPDATE inbox_commitments SET size = 0 WHERE country = 'USA' AND log_index = :i", i=index)
        found = kor.sent_inboxes([status])
        assert len(found) == 1 and "do not open a commitment" in found[0] and "USA" in found[0]
        _sql(
            world,
            "UPDATE inbox_commitments SET size = 1, salt = :z WHERE country = 'USA' AND log_index = :i",
            z=bytes(16),
            i=index,
        )
        found = kor.sent_inboxes([status])
        assert len(found) == 1 and "do not open a commitment" in found[0]
        # a leaf that comes before the item (as if its batch had been closed without it)
        leaf = bytes(_sql(world, "SELECT leaf FROM log_entries WHERE log_index = :i", i=index)[0][0])
        assert logleaf.parse_inboxes_leaf(leaf).previous < receipt.log_index  # type: ignore[operator]
        # a status answer that points at another log entry: the leaf there is not this item's
        # (the inbox numbers checked are the logged leaf's, never the status answer's)
        found = kor.sent_inboxes([{**status, "log_index": index + 1}])
        assert any("its log entry does not hold up" in f and "other envelope bytes" in f for f in found), (
            found
        )
