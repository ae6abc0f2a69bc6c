"""TAXII 2.1 POST to a writable collection: KOR's gateway seals and sends what an analyst posts,
through a real broker, to exactly the partners policy allows (issue 12)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from taxii2client.v21 import Server  # type: ignore[import-untyped]

from msmt.client import Client
from msmt.core import Markings
from msmt.errors import BrokerUnavailable
from msmt.gateway.config import Credentials, SendProfile, hash_password
from msmt.gateway.send import Sender
from msmt.gateway.store import Store
from msmt.gateway.taxii import TAXII_MEDIA_TYPE, create_app, send_collection_id
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .stix_samples import bundle, indicator, vessel_report
from .test_taxii import serving

PASSWORD = "correct horse battery"
PROFILES = (
    SendProfile.from_dict(
        "usa-amber",
        {
            "classification": "RESTRICTED",
            "tlp": "AMBER",
            "releasable_to": ["USA", "JPN"],
            "topics": ["maritime"],
            "recipients": ["USA"],
            "writers": ["analyst"],
        },
    ),
    SendProfile.from_dict(
        "all-clear",
        {
            "classification": "RESTRICTED",
            "tlp": "CLEAR",
            "releasable_to": ["ALL"],
            "topics": ["maritime"],
            "writers": ["analyst"],
        },
    ),
    SendProfile.from_dict(
        "derived",
        {
            "classification": "RESTRICTED",
            "tlp": "bundle",
            "releasable_to": ["ALL"],
            "topics": ["maritime"],
            "writers": ["analyst"],
        },
    ),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real broker; KOR's gateway (send profiles, outbox on disk) serving TAXII; USA's client."""
    tmp = tmp_path_factory.mktemp("send")
    url = f"sqlite:///{tmp / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    root = root_of(url)
    store = Store(f"sqlite:///{tmp / 'kor' / 'gateway.db'}")
    credentials = Credentials(
        {
            "analyst": hash_password(PASSWORD, n=2**10),
            "reader": hash_password(PASSWORD, n=2**10),
        }
    )
    with (
        broker_server(url, AUDIENCE, tmp / "broker.log") as (base, _),
        Client(
            base, _KEYS["KOR"], trust=TrustStore.pin(root, tmp / "kor" / "trust"), audience=AUDIENCE
        ) as kor,
        Client(base, _KEYS["USA"], trust=TrustStore.pin(root), audience=AUDIENCE) as usa,
        Client(base, _KEYS["JPN"], trust=TrustStore.pin(root), audience=AUDIENCE) as jpn,
    ):
        # one item first, so that the log has a checkpoint to verify inboxes against
        warm_up = Markings.create("RESTRICTED", "GREEN", ["USA", "JPN"], topics=["maritime"])
        kor.send(b"# hello", content_type="text/markdown", markings=warm_up, recipients=["USA", "JPN"])
        for partner in (usa, jpn):
            batch = partner.receive(0)
            assert len(batch.received) == 1
            partner.confirm(batch.received)
            CURSORS[id(partner)] = batch.cursor
        sender = Sender(kor, store, PROFILES)
        with serving(create_app(store, credentials, sender=sender)) as gateway:
            yield {"gateway": gateway, "kor": kor, "usa": usa, "jpn": jpn, "sender": sender, "store": store}
    store.close()


def collection(gateway: str, name: str, user: str = "analyst") -> Any:
    server = Server(f"{gateway}/taxii2/", user=user, password=PASSWORD)
    found = {c.title: c for c in server.api_roots[0].collections}
    return found[f"send: {name}"]


CURSORS: dict[int, int] = {}


def drain(client: Client) -> list[tuple[str, dict[str, Any], str]]:
    """Every item in the client's inbox past what was drained before: (originator, payload,
    tlp); acknowledged."""
    out = []
    while True:
        batch = client.receive(CURSORS.get(id(client), 0), limit=100)
        CURSORS[id(client)] = batch.cursor
        if not batch.received:
            return out
        for received in batch.received:
            out.append(
                (
                    received.opened.header.originator,
                    json.loads(received.payload),
                    received.opened.header.markings.tlp,
                )
            )
        client.confirm(batch.received)


def test_taxii2_client_add_objects_sends_exactly_those_objects_to_the_partner(world: dict[str, Any]) -> None:
    drain(world["usa"])
    objects = [*bundle(levels=("GREEN", "AMBER"))["objects"], vessel_report("AMBER"), indicator("GREEN")]
    target = collection(world["gateway"], "usa-amber")
    assert target.can_write and not target.can_read and target.id == send_collection_id("usa-amber")
    status = target.add_objects({"objects": objects})
    assert status.status == "complete"
    assert (status.total_count, status.success_count, status.failure_count, status.pending_count) == (
        4,
        4,
        0,
        0,
    )
    assert [s["id"] for s in status.successes] == [o["id"] for o in objects]
    assert "for USA" in status.successes[0]["message"]
    status.refresh()  # GET .../status/{id}/
    assert status.status == "complete" and status.success_count == 4

    got = drain(world["usa"])
    assert len(got) == 1
    originator, payload, tlp = got[0]
    assert originator == "KOR" and tlp == "AMBER"
    assert payload["type"] == "bundle" and payload["objects"] == objects  # exactly those objects
    assert drain(world["jpn"]) == []  # the profile names USA only

    reader = collection(world["gateway"], "usa-amber", user="reader")
    assert not reader.can_write  # not one of the profile's writers


def test_a_red_bundle_cannot_go_out_as_clear_or_to_all(world: dict[str, Any]) -> None:
    drain(world["usa"])
    red = indicator("RED")
    objects = bundle(indicator("GREEN"), red, levels=("GREEN", "RED"))["objects"]
    clear = collection(world["gateway"], "all-clear")
    with pytest.raises(requests.HTTPError) as caught:
        clear.add_objects({"objects": objects})
    assert caught.value.response.status_code == 422 and red["id"] in caught.value.response.text

    derived = collection(world["gateway"], "derived")  # TLP:RED from the bundle, but to ALL
    with pytest.raises(requests.HTTPError) as caught:
        derived.add_objects({"objects": objects})
    assert caught.value.response.status_code == 422 and red["id"] in caught.value.response.text
    assert "releasable to ALL" in caught.value.response.json()["description"]

    # the TAXII error resource, as a raw client sees it
    r = httpx.post(
        f"{world['gateway']}/msmt/collections/{send_collection_id('all-clear')}/objects/",
        auth=("analyst", PASSWORD),
        headers={"Accept": TAXII_MEDIA_TYPE, "Content-Type": TAXII_MEDIA_TYPE},
        content=json.dumps({"objects": objects}),
    )
    error = r.json()
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/taxii+json")
    assert error["http_status"] == "422" and error["error_code"] == "stix-marking-conflict"
    assert error["details"] == {"object_id": red["id"]} and red["id"] in error["description"]
    assert drain(world["usa"]) == [] and drain(world["jpn"]) == []  # nothing was sent
    assert world["kor"].outbox.pending() == []


def test_bad_posts_get_taxii_errors(world: dict[str, Any]) -> None:
    url = f"{world['gateway']}/msmt/collections/{send_collection_id('usa-amber')}/objects/"
    headers = {"Accept": TAXII_MEDIA_TYPE, "Content-Type": TAXII_MEDIA_TYPE}
    auth = ("analyst", PASSWORD)

    def post(body: Any, **kw: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(url, auth=kw.get("auth", auth), headers=kw.get("headers", headers), content=content)

    assert post({"objects": []}).status_code == 400
    assert post(b"{not json").status_code == 400
    deep = post(b"[" * 100_000 + b"]" * 100_000)  # deeper than the JSON parser's stack: 400, not 500
    assert deep.status_code == 400 and "too deeply" in deep.json()["description"]
    assert (
        post({"objects": [indicator()]}, headers={**headers, "Content-Type": "text/plain"}).status_code == 415
    )
    assert post({"objects": [indicator()]}, auth=("reader", PASSWORD)).status_code == 403
    broken = indicator("GREEN")
    del broken["pattern"]
    r = post({"objects": [broken]})
    assert r.status_code == 422 and r.json()["details"]["object_id"] == broken["id"]
    assert r.json()["error_code"] == "stix-invalid"
    assert post(b"x" * (10 * 1024 * 1024 + 1)).status_code == 413
    kor_read = httpx.get(
        f"{world['gateway']}/msmt/collections/{send_collection_id('usa-amber')}/objects/",
        auth=auth,
        headers={"Accept": TAXII_MEDIA_TYPE},
    )
    assert kor_read.status_code == 403  # a send collection serves nothing
    missing = httpx.get(
        f"{world['gateway']}/msmt/status/{'0' * 8}/", auth=auth, headers={"Accept": TAXII_MEDIA_TYPE}
    )
    assert missing.status_code == 404 and missing.json()["http_status"] == "404"


def test_a_broker_that_does_not_answer_the_submission_leaves_it_pending_then_sent(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    drain(world["usa"])
    kor: Client = world["kor"]
    real = kor._request

    def unreachable_submit(method: str, path: str, **kwargs: Any) -> httpx.Response:
        if method == "POST" and path == "/v1/items":
            raise BrokerUnavailable("cannot reach the broker: connection refused")
        return real(method, path, **kwargs)

    monkeypatch.setattr(kor, "_request", unreachable_submit)
    objects = [indicator("GREEN"), indicator("AMBER")]
    objects = [*bundle(levels=("GREEN", "AMBER"))["objects"], *objects]
    target = collection(world["gateway"], "usa-amber")
    status = target.add_objects({"objects": objects}, wait_for_completion=False)
    assert status.status == "pending" and status.pending_count == 4 and status.success_count == 0
    assert [p["id"] for p in status.pendings] == [o["id"] for o in objects]
    assert len(kor.outbox.pending()) == 1  # sealed and kept
    assert drain(world["usa"]) == []

    monkeypatch.setattr(kor, "_request", real)  # the broker is back
    assert world["sender"].resend() == 1
    status.refresh()
    assert status.status == "complete" and status.success_count == 4 and status.pending_count == 0
    assert kor.outbox.pending() == []
    got = drain(world["usa"])
    assert [payload["objects"] for _, payload, _ in got] == [objects]  # once, exactly those
