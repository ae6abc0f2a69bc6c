"""RecentDeliveries: what a broker process hands its own woken streams and long-polls from
memory. It may only answer when it holds the very next inbox number after the reader's cursor:
anything else (a gap another process numbered, a cursor behind what it kept, nothing newer)
is None, and the reader goes to the database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.services import notify
from broker.services.notify import RecentDeliveries, encode_delivery, encode_page, page_json


def view(seq: int, expires_ms: int | None = None) -> tuple[int, dict[str, Any], int | None]:
    item = shown(seq)
    del item["seq"]
    return seq, item, expires_ms


def shown(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "item_id": f"00000000-0000-7000-8000-{seq:012d}",
        "originator": "KOR",
        "created_ms": 1,
        "received_ms": 2,
        "classification": "RESTRICTED",
        "tlp": "AMBER",
        "content_type": "text/plain",
        "size": 10,
        "log_index": 100 + seq,
        "state": "pending",
    }


def seqs(found: list[notify.Recent] | None) -> list[int] | None:
    return None if found is None else [r.seq for r in found]


def test_what_follows_the_cursor_is_given_only_from_the_next_number_on() -> None:
    recent = RecentDeliveries()
    recent.keep({"USA": [view(5), view(6), view(7)]})
    assert seqs(recent.after("USA", 4, 100)) == [5, 6, 7]
    assert seqs(recent.after("USA", 5, 100)) == [6, 7]
    assert seqs(recent.after("USA", 6, 1)) == [7]
    assert seqs(recent.after("USA", 5, 1)) == [6]
    # the reader is behind what is kept (4 lies between): only the database knows 4
    assert recent.after("USA", 3, 100) is None
    assert recent.after("USA", 0, 100) is None
    # nothing newer than the cursor in memory: that is not "nothing new" (another process)
    assert recent.after("USA", 7, 100) is None
    assert recent.after("USA", 9, 100) is None
    assert recent.after("JPN", 0, 100) is None


def test_a_gap_starts_a_new_run_so_a_reader_never_jumps_it() -> None:
    recent = RecentDeliveries()
    recent.keep({"USA": [view(1), view(2)]})
    recent.keep({"USA": [view(3)]})  # consecutive: the same run
    assert seqs(recent.after("USA", 0, 100)) == [1, 2, 3]
    recent.keep({"USA": [view(6), view(7)]})  # 4 and 5 were numbered by another process
    assert recent.after("USA", 3, 100) is None  # not [6, 7]: that would skip 4 and 5
    assert recent.after("USA", 0, 100) is None
    assert seqs(recent.after("USA", 5, 100)) == [6, 7]


def test_only_the_newest_are_kept_and_only_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    recent = RecentDeliveries(per_recipient=3, max_age_s=5.0)
    recent.keep({"USA": [view(n) for n in range(1, 6)]})
    assert recent.after("USA", 1, 100) is None  # 2 fell out
    assert seqs(recent.after("USA", 2, 100)) == [3, 4, 5]
    clock = [1000.0]
    monkeypatch.setattr(notify.time, "monotonic", lambda: clock[0])
    recent.keep({"JPN": [view(1)]})
    clock[0] += 4.9
    assert seqs(recent.after("JPN", 0, 100)) == [1]
    clock[0] += 0.2
    assert recent.after("JPN", 0, 100) is None


def test_an_expired_item_is_shown_as_unavailable_when_it_is_read() -> None:
    recent = RecentDeliveries()
    recent.keep({"USA": [view(1, expires_ms=1000), view(2)]})
    found = recent.after("USA", 0, 100)
    assert found is not None
    before = json.loads(page_json([r.shown(999) for r in found], 2))
    after = json.loads(page_json([r.shown(1000) for r in found], 2))
    assert "unavailable" not in before["deliveries"][0]
    assert after["deliveries"][0]["unavailable"] == "expired"
    assert "unavailable" not in after["deliveries"][1]
    assert "expires_ms" not in after["deliveries"][0]  # not part of the inbox's view
    assert after["cursor"] == 2


def test_the_encoding_is_the_api_models() -> None:
    from broker.api.schemas import InboxPage

    one = shown(3)
    model = InboxPage(deliveries=[one, {**one, "unavailable": "expired"}], cursor=3)  # type: ignore[list-item]
    ours = page_json([encode_delivery(one), encode_delivery({**one, "unavailable": "expired"})], 3)
    assert ours == model.model_dump_json(exclude_none=True).encode()


def test_pages_with_envelopes_and_proofs_encode_as_the_model() -> None:
    """The inbox's own pages (GET /v1/inbox and the stream's database reads) bypass the model's
    serialisation: every optional member, in the model's order, gives the model's bytes."""
    from broker.api.schemas import InboxPage

    page = {
        "deliveries": [
            {**shown(4), "envelope": "QUJD" * 5000, "leaf": "bGVhZg", "inclusion": ["aA", "aQ"]},
            {**shown(5), "unavailable": "purged", "leaf": "bGVhZg", "inclusion": []},
            {**shown(6), "unavailable": "expired"},
            {**shown(7), "envelope": "QQ"},
        ],
        "cursor": 7,
    }
    model = InboxPage(**page)  # type: ignore[arg-type]
    assert encode_page(page) == model.model_dump_json(exclude_none=True).encode()
    assert encode_page({"deliveries": [], "cursor": 9}) == b'{"deliveries":[],"cursor":9}'


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)  # any Unicode scalar: controls, U+2028, emoji


@settings(max_examples=300, deadline=None)
@given(
    content_type=_TEXT,
    classification=_TEXT,
    tlp=_TEXT,
    seq=st.integers(1, 2**63 - 1),
    size=st.integers(0, 2**53),
)
def test_any_text_encodes_as_the_model(
    content_type: str, classification: str, tlp: str, seq: int, size: int
) -> None:
    from broker.api.schemas import Delivery

    view = {
        **shown(1),
        "seq": seq,
        "content_type": content_type,
        "classification": classification,
        "tlp": tlp,
        "size": size,
    }
    assert encode_delivery(view) == Delivery(**view).model_dump_json(exclude_none=True).encode()


def test_the_end_of_an_inbox_is_known_only_from_the_newest_number_and_only_briefly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(notify.time, "monotonic", lambda: clock[0])
    recent = RecentDeliveries(max_age_s=5.0)
    assert not recent.at_end("USA", 0)  # nothing numbered here: only the database knows
    recent.keep({"USA": [view(5), view(6)], "JPN": []})
    assert recent.at_end("USA", 6)
    assert not recent.at_end("USA", 5)  # 6 follows
    assert not recent.at_end("USA", 7)  # a cursor past what this process numbered
    assert not recent.at_end("JPN", 0)
    recent.keep({"USA": [view(9)]})  # 7 and 8 were numbered elsewhere: 9 is still the end
    assert recent.at_end("USA", 9) and not recent.at_end("USA", 6)
    clock[0] += 5.1
    assert not recent.at_end("USA", 9)


def test_a_wake_up_without_deliveries_makes_the_end_unknown() -> None:
    notifier = notify.InboxNotifier()
    notifier.publish(["USA", "JPN"], {"USA": [view(1)], "JPN": [view(4)]})
    assert notifier.recent.at_end("USA", 1) and notifier.recent.at_end("JPN", 4)
    notifier.publish(["USA"])  # another process's NOTIFY: it numbered something for USA
    assert not notifier.recent.at_end("USA", 1)
    assert notifier.recent.at_end("JPN", 4)
    notifier.publish(["JPN", "USA"], {"USA": [view(2)]})  # JPN named without its deliveries
    assert notifier.recent.at_end("USA", 2) and not notifier.recent.at_end("JPN", 4)
    notifier.publish(["USA"], {"USA": [view(3)]})
    notifier.wake_all()  # the listener reconnected: notifications may have been missed
    assert not notifier.recent.at_end("USA", 3)
