"""A broker frozen (SIGSTOP) while it holds the integration lock on PostgreSQL: the healthy
broker next to it never stalls much longer than the lock timeout, and nothing is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.pg_instance import private_postgresql

from .harness import Counts
from .scenarios import hung_broker

LOCK_TIMEOUT_S = 2.0
MARGIN_S = 3.0  # a loaded 2-core machine: scheduling, a slow commit, the client's own work


@pytest.mark.postgresql
def test_a_frozen_lock_holder_stalls_the_healthy_broker_at_most_a_lock_timeout(
    tmp_path: Path, scale: Counts, figures: Callable[[str, dict[str, object]], None]
) -> None:
    with private_postgresql() as pg:  # frozen sessions hold connection slots: not the shared server
        got = hung_broker(pg.url, tmp_path, scale, LOCK_TIMEOUT_S)
    figures("hung broker (postgresql)", got)
    assert got["freezes"] == scale.hung
    assert got["lock_released_after_s"] >= LOCK_TIMEOUT_S  # it really hung, holding the lock
    assert got["healthy_5xx"] == 0, got["healthy_statuses"]
    assert got["healthy_max_latency_s"] <= LOCK_TIMEOUT_S + MARGIN_S
    assert got["lost"] == 0 and got["duplicated"] == 0 and got["inbox_gaps"] == 0
    assert got["inbox_deliveries"] == got["stored_items"] == got["envelopes"]
    assert got["tracebacks_healthy"] == 0
