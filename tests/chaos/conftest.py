"""Chaos suite (issue 10): real broker processes killed, frozen, starved of their database
and flooded. `make test` runs it with small counts; `make soak` (MSMT_CHAOS_SCALE=soak) with
large ones and prints every scenario's figures at the end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.conftest import database_url  # noqa: F401 - sqlite and postgresql

from .harness import Counts, counts, report


@pytest.fixture
def scale() -> Counts:
    return counts()


@pytest.fixture
def figures(record_property: Callable[[str, object], None]) -> Callable[[str, dict[str, object]], None]:
    """Print a scenario's figures and attach them to its report (shown in the summary)."""

    def record(name: str, values: dict[str, object]) -> None:
        report(name, values, record_property)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        str(value)
        for key in ("passed", "failed")
        for rep in terminalreporter.stats.get(key, [])
        for name, value in getattr(rep, "user_properties", [])
        if name == "chaos" and getattr(rep, "when", "call") == "call"
    ]
    if lines:
        terminalreporter.section(f"chaos figures ({counts().name} counts)")
        for line in lines:
            terminalreporter.write_line(line)
