"""The per-poll inbox check: which entry numbers a page after the cursor jumps over."""

from __future__ import annotations

from msmt.cli import _skipped


def test_holes_after_the_cursor_are_named() -> None:
    assert _skipped(3, [4, 5, 6]) == []
    assert _skipped(3, [5, 6, 9]) == [4, 7, 8]
    assert _skipped(0, []) == []
    assert _skipped(3, [None, 4, "x", 6]) == [5]  # malformed numbers are another check's


def test_a_huge_claimed_jump_is_named_by_its_first_thousand() -> None:
    missing = _skipped(0, [10**15])
    assert len(missing) == 1000 and missing[0] == 1 and missing[-1] == 1000
