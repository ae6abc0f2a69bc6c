"""The gateway's TAXII 2.1 server in process: media types, authentication, paging (issue 12)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from msmt.gateway.config import Credentials, hash_password, hash_token
from msmt.gateway.store import Store, follow_once, timestamp
from msmt.gateway.taxii import TAXII_MEDIA_TYPE, collection_id, create_app

from .stix_samples import bundle, indicator
from .support import FakeInbox, batch, received

ACCEPT = {"Accept": TAXII_MEDIA_TYPE}


def basic(user: str, password: str) -> dict[str, str]:
    return {**ACCEPT, "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ANALYST = basic("analyst", "correct horse")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    credentials = Credentials(
        {"analyst": hash_password("correct horse", n=2**10)}, {"opencti": hash_token("t0k3n")}
    )
    with TestClient(create_app(store, credentials)) as client:
        yield client, store
    store.close()


def test_nobody_reads_without_credentials(app: tuple[TestClient, Store]) -> None:
    client, _ = app
    for headers in (
        ACCEPT,
        basic("analyst", "wrong"),
        basic("mallory", "correct horse"),
        {**ACCEPT, "Authorization": "Bearer nope"},
    ):
        r = client.get("/taxii2/", headers=headers)
        assert r.status_code == 401 and r.headers["content-type"] == TAXII_MEDIA_TYPE
        assert r.headers["www-authenticate"].startswith("Basic")
    assert client.get("/taxii2/", headers={**ACCEPT, "Authorization": "Bearer t0k3n"}).status_code == 200
    assert client.get("/taxii2/", headers={**ACCEPT, "Authorization": "Token t0k3n"}).status_code == 200


def test_discovery_api_root_and_media_types(app: tuple[TestClient, Store]) -> None:
    client, _ = app
    r = client.get("/taxii2/", headers=ANALYST)
    assert r.status_code == 200 and r.headers["content-type"] == TAXII_MEDIA_TYPE
    root = r.json()["api_roots"][0]
    assert root.endswith("/msmt/") and r.json()["default"] == root
    info = client.get("/msmt/", headers=ANALYST).json()
    assert info["versions"] == [TAXII_MEDIA_TYPE] and info["max_content_length"] > 0
    assert client.get("/msmt/", headers={**ANALYST, "Accept": "text/html"}).status_code == 406
    assert client.get("/nope/collections/", headers=ANALYST).status_code == 404
    assert client.get("/msmt/status/abc/", headers=ANALYST).status_code == 404


def test_one_collection_per_originator_with_paging_headers(app: tuple[TestClient, Store]) -> None:
    client, store = app
    kor = [indicator("GREEN") for _ in range(5)]
    jpn = indicator("AMBER")
    follow_once(
        FakeInbox(
            [batch([received(1, bundle(*kor, levels=("GREEN",))), received(2, bundle(jpn), origin="JPN")])]
        ),
        store,
    )
    listed = client.get("/msmt/collections/", headers=ANALYST).json()["collections"]
    assert [c["title"] for c in listed] == ["JPN", "KOR"]
    assert all(c["can_read"] and not c["can_write"] for c in listed)
    kor_url = f"/msmt/collections/{collection_id('KOR')}"
    assert client.get(f"{kor_url}/", headers=ANALYST).json()["title"] == "KOR"

    r = client.get(f"{kor_url}/objects/", headers=ANALYST, params={"limit": 4})
    page = r.json()
    assert page["more"] is True and len(page["objects"]) == 4
    assert r.headers["X-TAXII-Date-Added-First"] <= r.headers["X-TAXII-Date-Added-Last"]
    rest = client.get(
        f"{kor_url}/objects/", headers=ANALYST, params={"limit": 4, "next": page["next"]}
    ).json()
    assert rest["more"] is False and "next" not in rest
    ids = [o["id"] for o in page["objects"] + rest["objects"]]
    assert ids[1:] == [o["id"] for o in kor]

    after = client.get(
        f"{kor_url}/objects/", headers=ANALYST, params={"added_after": r.headers["X-TAXII-Date-Added-Last"]}
    ).json()
    assert [o["id"] for o in after["objects"]] == ids[4:]
    one = client.get(f"{kor_url}/objects/{kor[0]['id']}/", headers=ANALYST).json()
    assert one["objects"] == [kor[0]]
    assert (
        client.get(f"{kor_url}/objects/{jpn['id']}/", headers=ANALYST).status_code == 404
    )  # another collection
    versions = client.get(f"{kor_url}/objects/{kor[0]['id']}/versions/", headers=ANALYST).json()
    assert versions["versions"] == ["2026-03-01T10:00:00.000000Z"]
    manifest = client.get(f"{kor_url}/manifest/", headers=ANALYST, params={"match[type]": "indicator"}).json()
    assert [m["id"] for m in manifest["objects"]] == [o["id"] for o in kor]
    assert manifest["objects"][0]["media_type"] == "application/stix+json;version=2.1"
    assert client.post(f"{kor_url}/objects/", headers=ANALYST, json={}).status_code == 403
    assert (
        client.get(f"{kor_url}/objects/", headers=ANALYST, params={"added_after": "yesterday"}).status_code
        == 400
    )
    assert client.get(f"{kor_url}/objects/", headers=ANALYST, params={"limit": "0"}).status_code == 400
    assert client.get("/msmt/collections/not-a-collection/objects/", headers=ANALYST).status_code == 404
    assert timestamp(0) == "1970-01-01T00:00:00.000000Z"
