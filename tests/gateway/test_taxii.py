"""End to end: KOR sends a STIX bundle to USA through a real broker; USA's gateway follows its
inbox once; taxii2-client reads exactly those objects back from the KOR collection (issue 12)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from taxii2client.v21 import Server, as_pages  # type: ignore[import-untyped]

from msmt.client import Client
from msmt.core import Markings
from msmt.gateway.config import Credentials, hash_password
from msmt.gateway.stix import check_outgoing, derive_tlp
from msmt.gateway.store import Store, follow_once
from msmt.gateway.taxii import collection_id, create_app
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server, free_port
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .stix_samples import bundle, indicator, vessel_report


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn in a thread, on a free port; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_taxii2_client_reads_what_kor_sealed_for_usa(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    root = root_of(url)
    sent = bundle(
        vessel_report("AMBER"),
        *(indicator("GREEN", value=f"203.0.113.{n}") for n in range(4)),
        levels=("GREEN", "AMBER"),
    )
    payload = json.dumps(sent).encode()
    markings = Markings.create("RESTRICTED", derive_tlp(sent), ["USA"], topics=["maritime"])
    assert markings.tlp == "AMBER"
    check_outgoing(payload, "application/stix+json", markings)  # what `send` will do before sealing

    store = Store(f"sqlite:///{tmp_path / 'usa' / 'gateway.db'}")
    with (
        broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _),
        Client(base, _KEYS["KOR"], trust=TrustStore.pin(root), audience=AUDIENCE) as kor,
        Client(base, _KEYS["USA"], trust=TrustStore.pin(root), audience=AUDIENCE) as usa,
    ):
        receipt = kor.send(
            payload, content_type="application/stix+json", markings=markings, recipients=["USA"]
        )
        kor.send(b"# not STIX", content_type="text/markdown", markings=markings, recipients=["USA"])
        followed = follow_once(usa, store)
        assert followed.saved.stored == 2 and followed.acknowledged == 2
        assert follow_once(usa, store).handled == 0  # acknowledged: nothing left in the inbox

    item = store.item(receipt.item_id)
    assert item is not None and item.originator == "KOR" and item.log_index == receipt.log_index

    credentials = Credentials({"analyst": hash_password("correct horse battery", n=2**10)})
    with serving(create_app(store, credentials)) as gateway:
        server = Server(f"{gateway}/taxii2/", user="analyst", password="correct horse battery")
        assert server.title and len(server.api_roots) == 1
        api_root = server.api_roots[0]
        collections = {c.title: c for c in api_root.collections}
        assert set(collections) == {"KOR"}
        kor_collection = collections["KOR"]
        assert kor_collection.id == collection_id("KOR") and kor_collection.can_read

        received: list[dict[str, Any]] = []
        pages = 0
        for envelope in as_pages(kor_collection.get_objects, per_request=2):
            received += envelope.get("objects", [])
            pages += 1
        assert pages == 4  # 7 objects, 2 a page
        assert received == sent["objects"]  # exactly what KOR sealed, TLP definitions included
        definitions = {o["name"] for o in received if o["type"] == "marking-definition"}
        assert definitions == {"TLP:GREEN", "TLP:AMBER"}

        manifest = kor_collection.get_manifest()
        assert [m["id"] for m in manifest["objects"]] == [o["id"] for o in sent["objects"]]
        report = sent["objects"][2]
        assert kor_collection.get_object(report["id"])["objects"] == [report]

        refused = Server(f"{gateway}/taxii2/", user="analyst", password="wrong")
        try:
            refused.refresh()
        except Exception as exc:
            assert "401" in str(exc)
        else:
            raise AssertionError("a wrong password was let in")
    store.close()
