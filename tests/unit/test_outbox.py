"""The client's outbox on its own: durable, atomic, named only by ids this agency made."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from msmt.core.ids import new_item_id
from msmt.errors import ClientError
from msmt.outbox import Outbox


@pytest.fixture(params=["folder", "memory"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox" if request.param == "folder" else None)


def test_put_done_refuse_discard(outbox: Outbox) -> None:
    first, second = new_item_id(1_700_000_000_000), new_item_id(1_700_000_000_001)
    outbox.put(second, b"two")
    outbox.put(first, b"one")
    assert [(e.item_id, e.envelope) for e in outbox.pending()] == [(first, b"one"), (second, b"two")]
    outbox.done(first)
    assert [e.item_id for e in outbox.pending()] == [second]
    outbox.refuse(second, 422, "stale-envelope", "too old")
    assert outbox.pending() == []
    (refused,) = outbox.refused()
    assert refused.item_id == second and refused.envelope == b"two"
    assert refused.refusal is not None and refused.refusal["code"] == "stale-envelope"
    assert outbox.discard(second) is True
    assert outbox.refused() == [] and outbox.discard(second) is False


def test_refusing_or_finishing_an_unknown_item_changes_nothing(outbox: Outbox) -> None:
    outbox.done(new_item_id())
    outbox.refuse(new_item_id(), 422, "x", "y")
    assert outbox.pending() == [] and outbox.refused() == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "0190b2c0-0000-4000-8000-000000000000", ""])
def test_only_item_ids_name_files(outbox: Outbox, name: str) -> None:
    with pytest.raises(ClientError):
        outbox.put(name, b"x")


def test_the_folder_is_private_and_stray_files_are_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    outbox = Outbox(folder)
    item = new_item_id()
    outbox.put(item, b"sealed")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / f"{item}.msmt").stat().st_mode) == 0o600
    (folder / "notes.txt").write_text("not an envelope")
    (folder / ".tmp-abc").write_bytes(b"half written")
    assert [e.item_id for e in Outbox(folder).pending()] == [item]  # a new process sees it too
