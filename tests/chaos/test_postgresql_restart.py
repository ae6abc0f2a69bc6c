"""The test's own PostgreSQL server stopped at once and started again under load: meanwhile
every submission is answered 503 with Retry-After; after it, nothing is lost or doubled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import ACCEPTED, Counts
from .scenarios import postgresql_restart


@pytest.mark.postgresql
def test_a_postgresql_restart_under_load_is_503s_then_nothing_lost(
    tmp_path: Path, scale: Counts, figures: Callable[[str, dict[str, object]], None]
) -> None:
    got = postgresql_restart(tmp_path, scale)
    figures("postgresql restart", got)
    assert got["restarts"] == scale.pg_restarts
    assert set(got["statuses"]) <= {*ACCEPTED, 503}, got["statuses"]
    assert got["statuses"].get(503, 0) > 0  # the outage was seen
    assert got["refused_problems"] == ["database-unavailable"]
    assert got["refused_without_retry_after"] == 0
    assert got["recovery_s_max"] < 30
    assert got["lost"] == 0 and got["duplicated"] == 0 and got["inbox_gaps"] == 0
    assert got["inbox_deliveries"] == got["stored_items"] == got["envelopes"]
    # one log line when each outage is first seen and one when it ends (docs/operations.md)
    assert got["outage_lines"] == {"down": scale.pg_restarts, "up": scale.pg_restarts}
    assert got["tracebacks"] == 0
