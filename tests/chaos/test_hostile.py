"""Hostile requests against a real broker process: no 5xx, every error an RFC 9457 problem,
nothing written, and the broker still serves a real submission afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .harness import ACCEPTED, Counts
from .hostile import hostile_requests


def test_hostile_requests_cause_no_5xx_and_change_nothing(
    tmp_path: Path, scale: Counts, figures: Callable[[str, dict[str, object]], None]
) -> None:
    got = hostile_requests(tmp_path, scale)
    figures("hostile requests", got)
    assert got["answers"] >= scale.hostile
    assert got["5xx"] == 0 and got["no_answer"] == 0, got["statuses"]
    assert got["not_a_problem"] == 0, got["not_a_problem_examples"]
    assert got["envelopes_accepted"] == 0
    assert got["state_changed"] == {}
    assert got["submit_after"] in ACCEPTED and got["broker_alive"]
    assert got["tracebacks"] == 0
