"""Signed delivery receipts and the checks that find a dropped delivery, on both databases."""

from __future__ import annotations

from sqlalchemy import text

from broker.store.db import make_engine
from msmt.core import SigningPrivateKey, canonical
from msmt.core.receipt import DeliveryReceipt, sign_receipt

from .conftest import World
from .test_client import MARKINGS, client


def _sql(world: World, statement: str, **params: object) -> list[tuple[object, ...]]:
    engine = make_engine(world.url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_a_recipients_signed_receipt_is_the_originators_proof_of_delivery(world: World) -> None:
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        receipt = kor.send(b"r", content_type="text/plain", markings=MARKINGS, recipients=["USA", "JPN"])
        assert kor.delivery_proofs(receipt.item_id) == {"USA": "missing", "JPN": "missing"}
        (delivery,) = usa.inbox().deliveries
        assert usa.confirm([usa.open(delivery)]) == [delivery.seq]
        assert kor.delivery_proofs(receipt.item_id) == {"USA": "signed", "JPN": "missing"}
    world.settle()
    kinds = [r[0] for r in _sql(world, "SELECT kind FROM log_entries ORDER BY log_index")]
    assert kinds.count("receipt") == 1  # the receipt itself is in the log


def _post(world: World, who: str, data: bytes) -> object:
    return world.client.post(
        "/v1/inbox/receipts", json={"receipts": [canonical.b64encode(data)]}, headers=world.auth(who)
    )


def test_receipts_that_do_not_match_a_delivery_are_refused_and_nothing_is_kept(world: World) -> None:
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        sent = kor.send(b"r", content_type="text/plain", markings=MARKINGS, recipients=["USA", "JPN"])
        (delivery,) = usa.inbox().deliveries
        received = usa.open(delivery)
    good = DeliveryReceipt(sent.item_id, received.envelope_sha256, "USA", delivery.seq, delivery.log_index, 1)
    usa_key = world.members["USA"].signing
    cases = {
        "for another recipient": (sign_receipt(DeliveryReceipt(**{**good.__dict__, "recipient": "JPN"}), usa_key), "bad-receipt"),
        "another inbox entry": (sign_receipt(DeliveryReceipt(**{**good.__dict__, "seq": 7}), usa_key), "unknown-delivery"),
        "other bytes": (sign_receipt(DeliveryReceipt(**{**good.__dict__, "envelope_sha256": "0" * 64}), usa_key), "bad-receipt"),
        "a key USA does not hold": (sign_receipt(good, SigningPrivateKey.generate()), "bad-receipt"),
        "not a receipt": (b'{"receipt":1}', "bad-receipt"),
    }  # fmt: skip
    for name, (data, code) in cases.items():
        r = _post(world, "USA", data)
        assert r.status_code == 422 and r.json()["type"].endswith(code), (name, r.text)  # type: ignore[attr-defined]
    assert _sql(world, "SELECT count(*) FROM delivery_receipts") == [(0,)]
    assert _post(world, "USA", sign_receipt(good, usa_key)).status_code == 200  # type: ignore[attr-defined]
    assert _sql(world, "SELECT count(*) FROM delivery_receipts") == [(1,)]


def test_a_deleted_delivery_shows_as_a_gap_and_a_missing_receipt(world: World) -> None:
    """The operator deletes USA's second delivery row: USA's audit sees the gap in its inbox
    numbers, and KOR sees that USA has no delivery, let alone a receipt."""
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        sent = [
            kor.send(f"item {i}".encode(), content_type="text/plain", markings=MARKINGS, recipients=["USA"])
            for i in range(3)
        ]
        assert usa.inbox_gaps() == []
        usa.confirm([usa.open(d) for d in usa.inbox().deliveries if d.item_id != sent[1].item_id])
        _sql(world, "DELETE FROM deliveries WHERE item_id = :i AND recipient = 'USA'", i=sent[1].item_id)
        assert usa.inbox_gaps() == [2]
        assert kor.delivery_proofs(sent[0].item_id) == {"USA": "signed"}
        assert kor.delivery_proofs(sent[1].item_id) == {"USA": "no delivery"}
        assert kor.trust.sent_items == [s.item_id for s in sent]
