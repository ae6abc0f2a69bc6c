"""Plain-text tables for the command lines (msmt and msmt-broker)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any, limit: int = 60) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(rows: Sequence[dict[str, Any]], limit: int = 60) -> str:
    """Rows of dicts as aligned columns, headed by the keys of the first row."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[cell(row.get(c), limit) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)
