"""kill -9 of a broker under load, on each database: nothing the client was told is stored
(a receipt) or kept to re-send (its outbox) is lost, and nothing is stored twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .harness import Counts
from .scenarios import kill_under_load


def test_kill_9_under_load_loses_and_duplicates_nothing(
    database_url: str, tmp_path: Path, scale: Counts, figures: Callable[[str, dict[str, object]], None]
) -> None:
    # SQLite: its one broker process killed and restarted on the same file; PostgreSQL: one
    # of two brokers killed and restarted while the other goes on
    brokers = 1 if database_url.startswith("sqlite") else 2
    got = kill_under_load(database_url, tmp_path, scale, brokers)
    figures(f"kill -9 ({database_url.split(':')[0].split('+')[0]})", got)
    assert got["kills"] == scale.kills
    assert got["lost"] == 0 and got["duplicated"] == 0 and got["unexpected"] == 0
    assert got["inbox_gaps"] == 0 and got["refused"] == 0
    assert got["answers_5xx"] == 0, got["client_errors"]  # 503 while one starts is allowed
    stored = got["sends_receipted"] + got["sends_pending"]
    assert got["inbox_deliveries"] == got["stored_items"] == stored
    assert got["sends_receipted"] >= 6 * (scale.kills + 1)  # load went through between the kills
    assert got["tracebacks"] == 0
