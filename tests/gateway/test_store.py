"""The gateway's database and its inbox follower: stored durably, then acknowledged (issue 12)."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from msmt.gateway.store import Backoff, Store, follow, follow_once
from tests.integration.conftest import postgresql_schema

from .stix_samples import bundle, indicator
from .support import FakeInbox, batch, received, rejected


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


def test_the_database_file_is_0600(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db' / 'gateway.db'}")
    path = tmp_path / "db" / "gateway.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.cursor() == 0
    store.close()


def test_an_item_is_stored_with_header_provenance_and_payload_before_it_is_acknowledged(store: Store) -> None:
    red = indicator("RED")
    item = received(1, bundle(red, indicator("GREEN"), levels=("GREEN", "RED")), tlp="RED")
    md = received(2, b"# Arms transfer\n\nA report.")
    seen: list[int] = []

    def check_stored(items: list[object]) -> None:  # the broker hears of it only once committed
        seen.extend(1 for _ in items)
        assert store.item(item.opened.header.item_id) is not None
        assert store.item(md.opened.header.item_id) is not None

    inbox = FakeInbox([batch([item, md])], on_confirm=check_stored)
    followed = follow_once(inbox, store)
    assert inbox.acknowledged == [1, 2] and seen == [1, 1]
    assert followed.saved.stored == 2 and followed.saved.objects == 4 and store.cursor() == 2

    row = store.item(item.opened.header.item_id)
    assert row is not None
    header = item.opened.header
    assert (row.originator, row.signing_key_id, row.log_index, row.tlp) == (
        "KOR",
        header.originator_key_id,
        41,
        "RED",
    )
    assert json.loads(row.header)["item_id"] == header.item_id
    assert "wrapped_key" not in row.header
    assert json.loads(row.payload)["objects"][2]["id"] == red["id"]
    assert row.stix_error is None
    page = store.objects("KOR", limit=10)
    assert [o["id"] for o in page.objects][2] == red["id"] and not page.more


def test_a_crash_between_store_and_ack_duplicates_nothing(store: Store) -> None:
    item = received(1, bundle(indicator("AMBER"), levels=("AMBER",)))
    inbox = FakeInbox([batch([item])], fail_confirm=1)
    with pytest.raises(Exception, match="acknowledging"):
        follow_once(inbox, store)
    assert inbox.acknowledged == [] and store.cursor() == 0  # stored, not acknowledged
    again = follow_once(inbox, store)  # the broker re-delivers it
    assert again.saved.stored == 0 and again.saved.duplicates == 1
    assert inbox.acknowledged == [1] and store.cursor() == 1
    assert len(store.items()) == 1 and len(store.objects("KOR").objects) == 2


def test_a_rejected_delivery_is_kept_and_never_acknowledged(store: Store) -> None:
    good = received(2, b"fine")
    inbox = FakeInbox([batch([good], [rejected(1)])])
    followed = follow_once(inbox, store)
    assert followed.saved.rejected == 1 and inbox.acknowledged == [2] and store.cursor() == 2


def test_stix_looser_than_its_objects_is_stored_but_not_served(store: Store) -> None:
    red = indicator("RED")
    item = received(1, bundle(red, levels=("RED",)), tlp="AMBER")
    follow_once(FakeInbox([batch([item])]), store)
    row = store.item(item.opened.header.item_id)
    assert row is not None and row.stix_error is not None and red["id"] in row.stix_error
    assert store.objects("KOR").objects == []


def test_pages_versions_and_filters(store: Store) -> None:
    first = indicator("GREEN")
    newer = dict(first, modified="2026-04-01T00:00:00Z", name="renamed")
    others = [indicator() for _ in range(4)]
    follow_once(FakeInbox([batch([received(1, bundle(first, *others))])]), store)
    follow_once(FakeInbox([batch([received(2, bundle(newer))], cursor=2)]), store)
    everything = store.objects("KOR", versions=["all"], limit=100)
    assert len(everything.objects) == 6
    latest = store.objects("KOR")
    assert [o.get("name") for o in latest.objects if o["id"] == first["id"]] == ["renamed"]
    assert [o["id"] for o in store.objects("KOR", versions=["first"], ids=[first["id"]]).objects] == [
        first["id"]
    ]
    assert store.objects("KOR", types=["report"]).objects == []
    page = store.objects("KOR", limit=2, versions=["all"])
    walked = list(page.objects)
    while page.more:
        page = store.objects("KOR", limit=2, versions=["all"], next_token=page.next)
        walked += page.objects
    assert walked == everything.objects
    assert all(a < b for a, b in zip(everything.added, everything.added[1:], strict=False))
    after = store.objects("KOR", added_after_us=everything.added[2], versions=["all"])
    assert after.objects == everything.objects[3:]


def test_follow_reconnects_forever_with_capped_backoff(store: Store) -> None:
    item = received(1, b"after the outage")
    inbox = FakeInbox([batch([item])], fail_receive=9)
    stop = threading.Event()
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if inbox.acknowledged:
            stop.set()

    follow(inbox, store, stop, wait=0, backoff=Backoff(first=1, cap=8), sleep=sleep)
    assert inbox.acknowledged == [1]
    outage = delays[:9]
    assert len(outage) == 9 and max(outage) <= 8
    assert outage[0] <= 1 and outage[4] >= 4  # exponential, then capped (jitter is 50-100 %)
    assert all(d >= 0.5 * min(2**i, 8) for i, d in enumerate(outage))
