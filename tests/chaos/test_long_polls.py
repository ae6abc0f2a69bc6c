"""Many concurrent long-polls while submissions go on, the broker under a 1,024-descriptor
limit: every poll is answered or capped (429/503 with Retry-After), submissions stay fast,
and the broker's open files stay below its limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .harness import ACCEPTED, Counts
from .scenarios import long_polls


def test_long_poll_storm_is_answered_or_capped_and_submits_go_on(
    tmp_path: Path, scale: Counts, figures: Callable[[str, dict[str, object]], None]
) -> None:
    got = long_polls(tmp_path, scale)
    figures("long-polls", got)
    answers = got["answers"]
    assert got["long_polls"] == scale.long_polls
    assert got["capped_without_retry_after"] == 0
    if scale.name == "test":  # fewer polls than connections: both caps hit, the rest wait
        assert set(answers) == {"200", "429:too-many-long-polls", "503:busy"}, answers
        assert answers.get("200", 0) >= min(scale.long_polls, scale.max_waiting_polls) // 2
        assert got["fds_max"] < scale.fd_limit
    else:
        # A storm larger than the descriptors: `serve` caps connections at half of what the limit
        # leaves and runs the asyncio loop, whose accept backs off on EMFILE (the rest wait in
        # the kernel's backlog); every poll is still answered, the excess shed with 503 busy +
        # Retry-After, none dropped unanswered, and submissions go on.
        assert set(answers) <= {"200", "429:too-many-long-polls", "503:busy"}, answers
        assert sum(answers.values()) == scale.long_polls
        assert got["fds_max"] <= scale.fd_limit
    assert got["emfile_in_log"] == 0  # at most one "out of file descriptors" line a minute
    # submissions go on: accepted, or at worst told to retry (503 busy, Retry-After)
    assert set(got["submit_statuses"]) <= {*ACCEPTED, 503} and got["submits_during"] >= 5
    assert got["submit_503_without_retry_after"] == 0
    # generous: a loaded 2-core machine; a stall behind the polls would be seconds, not this
    assert got["submit_median_under_polls_ms"] <= 10 * got["submit_median_baseline_ms"] + 500
    assert got["polls_after"] == 1
    assert got["tracebacks"] == 0
