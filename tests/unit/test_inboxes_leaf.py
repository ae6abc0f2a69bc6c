"""Inboxes leaves (docs/protocol.md 14.2, 14.8): the encoding, its strict parser, the frozen
vector, and the pure checks a recipient and an originator run, each tampered field by field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from msmt.core import canonical, logleaf
from msmt.core.errors import LeafMismatch
from msmt.core.merkle import MemoryTree
from msmt.core.note import Checkpoint

VECTOR = Path(__file__).parents[1] / "vectors" / "inboxes-v1" / "inboxes.json"
SALT = bytes(range(16))


def _salt(country: str, index: int) -> bytes:
    return hashlib.shake_256(f"MSMT-v1 inboxes vector {country} {index}".encode()).digest(16)


# --- the leaf ------------------------------------------------------------------------------


def test_the_commitment_is_the_specified_hash() -> None:
    expected = hashlib.sha256(b"msmt inbox commitment v1\nUSA\n42\n" + SALT).hexdigest()
    assert logleaf.inbox_commitment("USA", 42, SALT) == expected
    # an empty inbox is committed too (size 0), so that no leaf has a free slot
    assert (
        logleaf.inbox_commitment("USA", 0, SALT)
        == hashlib.sha256(b"msmt inbox commitment v1\nUSA\n0\n" + SALT).hexdigest()
    )
    for bad in (("usa", 1, SALT), ("USA", -1, SALT), ("USA", 1, SALT[:15]), ("USA", True, SALT)):
        with pytest.raises(ValueError):
            logleaf.inbox_commitment(*bad)  # type: ignore[arg-type]


def test_the_leaf_is_canonical_sorted_and_parses_back() -> None:
    leaf, salts = logleaf.new_inboxes_leaf(7, {"USA": 3, "JPN": 1, "GBR": 9})
    assert sorted(salts) == ["GBR", "JPN", "USA"] and all(len(s) == 16 for s in salts.values())
    value = canonical.decode(leaf)
    assert isinstance(value, dict) and set(value) == {"type", "previous", "commitments"}
    assert value["type"] == "inboxes" and value["previous"] == 7
    commitments = [logleaf.inbox_commitment(c, n, salts[c]) for c, n in (("USA", 3), ("JPN", 1), ("GBR", 9))]
    assert value["commitments"] == sorted(commitments)
    assert logleaf.parse_inboxes_leaf(leaf) == logleaf.InboxesLeaf(7, tuple(sorted(commitments)))
    assert logleaf.inboxes_leaf(-1, []) == b'{"commitments":[],"previous":-1,"type":"inboxes"}'
    assert "inboxes" in logleaf.LEAF_TYPES


def test_fresh_salts_every_time() -> None:
    a, salts_a = logleaf.new_inboxes_leaf(-1, {"USA": 1})
    b, salts_b = logleaf.new_inboxes_leaf(-1, {"USA": 1})
    assert a != b and salts_a != salts_b


@pytest.mark.parametrize(
    "value",
    [
        {"type": "inboxes", "previous": 1, "commitments": [], "extra": 1},
        {"type": "inboxes", "previous": 1},
        {"type": "inbox", "previous": 1, "commitments": []},
        {"type": "inboxes", "previous": -2, "commitments": []},
        {"type": "inboxes", "previous": "1", "commitments": []},
        {"type": "inboxes", "previous": 1, "commitments": ["b" * 64, "a" * 64]},  # not sorted
        {"type": "inboxes", "previous": 1, "commitments": ["a" * 64, "a" * 64]},  # twice
        {"type": "inboxes", "previous": 1, "commitments": ["A" * 64]},
        {"type": "inboxes", "previous": 1, "commitments": ["a" * 63]},
        {"type": "inboxes", "previous": 1, "commitments": [1]},
        {"type": "inboxes", "previous": 1, "commitments": "a" * 64},
        [],
    ],
)
def test_the_parser_refuses_anything_else(value: object) -> None:
    with pytest.raises(LeafMismatch):
        logleaf.parse_inboxes_leaf(canonical.encode(value))  # type: ignore[arg-type]


def test_the_parser_refuses_non_canonical_bytes() -> None:
    good = logleaf.inboxes_leaf(3, ["a" * 64])
    for bad in (
        b'{"previous":3,"commitments":["' + b"a" * 64 + b'"],"type":"inboxes"}',  # key order
        good.replace(b",", b", ", 1),
        good + b"\n",
        good.replace(b'"previous":3', b'"previous":true'),
        b"not json",
    ):
        with pytest.raises(LeafMismatch):
            logleaf.parse_inboxes_leaf(bad)


def test_the_frozen_vector() -> None:
    """tests/vectors/inboxes-v1/inboxes.json: salts from SHAKE256("MSMT-v1 inboxes vector
    <country> <index>"), 16 bytes; every implementation must make exactly these bytes."""
    vector = json.loads(VECTOR.read_text())
    for case in vector["leaves"]:
        salts = {c: bytes.fromhex(e["salt"]) for c, e in case["inboxes"].items()}
        for country, entry in case["inboxes"].items():
            assert salts[country] == _salt(country, case["index"])
            assert logleaf.inbox_commitment(country, entry["size"], salts[country]) == entry["commitment"]
        sizes = {c: e["size"] for c, e in case["inboxes"].items()}
        ordered = [salts[c] for c in sorted(salts)]  # one salt per country, in code order
        leaf, _ = logleaf.new_inboxes_leaf(case["previous"], sizes, random=lambda _n, o=ordered: o.pop(0))
        assert leaf == case["leaf"].encode()
        assert logleaf.hash_of(leaf).hex() == case["leaf_hash"]
        assert logleaf.parse_inboxes_leaf(leaf).previous == case["previous"]


# --- the recipient's check -----------------------------------------------------------------


class Log:
    """A log in memory whose batches end with inboxes leaves, as the integrator makes them."""

    def __init__(self) -> None:
        self.tree = MemoryTree()
        self.leaves: list[bytes] = []
        self.salts: dict[int, dict[str, bytes]] = {}
        self.sizes: dict[int, dict[str, int]] = {}
        self.last = -1

    def batch(self, items: int, sizes: dict[str, int], *, previous: int | None = None) -> int:
        for n in range(items):
            self._append(
                canonical.encode(
                    {"type": "policy", "version": len(self.leaves) + n, "document_sha256": "0" * 64}
                )
            )
        leaf, salts = logleaf.new_inboxes_leaf(self.last if previous is None else previous, sizes)
        index = self._append(leaf)
        self.salts[index], self.sizes[index], self.last = salts, dict(sizes), index
        return index

    def _append(self, leaf: bytes) -> int:
        self.leaves.append(leaf)
        return self.tree.append(leaf)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint("test", self.tree.size, self.tree.root())

    def links(self, country: str, after: int = -1) -> list[logleaf.InboxesLink]:
        out = []
        for index in sorted(self.salts, reverse=True):
            if index <= after:
                break
            size = self.sizes[index].get(country)
            opening = None if size is None else (size, self.salts[index][country])
            out.append(
                logleaf.InboxesLink(index, self.leaves[index], self.tree.inclusion_proof(index), opening)
            )
        return out


def _log() -> Log:
    log = Log()
    log.batch(2, {})
    log.batch(3, {"USA": 2, "JPN": 1})
    log.batch(1, {"USA": 3, "JPN": 1})
    return log


def test_an_honest_chain_has_no_finding() -> None:
    log = _log()
    chain = logleaf.check_inboxes_chain("USA", log.links("USA"), log.checkpoint(), None, max_commitments=11)
    assert chain.findings == () and chain.index == log.tree.size - 1 and chain.size == 3
    assert logleaf.inbox_end_findings(3, [(1, 3), (2, 4), (3, 7)], log.tree.size) == []
    # from the state kept last time: only the newer leaves
    since = (log.links("USA")[1].index, 2)
    chain = logleaf.check_inboxes_chain("USA", log.links("USA", since[0]), log.checkpoint(), since)
    assert chain.findings == () and chain.size == 3
    # nothing new since
    chain = logleaf.check_inboxes_chain("USA", [], log.checkpoint(), (log.tree.size - 1, 3))
    assert chain.findings == () and chain.size == 3


def test_entries_at_the_end_of_the_inbox_withheld_or_deleted() -> None:
    assert logleaf.inbox_end_findings(3, [(1, 3), (2, 4)], 9) == [
        "inbox entry 3 is committed in the log (the inbox holds 3) but not listed by the broker: "
        "withheld or deleted"
    ]
    found = logleaf.inbox_end_findings(5, [(1, 3), (2, 4)], 9)
    assert len(found) == 1 and "entries 3-5 are committed" in found[0]
    assert "entries 1-2 are" in logleaf.inbox_end_findings(2, [], 9)[0]
    # an entry under the checkpoint numbered above what the leaf says: the leaf understates
    assert "understates" in logleaf.inbox_end_findings(1, [(1, 3), (2, 4)], 9)[0]
    assert logleaf.inbox_end_findings(1, [(1, 3), (2, 12)], 9) == []  # integrated after it


def test_the_last_leaf_must_be_an_inboxes_leaf() -> None:
    log = _log()
    links = log.links("USA")
    log._append(b'{"type":"policy"}')  # a leaf after the last inboxes leaf
    found = logleaf.check_inboxes_chain("USA", links, log.checkpoint(), None).findings
    assert len(found) == 1 and "hidden" in found[0]
    assert "hidden" in logleaf.check_inboxes_chain("USA", [], log.checkpoint(), None).findings[0]


def test_a_leaf_not_in_the_tree_is_a_finding() -> None:
    log = _log()
    links = log.links("USA")
    forged, _ = logleaf.new_inboxes_leaf(links[0].index - 1 - 1, {"USA": 2})
    links[0] = logleaf.InboxesLink(links[0].index, forged, links[0].proof, links[0].opening)
    found = logleaf.check_inboxes_chain("USA", links, log.checkpoint(), None).findings
    assert len(found) == 1 and "inclusion" in found[0]
    # a wrong proof for the right leaf
    links = log.links("USA")
    links[1] = logleaf.InboxesLink(links[1].index, links[1].leaf, links[0].proof, links[1].opening)
    assert "inclusion" in logleaf.check_inboxes_chain("USA", links, log.checkpoint(), None).findings[0]


def test_a_broken_chain_is_a_finding() -> None:
    log = Log()
    log.batch(1, {"USA": 1})
    middle = log.batch(1, {"USA": 2})
    log.batch(1, {"USA": 2}, previous=0)  # skips the middle one
    found = logleaf.check_inboxes_chain("USA", log.links("USA"), log.checkpoint(), None).findings
    assert len(found) == 1 and "broken" in found[0]
    # the broker leaves a leaf out of its answer
    log = _log()
    links = log.links("USA")
    del links[1]
    assert "broken" in logleaf.check_inboxes_chain("USA", links, log.checkpoint(), None).findings[0]
    # the chain does not end where the last audit stopped
    links = log.links("USA")
    since = (middle, 1)
    assert "broken" in logleaf.check_inboxes_chain("USA", links, log.checkpoint(), since).findings[0]


def test_a_rewritten_opening_is_a_finding() -> None:
    log = _log()
    for change in ((3, None), (2, None), (None, bytes(16))):
        links = log.links("USA")
        size, salt = links[0].opening  # type: ignore[misc]
        opening = (change[0] or size, change[1] or salt)
        links[0] = logleaf.InboxesLink(links[0].index, links[0].leaf, links[0].proof, opening)
        if opening == (size, salt):
            continue
        found = logleaf.check_inboxes_chain("USA", links, log.checkpoint(), None).findings
        assert len(found) == 1 and "rewrote" in found[0]
    # another country's opening does not open our commitment
    links = log.links("USA")
    jpn = log.links("JPN")[0].opening
    links[0] = logleaf.InboxesLink(links[0].index, links[0].leaf, links[0].proof, jpn)
    assert "rewrote" in logleaf.check_inboxes_chain("USA", links, log.checkpoint(), None).findings[0]


def test_a_commitment_that_disappears_or_a_size_that_goes_down_is_a_finding() -> None:
    log = Log()
    log.batch(1, {"USA": 2})
    log.batch(1, {"JPN": 1})  # USA's commitment left out
    found = logleaf.check_inboxes_chain("USA", log.links("USA"), log.checkpoint(), None).findings
    assert len(found) == 1 and "no commitment for USA" in found[0]
    log = Log()
    log.batch(1, {"USA": 2})
    log.batch(1, {"USA": 1})
    found = logleaf.check_inboxes_chain("USA", log.links("USA"), log.checkpoint(), None).findings
    assert found == (f"USA's inbox went down from 2 to 1 entries at inboxes leaf {log.last}",)
    # against the size kept from the last audit
    log = Log()
    first = log.batch(1, {"USA": 1})
    log.batch(1, {"USA": 1})
    found = logleaf.check_inboxes_chain("USA", log.links("USA", first), log.checkpoint(), (first, 4)).findings
    assert len(found) == 1 and "went down from 4 to 1" in found[0]


def test_more_commitments_than_members_is_a_finding() -> None:
    log = Log()
    log.batch(1, {"USA": 1, "JPN": 1, "GBR": 1})
    found = logleaf.check_inboxes_chain("USA", log.links("USA"), log.checkpoint(), None, max_commitments=2)
    assert len(found.findings) == 1 and "committed twice" in found.findings[0]


def test_a_chain_walk_above_a_floor() -> None:
    log = _log()
    links = log.links("USA", after=4)
    assert logleaf.check_inboxes_chain(None, links, log.checkpoint(), None, floor=4).findings == ()
    assert "broken" in logleaf.check_inboxes_chain(None, links, log.checkpoint(), None).findings[0]


# --- the originator's check ----------------------------------------------------------------


def test_the_originator_check() -> None:
    leaf, salts = logleaf.new_inboxes_leaf(3, {"USA": 5, "JPN": 2})
    parsed = logleaf.parse_inboxes_leaf(leaf)
    openings = {"USA": (5, salts["USA"]), "JPN": (2, salts["JPN"])}
    assert logleaf.check_item_inboxes(parsed, 9, 6, {"USA": 5, "JPN": 2}, openings) == []
    assert logleaf.check_item_inboxes(parsed, 9, 6, {"USA": 4}, openings) == []
    # not the leaf that closed the item's batch
    assert "closed the batch" in logleaf.check_item_inboxes(parsed, 9, 2, {"USA": 5}, openings)[0]
    assert "closed the batch" in logleaf.check_item_inboxes(parsed, 9, 9, {"USA": 5}, openings)[0]
    # a recipient's size below the entry the item got
    assert "below its entry 6" in logleaf.check_item_inboxes(parsed, 9, 6, {"USA": 6}, openings)[0]
    # a rewritten size or salt, or none at all
    for bad in ((4, salts["USA"]), (5, bytes(16)), (5, salts["JPN"])):
        found = logleaf.check_item_inboxes(parsed, 9, 6, {"USA": 4}, {"USA": bad})
        assert "do not open" in found[0]
    assert "no inbox size" in logleaf.check_item_inboxes(parsed, 9, 6, {"USA": 4}, {})[0]
