"""Which database errors are outages (one log line, 503) and which are failures (a 500)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError

from broker.services.health import is_outage


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (OperationalError("SELECT 1", {}, _Orig("08006")), True),
        # the server ended a session idle in a transaction (a broker paused mid-commit, tests/chaos)
        (InternalError("COMMIT", {}, _Orig("25P03")), True),
        (InternalError("SELECT 1", {}, _Orig("57P01")), True),  # admin shutdown
        (InternalError("SELECT 1", {}, _Orig("XX000")), False),
        (IntegrityError("INSERT", {}, _Orig("23505")), False),
        (ValueError("not a database error"), False),
    ],
)
def test_outages_are_told_from_failures(error: Exception, outage: bool) -> None:
    assert is_outage(error) is outage
