from __future__ import annotations

from msmt.core import Markings, open_envelope

from .conftest import World

ITEM_LEAVES = "log_entries WHERE kind = 'item'"
INBOXES_LEAVES = "log_entries WHERE kind = 'inboxes'"


def test_submit_fan_out_and_open(world: World) -> None:
    data = world.seal("KOR", ["USA", "JPN", "GBR"], b"ship-to-ship transfer")
    logged_before = world.count("log_entries") + world.count("log_pending")  # directory, policy
    inboxes_before = world.count(INBOXES_LEAVES)
    r = world.submit("KOR", data)
    assert r.status_code == 201, r.text
    receipt = r.json()
    assert receipt["recipients"] == ["GBR", "JPN", "USA"]
    # the next leaf after what was queued; or, if the log's sweep (every 0.5 s) integrated that
    # first, in a batch of its own, after the inboxes leaf that ends every batch (a loaded machine)
    swept = world.count(f"{INBOXES_LEAVES} AND log_index < {int(receipt['log_index'])}") - inboxes_before
    assert swept in (0, 1)
    assert receipt["log_index"] == logged_before + swept
    assert {(d["recipient"], d["seq"]) for d in receipt["deliveries"]} == {("GBR", 1), ("JPN", 1), ("USA", 1)}
    for country in ("USA", "JPN", "GBR"):
        page = world.client.get("/v1/inbox", headers=world.auth(country)).json()
        assert [d["item_id"] for d in page["deliveries"]] == [receipt["item_id"]]
        env = world.client.get(f"/v1/items/{receipt['item_id']}", headers=world.auth(country))
        assert env.status_code == 200
        assert env.content == data
        member = world.members[country]
        opened = open_envelope(
            env.content,
            recipient=country,
            private_key=member.encryption,
            originator_key=world.members["KOR"].signing.public_key,
        )
        assert opened.payload == b"ship-to-ship transfer"
    assert world.client.get("/v1/inbox", headers=world.auth("NZL")).json()["deliveries"] == []


def test_resubmission_is_idempotent_and_conflicts_are_409(world: World) -> None:
    data = world.seal("KOR", ["USA"])
    first = world.submit("KOR", data)
    again = world.submit("KOR", data)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    item_id = first.json()["item_id"]
    other = world.seal("KOR", ["USA"], b"different", item_id=item_id)
    conflict = world.submit("KOR", other)
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:msmt:problem:item-id-conflict"
    assert len(world.client.get("/v1/inbox", headers=world.auth("USA")).json()["deliveries"]) == 1


def test_one_forbidden_recipient_fails_everything(world: World) -> None:
    secret = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
    data = world.seal("KOR", ["USA", "JPN", "NZL", "FRA"], markings=secret)
    r = world.submit("KOR", data)
    assert r.status_code == 403
    problem = r.json()
    assert problem["type"] == "urn:msmt:problem:recipients-refused"
    assert set(problem["recipients"]) == {"NZL", "FRA"}
    rules = {d["rule"] for d in problem["recipients"]["NZL"]}
    assert rules == {"above-accreditation", "above-agreement-ceiling"}
    assert [d["rule"] for d in problem["recipients"]["FRA"]] == ["above-agreement-ceiling"]
    for country in ("USA", "JPN"):
        assert world.client.get("/v1/inbox", headers=world.auth(country)).json()["deliveries"] == []
    assert world.count("items") == world.count("deliveries") == world.count(ITEM_LEAVES) == 0
