"""The gateway marks withdrawn items (issue 13): their STIX objects get a revoked version, and a
TLP:RED item's plaintext is deleted unless the gateway keeps it; a withdrawal that is not the
item's originator's own signed statement changes nothing."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from msmt import reports
from msmt.client import Client
from msmt.core import Markings
from msmt.gateway.config import Credentials, hash_password
from msmt.gateway.store import Store, follow_once, parse_timestamp_us
from msmt.gateway.taxii import TAXII_MEDIA_TYPE, collection_id, create_app
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, postgresql_schema, root_of

from .stix_samples import bundle, indicator, vessel_report
from .support import FakeInbox, batch, received, withdrawal

TOMBSTONE = {"type", "spec_version", "id", "created", "object_marking_refs", "modified", "revoked"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'gateway.db'}"
        else:
            url = stack.enter_context(postgresql_schema())
        s = Store(url)
        stack.callback(s.close)
        yield s


def versions(store: Store, object_id: str) -> list[dict[str, Any]]:
    return store.objects("KOR", ids=[object_id], versions=["all"]).objects


def latest(store: Store, object_id: str) -> dict[str, Any]:
    (obj,) = store.objects("KOR", ids=[object_id]).objects
    return obj


def test_a_withdrawal_revokes_the_items_stix_objects_in_a_new_version(store: Store) -> None:
    ind, rep = indicator("AMBER"), vessel_report("AMBER")
    item = received(1, bundle(ind, rep, levels=("AMBER",)), tlp="AMBER")
    item_id = item.opened.header.item_id
    inbox = FakeInbox([batch([item]), batch([withdrawal(2, item_id)])])
    follow_once(inbox, store)
    followed = follow_once(inbox, store)
    assert followed.saved.withdrawn == 1 and inbox.acknowledged == [1, 2]

    (marked,) = store.withdrawals(item_id)
    assert marked.applied_ms is not None and marked.refused is None
    assert marked.reason == "Mis-sent: the vessel was misidentified."
    assert (marked.revoked, marked.plaintext_deleted) == (2, False)  # not the TLP definition
    stored = store.item(item_id)
    assert stored is not None and stored.payload == item.payload  # AMBER: kept
    for original in (ind, rep):
        first, second = versions(store, original["id"])
        assert first == original  # the version sent stays, as sent
        assert second == {**original, "modified": second["modified"], "revoked": True}
        assert parse_timestamp_us(second["modified"]) > parse_timestamp_us(original["modified"])
        assert latest(store, original["id"]) == second
    definition = next(o for o in store.objects("KOR").objects if o["type"] == "marking-definition")
    assert "revoked" not in definition


def test_a_withdrawn_tlp_red_items_plaintext_is_deleted(store: Store) -> None:
    secret = indicator("RED", value="203.0.113.99")
    item = received(1, bundle(secret, levels=("RED",)), tlp="RED")
    item_id = item.opened.header.item_id
    follow_once(FakeInbox([batch([item]), batch([withdrawal(2, item_id)])]), store)
    assert b"203.0.113.99" in (store.item(item_id) or pytest.fail()).payload
    follow_once(FakeInbox([batch([withdrawal(2, item_id)])]), store)

    (marked,) = store.withdrawals(item_id)
    assert (marked.revoked, marked.plaintext_deleted) == (1, True)
    stored = store.item(item_id)
    assert stored is not None and stored.payload == b"" and json.loads(stored.header)["item_id"] == item_id
    # only the revoked version is left, and it holds nothing but what identifies the object
    (tombstone,) = versions(store, secret["id"])
    assert set(tombstone) == TOMBSTONE and tombstone["revoked"] is True
    assert tombstone["object_marking_refs"] == secret["object_marking_refs"]
    served = json.dumps(store.objects("KOR", versions=["all"]).objects)
    assert "203.0.113.99" not in served and "pattern" not in served
    if store.url.startswith("sqlite"):  # not left in the file's free pages either
        assert b"203.0.113.99" not in Path(store.url.removeprefix("sqlite:///")).read_bytes()


def test_keep_withdrawn_keeps_a_red_items_plaintext(store: Store) -> None:
    secret = indicator("RED", value="203.0.113.99")
    item = received(1, bundle(secret, levels=("RED",)), tlp="RED")
    item_id = item.opened.header.item_id
    inbox = FakeInbox([batch([item]), batch([withdrawal(2, item_id)])])
    follow_once(inbox, store, keep_withdrawn=True)
    follow_once(inbox, store, keep_withdrawn=True)
    (marked,) = store.withdrawals(item_id)
    assert (marked.revoked, marked.plaintext_deleted) == (1, False)
    assert (store.item(item_id) or pytest.fail()).payload == item.payload
    first, second = versions(store, secret["id"])
    assert first == secret and second["revoked"] is True and second["pattern"] == secret["pattern"]


def forged(item_id: str) -> list[tuple[str, Any]]:
    return [
        # another member withdraws KOR's item, with its own valid statement
        ("not-its-item", withdrawal(2, item_id, origin="JPN")),
        # JPN sends KOR's genuine-looking statement: the statement is not the sender's
        ("not-the-senders", withdrawal(2, item_id, origin="JPN", country="KOR")),
        # KOR's envelope, but the statement is signed with a key that is not KOR's
        ("wrong-key", withdrawal(2, item_id, signer=_KEYS["JPN"].signing)),
        # the statement withdraws another item than the one the envelope replies to
        ("other-item", withdrawal(2, item_id, in_reply_to="01a2c3d4-0000-7000-8000-000000000001")),
    ]


@pytest.mark.parametrize("case", [name for name, _ in forged("01a2c3d4-0000-7000-8000-000000000000")])
def test_a_withdrawal_that_is_not_the_originators_own_changes_nothing(store: Store, case: str) -> None:
    secret = indicator("RED", value="203.0.113.99")
    item = received(1, bundle(secret, levels=("RED",)), tlp="RED")
    item_id = item.opened.header.item_id
    follow_once(FakeInbox([batch([item])]), store)
    bad = dict(forged(item_id))[case]
    followed = follow_once(FakeInbox([batch([bad])]), store)
    assert followed.saved.withdrawn == 0 and followed.saved.stored == 1  # stored, as what it is
    (refused,) = store.withdrawals()
    assert refused.applied_ms is None and refused.refused, refused.refused
    assert (store.item(item_id) or pytest.fail()).payload == item.payload
    assert versions(store, secret["id"]) == [secret]


def test_a_withdrawal_received_before_its_item_applies_when_the_item_arrives(store: Store) -> None:
    ind = indicator("RED")
    item = received(2, bundle(ind, levels=("RED",)), tlp="RED")
    item_id = item.opened.header.item_id
    inbox = FakeInbox([batch([withdrawal(1, item_id)]), batch([item])])
    assert follow_once(inbox, store).saved.withdrawn == 0
    (pending,) = store.withdrawals(item_id)
    assert pending.applied_ms is None and pending.refused is None
    assert follow_once(inbox, store).saved.withdrawn == 1
    (marked,) = store.withdrawals(item_id)
    assert marked.plaintext_deleted and (store.item(item_id) or pytest.fail()).payload == b""
    (tombstone,) = versions(store, ind["id"])
    assert tombstone["revoked"] is True


def test_an_object_a_later_item_updated_is_not_revoked(store: Store) -> None:
    ind, other = indicator("AMBER"), indicator("AMBER", value="192.0.2.1")
    newer = {**copy.deepcopy(ind), "modified": "2026-03-05T10:00:00.000Z", "name": "C2 server, confirmed"}
    first = received(1, bundle(ind, other, levels=("AMBER",)))
    second = received(2, bundle(newer, levels=("AMBER",)))
    first_id = first.opened.header.item_id
    inbox = FakeInbox([batch([first, second]), batch([withdrawal(3, first_id)])])
    follow_once(inbox, store)
    follow_once(inbox, store)
    (marked,) = store.withdrawals(first_id)
    assert marked.revoked == 1  # `other` only: KOR's later item still stands behind `newer`
    assert latest(store, ind["id"]) == newer
    assert latest(store, other["id"])["revoked"] is True


def test_taxii_serves_the_revoked_version(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    ind = indicator("GREEN")
    item = received(1, bundle(ind, levels=("GREEN",)), tlp="GREEN")
    inbox = FakeInbox([batch([item]), batch([withdrawal(2, item.opened.header.item_id)])])
    follow_once(inbox, store)
    auth = base64.b64encode(b"analyst:correct horse").decode()
    headers = {"Accept": TAXII_MEDIA_TYPE, "Authorization": f"Basic {auth}"}
    credentials = Credentials({"analyst": hash_password("correct horse", n=2**10)})
    base = f"/msmt/collections/{collection_id('KOR')}/objects"
    with TestClient(create_app(store, credentials)) as taxii:
        before = taxii.get(f"{base}/", headers=headers).json()
        added_last = before and taxii.get(f"{base}/", headers=headers).headers["X-TAXII-Date-Added-Last"]
        follow_once(inbox, store)
        listed = taxii.get(f"{base}/{ind['id']}/versions/", headers=headers).json()["versions"]
        assert listed[0] == ind["modified"].replace(".000Z", ".000000Z") and len(listed) == 2
        (now,) = taxii.get(f"{base}/{ind['id']}/", headers=headers).json()["objects"]
        assert now["revoked"] is True and now["modified"] == listed[1]
        # a consumer polling with added_after sees the new version
        newer = taxii.get(f"{base}/", params={"added_after": added_last}, headers=headers).json()
        assert [(o["id"], o.get("revoked")) for o in newer["objects"]] == [(ind["id"], True)]
        manifest = taxii.get(f"/msmt/collections/{collection_id('KOR')}/manifest/", headers=headers).json()
        assert {r["version"] for r in manifest["objects"] if r["id"] == ind["id"]} == {listed[1]}
    store.close()


FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}


def test_against_a_real_broker_the_originators_withdrawal_is_applied(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    trust = TrustStore.pin(root_of(url))
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    secret = indicator("RED", value="203.0.113.99")
    markings = Markings.create("RESTRICTED", "RED", ["USA"], topics=["cyber"])
    with (
        broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _),
        Client(base, _KEYS["KOR"], trust=trust, audience=AUDIENCE) as kor,
        Client(base, _KEYS["USA"], trust=trust, audience=AUDIENCE) as usa,
    ):
        sent = kor.send(
            json.dumps(bundle(secret, levels=("RED",))).encode(),
            content_type="application/stix+json",
            markings=markings,
        )
        item_id = sent.item_id
        assert follow_once(usa, store).saved.objects == 2
        reports.send_withdrawal(kor, item_id, "Sent to the wrong partner.", ["USA"], markings)
        followed = follow_once(usa, store)
    store_item = store.item(item_id)
    assert followed.saved.withdrawn == 1 and store_item is not None and store_item.payload == b""
    (marked,) = store.withdrawals(item_id)
    assert marked.reason == "Sent to the wrong partner." and marked.plaintext_deleted
    (tombstone,) = versions(store, secret["id"])
    assert tombstone["revoked"] is True and "pattern" not in tombstone
    store.close()
